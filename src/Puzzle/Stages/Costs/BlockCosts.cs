using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Config;
using Puzzle.Domain;
using Puzzle.IO;
using Puzzle.Model;
using Puzzle.Stages.Library;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Stages.Costs;

/// <summary>FLOPs and bytes moved by one phase (prefill of the prompt, or one decode step).</summary>
public sealed record PhaseWork(double Flops, double Bytes);

/// <summary>A measured time: median and spread (interquartile range) over repeats, in milliseconds.</summary>
public sealed record Timing(double MedianMs, double P25Ms, double P75Ms, int Repeats)
{
    public JsonObject ToJson() => new() { ["median_ms"] = Math.Round(MedianMs, 5), ["p25_ms"] = Math.Round(P25Ms, 5), ["p75_ms"] = Math.Round(P75Ms, 5), ["repeats"] = Repeats };
}

/// <summary>
/// Stage 5: per-(layer, variant) costs (design.md 5): parameters, bytes, KV bytes per token, measured prefill and
/// decode-step time on the run's device, analytic FLOPs and bytes per phase, and roofline estimates for named
/// accelerators. The additive model (block = attention + FFN, model = blocks + non-block) is checked against
/// whole-model measurements in the same run.
/// </summary>
public static class BlockCosts
{
    public const string FileName = RunDirectory.CostsFile;

