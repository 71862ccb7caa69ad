using Puzzle.Model;
using Puzzle.Runtime;

namespace Puzzle.Stages.Costs;

/// <summary>How repeated timings reduce to one figure.</summary>
public enum TimingStatistic { Median, Min, Trimmed }

public static class TimingStatistics
{
    public static TimingStatistic Parse(string text) => text.ToLowerInvariant() switch
    {
        "median" => TimingStatistic.Median,
        "min" => TimingStatistic.Min,
        "trimmed" => TimingStatistic.Trimmed,
        _ => throw new PuzzleException($"timing statistic '{text}': expected median, min or trimmed"),
    };

    /// <summary>Median; minimum; or the mean of the middle half (the lowest and highest quarter dropped).</summary>
    public static double Apply(this TimingStatistic statistic, IReadOnlyCollection<double> values)
    {
        if (values.Count == 0) throw new ArgumentException("no values");
        var sorted = values.Order().ToArray();
        int n = sorted.Length;
        return statistic switch
        {
            TimingStatistic.Min => sorted[0],
            TimingStatistic.Trimmed => sorted.Skip(n / 4).Take(Math.Max(1, n - 2 * (n / 4))).Average(),
            _ => n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
        };
    }

    /// <summary>The statistic with the interquartile range, in the units given.</summary>
    public static Timing Summarise(this TimingStatistic statistic, IReadOnlyCollection<double> values)
    {
        var sorted = values.Order().ToArray();
        double Quantile(double q) => sorted[(int)Math.Round(q * (sorted.Length - 1))];
        return new Timing(statistic.Apply(values), Quantile(0.25), Quantile(0.75), values.Count);
    }
}

/// <summary>One engine request's times: prefill (to the first token) and all decode steps, seconds.</summary>
public sealed record EngineSample(double PrefillSeconds, double DecodeSeconds)
{
    public double TotalSeconds => PrefillSeconds + DecodeSeconds;
}

/// <summary>
/// Times models in the generation engine (<see cref="TextGenerator"/>: fused weights, one prefill, generation − 1
/// decode steps) at a scenario, interleaved: every round runs every model once, the order reversed every other round
/// (A B C, C B A, …), after warm-up rounds; so slow drifts and a busy neighbour hit every model alike.
/// </summary>
public static class EngineTimer
{
    static long _requests;

    /// <summary>Engine requests timed by this process so far (warm-up included): evidence that a cache was used.</summary>
    public static long Requests => Interlocked.Read(ref _requests);

    public static List<EngineSample>[] Interleaved(IReadOnlyList<CausalLm> models, ScenarioCost scenario, int warmup, int rounds, int seed = 0)
    {
        int vocab = models.Min(m => m.Config.VocabSize);
        var random = new Random(seed);
        int[][] prompts = Enumerable.Range(0, scenario.Batch).Select(_ => Enumerable.Range(0, scenario.PromptLength).Select(_ => random.Next(vocab)).ToArray()).ToArray();
        var options = new GenerationOptions { MaxNewTokens = scenario.GenerationLength, StopAtEos = false };
        var samples = models.Select(_ => new List<EngineSample>()).ToArray();
        for (int round = 0; round < warmup + rounds; round++)
        {
            var order = Enumerable.Range(0, models.Count);
            foreach (int m in round % 2 == 0 ? order : order.Reverse())
            {
                var result = TextGenerator.Generate(models[m], prompts, options, []);
                Interlocked.Increment(ref _requests);
                if (round >= warmup) samples[m].Add(new EngineSample(result.PrefillSeconds, result.DecodeSeconds));
            }
        }
        return samples;
    }
}
