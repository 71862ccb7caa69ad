using System.CommandLine;
using Puzzle.Stages;
using Puzzle.Stages.Search;

namespace Puzzle.Cli.Commands;

internal static class SearchCommand
{
    public static Command Create()
    {
        var run = CliSupport.RunOption();
        var memory = new Option<double?>("--max-memory-gib") { Description = "parameters + KV cache at the scenario + non-block, GiB" };
        var ratio = new Option<double?>("--min-throughput-ratio") { Description = "throughput at least R times the parent's in the scenario" };
        var tps = new Option<double?>("--min-tokens-per-s") { Description = "generated tokens per second at least T" };
        var latency = new Option<double?>("--max-latency-ms") { Description = "time of the scenario's request (prefill + all decode steps), ms" };
        var parameters = new Option<long?>("--max-params") { Description = "parameter count" };
        var target = new Option<string>("--target") { Description = "cpu|measured (this run's timings) or h100|h200|a100|l40s (rooflines)", DefaultValueFactory = _ => "measured" };
        var solutions = new Option<int>("--solutions") { Description = "number of diverse solutions", DefaultValueFactory = _ => 1 };
        var diversity = new Option<double>("--diversity") { Description = "alpha: each solution shares at most alpha·L choices with every earlier one", DefaultValueFactory = _ => 0.8 };
        var sweep = new Option<string?>("--sweep") { Description = "Pareto front, e.g. throughput-ratio=1.2:3.0:0.2 (also memory-gib, params)" };
        var name = new Option<string>("--name") { Description = "solution name (RUN/solutions/NAME.json)", DefaultValueFactory = _ => "solution" };
        var command = new Command("search", "Choose one block per layer with a mixed-integer program (OR-Tools) under the given constraints.")
            { run, memory, ratio, tps, latency, parameters, target, solutions, diversity, sweep, name };
        command.SetAction(r => CliSupport.Run(() =>
        {
            var files = SearchStage.Run(new RunDirectory(r.GetValue(run)!), new SearchRequest
            {
                MaxMemoryGiB = r.GetValue(memory), MinThroughputRatio = r.GetValue(ratio), MinTokensPerSecond = r.GetValue(tps),
                MaxLatencyMs = r.GetValue(latency), MaxParameters = r.GetValue(parameters), Target = r.GetValue(target)!,
                Solutions = CliSupport.Positive("--solutions", r.GetValue(solutions)), Diversity = r.GetValue(diversity), Sweep = r.GetValue(sweep), Name = r.GetValue(name)!,
            });
            foreach (var f in files)
                Console.WriteLine($"{f.Name}: KL {f.Solution.Totals.Kl:F4}, {f.Solution.Totals.TokensPerSecond / f.Parent.TokensPerSecond:F2}x throughput, " +
                                  $"{f.Solution.Totals.MemoryBytes / (1 << 20):F1} MiB, {f.Solution.Totals.Parameters:N0} params -> {f.Path}");
            return 0;
        }));
        return command;
    }
}
