using System.Diagnostics;
using System.Globalization;
using Puzzle.Domain;
using Puzzle.Checkpoints;
using Puzzle.Model;
using Puzzle.Runtime;
using Puzzle.Stages;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Library;
using Puzzle.Stages.Search;

namespace Puzzle.Benchmarks;

/// <summary>
/// How well each cost-timing method predicts the measured end-to-end throughput ratio (issue 12): for the sweep
/// solutions of a finished run (RUN/solutions/sweep-*.json), costs are measured by every method on this machine,
/// each method predicts child/parent throughput, and all architectures plus the parent are then timed in the engine
/// together, interleaved round by round (random weights; speed does not depend on them). Prints one table per method
/// and a summary (mean and max |predicted/measured − 1|).
/// </summary>
public static class CostModelAccuracy
{
    static readonly string[] DefaultMethods =
        ["isolated/median", "isolated/min", "isolated/median/uncalibrated", "engine/median", "engine/min", "engine/trimmed", "engine/median/uncalibrated",
         "engine/median/anchored", "engine/min/anchored", "engine/min/anchored/unpaired"];

    public static void Run(string runDir, int rounds, string[] methods)
    {
        if (methods.Length == 0) methods = DefaultMethods;
        var run = new RunDirectory(runDir);
        var sc = run.Config.Scenario;
        var scenario = ScenarioCost.From(sc);
        var parentConfig = HfConfig.Read(run.ParentDir);
        var variants = SearchSpace.Expand(parentConfig, run.Config.SearchSpace);
        var byId = variants.ToDictionary(v => v.Id);
        var points = Directory.GetFiles(run.Artifact(SearchStage.Folder), "sweep-*.json").Select(SolutionFile.Read)
            .OrderBy(s => s.Verified.ThroughputRatio).ToList();
        if (points.Count == 0) throw new PuzzleException($"{run.Artifact(SearchStage.Folder)}: no sweep-*.json solutions (run the search with a sweep first)");
        // Distinct architectures only (neighbouring sweep targets can pick the same one).
        points = points.GroupBy(p => string.Join(",", p.Layers.Select(l => l.Attention + "+" + l.Ffn))).Select(g => g.First()).ToList();
        Console.WriteLine($"cost-model accuracy: {run.Path}, {points.Count} distinct sweep architectures, scenario batch {sc.Batch}, prompt {sc.PromptLength}, " +
                          $"generation {sc.GenerationLength}, {sc.MeasureDtype} on {sc.Device}, warm-up {sc.WarmupRuns}, repeats {sc.Repeats}; load average {Load()}");
        string[] Ids(SolutionFile s) => s.Layers.SelectMany(l => new[] { l.Attention, l.Ffn }).ToArray();
        var parentIds = variants.Where(v => v.IsParent).Select(v => v.Id).ToArray();

        // COST_REPEATS=N times the costs with N rounds instead of the scenario's repeats (the "more repeats" lever).
        int costRepeats = int.TryParse(Environment.GetEnvironmentVariable("COST_REPEATS"), out int n) && n > 0 ? n : sc.Repeats;
        Console.WriteLine($"  costs timed with {costRepeats} rounds after {sc.WarmupRuns} warm-up");
        var predicted = new Dictionary<string, double[]>();
        using (var parent = Checkpoint.Load(run.ParentDir, Runtime.Devices.Parse(sc.Device), Checkpoint.ParseDtype(sc.MeasureDtype)))
        {
            BlockTimings.EngineSamples? engine = null;
            foreach (string name in methods)
            {
                var method = CostMethod.Parse(name);
                var clock = Stopwatch.StartNew();
                // As the costs stage times: on the cores other processes leave free (Runtime.CpuContention.EnterTiming).
                var timings = Runtime.CpuContention.Measure("costs", () => method.Timing == "engine"
                    ? (engine ??= BlockTimings.InEngineSamples(parent, variants, scenario, sc.WarmupRuns, costRepeats)).Reduce(method.Statistic)
                    : BlockTimings.Isolated(parent, variants, scenario, sc.WarmupRuns, costRepeats, method.Statistic), out var costConditions);
                var costs = BlockCosts.FromTimings(parentConfig, variants, sc, method, timings, "", sc.Device);
                double parentTime = costs.PredictTimeMs(parentIds, "measured");
                predicted[name] = points.Select(p => parentTime / costs.PredictTimeMs(Ids(p), "measured")).ToArray();
                Console.WriteLine($"  costs by {name}: {clock.Elapsed.TotalSeconds:F1} s (shared engine samples are timed once), block scale prefill " +
                                  $"{costs.NonBlock.BlockScalePrefill:F3} decode {costs.NonBlock.BlockScaleDecode:F3}, parent predicted {parentTime:F1} ms; " +
                                  $"{Conditions(costConditions)}");
            }
        }

        // Measured: the parent and every architecture in the engine, interleaved, the order reversed every round.
        var measureClock = Stopwatch.StartNew();
        var dtype = Checkpoint.ParseDtype(sc.MeasureDtype);
        var device = Runtime.Devices.Parse(sc.Device);
        var configs = new List<ModelConfig> { parentConfig };
        configs.AddRange(points.Select(p => parentConfig.WithBlocks(p.Layers.Select(l => new BlockConfig(byId[l.Attention].Attention!, byId[l.Ffn].Ffn!)))));
        var models = configs.Select(c => new CausalLm(c with { MaxPositionEmbeddings = Math.Max(c.MaxPositionEmbeddings, scenario.CacheCapacity) }, device, dtype).InitializeRandom(1)).ToList();
        List<EngineSample>[] samples;
        TimingConditions measuredConditions;
        try { samples = Runtime.CpuContention.Measure("measured rounds", () => EngineTimer.Interleaved(models, scenario, Math.Max(1, sc.WarmupRuns), rounds), out measuredConditions); }
        finally { foreach (var m in models) m.Dispose(); }
        // RAW_TSV=PATH: every timed request (model 0 = the parent, then the sweep points in table order) for offline analysis.
        if (Environment.GetEnvironmentVariable("RAW_TSV") is { Length: > 0 } raw)
            File.WriteAllLines(raw, new[] { "model\tname\tround\tprefill_s\tdecode_s" }.Concat(samples.SelectMany((list, m) => list.Select((x, r) =>
                $"{m}\t{(m == 0 ? "parent" : points[m - 1].Name)}\t{r}\t{x.PrefillSeconds.ToString("R", CultureInfo.InvariantCulture)}\t{x.DecodeSeconds.ToString("R", CultureInfo.InvariantCulture)}"))));
        double Median(IEnumerable<double> v) => TimingStatistic.Median.Apply(v.ToList());
        double parentMs = Median(samples[0].Select(s => s.TotalSeconds));
        var measured = points.Select((_, k) => parentMs / Median(samples[k + 1].Select(s => s.TotalSeconds))).ToArray();
        var spread = points.Select((_, k) => samples[0].Zip(samples[k + 1], (a, b) => a.TotalSeconds / b.TotalSeconds).ToArray()).ToArray();
        // 95% interval of the measured ratio: rounds resampled with replacement (parent and child of a round together).
        var random = new Random(0);
        var interval = points.Select((_, k) =>
        {
            var ratios = new double[2000];
            for (int b = 0; b < ratios.Length; b++)
            {
                int[] pick = Enumerable.Range(0, rounds).Select(_ => random.Next(rounds)).ToArray();
                ratios[b] = Median(pick.Select(r => samples[0][r].TotalSeconds)) / Median(pick.Select(r => samples[k + 1][r].TotalSeconds));
            }
            Array.Sort(ratios);
            return (Low: ratios[49], High: ratios[1949]);
        }).ToArray();
        Console.WriteLine($"  measured: {rounds} interleaved rounds of {models.Count} models in {measureClock.Elapsed.TotalSeconds:F1} s; parent request {parentMs * 1e3:F1} ms; load average {Load()}; {Conditions(measuredConditions)}");

        Console.WriteLine();
        Console.WriteLine($"| sweep point | search estimate | measured [95%] (round min–max) | " + string.Join(" | ", methods) + " |");
        Console.WriteLine("|---|---:|---:|" + string.Concat(methods.Select(_ => "---:|")));
        for (int k = 0; k < points.Count; k++)
            Console.WriteLine($"| {points[k].Name} | {F(points[k].Verified.ThroughputRatio)} | {F(measured[k])} [{F(interval[k].Low)}, {F(interval[k].High)}] ({F(spread[k].Min())}–{F(spread[k].Max())}) | " +
                              string.Join(" | ", methods.Select(m => $"{F(predicted[m][k])} ({Pct(predicted[m][k] / measured[k] - 1)})")) + " |");
        Console.WriteLine();
        Console.WriteLine("| method | mean abs error | max abs error | points within ±5% |");
        Console.WriteLine("|---|---:|---:|---:|");
        foreach (string m in methods)
        {
            var errors = points.Select((_, k) => Math.Abs(predicted[m][k] / measured[k] - 1)).ToArray();
            Console.WriteLine($"| {m} | {Pct(errors.Average())} | {Pct(errors.Max())} | {errors.Count(e => e <= 0.05)}/{errors.Length} |");
        }
    }

    static string F(double v) => v.ToString("0.000", CultureInfo.InvariantCulture);
    static string Pct(double v) => (100 * v).ToString("+0.0;-0.0;0.0", CultureInfo.InvariantCulture) + "%";
    static string Load() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "?";

    static string Conditions(TimingConditions c) =>
        $"{c.Threads} of {c.DefaultThreads} torch threads, others used {Percent(c.OthersShare)} of the cores ({Percent(c.OnTimingCores)} of the timing's)";

    static string Percent(double? share) => share is { } s ? $"{100 * s:F1}%" : "n/a";
}
