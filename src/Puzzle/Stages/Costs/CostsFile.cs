using System.Text.Json.Nodes;
using Puzzle.IO;

namespace Puzzle.Stages.Costs;

/// <summary>A measured time: median and spread (interquartile range) over repeats, in milliseconds.</summary>
public sealed record Timing(double MedianMs, double P25Ms, double P75Ms, int Repeats)
{
    public static readonly Timing None = new(0, 0, 0, 0);

    public JsonObject ToJson() => new() { ["median_ms"] = Math.Round(MedianMs, 5), ["p25_ms"] = Math.Round(P25Ms, 5), ["p75_ms"] = Math.Round(P75Ms, 5), ["repeats"] = Repeats };

    public static Timing Read(JsonField j) => new(j["median_ms"].Double(), j["p25_ms"].Double(), j["p75_ms"].Double(), j["repeats"].Int());
}

/// <summary>One phase of a cost entry: the measured time and the analytic work.</summary>
public sealed record CostPhase(Timing Measured, double Flops, double Bytes)
{
    public CostPhase(Timing measured, PhaseWork work) : this(measured, work.Flops, work.Bytes) { }

    public JsonObject ToJson() => new() { ["measured"] = Measured.ToJson(), ["flops"] = Flops, ["bytes"] = Bytes };

    public static CostPhase Read(JsonField j) => new(Timing.Read(j["measured"]), j["flops"].Double(), j["bytes"].Double());
}

/// <summary>Roofline times of the two phases on one accelerator.</summary>
public sealed record RooflineTimes(double PrefillMs, double DecodeMs);

/// <summary>The cost of one (layer, variant): parameters, KV bytes per token (at the KV dtype), both phases, rooflines.</summary>
public sealed record CostEntry(int Layer, string Variant, string Kind, long Parameters, long ParameterBytes, long KvBytesPerToken,
    CostPhase Prefill, CostPhase Decode, IReadOnlyDictionary<string, RooflineTimes> Roofline)
{
    /// <summary>A no-op sublayer: the only kind without parameters.</summary>
    public bool IsNoOp => Parameters == 0;
}

/// <summary>
/// Outside the blocks (embedding, final norm, LM head and, when timed in the engine, sampling and the step loop) and
/// the per-phase factor that makes the parent's measured blocks add up to its measured whole.
/// </summary>
public sealed record NonBlockCost(long Parameters, long ParameterBytes, CostPhase Prefill, CostPhase Decode,
    IReadOnlyDictionary<string, RooflineTimes> Roofline, double BlockScalePrefill = 1, double BlockScaleDecode = 1)
{
    /// <summary>The anchored calibration (<see cref="CostMethod.Anchor"/>): the parent's whole less its parts, per phase (ms), added to the non-block time.</summary>
    public double OffsetPrefillMs { get; init; }
    public double OffsetDecodeMs { get; init; }

    /// <summary>
    /// What a layer that keeps both its attention and its FFN costs beyond the two subblocks (ms, prefill and one decode
    /// step; before <see cref="BlockScalePrefill"/> / <see cref="BlockScaleDecode"/>): measured on the parent's own
    /// layer (<see cref="BlockTimings.Result.Interaction"/>), 0 in files written before it was.
    /// </summary>
    public double InteractionPrefillMs { get; init; }
    public double InteractionDecodeMs { get; init; }
}

/// <summary>The parent measured whole, and the sum of its measured parts.</summary>
public sealed record WholeParentCost(Timing Prefill, Timing Decode, double SumOfPartsPrefillMs, double SumOfPartsDecodeMs);

/// <summary>How the blocks were timed (see <see cref="BlockCosts"/>).</summary>
public sealed record CostDevice(string Name, string Description, string MeasureDtype, string Cpu, int WarmupRuns, int Repeats, string Method)
{
    /// <summary>The torch intra-op threads the blocks were timed with on the CPU (fewer than the process's on a busy machine); null where not recorded.</summary>
    public int? Threads { get; init; }
}

