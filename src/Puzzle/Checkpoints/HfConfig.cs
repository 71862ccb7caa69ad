using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Puzzle.IO;
using Puzzle.Model;

namespace Puzzle.Checkpoints;

/// <summary>
/// Reads HF <c>config.json</c> of LlamaForCausalLM and DeciLMForCausalLM (model_type "nemotron-nas") into a
/// <see cref="ModelConfig"/>, and writes DeciLM configs exactly per design.md 4.2.
/// </summary>
public static class HfConfig
{
    public const string DeciModelType = "nemotron-nas";
    public const int FfnMultiple = 256;
    static readonly HashSet<(int, int)> WarnedWidths = new();                                  // warn once per (width, hidden) per process

    public static ModelConfig Read(string modelDir)
    {
        string path = Path.Combine(modelDir, "config.json");
        if (!File.Exists(path)) throw new PuzzleException($"{path}: not found (is {modelDir} a Hugging Face model directory?)");
        var root = JsonFile.ReadObject(path);
        var config = Parse(root, path);
        config = MergeGenerationConfig(config, Path.Combine(modelDir, "generation_config.json"));
        config.Validate(path);
        return config;
    }

    public static ModelConfig Parse(JsonObject root, string source)
    {
        var fields = new JsonField(root, source, "");
        string modelType = fields["model_type"].OptionalString() ?? "";
        bool deci = modelType == DeciModelType || root["block_configs"] is not null;
        if (!deci && modelType != "llama")
            throw new PuzzleException(
                $"{source}: model_type '{modelType}' is not supported (expected 'llama' or '{DeciModelType}')");

        int hidden = RequiredInt(root, "hidden_size", source);
        int heads = RequiredInt(root, "num_attention_heads", source);
        int layers = RequiredInt(root, "num_hidden_layers", source);
        int vocab = RequiredInt(root, "vocab_size", source);
        int headDim;
        if (OptionalInt(root, "head_dim", source) is { } explicitHeadDim) headDim = explicitHeadDim;
        else
        {
            if (heads <= 0 || hidden % heads != 0)
                throw new PuzzleException(
                    $"{source}: hidden_size ({hidden}) is not divisible by num_attention_heads ({heads}) and no head_dim is given");
            headDim = hidden / heads;
        }

        BlockConfig[] blocks;
        if (deci)
        {
            if (root["block_configs"] is not JsonArray array)
                throw new PuzzleException($"{source}: block_configs is missing or not an array");
            if (array.Count != layers)
                throw new PuzzleException(
                    $"{source}: block_configs has {array.Count} entries but num_hidden_layers is {layers}");
            blocks = array.Select((b, i) => ParseBlock(b as JsonObject, i, hidden, heads, source)).ToArray();
        }
        else
        {
            int kv = OptionalInt(root, "num_key_value_heads", source) ?? heads;
            int intermediate = RequiredInt(root, "intermediate_size", source);
            if (kv <= 0 || heads % kv != 0)
                throw new PuzzleException(
                    $"{source}: num_key_value_heads ({kv}) must divide num_attention_heads ({heads})");
            var block = BlockConfig.Llama(kv, intermediate);
            blocks = Enumerable.Repeat(block, Math.Max(layers, 0)).ToArray();
        }
        foreach (string flag in new[] { "attention_bias", "mlp_bias" })
            if (root[flag] is JsonValue v && v.TryGetValue(out bool b) && b)
                throw new PuzzleException($"{source}: {flag} = true is not supported (Llama projections have no bias)");
        if (fields["hidden_act"].OptionalString() is { } act && act != "silu")
            throw new PuzzleException($"{source}: hidden_act '{act}' is not supported (expected 'silu')");
        foreach (string flag in new[] { "attention_bias", "mlp_bias", "tie_word_embeddings" }) fields[flag].OptionalBool();

        return new ModelConfig
        {
            VocabSize = vocab,
            HiddenSize = hidden,
            NumAttentionHeads = heads,
            HeadDim = headDim,
            Blocks = blocks,
            RmsNormEps = OptionalDouble(root, "rms_norm_eps", source) ?? 1e-6,
            RopeTheta = OptionalDouble(root, "rope_theta", source) ?? 10000.0,
            RopeScaling = ParseRopeScaling(root["rope_scaling"], source),
            MaxPositionEmbeddings = OptionalInt(root, "max_position_embeddings", source) ?? 2048,
            TieWordEmbeddings = fields["tie_word_embeddings"].OptionalBool() ?? false,
            BosTokenId = OptionalInt(root, "bos_token_id", source),
            EosTokenIds = IntOrList(root["eos_token_id"], "eos_token_id", source),
            PadTokenId = OptionalInt(root, "pad_token_id", source),
            TorchDtype = fields["torch_dtype"].OptionalString() ?? fields["dtype"].OptionalString() ?? "float32",
        };
    }

