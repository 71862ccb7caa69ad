using Puzzle.Config;
using Puzzle.Model;
using Puzzle.Runtime;
using static TorchSharp.torch;

namespace Puzzle.Stages.Search;

/// <summary>
/// Times an architecture against the parent's in the generation engine at the scenario (random weights: speed does
/// not depend on them), alternating runs after a warm-up; the medians give the measured throughput ratio.
/// </summary>
public static class ArchitectureTimer
{
    public static (double ParentTokensPerSecond, double ChildTokensPerSecond) Measure(ModelConfig parent, ModelConfig child, ScenarioSection sc)
    {
        var dtype = Checkpoints.Checkpoint.ParseDtype(sc.MeasureDtype);
        var device = Devices.Parse(sc.Device);
        using var a = new CausalLm(parent, device, dtype).InitializeRandom(1);
        using var b = new CausalLm(child, device, dtype).InitializeRandom(1);
        var random = new Random(0);
        int[][] prompts = Enumerable.Range(0, sc.Batch).Select(_ => Enumerable.Range(0, sc.PromptLength).Select(_ => random.Next(parent.VocabSize)).ToArray()).ToArray();
        var options = new GenerationOptions { MaxNewTokens = sc.GenerationLength, StopAtEos = false };
        var times = new[] { new List<double>(), new List<double>() };
        for (int round = 0; round < sc.WarmupRuns + sc.Repeats; round++)                      // scenario.warmup_runs, then scenario.repeats timed
            foreach (var (model, i) in new[] { (a, 0), (b, 1) })
            {
                var result = TextGenerator.Generate(model, prompts, options, []);
                if (round >= sc.WarmupRuns) times[i].Add(result.PrefillSeconds + result.DecodeSeconds);
            }
        double tokens = (double)sc.Batch * sc.GenerationLength;
        return (tokens / Median(times[0]), tokens / Median(times[1]));
    }

    static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted[sorted.Length / 2];
    }
}