/// <summary>
/// RUN/costs.json as a typed artifact. Format 2 (this version) records the engine's decode steps (generation − 1)
/// and the mean decode context over them; format 1 files (decode context prompt + generation / 2) still read, their
/// per-step times used with the same scenario model.
/// </summary>
public sealed record CostsFile(string Fingerprint, bool RooflineOnly, ScenarioCost Scenario, string WeightDtype, string KvDtype, CostDevice? Device,
    IReadOnlyList<AcceleratorSpec> Accelerators, NonBlockCost NonBlock, WholeParentCost? WholeParent, IReadOnlyList<CostEntry> Entries, double Seconds)
{
    public const string FileName = "costs.json";
    public const int CurrentFormat = 2;

    public int FormatVersion { get; init; } = CurrentFormat;

    /// <summary>Decode context the times were measured at (format 1 files used prompt + generation / 2).</summary>
    public int DecodeContext { get; init; } = -1;

    /// <summary>"measured" for this machine's times, or an accelerator key for its rooflines.</summary>
    public static string TargetKey(string target) => target.ToLowerInvariant() is "cpu" or "measured" ? "measured" : Costs.Accelerators.Get(target).Key;

    /// <summary>Time of one request spent in a block (ms) on the target: calibrated measured times, or the rooflines.</summary>
    public double BlockTimeMs(CostEntry e, string target) => target == "measured"
        ? Scenario.TimeMs(NonBlock.BlockScalePrefill * e.Prefill.Measured.MedianMs, NonBlock.BlockScaleDecode * e.Decode.Measured.MedianMs)
        : Scenario.TimeMs(e.Roofline[target].PrefillMs, e.Roofline[target].DecodeMs);

    /// <summary>Time of one request spent outside the blocks (ms) on the target.</summary>
    public double NonBlockTimeMs(string target) => target == "measured"
        ? Scenario.TimeMs(NonBlock.Prefill.Measured.MedianMs + NonBlock.OffsetPrefillMs, NonBlock.Decode.Measured.MedianMs + NonBlock.OffsetDecodeMs)
        : Scenario.TimeMs(NonBlock.Roofline[target].PrefillMs, NonBlock.Roofline[target].DecodeMs);

    /// <summary>
    /// Time of one request (ms) a layer that keeps both sublayers (neither a no-op) adds beyond its two blocks on the
    /// target: the measured interaction, calibrated as the blocks are; 0 on the rooflines.
    /// </summary>
    public double PairTimeMs(string target) => target == "measured"
        ? Scenario.TimeMs(NonBlock.BlockScalePrefill * NonBlock.InteractionPrefillMs, NonBlock.BlockScaleDecode * NonBlock.InteractionDecodeMs)
        : 0;

    /// <summary>Predicted time of one request (ms) of the model made of these (layer, variant) ids on the target.</summary>
    public double PredictTimeMs(IEnumerable<string> variantIds, string target)
    {
        var byId = Entries.ToDictionary(e => e.Variant);
        var entries = variantIds.Select(id => byId.TryGetValue(id, out var e) ? e
            : throw new PuzzleException($"costs: no entry for variant {id} (rerun `puzzle costs` for this search space)")).ToList();
        // A layer with both sublayers present carries the interaction.
        int pairs = entries.Where(e => !e.IsNoOp).GroupBy(e => e.Layer).Count(g => g.Select(e => e.Kind).Distinct().Count() == 2);
        return NonBlockTimeMs(target) + entries.Sum(e => BlockTimeMs(e, target)) + pairs * PairTimeMs(target);
    }

    /// <summary>Memory of a block at the scenario: its weights and its share of the KV cache.</summary>
    public double BlockMemoryBytes(CostEntry e) => e.ParameterBytes + Scenario.KvCacheBytes(e.KvBytesPerToken);

    public JsonObject ToJson()
    {
        static JsonObject Roofline(IReadOnlyDictionary<string, RooflineTimes> r) =>
            new(r.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)new JsonObject { ["prefill_ms"] = kv.Value.PrefillMs, ["decode_ms"] = kv.Value.DecodeMs })));
        var nonBlock = new JsonObject();
        if (!RooflineOnly)
        {
            nonBlock["block_scale_prefill"] = Math.Round(NonBlock.BlockScalePrefill, 5);
            nonBlock["block_scale_decode"] = Math.Round(NonBlock.BlockScaleDecode, 5);
            if (NonBlock.OffsetPrefillMs != 0 || NonBlock.OffsetDecodeMs != 0)
            {
                nonBlock["offset_prefill_ms"] = Math.Round(NonBlock.OffsetPrefillMs, 5);
                nonBlock["offset_decode_ms"] = Math.Round(NonBlock.OffsetDecodeMs, 5);
            }
            if (NonBlock.InteractionPrefillMs != 0 || NonBlock.InteractionDecodeMs != 0)
            {
                nonBlock["interaction_prefill_ms"] = Math.Round(NonBlock.InteractionPrefillMs, 5);
                nonBlock["interaction_decode_ms"] = Math.Round(NonBlock.InteractionDecodeMs, 5);
            }
        }
        nonBlock["parameters"] = NonBlock.Parameters;
        nonBlock["parameter_bytes"] = NonBlock.ParameterBytes;
        nonBlock["prefill"] = NonBlock.Prefill.ToJson();
        nonBlock["decode"] = NonBlock.Decode.ToJson();
        nonBlock["roofline"] = Roofline(NonBlock.Roofline);
        var o = new JsonObject { ["format_version"] = FormatVersion, ["fingerprint"] = Fingerprint };
        if (RooflineOnly) o["roofline_only"] = true;
        o["scenario"] = new JsonObject
        {
            ["batch"] = Scenario.Batch, ["prompt_length"] = Scenario.PromptLength, ["generation_length"] = Scenario.GenerationLength,
            ["decode_context"] = DecodeContext >= 0 ? DecodeContext : Scenario.DecodeContext, ["decode_steps"] = Scenario.DecodeSteps,
            ["weight_dtype"] = WeightDtype, ["kv_dtype"] = KvDtype, ["weight_bytes"] = Scenario.WeightBytes, ["kv_bytes"] = Scenario.KvBytes,
        };
        if (Device is { } d)
            o["device"] = new JsonObject
            {
                ["name"] = d.Name, ["description"] = d.Description, ["measure_dtype"] = d.MeasureDtype, ["cpu"] = d.Cpu,
                ["warmup_runs"] = d.WarmupRuns, ["repeats"] = d.Repeats, ["method"] = d.Method,
            };
        if (Device?.Threads is { } threads) o["device"]!["threads"] = threads;
        o["accelerators"] = new JsonArray(Accelerators.Select(a => (JsonNode)new JsonObject
        {
            ["key"] = a.Key, ["name"] = a.Name, ["bf16_flops"] = a.Bf16Flops, ["fp8_flops"] = a.Fp8Flops,
            ["bandwidth_bytes_per_s"] = a.Bandwidth, ["memory_bytes"] = a.MemoryBytes, ["source"] = a.Source,
        }).ToArray());
        o["non_block"] = nonBlock;
        if (WholeParent is { } w)
            o["whole_parent"] = new JsonObject
            {
                ["prefill"] = w.Prefill.ToJson(), ["decode"] = w.Decode.ToJson(),
                ["sum_of_parts_prefill_ms"] = Math.Round(w.SumOfPartsPrefillMs, 5), ["sum_of_parts_decode_ms"] = Math.Round(w.SumOfPartsDecodeMs, 5),
                ["additivity_ratio_prefill"] = Math.Round(w.SumOfPartsPrefillMs / w.Prefill.MedianMs, 4),
                ["additivity_ratio_decode"] = Math.Round(w.SumOfPartsDecodeMs / w.Decode.MedianMs, 4),
            };
        o["entries"] = new JsonArray(Entries.Select(e => (JsonNode)new JsonObject
        {
            ["layer"] = e.Layer, ["variant"] = e.Variant, ["kind"] = e.Kind, ["parameters"] = e.Parameters, ["parameter_bytes"] = e.ParameterBytes,
            ["kv_bytes_per_token"] = e.KvBytesPerToken, ["prefill"] = e.Prefill.ToJson(), ["decode"] = e.Decode.ToJson(), ["roofline"] = Roofline(e.Roofline),
        }).ToArray());
        o["seconds"] = Math.Round(Seconds, 2);
        return o;
    }

    public void Write(string path) => AtomicFile.WriteJson(path, ToJson());

    public static CostsFile Read(string path) => Parse(JsonFile.Read(path, "costs file"));

    /// <summary>A stored costs file, or null when absent, torn, of another format or not for <paramref name="fingerprint"/>.</summary>
    public static CostsFile? ReadIfCurrent(string path, string fingerprint)
    {
        var json = JsonFile.ReadDerived(path, c => c["entries"].Items().Count > 0 && c["scenario"]["batch"].Int() > 0);
        if (json is not { } j || j["fingerprint"].OptionalString() != fingerprint || j["format_version"].OptionalInt() != CurrentFormat) return null;
        return Parse(j);
    }

    public static CostsFile Parse(JsonField j)
    {
        int format = j["format_version"].Int();
        if (format is < 1 or > CurrentFormat)
            throw new PuzzleException($"{j.File}: format_version {format} is not one this program reads (1 to {CurrentFormat}); rerun `puzzle costs`");
        static IReadOnlyDictionary<string, RooflineTimes> Roofline(JsonField r) =>
            r.Properties().ToDictionary(p => p.Name, p => new RooflineTimes(p.Value["prefill_ms"].Double(), p.Value["decode_ms"].Double()));
        var s = j["scenario"];
        var scenario = ScenarioCost.Create(s["batch"].Int(), s["prompt_length"].Int(), s["generation_length"].Int(), s["weight_bytes"].Int(), s["kv_bytes"].Int(), $"{j.File}: scenario");
        var nb = j["non_block"];
        var nonBlock = new NonBlockCost(nb["parameters"].Long(), nb["parameter_bytes"].Long(), CostPhase.Read(nb["prefill"]), CostPhase.Read(nb["decode"]),
            Roofline(nb["roofline"]), nb["block_scale_prefill"].OptionalDouble() ?? 1, nb["block_scale_decode"].OptionalDouble() ?? 1)
        {
            OffsetPrefillMs = nb["offset_prefill_ms"].OptionalDouble() ?? 0, OffsetDecodeMs = nb["offset_decode_ms"].OptionalDouble() ?? 0,
            InteractionPrefillMs = nb["interaction_prefill_ms"].OptionalDouble() ?? 0, InteractionDecodeMs = nb["interaction_decode_ms"].OptionalDouble() ?? 0,
        };
        CostDevice? device = j["device"].Exists
            ? new CostDevice(j["device"]["name"].String(), j["device"]["description"].String(), j["device"]["measure_dtype"].String(), j["device"]["cpu"].String(),
                j["device"]["warmup_runs"].Int(), j["device"]["repeats"].Int(), j["device"]["method"].OptionalString() ?? "isolated") { Threads = j["device"]["threads"].OptionalInt() }
            : null;
        WholeParentCost? whole = j["whole_parent"].Exists
            ? new WholeParentCost(Timing.Read(j["whole_parent"]["prefill"]), Timing.Read(j["whole_parent"]["decode"]),
                j["whole_parent"]["sum_of_parts_prefill_ms"].Double(), j["whole_parent"]["sum_of_parts_decode_ms"].Double())
            : null;
        var accelerators = j["accelerators"].Items().Select(a => new AcceleratorSpec(a["key"].String(), a["name"].String(), a["bf16_flops"].Double(),
            a["fp8_flops"].OptionalDouble(), a["bandwidth_bytes_per_s"].Double(), a["memory_bytes"].Double(), a["source"].String())).ToList();
        var entries = j["entries"].Items().Select(e => new CostEntry(e["layer"].Int(), e["variant"].String(), e["kind"].String(), e["parameters"].Long(),
            e["parameter_bytes"].Long(), e["kv_bytes_per_token"].Long(), CostPhase.Read(e["prefill"]), CostPhase.Read(e["decode"]), Roofline(e["roofline"]))).ToList();
        if (entries.Count == 0) throw new PuzzleException($"{j.File}: entries is empty; rerun `puzzle costs`");
        return new CostsFile(j["fingerprint"].String(), j["roofline_only"].OptionalBool() == true, scenario, s["weight_dtype"].String(), s["kv_dtype"].String(),
            device, accelerators, nonBlock, whole, entries, j["seconds"].OptionalDouble() ?? 0)
        {
            FormatVersion = format, DecodeContext = s["decode_context"].Int(),
        };
    }
}
