using System.CommandLine;
using System.Globalization;
using Puzzle.Stages;
using Puzzle.Stages.Search;

namespace Puzzle.Cli.Commands;

/// <summary>
/// `puzzle search --run RUN`: the run's config.search (what the pipeline's stage 6 solves, named child); each flag
/// given overrides its key for this command only, so defaults live in one place (Config/RunConfig.cs).
/// </summary>
internal static class SearchCommand
{
    public static Command Create()
    {
        var run = CliSupport.RunOption();
        var memory = new Option<double?>("--max-memory-gib") { Description = "parameters + KV cache at the scenario + non-block, GiB (search.max_memory_gib)" };
        var ratio = new Option<double?>("--min-throughput-ratio") { Description = "throughput at least R times the parent's in the scenario (search.min_throughput_ratio)" };
        var tps = new Option<double?>("--min-tokens-per-s") { Description = "generated tokens per second at least T (search.min_tokens_per_s; replaces the config's ratio)" };
        var latency = new Option<double?>("--max-latency-ms") { Description = "time of the scenario's request (prefill + all decode steps), ms (search.max_latency_ms)" };
        var parameters = new Option<long?>("--max-params") { Description = "parameter count (search.max_params)" };
        var target = new Option<string?>("--target") { Description = "cpu|measured (this run's timings) or h100|h200|a100|l40s (rooflines) (search.target)" };
        var solutions = new Option<int?>("--solutions")
        {
            Description = "number of solutions: NAME, NAME-2, … (search.solutions); with search.probe_tokens > 0, candidates NAME-candidate, " +
                          "NAME-candidate-2, … each given a short GKD, the best stored as NAME",
        };
        var probeTokens = new Option<long?>("--probe-tokens") { Description = "GKD tokens per candidate before the child is chosen; 0: no probe, the MIP's best is NAME (search.probe_tokens)" };
        var probeCandidates = new Option<string?>("--probe-candidates") { Description = "attention (the best and the best keeping 1, 2, … more attention layers) or diverse (search.probe_candidates)" };
        var diversity = new Option<double?>("--diversity") { Description = "alpha: each solution shares at most alpha·L choices with every earlier one (search.diversity)" };
        var sweep = new Option<string?>("--sweep") { Description = "only a Pareto front, e.g. throughput-ratio=1.2:3.0:0.2 (also memory-gib, params)" };
        var checks = new Option<int?>("--measured-checks")
        {
            Description = "on the measured target: how many times a child missing the target is re-solved after timing it in the engine " +
                          "(default 4; 0: the cost model alone decides, no timing, seconds). Timings are cached per architecture in RUN/measured-checks.json",
        };
        var overshoot = new Option<double?>("--max-overshoot")
        {
            Description = "on the measured target: a child measured more than this fraction above the target is loosened toward it " +
                          "(search.max_overshoot; the demo's 0.06 keeps two seeds' children within ~0.1x, 0.15 needs fewer checks)",
        };
        var driftControl = new Option<bool?>("--drift-control")
        {
            Description = "true|false: time each measured check beside a drift control child (search.drift_control; on in the demo, where it keeps two " +
                          "seeds' children closer; off, a re-search at a new target needs fewer rounds)",
        };
        var name = new Option<string>("--name") { Description = "solution name (RUN/solutions/NAME.json)", DefaultValueFactory = _ => ChildRecipe.Solution };
        var command = new Command("search", "Choose one block per layer with a mixed-integer program (OR-Tools) under the run's config.search; flags override its keys.")
            { run, memory, ratio, tps, latency, parameters, target, solutions, probeTokens, probeCandidates, diversity, sweep, checks, overshoot, driftControl, name };
        command.SetAction(r => CliSupport.Run(() =>
        {
            if (r.GetValue(checks) is < 0) throw new PuzzleException($"--measured-checks must be 0 or more, got {r.GetValue(checks)}");
            var overrides = new List<string>();
            void Set<T>(Option<T> option, string key, Func<T, string> text)
            {
                if (r.GetValue(option) is { } value) overrides.Add($"search.{key}={text(value)}");
            }
            static string Number(double? v) => v!.Value.ToString("R", CultureInfo.InvariantCulture);
            Set(memory, "max_memory_gib", Number);
            Set(ratio, "min_throughput_ratio", Number);
            Set(tps, "min_tokens_per_s", Number);
            Set(latency, "max_latency_ms", Number);
            Set(parameters, "max_params", v => $"{v}");
            Set(target, "target", v => v!);
            Set(solutions, "solutions", v => $"{CliSupport.Positive("--solutions", v!.Value)}");
            Set(diversity, "diversity", Number);
            Set(overshoot, "max_overshoot", Number);
            Set(probeTokens, "probe_tokens", v => $"{v}");
            Set(probeCandidates, "probe_candidates", v => v!);
            Set(driftControl, "drift_control", v => v!.Value ? "true" : "false");
            // One throughput bound: a flag for one replaces the config's other.
            if (r.GetValue(tps) is not null && r.GetValue(ratio) is null) overrides.Add("search.min_throughput_ratio=null");
            if (r.GetValue(ratio) is not null && r.GetValue(tps) is null) overrides.Add("search.min_tokens_per_s=null");
            var runDir = new RunDirectory(r.GetValue(run)!, overrides);
            var request = ChildRecipe.SearchRequestFor(runDir) with { Name = r.GetValue(name)! };
            if (r.GetValue(sweep) is { } s) request = request with { Sweep = s, Solutions = 1 };
            if (r.GetValue(checks) is { } n) request = request with { MeasuredChecks = n };
            if (request.Sweep is null && request.Solutions > 1 && runDir.Config.Search.ProbeTokens > 0)
            {
                var chosen = ChildRecipe.SearchAndChoose(runDir, request);
                var probe = SolutionFile.Read(chosen.Path).Probe;
                foreach (var c in probe?.Candidates ?? [])
                    Console.WriteLine($"{c.Name}: summed block KL {c.SummedKl:F4}{(c.MeasuredRatio is { } m ? $", measured {m:F2}x" : "")}, " +
                                      $"validation KL {c.InitialKl:F4} -> {c.ProbedKl:F4} after {probe!.Tokens:N0} tokens of GKD");
                Console.WriteLine($"{chosen.Name}: {probe?.Chosen ?? "the only candidate"}, KL {chosen.Solution.Totals.Kl:F4}, " +
                                  $"{chosen.Solution.Totals.TokensPerSecond / chosen.Parent.TokensPerSecond:F2}x throughput -> {chosen.Path}");
                return 0;
            }
            var files = SearchStage.Run(runDir, request);
            foreach (var f in files)
                Console.WriteLine($"{f.Name}: KL {f.Solution.Totals.Kl:F4}, {f.Solution.Totals.TokensPerSecond / f.Parent.TokensPerSecond:F2}x throughput, " +
                                  $"{f.Solution.Totals.MemoryBytes / (1 << 20):F1} MiB, {f.Solution.Totals.Parameters:N0} params -> {f.Path}");
            return 0;
        }));
        return command;
    }
}