    static BlockConfig ParseBlock(JsonObject? block, int layer, int hidden, int heads, string source)
    {
        string where = $"{source}: block_configs[{layer}]";
        if (block is null) throw new PuzzleException($"{where} is not an object");
        if (block["attention"] is not JsonObject a) throw new PuzzleException($"{where}.attention is missing");
        if (block["ffn"] is not JsonObject f) throw new PuzzleException($"{where}.ffn is missing");
        foreach (string unsupported in new[] { "sparsify", "window_length", "num_sink_tokens" })
            if (a[unsupported] is not null)
                throw new PuzzleException($"{where}.attention.{unsupported} is set; only dense attention is supported");
        if (f["sparsify"] is not null)
            throw new PuzzleException($"{where}.ffn.sparsify is set; only dense FFNs are supported");
        foreach (var (part, o) in new[] { ("attention", a), ("ffn", f) })
        {
            var flags = new JsonField(o, source, $"block_configs[{layer}].{part}");
            if ((flags["no_op"].OptionalBool() ?? false) && (flags["replace_with_linear"].OptionalBool() ?? false))
                throw new PuzzleException($"{where}.{part} sets both no_op and replace_with_linear (at most one may be true)");
        }

        AttentionConfig attention;
        if (Flag(a, "no_op")) attention = AttentionConfig.NoOperation;
        else if (Flag(a, "replace_with_linear")) attention = AttentionConfig.Linear;
        else
        {
            int group = OptionalInt(a, "n_heads_in_group", where + ".attention")
                ?? throw new PuzzleException($"{where}.attention.n_heads_in_group is missing for a GQA block");
            if (group <= 0 || heads % group != 0)
                throw new PuzzleException(
                    $"{where}.attention.n_heads_in_group ({group}) must divide num_attention_heads ({heads})");
            attention = AttentionConfig.Gqa(heads / group);
        }

        FfnConfig ffn;
        if (Flag(f, "no_op")) ffn = FfnConfig.NoOperation;
        else if (Flag(f, "replace_with_linear")) ffn = FfnConfig.Linear;
        else
        {
            int? explicitSize = OptionalInt(f, "intermediate_size", where + ".ffn");
            double? mult = OptionalDouble(f, "ffn_mult", where + ".ffn");
            if (explicitSize is null && mult is null)
                throw new PuzzleException($"{where}.ffn has neither ffn_mult nor intermediate_size");
            int size = explicitSize ?? FfnMultToIntermediateSize(mult!.Value, hidden);
            // intermediate_size (NVIDIA's newer schema, always written here) wins over ffn_mult; the writer warns
            // when the two disagree, since engines that only read ffn_mult would build a different model.
            ffn = FfnConfig.SwiGlu(size);
        }
        return new BlockConfig(attention, ffn);
    }

    /// <summary>The rule shared by HF remote code, vLLM, TensorRT-LLM, SGLang, MLX, llama.cpp.</summary>
    public static int FfnMultToIntermediateSize(double ffnMult, int hidden)
    {
        int size = (int)(2 * ffnMult * hidden / 3);
        return (size + FfnMultiple - 1) / FfnMultiple * FfnMultiple;
    }

    public static double IntermediateSizeToFfnMult(int intermediate, int hidden) =>
        Math.Round(3.0 * intermediate / (2.0 * hidden), 6);

