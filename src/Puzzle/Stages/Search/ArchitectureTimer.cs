using System.Globalization;
using System.Text.Json.Nodes;
using Puzzle.Config;
using Puzzle.IO;
using Puzzle.Model;
using Puzzle.Runtime;
using Puzzle.Stages.Costs;

namespace Puzzle.Stages.Search;

/// <summary>
/// A measured throughput pair: the parent's and the child's end-to-end tokens/s, side by side. Where the first
/// timing was further from the cost model's estimate than <see cref="ArchitectureTimer.RetimeDisagreement"/> the pair
/// was timed again: <see cref="FirstRatio"/> holds the first ratio, and this is the two timings' rounds pooled (or the
/// second alone where the first was further than <see cref="ArchitectureTimer.SuspectDisagreement"/>: a burst of load);
/// <see cref="Suspect"/> says whether the result still disagrees by more than that.
/// </summary>
public sealed record ArchitectureTiming(double ParentTokensPerSecond, double ChildTokensPerSecond, int Rounds, bool Cached = false)
{
    /// <summary>
    /// The child's throughput over the parent's: the median over rounds of the parent's request time over the child's in
    /// the same round (<see cref="Benchmark.BenchRow.RoundRatios"/>), where the rounds are known; else the tokens/s figures' ratio.
    /// </summary>
    public double Ratio => ParentRoundMs.Count > 0 && ParentRoundMs.Count == ChildRoundMs.Count
        ? TimingStatistic.Median.Apply(Benchmark.BenchRow.RoundRatios(ChildRoundMs, ParentRoundMs))
        : ChildTokensPerSecond / ParentTokensPerSecond;
    /// <summary>The first timing's ratio when the pair was re-timed; null when timed once.</summary>
    public double? FirstRatio { get; init; }
    /// <summary>Re-timed and still more than <see cref="ArchitectureTimer.SuspectDisagreement"/> from the estimate.</summary>
    public bool Suspect { get; init; }
    /// <summary>Each round's request time of the parent and of the child, ms (empty where the timer gave only the figures).</summary>
    public IReadOnlyList<double> ParentRoundMs { get; init; } = [];
    public IReadOnlyList<double> ChildRoundMs { get; init; } = [];
    /// <summary>The two timings' rounds pooled, not the second timing alone.</summary>
    public bool Pooled { get; init; }

    /// <summary>
    /// Both timings' evidence as one: all their rounds (the ratio the median of every round's ratio; tokens/s from the
    /// median request times, which scale as 1 / time), or, where a timer gave no rounds, the geometric mean of the two
    /// tokens/s figures.
    /// </summary>
    public static ArchitectureTiming Pool(ArchitectureTiming a, ArchitectureTiming b)
    {
        double Geo(double x, double y) => Math.Sqrt(x * y);
        bool rounds = a.ParentRoundMs.Count > 0 && b.ParentRoundMs.Count > 0 && a.ChildRoundMs.Count > 0 && b.ChildRoundMs.Count > 0;
        if (!rounds)
            return new ArchitectureTiming(Geo(a.ParentTokensPerSecond, b.ParentTokensPerSecond), Geo(a.ChildTokensPerSecond, b.ChildTokensPerSecond), a.Rounds + b.Rounds) { Pooled = true };
        // tokens/s × median ms is the tokens of one request (the same scenario for both timings).
        double Tokens(double tps, IReadOnlyList<double> ms) => tps * TimingStatistic.Median.Apply([.. ms]);
        List<double> parentMs = [.. a.ParentRoundMs, .. b.ParentRoundMs], childMs = [.. a.ChildRoundMs, .. b.ChildRoundMs];
        return new ArchitectureTiming(Tokens(a.ParentTokensPerSecond, a.ParentRoundMs) / TimingStatistic.Median.Apply(parentMs),
            Tokens(a.ChildTokensPerSecond, a.ChildRoundMs) / TimingStatistic.Median.Apply(childMs), a.Rounds + b.Rounds)
        {
            ParentRoundMs = parentMs, ChildRoundMs = childMs, Pooled = true,
        };
    }
}

/// <summary>
/// Times an architecture against the parent's in the generation engine at the scenario (random weights: speed does
/// not depend on them), interleaved after the scenario's warm-up runs for its repeats (<see cref="EngineTimer"/>);
/// end-to-end throughput = batch × generation / median request time (<see cref="ScenarioCost"/>).
/// </summary>
public static class ArchitectureTimer
{
    /// <summary>How an architecture is timed against the parent (<see cref="Measure"/>; tests inject one that disagrees).</summary>
    public delegate ArchitectureTiming Timing(ModelConfig parent, ModelConfig child, ScenarioSection scenario);

