using System.Text.Json.Nodes;

namespace Puzzle.Stages.Benchmark;

/// <summary>One generation's timings, in either engine: the prefill (which yields the first token) and the decode steps.</summary>
public sealed record BenchSample(double PrefillSeconds, double DecodeSeconds)
{
    public double TotalSeconds => PrefillSeconds + DecodeSeconds;
}

/// <summary>
/// One model's figures in a benchmark, the same shape for our engine (<see cref="BenchStage"/>) and llama.cpp
/// (<see cref="LlamaCppBench"/>): medians over the rounds, counted as <see cref="Puzzle.Stages.Costs.ScenarioCost"/> counts a request:
/// a prefill of batch × prompt tokens, then generation − 1 decode steps of the whole batch; end-to-end = batch ×
/// generation / (prefill + decode), the median of the rounds' totals.
/// </summary>
public sealed record BenchRow(double PrefillTokensPerSecond, double DecodeTokensPerSecond, double EndToEndTokensPerSecond,
    double TimeToFirstTokenMs, double TotalMs, int Samples)
{
    public static BenchRow FromSamples(BenchOptions o, IReadOnlyList<BenchSample> samples)
    {
        if (samples.Count == 0) throw new ArgumentException("no samples");
        double prefill = Median(samples.Select(s => s.PrefillSeconds)), decode = Median(samples.Select(s => s.DecodeSeconds));
        double total = Median(samples.Select(s => s.TotalSeconds));
        int decodeSteps = o.GenerationLength - 1;
        return new BenchRow(
            o.Batch * (double)o.PromptLength / prefill,
            decodeSteps == 0 ? 0.0 : o.Batch * (double)decodeSteps / decode,
            o.Batch * (double)o.GenerationLength / total,
            prefill * 1e3, total * 1e3, samples.Count);
    }

    /// <summary>The row's JSON (the keys of bench.json's models[]).</summary>
    public JsonObject ToJson() => new()
    {
        ["prefill_tokens_per_s"] = PrefillTokensPerSecond,
        ["decode_tokens_per_s"] = DecodeTokensPerSecond,
        ["end_to_end_tokens_per_s"] = EndToEndTokensPerSecond,
        ["time_to_first_token_ms"] = TimeToFirstTokenMs,
        ["total_ms"] = TotalMs,
        ["samples"] = Samples,
    };

    /// <summary>
    /// Per round: the first model's time over this model's (a throughput ratio from the same round), their range, and
    /// <c>end_to_end_ratio</c> as their median (the paired estimator; the ratio of the two models' median times stays as
    /// <c>end_to_end_ratio_of_medians</c>). Rounds run the models side by side (ABBA), so a round's ratio cancels the
    /// drift of the machine that the two medians, taken over different moments, do not: over 9-round windows of the
    /// cost-model benchmark's 15 rounds the paired median varied 0.2–2% (coefficient of variation) where the ratio of
    /// medians varied 2–7% (benchmarks/results/timing-2026-12-03.md).
    /// </summary>
    public static void AddRoundRatios(JsonObject json, IReadOnlyList<BenchSample> samples, IReadOnlyList<BenchSample> first)
    {
        var perRound = RoundRatios(samples.Select(s => s.TotalSeconds).ToList(), first.Select(s => s.TotalSeconds).ToList());
        json["end_to_end_ratio_rounds"] = new JsonArray(perRound.Select(x => (JsonNode)x).ToArray());
        json["end_to_end_ratio_min"] = perRound.Min();
        json["end_to_end_ratio_max"] = perRound.Max();
        // The median's distribution-free 95% interval (binomial order statistics; none below 6 rounds): what a second
        // run of the same bench could read, so two runs' ratios are compared against it, not against each other alone.
        if (Search.ArchitectureTimer.MedianInterval(perRound, 0.95) is { } ci)
            json["end_to_end_ratio_ci95"] = new JsonArray(ci.Low, ci.High);
        if (json["end_to_end_ratio"] is { } ofMedians) json["end_to_end_ratio_of_medians"] = ofMedians.GetValue<double>();
        json["end_to_end_ratio"] = Median(perRound);
    }

    /// <summary>Each round's throughput ratio: the reference's time over the model's, from the same round.</summary>
    public static double[] RoundRatios(IReadOnlyList<double> times, IReadOnlyList<double> referenceTimes)
    {
        if (times.Count != referenceTimes.Count) throw new ArgumentException($"{times.Count} rounds against {referenceTimes.Count}");
        return [.. times.Select((t, i) => referenceTimes[i] / t)];
    }

    /// <summary>Ratios of this row to <paramref name="first"/> (prefill, decode, end-to-end), written into <paramref name="json"/>.</summary>
    public void AddRatios(JsonObject json, BenchRow first)
    {
        json["prefill_ratio"] = PrefillTokensPerSecond / first.PrefillTokensPerSecond;
        json["decode_ratio"] = first.DecodeTokensPerSecond == 0 ? 0.0 : DecodeTokensPerSecond / first.DecodeTokensPerSecond;
        json["end_to_end_ratio"] = EndToEndTokensPerSecond / first.EndToEndTokensPerSecond;
    }

    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        if (sorted.Length == 0) throw new ArgumentException("no samples");
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