    static RopeScaling? ParseRopeScaling(JsonNode? node, string source)
    {
        if (node is null) return null;
        if (node is not JsonObject o) throw new PuzzleException($"{source}: rope_scaling must be an object or null");
        var scaling = new JsonField(o, source, "rope_scaling");
        string type = (o["rope_type"] is not null ? scaling["rope_type"] : scaling["type"]).OptionalString()
            ?? throw new PuzzleException($"{source}: rope_scaling has no rope_type");
        string where = source + ": rope_scaling";
        return type switch
        {
            "default" => null,
            "llama3" => new RopeScaling("llama3",
                OptionalDouble(o, "factor", where) ?? throw new PuzzleException($"{where}.factor is missing"),
                OptionalDouble(o, "low_freq_factor", where) ?? 1.0,
                OptionalDouble(o, "high_freq_factor", where) ?? 4.0,
                OptionalInt(o, "original_max_position_embeddings", where) ?? 8192),
            "linear" => new RopeScaling("linear",
                OptionalDouble(o, "factor", where) ?? throw new PuzzleException($"{where}.factor is missing"), 0, 0, 0),
            _ => throw new PuzzleException($"{source}: rope_scaling type '{type}' is not supported (expected llama3, linear or default)"),
        };
    }

    static ModelConfig MergeGenerationConfig(ModelConfig config, string path)
    {
        if (!File.Exists(path)) return config;
        var g = JsonFile.ReadObject(path);
        var eos = IntOrList(g["eos_token_id"], "eos_token_id", path);
        return config with
        {
            BosTokenId = OptionalInt(g, "bos_token_id", path) ?? config.BosTokenId,
            EosTokenIds = eos.Count > 0 ? eos.Union(config.EosTokenIds).ToArray() : config.EosTokenIds,
        };
    }

    // ---- Writing ----

    /// <summary>The DeciLM config of <paramref name="config"/> (design.md 4.2).</summary>
    public static JsonObject ToDeciLm(ModelConfig config, string torchDtype)
    {
        var blocks = new JsonArray();
        for (int i = 0; i < config.NumLayers; i++)
        {
            var (a, f) = (config.Blocks[i].Attention, config.Blocks[i].Ffn);
            var attention = new JsonObject
            {
                ["n_heads_in_group"] = a.IsGqa ? config.NumAttentionHeads / a.NumKeyValueHeads!.Value : null,
                ["no_op"] = a.NoOp,
                ["replace_with_linear"] = a.ReplaceWithLinear,
                ["sparsify"] = null,
                ["window_length"] = null,
                ["num_sink_tokens"] = null,
                ["use_prefill_window_in_sink_attention"] = false,
                ["unshifted_sink"] = false,
            };
            JsonNode? ffnMult = null;
            if (f.IsSwiGlu)
            {
                int size = f.IntermediateSize!.Value;
                double mult = IntermediateSizeToFfnMult(size, config.HiddenSize);
                ffnMult = mult;
                if (FfnMultToIntermediateSize(mult, config.HiddenSize) != size && WarnedWidths.Add((size, config.HiddenSize)))
                    Log.Warning($"layer {i}: FFN intermediate size {size} is not reproducible from ffn_mult {mult.ToString(CultureInfo.InvariantCulture)} " +
                                $"(engines that only read ffn_mult would build {FfnMultToIntermediateSize(mult, config.HiddenSize)}); " +
                                $"use multiples of {FfnMultiple} for portable exports");
            }
            var ffn = new JsonObject
            {
                ["ffn_mult"] = ffnMult,
                ["no_op"] = f.NoOp,
                ["replace_with_linear"] = f.ReplaceWithLinear,
                ["sparsify"] = null,
                ["intermediate_size"] = f.IsSwiGlu ? f.IntermediateSize : null,
            };
            blocks.Add(new JsonObject { ["attention"] = attention, ["ffn"] = ffn });
        }
        var root = new JsonObject
        {
            ["architectures"] = new JsonArray("DeciLMForCausalLM"),
            ["model_type"] = DeciModelType,
            ["auto_map"] = new JsonObject
            {
                ["AutoConfig"] = "configuration_decilm.DeciLMConfig",
                ["AutoModelForCausalLM"] = "modeling_decilm.DeciLMForCausalLM",
            },
        };
        AddGlobals(root, config, torchDtype);
        root["intermediate_size"] = null;
        root["num_key_value_heads"] = null;
        root["block_configs"] = blocks;
        return root;
    }