    /// <summary>
    /// A measured check further than this from the estimate (|measured / estimated − 1|) is timed once more and the
    /// two timings' rounds pooled: the cost model holds to about ±5% on an idle machine (benchmarks/cost-model.sh),
    /// while one 9-round timing of a ~1 s request moved by 12% on this VM (the 3 Dec demo's seed 0: estimated 2.25x,
    /// measured 1.99x; seed 1 timed nearly the same child at 2.43x). One timing acted on alone made the search's
    /// choice, and so the child's quality, depend on a burst of load; twice the rounds halve the variance.
    /// </summary>
    public const double RetimeDisagreement = 0.05;

    /// <summary>
    /// A first timing further than this from the estimate is not pooled but replaced by the second (a burst of load:
    /// under heavy load a check returned 10.3x for an architecture estimated at 2.79x, the bench then measured 2.71x);
    /// a result still this far is kept but marked suspect. The cost model's error on the demo's sweep points stays
    /// within about ±20% even on a busy machine.
    /// </summary>
    public const double SuspectDisagreement = 0.35;

    /// <summary>Whether a measured ratio is further than <see cref="SuspectDisagreement"/> from the estimate.</summary>
    public static bool Disagrees(double measured, double estimated) => Disagrees(measured, estimated, SuspectDisagreement);

    static bool Disagrees(double measured, double estimated, double bound) => Math.Abs(measured / estimated - 1) > bound;

    public static ArchitectureTiming Measure(ModelConfig parent, ModelConfig child, ScenarioSection sc)
    {
        var scenario = ScenarioCost.From(sc);
        var dtype = Checkpoints.Checkpoint.ParseDtype(sc.MeasureDtype);
        var device = Devices.Parse(sc.Device);
        int capacity = scenario.CacheCapacity;
        using var a = new CausalLm(parent with { MaxPositionEmbeddings = Math.Max(parent.MaxPositionEmbeddings, capacity) }, device, dtype).InitializeRandom(1);
        using var b = new CausalLm(child with { MaxPositionEmbeddings = Math.Max(child.MaxPositionEmbeddings, capacity) }, device, dtype).InitializeRandom(1);
        int rounds = Math.Max(3, sc.Repeats);
        var samples = EngineTimer.Interleaved([a, b], scenario, Math.Max(1, sc.WarmupRuns), rounds);
        List<double> Ms(List<EngineSample> s) => s.Select(x => x.TotalSeconds * 1e3).ToList();
        double Tps(List<EngineSample> s) => scenario.TokensPerSecond(TimingStatistic.Median.Apply(Ms(s)));
        return new ArchitectureTiming(Tps(samples[0]), Tps(samples[1]), rounds) { ParentRoundMs = Ms(samples[0]), ChildRoundMs = Ms(samples[1]) };
    }

