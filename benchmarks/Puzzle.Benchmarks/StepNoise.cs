using System.Diagnostics;
using System.Globalization;
using Puzzle.Checkpoints;
using Puzzle.Runtime;

namespace Puzzle.Benchmarks;

/// <summary>
/// Where the round-to-round noise of an engine timing comes from (issue 12): models generate at a scenario in
/// interleaved rounds (A B, B A, …) and every decode step is timed (the engine's per-step callback). Printed per
/// request: the wall time, prefill + steps × the median step, and the share of steps slower than 1.5x the median;
/// then per model the spread of both statistics over rounds, and the ratio of the last model to the first by each.
///   flock /tmp/puzzle-bench.lock Puzzle.Benchmarks step-noise ROUNDS MODEL_DIR MODEL_DIR... [batch=16 prompt=128 gen=128]
/// </summary>
public static class StepNoise
{
    public static void Run(int rounds, string[] dirs, int batch = 16, int prompt = 128, int generation = 128)
    {
        var models = dirs.Select(d => Checkpoint.Load(d, TorchSharp.torch.CPU, TorchSharp.torch.ScalarType.BFloat16)).ToList();
        var random = new Random(0);
        int vocab = models.Min(m => m.Config.VocabSize);
        int[][] prompts = Enumerable.Range(0, batch).Select(_ => Enumerable.Range(0, prompt).Select(_ => random.Next(vocab)).ToArray()).ToArray();
        var options = new GenerationOptions { MaxNewTokens = generation, StopAtEos = false };
        var wall = models.Select(_ => new List<double>()).ToArray();
        var robust = models.Select(_ => new List<double>()).ToArray();
        for (int round = -2; round < rounds; round++)
        {
            var order = Enumerable.Range(0, models.Count);
            foreach (int m in round % 2 == 0 ? order : order.Reverse())
            {
                var steps = new List<double>();
                long last = 0;
                var result = TextGenerator.Generate(models[m], prompts, options, [], _ =>
                {
                    long now = Stopwatch.GetTimestamp();
                    if (last != 0) steps.Add(Stopwatch.GetElapsedTime(last, now).TotalSeconds);
                    last = now;
                });
                if (round < 0) continue;
                var sorted = steps.Order().ToArray();
                double median = sorted[sorted.Length / 2];
                double total = result.PrefillSeconds + result.DecodeSeconds, estimate = result.PrefillSeconds + (generation - 1) * median;
                wall[m].Add(total);
                robust[m].Add(estimate);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"round {round} model {m}: wall {total * 1e3:F0} ms, prefill {result.PrefillSeconds * 1e3:F0} + median step {median * 1e3:F2} ms x {generation - 1} = {estimate * 1e3:F0} ms; steps > 1.5x median {steps.Count(s => s > 1.5 * median)}/{steps.Count}, max step {sorted[^1] * 1e3:F1} ms"));
            }
        }
        static string Spread(List<double> v) { var s = v.Order().ToArray(); return string.Create(CultureInfo.InvariantCulture, $"median {s[s.Length / 2] * 1e3:F0} ms, min {s[0] * 1e3:F0}, max {s[^1] * 1e3:F0} (max/min {s[^1] / s[0]:F2})"); }
        for (int m = 0; m < models.Count; m++)
            Console.WriteLine($"model {m} {dirs[m]}: wall {Spread(wall[m])}; prefill + steps x median step {Spread(robust[m])}");
        for (int m = 1; m < models.Count; m++)
        {
            var w = wall[0].Zip(wall[m], (a, b) => a / b).Order().ToArray();
            var r = robust[0].Zip(robust[m], (a, b) => a / b).Order().ToArray();
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"ratio model {m} / model 0 per round: wall median {w[w.Length / 2]:F3} (min {w[0]:F3}, max {w[^1]:F3}); robust median {r[r.Length / 2]:F3} (min {r[0]:F3}, max {r[^1]:F3})"));
        }
        foreach (var model in models) model.Dispose();
    }
}