    /// <summary>A plain LlamaForCausalLM config; only valid for homogeneous GQA+SwiGLU models.</summary>
    public static JsonObject ToLlama(ModelConfig config, string torchDtype)
    {
        if (!config.IsHomogeneousLlama)
            throw new PuzzleException("a heterogeneous model cannot be written as LlamaForCausalLM; write it as DeciLM");
        var root = new JsonObject { ["architectures"] = new JsonArray("LlamaForCausalLM"), ["model_type"] = "llama" };
        AddGlobals(root, config, torchDtype);
        root["intermediate_size"] = config.Blocks[0].Ffn.IntermediateSize;
        root["num_key_value_heads"] = config.Blocks[0].Attention.NumKeyValueHeads;
        return root;
    }

    static void AddGlobals(JsonObject root, ModelConfig c, string torchDtype)
    {
        root["hidden_size"] = c.HiddenSize;
        root["num_hidden_layers"] = c.NumLayers;
        root["num_attention_heads"] = c.NumAttentionHeads;
        root["head_dim"] = c.HeadDim;
        root["vocab_size"] = c.VocabSize;
        root["max_position_embeddings"] = c.MaxPositionEmbeddings;
        root["rms_norm_eps"] = c.RmsNormEps;
        root["rope_theta"] = c.RopeTheta;
        root["rope_scaling"] = c.RopeScaling switch
        {
            null => null,
            { Type: "llama3" } s => new JsonObject
            {
                ["rope_type"] = "llama3", ["factor"] = s.Factor, ["low_freq_factor"] = s.LowFreqFactor,
                ["high_freq_factor"] = s.HighFreqFactor, ["original_max_position_embeddings"] = s.OriginalMaxPositionEmbeddings,
            },
            var s => new JsonObject { ["rope_type"] = s.Type, ["factor"] = s.Factor },
        };
        root["hidden_act"] = "silu";
        root["attention_bias"] = false;
        root["mlp_bias"] = false;
        root["attention_dropout"] = 0.0;
        root["tie_word_embeddings"] = c.TieWordEmbeddings;
        root["bos_token_id"] = c.BosTokenId;
        root["eos_token_id"] = c.EosTokenIds.Count switch
        {
            0 => null,
            1 => JsonValue.Create(c.EosTokenIds[0]),
            _ => new JsonArray(c.EosTokenIds.Select(e => (JsonNode)JsonValue.Create(e)).ToArray()),
        };
        root["pad_token_id"] = c.PadTokenId;
        root["initializer_range"] = 0.02;
        root["use_cache"] = true;
        root["torch_dtype"] = torchDtype;
    }

    // ---- Field helpers: every error names the field, its value and the file ----

    static bool Flag(JsonObject o, string key) => o[key] is JsonValue v && v.TryGetValue(out bool b) && b;

    static int RequiredInt(JsonObject o, string key, string source) =>
        OptionalInt(o, key, source) ?? throw new PuzzleException($"{source}: required field {key} is missing");

    static int? OptionalInt(JsonObject o, string key, string source)
    {
        var node = o[key];
        if (node is null) return null;
        if (node is JsonValue v)
        {
            if (v.TryGetValue(out int i)) return i;
            if (v.TryGetValue(out double d) && d == Math.Floor(d) && Math.Abs(d) < int.MaxValue) return (int)d;
        }
        throw new PuzzleException($"{source}: {key} must be an integer, got {node.ToJsonString()}");
    }

    static double? OptionalDouble(JsonObject o, string key, string source)
    {
        var node = o[key];
        if (node is null) return null;
        if (node is JsonValue v && v.TryGetValue(out double d)) return d;
        throw new PuzzleException($"{source}: {key} must be a number, got {node.ToJsonString()}");
    }

    static IReadOnlyList<int> IntOrList(JsonNode? node, string key, string source) => node switch
    {
        null => [],
        JsonArray a => a.Select(x => x is JsonValue v && v.TryGetValue(out int i) ? i
            : throw new PuzzleException($"{source}: {key} must hold integers, got {a.ToJsonString()}")).ToArray(),
        JsonValue v when v.TryGetValue(out int i) => [i],
        _ => throw new PuzzleException($"{source}: {key} must be an integer or a list, got {node.ToJsonString()}"),
    };

    public static void WriteAtomically(string path, JsonObject config) => AtomicFile.WriteJson(path, config);
}