    /// <summary>
    /// <see cref="Measure"/> once per (parent, child architecture, scenario, measure dtype and device): results are kept
    /// in RUN/measured-checks.json, so a repeated search, another solution count or a rerun reuses them. Given the cost
    /// model's <paramref name="estimatedRatio"/>, a timing that disagrees with it by more than
    /// <see cref="SuspectDisagreement"/> is repeated once (parent and child interleaved again); the repeat is kept, and
    /// marked suspect with one warning (<paramref name="warn"/>, default <see cref="Log.Warning"/>) when it still disagrees.
    /// </summary>
    public static ArchitectureTiming MeasureCached(RunDirectory run, ModelConfig parent, ModelConfig child, double? estimatedRatio = null, string? name = null,
        Timing? measure = null, Action<string>? log = null, Action<string>? warn = null)
    {
        var sc = run.Config.Scenario;
        string key = Key(parent, child, sc);
        string path = run.Artifact(CacheFileName);
        var cache = JsonFile.ReadDerived(path, j => j["format_version"].Int() == 1 && j["entries"].Object() is not null)?.Object() ?? new JsonObject { ["format_version"] = 1, ["entries"] = new JsonObject() };
        if (cache["entries"]![key] is JsonObject hit)
            return new ArchitectureTiming(hit["parent_tokens_per_s"]!.GetValue<double>(), hit["child_tokens_per_s"]!.GetValue<double>(), hit["rounds"]!.GetValue<int>(), Cached: true)
            {
                FirstRatio = hit["first_ratio"]?.GetValue<double>(), Suspect = hit["suspect"]?.GetValue<bool>() ?? false,
                Pooled = hit["pooled"]?.GetValue<bool>() ?? false,
                ParentRoundMs = Rounds(hit["parent_round_ms"]), ChildRoundMs = Rounds(hit["child_round_ms"]),
            };
        measure ??= Measure;
        var timing = measure(parent, child, sc);
        var entry = new JsonObject();
        if (estimatedRatio is { } estimated && Disagrees(timing.Ratio, estimated, RetimeDisagreement))
        {
            var first = timing;
            var second = measure(parent, child, sc);
            // A first timing within the plausible band is evidence: pooled with the second. One beyond it is a burst: replaced.
            timing = (Disagrees(first.Ratio, estimated) ? second : ArchitectureTiming.Pool(first, second)) with { FirstRatio = first.Ratio };
            timing = timing with { Suspect = Disagrees(timing.Ratio, estimated) };
            string architecture = $"{name ?? "architecture"} [{string.Join("; ", child.Blocks)}]";
            string figures = $"estimated {estimated:F2}x, measured {first.Ratio:F2}x (parent {first.ParentTokensPerSecond:N0} tokens/s), " +
                             $"re-timed {second.Ratio:F2}x (parent {second.ParentTokensPerSecond:N0} tokens/s)";
            string kept = timing.Pooled ? $"both timings' {timing.Rounds} rounds pooled: {timing.Ratio:F2}x" : $"keeping {timing.Ratio:F2}x";
            if (timing.Suspect)
                (warn ?? Log.Warning)($"search: suspect measured check of {architecture}: {figures}; {kept}, marked \"suspect\" in {CacheFileName} " +
                            $"and the solution (more than {SuspectDisagreement:P0} from the estimate twice: a loaded machine or a cost model that does not hold; check with `puzzle bench`)");
            else
                (log ?? Log.Info)($"search: measured check of {architecture} re-timed (more than {RetimeDisagreement:P0} from the estimate): {figures}; {kept}");
            entry["first_ratio"] = first.Ratio;
            entry["first_parent_tokens_per_s"] = first.ParentTokensPerSecond;
            entry["first_child_tokens_per_s"] = first.ChildTokensPerSecond;
            entry["second_ratio"] = second.Ratio;
            entry["pooled"] = timing.Pooled;
            entry["estimated_ratio"] = estimated;
            entry["suspect"] = timing.Suspect;
        }
        // Re-read before writing: another process may have added entries meanwhile.
        cache = JsonFile.ReadDerived(path, j => j["format_version"].Int() == 1 && j["entries"].Object() is not null)?.Object() ?? cache;
        entry["parent_tokens_per_s"] = timing.ParentTokensPerSecond;
        entry["child_tokens_per_s"] = timing.ChildTokensPerSecond;
        entry["ratio"] = timing.Ratio;
        entry["rounds"] = timing.Rounds;
        if (timing.ParentRoundMs.Count > 0)
        {
            entry["parent_round_ms"] = new JsonArray(timing.ParentRoundMs.Select(v => (JsonNode)v).ToArray());
            entry["child_round_ms"] = new JsonArray(timing.ChildRoundMs.Select(v => (JsonNode)v).ToArray());
        }
        entry["child"] = string.Join("; ", child.Blocks);
        entry["measured_at"] = DateTime.UtcNow.ToString("o", CultureInfo.InvariantCulture);
        cache["entries"]![key] = entry;
        AtomicFile.WriteJson(path, cache);
        return timing;
    }

    static double[] Rounds(JsonNode? node) => node is JsonArray a ? [.. a.Select(v => v!.GetValue<double>())] : [];

    public const string CacheFileName = "measured-checks.json";

    /// <summary>What the measured ratio depends on: both architectures, the scenario, the dtype and device, warm-up and repeats.</summary>
    public static string Key(ModelConfig parent, ModelConfig child, ScenarioSection sc)
    {
        static string Shape(ModelConfig c) => $"{c.VocabSize},{c.HiddenSize},{c.NumAttentionHeads},{c.HeadDim},{c.TieWordEmbeddings}|{string.Join(";", c.Blocks)}";
        return RunDirectory.Hash($"measured-check-v1|{Shape(parent)}|{Shape(child)}|{sc.Batch},{sc.PromptLength},{sc.GenerationLength}|{sc.MeasureDtype}|{sc.Device}|{sc.WarmupRuns},{sc.Repeats}");
    }
}
