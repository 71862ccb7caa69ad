using System.Globalization;
using Puzzle.Checkpoints;
using Puzzle.Model;
using Puzzle.Stages;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Search;

namespace Puzzle.Benchmarks;

/// <summary>
/// Do trained weights time like random ones? The search's measured check times an architecture with random weights
/// (ArchitectureTimer); `puzzle bench` times the trained checkpoints. For each model directory, the checkpoint and a
/// random-weight model of its config are timed in the engine together, interleaved round by round in the run's scenario;
/// printed: each model's paired ratio to the first (trained and random) and the trained/random ratio of each model's
/// request time, with 95% signed-rank intervals (ArchitectureTimer.SignedRankInterval).
///   Puzzle.Benchmarks weights-speed RUN ROUNDS MODEL_DIR...      (the first model is the reference, e.g. the parent)
/// </summary>
public static class WeightsSpeed
{
    public static void Run(string runDir, int rounds, string[] dirs)
    {
        var run = new RunDirectory(runDir);
        var sc = run.Config.Scenario;
        var scenario = ScenarioCost.From(sc);
        var device = Runtime.Devices.Parse(sc.Device);
        var dtype = Checkpoint.ParseDtype(sc.MeasureDtype);
        var models = new List<CausalLm>();
        try
        {
            foreach (string dir in dirs) models.Add(Checkpoint.Load(dir, device, dtype));
            foreach (var m in models.ToList())
                models.Add(new CausalLm(m.Config with { MaxPositionEmbeddings = Math.Max(m.Config.MaxPositionEmbeddings, scenario.CacheCapacity) }, device, dtype).InitializeRandom(1));
            Console.WriteLine($"weights-speed: {dirs.Length} checkpoints and a random-weight model of each, {rounds} interleaved rounds, batch {sc.Batch}, " +
                              $"prompt {sc.PromptLength}, generation {sc.GenerationLength}, {sc.MeasureDtype}; load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
            var samples = Runtime.CpuContention.Measure("weights-speed", () => EngineTimer.Interleaved(models, scenario, Math.Max(1, sc.WarmupRuns), rounds), out var conditions);
            Console.WriteLine($"  {conditions.Threads} of {conditions.DefaultThreads} torch threads, others used {100 * (conditions.OthersShare ?? 0):F1}% of the cores");
            int n = dirs.Length;
            string Ratio(double[] r)
            {
                double median = Stat(r);
                var ci = ArchitectureTimer.SignedRankInterval(r, 0.95);
                return ci is { } c ? $"{F(median)} [{F(c.Low)}, {F(c.High)}]" : F(median);
            }
            double[] Paired(int reference, int model) => samples[reference].Zip(samples[model], (a, b) => a.TotalSeconds / b.TotalSeconds).ToArray();
            Console.WriteLine();
            Console.WriteLine("| model | request ms, trained | request ms, random | ratio to the first, trained | ratio to the first, random | random / trained time |");
            Console.WriteLine("|---|---:|---:|---:|---:|---:|");
            for (int k = 0; k < n; k++)
                Console.WriteLine($"| {dirs[k]} | {1e3 * Stat(samples[k].Select(s => s.TotalSeconds).ToArray()):F1} | {1e3 * Stat(samples[n + k].Select(s => s.TotalSeconds).ToArray()):F1} | " +
                                  $"{(k == 0 ? "1" : Ratio(Paired(0, k)))} | {(k == 0 ? "1" : Ratio(Paired(n, n + k)))} | {Ratio(Paired(n + k, k))} |");
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }

    static double Stat(double[] v) => TimingStatistic.Median.Apply(v.ToList());
    static string F(double v) => v.ToString("0.000", CultureInfo.InvariantCulture);
}