    /// <summary>Measured and roofline costs; with <paramref name="rooflineOnly"/> nothing is loaded or timed (a parent of any size,
    /// e.g. an 80-layer 70B planned for H100s from its config.json alone): only the named accelerators' costs are valid targets.</summary>
    public static JsonObject Run(RunDirectory run, Action<string>? log = null, bool rooflineOnly = false)
    {
        log ??= Log.Info;
        var clock = Stopwatch.StartNew();
        var sc = run.Config.Scenario;
        if (sc.Batch <= 0 || sc.PromptLength <= 0 || sc.GenerationLength <= 0)
            throw new PuzzleException($"scenario: batch ({sc.Batch}), prompt_length ({sc.PromptLength}) and generation_length ({sc.GenerationLength}) must be positive");
        var device = Runtime.Devices.Parse(sc.Device);
        var measureDtype = Checkpoint.ParseDtype(sc.MeasureDtype);
        int weightBytes = DtypeBytes(sc.WeightDtype, "scenario.weight_dtype"), kvBytes = DtypeBytes(sc.KvDtype, "scenario.kv_dtype");
        int decodeContext = sc.PromptLength + sc.GenerationLength / 2;
        string fingerprint = ArtifactKeys.Costs(run, rooflineOnly);
        string path = run.Artifact(FileName);
        if (JsonFile.ReadDerived(path, c => c["entries"].Items().Count > 0 && c["scenario"]["batch"].Int() > 0) is { } stored && stored["fingerprint"].OptionalString() == fingerprint)
        {
            log($"costs: {path} is up to date for this scenario; reusing it");
            return stored.Object();
        }

        if (rooflineOnly) return RooflineOnly(run, fingerprint, path, clock, log);
        using var parent = Checkpoint.Load(run.ParentDir, device, measureDtype);
        var config = parent.Config;
        var variants = run.Variants.All;
        log($"costs: scenario batch {sc.Batch}, prompt {sc.PromptLength}, generation {sc.GenerationLength} (decode context {decodeContext}), " +
            $"measured in {measureDtype} on {Runtime.Devices.Describe(device)}");
        var timer = new Timer(sc.WarmupRuns, sc.Repeats, device);
        var measured = new Dictionary<string, (Timing Prefill, Timing Decode)>();                 // same config -> same cost
        var entries = new JsonArray();
        foreach (var v in variants)
        {
            string key = v.Kind == SubblockKind.Attention ? $"attn:{v.Attention}" : $"ffn:{v.Ffn}";
            if (!measured.TryGetValue(key, out var timing))
                measured[key] = timing = MeasureSubblock(config, v, sc, decodeContext, device, measureDtype, timer);
            long parameters = v.Kind == SubblockKind.Attention ? config.AttentionParameters(v.Attention!) : config.FfnParameters(v.Ffn!);
            var prefill = Work(config, v, sc.Batch, sc.PromptLength, 0, weightBytes, kvBytes);
            var decode = Work(config, v, sc.Batch, 1, decodeContext, weightBytes, kvBytes);
            entries.Add(new JsonObject
            {
                ["layer"] = v.Layer,
                ["variant"] = v.Id,
                ["kind"] = v.Kind == SubblockKind.Attention ? "attention" : "ffn",
                ["parameters"] = parameters,
                ["parameter_bytes"] = parameters * weightBytes,
                ["kv_bytes_per_token"] = v.Kind == SubblockKind.Attention ? config.KvBytesPerToken(v.Attention!, kvBytes) : 0,
                ["prefill"] = Phase(timing.Prefill, prefill),
                ["decode"] = Phase(timing.Decode, decode),
                ["roofline"] = Roofline(prefill, decode, sc),
            });
        }

        // Outside the blocks: embedding lookup, final norm, LM head (last position only at prefill).
        var nonBlockTiming = MeasureNonBlock(parent, sc, timer);
        long nonBlockParameters = config.NonBlockParameters;
        var nonBlockPrefill = new PhaseWork(2.0 * sc.Batch * config.HiddenSize * config.VocabSize,
            (double)nonBlockParameters * weightBytes + 2.0 * sc.Batch * sc.PromptLength * config.HiddenSize * 2);
        var nonBlockDecode = new PhaseWork(2.0 * sc.Batch * config.HiddenSize * config.VocabSize,
            (double)config.VocabSize * config.HiddenSize * weightBytes + 2.0 * sc.Batch * config.HiddenSize * 2);

        // Validate the additive model on the parent: sum of its parts vs the whole, measured here.
        var whole = MeasureWhole(parent, sc, decodeContext, timer);
        double partsPrefill = nonBlockTiming.Prefill.MedianMs, partsDecode = nonBlockTiming.Decode.MedianMs;
        foreach (var v in variants.Where(v => v.IsParent))
        {
            var t = measured[v.Kind == SubblockKind.Attention ? $"attn:{v.Attention}" : $"ffn:{v.Ffn}"];
            partsPrefill += t.Prefill.MedianMs;
            partsDecode += t.Decode.MedianMs;
        }
        var result = new JsonObject
        {
            ["format_version"] = 1,
            ["fingerprint"] = fingerprint,
            ["scenario"] = new JsonObject
            {
                ["batch"] = sc.Batch, ["prompt_length"] = sc.PromptLength, ["generation_length"] = sc.GenerationLength,
                ["decode_context"] = decodeContext, ["weight_dtype"] = sc.WeightDtype, ["kv_dtype"] = sc.KvDtype,
                ["weight_bytes"] = weightBytes, ["kv_bytes"] = kvBytes,
            },
            ["device"] = new JsonObject
            {
                ["name"] = sc.Device, ["description"] = Runtime.Devices.Describe(device), ["measure_dtype"] = sc.MeasureDtype,
                ["cpu"] = CpuModel(), ["warmup_runs"] = sc.WarmupRuns, ["repeats"] = sc.Repeats,
            },
            ["accelerators"] = new JsonArray(Accelerators.All.Select(a => (JsonNode)new JsonObject
            {
                ["key"] = a.Key, ["name"] = a.Name, ["bf16_flops"] = a.Bf16Flops, ["fp8_flops"] = a.Fp8Flops,
                ["bandwidth_bytes_per_s"] = a.Bandwidth, ["memory_bytes"] = a.MemoryBytes, ["source"] = a.Source,
            }).ToArray()),
            ["non_block"] = new JsonObject
            {
                // Blocks inside the whole model cost more than alone (residual adds, scopes, dispatch): the factor that
                // makes the parent's measured parts add up to its measured whole, applied to every block on the
                // measured target. Per-layer work scales with the block, so a fully no-op layer costs nothing.
                ["block_scale_prefill"] = Math.Round((whole.Prefill.MedianMs - nonBlockTiming.Prefill.MedianMs) / (partsPrefill - nonBlockTiming.Prefill.MedianMs), 5),
                ["block_scale_decode"] = Math.Round((whole.Decode.MedianMs - nonBlockTiming.Decode.MedianMs) / (partsDecode - nonBlockTiming.Decode.MedianMs), 5),
                ["parameters"] = nonBlockParameters,
                ["parameter_bytes"] = nonBlockParameters * weightBytes,
                ["prefill"] = Phase(nonBlockTiming.Prefill, nonBlockPrefill),
                ["decode"] = Phase(nonBlockTiming.Decode, nonBlockDecode),
                ["roofline"] = Roofline(nonBlockPrefill, nonBlockDecode, sc),
            },
            ["whole_parent"] = new JsonObject
            {
                ["prefill"] = whole.Prefill.ToJson(),
                ["decode"] = whole.Decode.ToJson(),
                ["sum_of_parts_prefill_ms"] = Math.Round(partsPrefill, 5),
                ["sum_of_parts_decode_ms"] = Math.Round(partsDecode, 5),
                ["additivity_ratio_prefill"] = Math.Round(partsPrefill / whole.Prefill.MedianMs, 4),
                ["additivity_ratio_decode"] = Math.Round(partsDecode / whole.Decode.MedianMs, 4),
            },
            ["entries"] = entries,
            ["seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 2),
        };
        AtomicFile.WriteJson(path, result);
        log($"costs: {entries.Count} (layer, variant) entries, {measured.Count} distinct subblocks measured; parent prefill {whole.Prefill.MedianMs:F2} ms " +
            $"(parts {partsPrefill:F2}, ratio {partsPrefill / whole.Prefill.MedianMs:F3}), decode step {whole.Decode.MedianMs:F3} ms " +
            $"(parts {partsDecode:F3}, ratio {partsDecode / whole.Decode.MedianMs:F3}) in {clock.Elapsed.TotalSeconds:F1} s -> {path}");
        return result;
    }

    static JsonObject RooflineOnly(RunDirectory run, string fingerprint, string path, Stopwatch clock, Action<string> log)
    {
        var sc = run.Config.Scenario;
        var config = HfConfig.Read(run.ParentDir);
        int weightBytes = DtypeBytes(sc.WeightDtype, "scenario.weight_dtype"), kvBytes = DtypeBytes(sc.KvDtype, "scenario.kv_dtype");
        int decodeContext = sc.PromptLength + sc.GenerationLength / 2;
        var none = new Timing(0, 0, 0, 0);
        var entries = new JsonArray();
        foreach (var v in run.Variants.All)
        {
            long parameters = v.Kind == SubblockKind.Attention ? config.AttentionParameters(v.Attention!) : config.FfnParameters(v.Ffn!);
            var prefill = Work(config, v, sc.Batch, sc.PromptLength, 0, weightBytes, kvBytes);
            var decode = Work(config, v, sc.Batch, 1, decodeContext, weightBytes, kvBytes);
            entries.Add(new JsonObject
            {
                ["layer"] = v.Layer, ["variant"] = v.Id, ["kind"] = v.Kind == SubblockKind.Attention ? "attention" : "ffn",
                ["parameters"] = parameters, ["parameter_bytes"] = parameters * weightBytes,
                ["kv_bytes_per_token"] = v.Kind == SubblockKind.Attention ? config.KvBytesPerToken(v.Attention!, kvBytes) : 0,
                ["prefill"] = Phase(none, prefill), ["decode"] = Phase(none, decode), ["roofline"] = Roofline(prefill, decode, sc),
            });
        }
        var nonBlockPrefill = new PhaseWork(2.0 * sc.Batch * config.HiddenSize * config.VocabSize,
            (double)config.NonBlockParameters * weightBytes + 2.0 * sc.Batch * sc.PromptLength * config.HiddenSize * 2);
        var nonBlockDecode = new PhaseWork(2.0 * sc.Batch * config.HiddenSize * config.VocabSize,
            (double)config.VocabSize * config.HiddenSize * weightBytes + 2.0 * sc.Batch * config.HiddenSize * 2);
        var result = new JsonObject
        {
            ["format_version"] = 1, ["fingerprint"] = fingerprint, ["roofline_only"] = true,
            ["scenario"] = new JsonObject
            {
                ["batch"] = sc.Batch, ["prompt_length"] = sc.PromptLength, ["generation_length"] = sc.GenerationLength,
                ["decode_context"] = decodeContext, ["weight_dtype"] = sc.WeightDtype, ["kv_dtype"] = sc.KvDtype,
                ["weight_bytes"] = weightBytes, ["kv_bytes"] = kvBytes,
            },
            ["accelerators"] = new JsonArray(Accelerators.All.Select(a => (JsonNode)new JsonObject
            {
                ["key"] = a.Key, ["name"] = a.Name, ["bf16_flops"] = a.Bf16Flops, ["fp8_flops"] = a.Fp8Flops,
                ["bandwidth_bytes_per_s"] = a.Bandwidth, ["memory_bytes"] = a.MemoryBytes, ["source"] = a.Source,
            }).ToArray()),
            ["non_block"] = new JsonObject
            {
                ["parameters"] = config.NonBlockParameters, ["parameter_bytes"] = config.NonBlockParameters * weightBytes,
                ["prefill"] = Phase(none, nonBlockPrefill), ["decode"] = Phase(none, nonBlockDecode), ["roofline"] = Roofline(nonBlockPrefill, nonBlockDecode, sc),
            },
            ["entries"] = entries,
            ["seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 2),
        };
        AtomicFile.WriteJson(path, result);
        log($"costs: {entries.Count} (layer, variant) entries from the rooflines only (nothing measured) -> {path}");
        return result;
    }

    static JsonObject Phase(Timing timing, PhaseWork work) => new()
    {
        ["measured"] = timing.ToJson(), ["flops"] = work.Flops, ["bytes"] = work.Bytes,
    };

    static JsonObject Roofline(PhaseWork prefill, PhaseWork decode, ScenarioSection sc)
    {
        var o = new JsonObject();
        foreach (var a in Accelerators.All)
            o[a.Key] = new JsonObject
            {
                ["prefill_ms"] = a.Seconds(prefill.Flops, prefill.Bytes, sc.WeightDtype) * 1e3,
                ["decode_ms"] = a.Seconds(decode.Flops, decode.Bytes, sc.WeightDtype) * 1e3,
            };
        return o;
    }

    public static int DtypeBytes(string dtype, string field) => dtype switch
    {
        "float32" => 4,
        "bfloat16" or "float16" => 2,
        "fp8" or "int8" => 1,
        _ => throw new PuzzleException($"{field}: unknown dtype '{dtype}' (float32, bfloat16, float16, fp8, int8)"),
    };

    /// <summary>Analytic FLOPs and bytes of one sublayer for <paramref name="tokens"/> new positions per sequence.</summary>
    public static PhaseWork Work(ModelConfig c, SubblockVariant v, int batch, int tokens, int past, int weightBytes, int kvBytes)
    {
        double n = (double)batch * tokens, h = c.HiddenSize, activations = 2 * n * h * 2;     // read + write, 2-byte activations
        if (v.IsNoOp) return new PhaseWork(0, 0);
        if (v.Kind == SubblockKind.Attention)
        {
            var a = v.Attention!;
            if (a.ReplaceWithLinear) return new PhaseWork(2 * n * h * h, h * h * weightBytes + activations);
            double kv = a.NumKeyValueHeads!.Value, heads = c.NumAttentionHeads, d = c.HeadDim;
            double projections = 2 * n * h * (2 * heads * d + 2 * kv * d);
            double pairs = batch * (tokens * (double)past + tokens * (tokens + 1.0) / 2);       // causal query-key pairs
            double attention = 2 * 2 * heads * d * pairs;
            double kvTraffic = batch * (past + tokens) * 2 * kv * d * kvBytes;                   // read the cache (incl. the new entries)
            return new PhaseWork(projections + attention, c.AttentionParameters(a) * (double)weightBytes + kvTraffic + activations);
        }
        var f = v.Ffn!;
        if (f.ReplaceWithLinear) return new PhaseWork(2 * n * h * h, h * h * weightBytes + activations);
        double width = f.IntermediateSize!.Value;
        return new PhaseWork(2 * n * 3 * h * width, c.FfnParameters(f) * (double)weightBytes + activations + 3 * n * width * 2);
    }

    /// <summary>Warm-up, then repeats timed on a <see cref="Runtime.DeviceClock"/> (synchronised before every read on CUDA).</summary>
    public sealed class Timer(int warmup, int repeats, Device device, Action? synchronize = null)
    {
        public Timing Measure(Action action)
        {
            for (int i = 0; i < warmup; i++) action();
            var samples = new double[repeats];
            var clock = new Runtime.DeviceClock(device, synchronize);
            for (int i = 0; i < repeats; i++)
            {
                clock.Restart();
                action();
                samples[i] = clock.ElapsedMilliseconds;
            }
            Array.Sort(samples);
            double Quantile(double q) => samples[(int)Math.Round(q * (samples.Length - 1))];
            return new Timing(Quantile(0.5), Quantile(0.25), Quantile(0.75), repeats);
        }
    }

    /// <summary>Times h + sublayer(norm(h)) for a prefill of the prompt and one decode step at the decode context.</summary>
    static (Timing Prefill, Timing Decode) MeasureSubblock(ModelConfig config, SubblockVariant v, ScenarioSection sc, int context,
        Device device, ScalarType dtype, Timer timer)
    {
        if (v.IsNoOp) return (new Timing(0, 0, 0, 0), new Timing(0, 0, 0, 0));
        var block = v.Kind == SubblockKind.Attention
            ? new BlockConfig(v.Attention!, FfnConfig.NoOperation)
            : new BlockConfig(AttentionConfig.NoOperation, v.Ffn!);
        var single = config with { Blocks = [block], MaxPositionEmbeddings = Math.Max(config.MaxPositionEmbeddings, context + 2) };
        using var model = new CausalLm(single, device, dtype).InitializeRandom(1);
        using var noGrad = no_grad();
        using var cache = model.NewCache(sc.Batch, Math.Max(sc.PromptLength, context + 1));
        var layer = model.Layer(0);
        using var scope = NewDisposeScope();
        var prompt = randn([sc.Batch, sc.PromptLength, config.HiddenSize], dtype: dtype, device: device);
        var step = randn([sc.Batch, 1, config.HiddenSize], dtype: dtype, device: device);
        var prefillInputs = Inputs(model, sc.Batch, sc.PromptLength, 0, cache);
        var decodeInputs = Inputs(model, sc.Batch, 1, context, cache);
        Timing Run(Tensor x, AttentionInputs inputs, int past) => timer.Measure(() =>
        {
            using var s = NewDisposeScope();
            cache.Length = past;
            _ = v.Kind == SubblockKind.Attention ? layer.ForwardAttention(x, inputs) : layer.ForwardFfn(x);
        });
        return (Run(prompt, prefillInputs, 0), Run(step, decodeInputs, context));
    }

    static AttentionInputs Inputs(CausalLm model, int batch, int tokens, int past, KvCache cache)
    {
        var (positions, mask) = model.PositionsAndMask(batch, tokens, past, null);
        var (cos, sin) = model.Rotary.For(positions, model.DType);
        return new AttentionInputs(cos, sin, mask, cache, 0);
    }

    static (Timing Prefill, Timing Decode) MeasureNonBlock(CausalLm parent, ScenarioSection sc, Timer timer)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var ids = randint(parent.Config.VocabSize, [sc.Batch, sc.PromptLength], dtype: ScalarType.Int64, device: parent.Device);
        var one = ids.narrow(1, 0, 1);
        Timing Run(Tensor input) => timer.Measure(() =>
        {
            using var s = NewDisposeScope();
            var h = parent.Model.EmbedTokens.call(input);
            h = h.narrow(1, h.shape[1] - 1, 1);
            _ = nn.functional.linear(parent.Model.Norm.call(h), parent.LmHeadWeight);
        });
        return (Run(ids), Run(one));
    }

    /// <summary>The parent as the generation engine runs it: a prefill writing the cache, a decode step at the context.</summary>
    static (Timing Prefill, Timing Decode) MeasureWhole(CausalLm parent, ScenarioSection sc, int context, Timer timer)
    {
        using var noGrad = no_grad();
        using var cache = parent.NewCache(sc.Batch, Math.Max(sc.PromptLength, context + 1));
        using var scope = NewDisposeScope();
        var ids = randint(parent.Config.VocabSize, [sc.Batch, sc.PromptLength], dtype: ScalarType.Int64, device: parent.Device);
        var step = ids.narrow(1, 0, 1);
        var prefill = timer.Measure(() =>
        {
            using var s = NewDisposeScope();
            cache.Length = 0;
            parent.Forward(ids, cache, lastOnly: true);
        });
        var decode = timer.Measure(() =>
        {
            using var s = NewDisposeScope();
            cache.Length = context;
            parent.Forward(step, cache, lastOnly: true);
        });
        return (prefill, decode);
    }

    static string CpuModel()
    {
        try
        {
            return File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "";
        }
        catch (IOException)
        {
            return "";
        }
    }
}
