using System.Globalization;
using System.Text.Json.Nodes;
using Puzzle.Config;
using Puzzle.IO;
using Puzzle.Model;
using Puzzle.Runtime;
using Puzzle.Stages.Costs;

namespace Puzzle.Stages.Search;

/// <summary>A measured throughput pair: the parent's and the child's end-to-end tokens/s, side by side.</summary>
public sealed record ArchitectureTiming(double ParentTokensPerSecond, double ChildTokensPerSecond, int Rounds, bool Cached = false)
{
    public double Ratio => ChildTokensPerSecond / ParentTokensPerSecond;
}

/// <summary>
/// Times an architecture against the parent's in the generation engine at the scenario (random weights: speed does
/// not depend on them), interleaved after the scenario's warm-up runs for its repeats (<see cref="EngineTimer"/>);
/// end-to-end throughput = batch × generation / median request time (<see cref="ScenarioCost"/>).
/// </summary>
public static class ArchitectureTimer
{
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
        double Tps(List<EngineSample> s) => scenario.TokensPerSecond(TimingStatistic.Median.Apply(s.Select(x => x.TotalSeconds * 1e3).ToList()));
        return new ArchitectureTiming(Tps(samples[0]), Tps(samples[1]), rounds);
    }

    /// <summary>
    /// <see cref="Measure"/> once per (parent, child architecture, scenario, measure dtype and device): results are kept
    /// in RUN/measured-checks.json, so a repeated search, another solution count or a rerun reuses them.
    /// </summary>
    public static ArchitectureTiming MeasureCached(RunDirectory run, ModelConfig parent, ModelConfig child)
    {
        var sc = run.Config.Scenario;
        string key = Key(parent, child, sc);
        string path = run.Artifact(CacheFileName);
        var cache = JsonFile.ReadDerived(path, j => j["format_version"].Int() == 1 && j["entries"].Object() is not null)?.Object() ?? new JsonObject { ["format_version"] = 1, ["entries"] = new JsonObject() };
        if (cache["entries"]![key] is JsonObject hit)
            return new ArchitectureTiming(hit["parent_tokens_per_s"]!.GetValue<double>(), hit["child_tokens_per_s"]!.GetValue<double>(), hit["rounds"]!.GetValue<int>(), Cached: true);
        var timing = Measure(parent, child, sc);
        // Re-read before writing: another process may have added entries meanwhile.
        cache = JsonFile.ReadDerived(path, j => j["format_version"].Int() == 1 && j["entries"].Object() is not null)?.Object() ?? cache;
        cache["entries"]![key] = new JsonObject
        {
            ["parent_tokens_per_s"] = timing.ParentTokensPerSecond, ["child_tokens_per_s"] = timing.ChildTokensPerSecond, ["ratio"] = timing.Ratio,
            ["rounds"] = timing.Rounds, ["child"] = string.Join("; ", child.Blocks), ["measured_at"] = DateTime.UtcNow.ToString("o", CultureInfo.InvariantCulture),
        };
        AtomicFile.WriteJson(path, cache);
        return timing;
    }

    public const string CacheFileName = "measured-checks.json";

    /// <summary>What the measured ratio depends on: both architectures, the scenario, the dtype and device, warm-up and repeats.</summary>
    public static string Key(ModelConfig parent, ModelConfig child, ScenarioSection sc)
    {
        static string Shape(ModelConfig c) => $"{c.VocabSize},{c.HiddenSize},{c.NumAttentionHeads},{c.HeadDim},{c.TieWordEmbeddings}|{string.Join(";", c.Blocks)}";
        return RunDirectory.Hash($"measured-check-v1|{Shape(parent)}|{Shape(child)}|{sc.Batch},{sc.PromptLength},{sc.GenerationLength}|{sc.MeasureDtype}|{sc.Device}|{sc.WarmupRuns},{sc.Repeats}");
    }
}
