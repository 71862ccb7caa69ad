using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Puzzle.IO;

namespace Puzzle.Config;

/// <summary>
/// The run config: one section per stage, defaults for everything, unknown keys and wrong types rejected with the
/// key's path. Saved resolved (all defaults filled in) as RUN/config.json.
/// </summary>
public sealed record RunConfig
{
    public const string FileName = "config.json";
    public int FormatVersion { get; init; } = 1;
    public ParentSection Parent { get; init; } = new();
    public DataSection Data { get; init; } = new();
    public SearchSpaceSection SearchSpace { get; init; } = new();
    public BldSection Bld { get; init; } = new();
    public ScoringSection Scoring { get; init; } = new();
    public ScenarioSection Scenario { get; init; } = new();
    public SearchSection Search { get; init; } = new();
    public GkdSection Gkd { get; init; } = new();
    public EvaluationSection Evaluation { get; init; } = new();
    public ExportSection Export { get; init; } = new();
    /// <summary>Built-in baselines at the search's throughput target (uniform, depth, subblock, random; `puzzle baselines`).</summary>
    public string[] Baselines { get; init; } = [];
    /// <summary>GKD-budget sweep for the Puzzle child and every baseline: shares of gkd.tokens, e.g. [0, 0.1, 0.3, 1].</summary>
    public double[] BaselinesGkdFractions { get; init; } = [];

    static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        WriteIndented = true,
        AllowTrailingCommas = true,
        ReadCommentHandling = JsonCommentHandling.Skip,
        NumberHandling = JsonNumberHandling.Strict,
    };

    public static RunConfig Parse(JsonObject root, string source)
    {
        try
        {
            return root.Deserialize<RunConfig>(Options) ?? new RunConfig();
        }
        catch (JsonException e)
        {
            string path = (e.Path ?? "$").TrimStart('$').TrimStart('.');
            string what = e.Message.Contains("could not be mapped", StringComparison.Ordinal)
                ? $"unknown key '{UnknownKey(e.Message, path)}'"
                : $"'{path}' has the wrong type or value ({e.Message.Split(". Path:")[0]})";
            throw new PuzzleException($"{source}: {what}");
        }
    }

    static string UnknownKey(string message, string path)
    {
        int start = message.IndexOf('\'') + 1, end = message.IndexOf('\'', start);
        string key = start > 0 && end > start ? message[start..end] : "?";
        return string.IsNullOrEmpty(path) || path.EndsWith(key, StringComparison.Ordinal) ? (path.Length > 0 ? path : key) : $"{path}.{key}";
    }

    public static RunConfig Read(string path, IEnumerable<string>? overrides = null)
    {
        var root = ReadTree(path);
        foreach (string o in overrides ?? []) ApplyOverride(root, o);
        return Parse(root, path);
    }

    /// <summary>The config file as a JSON tree: JSON, or YAML (.yaml / .yml) with numbers and booleans recognised.</summary>
    public static JsonObject ReadTree(string path)
    {
        if (!File.Exists(path)) throw new PuzzleException($"{path}: run config not found");
        string text = File.ReadAllText(path);
        if (path.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".yml", StringComparison.OrdinalIgnoreCase))
        {
            object? yaml;
            try { yaml = new YamlDotNet.Serialization.DeserializerBuilder().Build().Deserialize<object>(text); }
            catch (YamlDotNet.Core.YamlException e) { throw new PuzzleException($"{path}: malformed YAML at line {e.Start.Line}: {e.Message}"); }
            return FromYaml(yaml) as JsonObject ?? (yaml is null ? new JsonObject() : throw new PuzzleException($"{path}: expected a mapping at the top"));
        }
        try
        {
            return JsonNode.Parse(text, documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }) as JsonObject
                ?? throw new PuzzleException($"{path}: expected a JSON object");
        }
        catch (JsonException e) { throw new PuzzleException($"{path}: malformed JSON: {e.Message}"); }
    }

    static JsonNode? FromYaml(object? node) => node switch
    {
        null => null,
        IDictionary<object, object?> map => new JsonObject(map.Select(kv => KeyValuePair.Create(kv.Key.ToString()!, FromYaml(kv.Value)))),
        IList<object?> list => new JsonArray(list.Select(FromYaml).ToArray()),
        string s when s is "true" or "false" => JsonValue.Create(s == "true"),
        string s when s is "null" or "~" => null,
        string s when long.TryParse(s, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out long l) => JsonValue.Create(l),
        string s when double.TryParse(s, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double d) => JsonValue.Create(d),
        var other => JsonValue.Create(other.ToString()),
    };

    /// <summary>Applies "section.key=value" (value parsed as JSON when it is, else taken as a string).</summary>
    public static void ApplyOverride(JsonObject root, string assignment)
    {
        int eq = assignment.IndexOf('=');
        if (eq <= 0) throw new PuzzleException($"--set '{assignment}': expected section.key=value");
        string[] keys = assignment[..eq].Split('.');
        string raw = assignment[(eq + 1)..];
        JsonNode? value;
        try { value = JsonNode.Parse(raw); }
        catch (JsonException) { value = JsonValue.Create(raw); }
        JsonObject target = root;
        foreach (string key in keys[..^1])
        {
            if (target[key] is not JsonObject child) target[key] = child = new JsonObject();
            target = child;
        }
        target[keys[^1]] = value;
    }

    public JsonObject ToJson() => JsonSerializer.SerializeToNode(this, Options)!.AsObject();

    public void Save(string path) => AtomicFile.WriteJson(path, ToJson());
}

public sealed record ParentSection
{
    /// <summary>HF model directory of the parent (Llama or DeciLM).</summary>
    public string Path { get; init; } = "";
}

public sealed record DataSection
{
    /// <summary>Prepared data directory (`puzzle data prepare`); or leave empty and give inputs to prepare into RUN/data.</summary>
    public string Path { get; init; } = "";
    /// <summary>.txt/.jsonl/.parquet files or folders to prepare with the parent's tokenizer when no path is given.</summary>
    public string[] Inputs { get; init; } = [];
    public int SeqLen { get; init; } = 256;
    public double ValidationFraction { get; init; } = 0.05;
    public string TextField { get; init; } = "text";
}

/// <summary>Per-layer variants (design.md 2).</summary>
public sealed record SearchSpaceSection
{
    /// <summary>KV-head counts for GQA variants; null = parent's, halved down to 1 (divisors of the head count).</summary>
    public int[]? KvHeads { get; init; }
    public bool AttentionLinear { get; init; } = true;
    public bool AttentionNoOp { get; init; } = true;
    public double[] FfnFractions { get; init; } = [1.0, 0.875, 0.75, 0.5, 0.25, 0.2, 0.1];
    public bool FfnLinear { get; init; } = true;
    public bool FfnNoOp { get; init; } = true;
    /// <summary>FFN widths are rounded to this multiple; null = 256 when the parent's FFN is at least 2048 wide, else 8.</summary>
    public int? FfnMultiple { get; init; }
}

/// <summary>Blockwise local distillation settings (defaults from Puzzletron).</summary>
public sealed record BldSection
{
    public long TokensPerVariant { get; init; } = 262_144;
    public int Batch { get; init; } = 16;
    public double Lr { get; init; } = 1e-4;
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.95;
    public double WeightDecay { get; init; } = 0.1;
    public double WarmupFraction { get; init; } = 0.05;
    public double Clip { get; init; } = 1.0;
    public long CalibrationTokens { get; init; } = 32_768;
    public long ValidationTokens { get; init; } = 16_384;
    public long Seed { get; init; }
    public string Precision { get; init; } = "auto";
    public string Device { get; init; } = "cpu";
    /// <summary>
    /// "cache": the parent's activations for every batch, computed once and stored in bf16 on disk (fast);
    /// "recompute": the parent's first layers rerun per batch and layer (no disk); "auto": cache when it needs at most
    /// <see cref="CacheLimitGib"/>.
    /// </summary>
    public string Activations { get; init; } = "auto";
    public double CacheLimitGib { get; init; } = 8;
}

/// <summary>Replace-1-block scoring.</summary>
public sealed record ScoringSection
{
    /// <summary>"composed": every (attention, FFN) pair of a layer; "subblocks": each sublayer alone, assumed additive.</summary>
    public string Mode { get; init; } = "composed";
    public long ValidationTokens { get; init; } = 8_192;
    public int Batch { get; init; } = 16;
    public string Device { get; init; } = "cpu";
}

/// <summary>The serving target that costs are measured and estimated for.</summary>
public sealed record ScenarioSection
{
    public int Batch { get; init; } = 16;
    public int PromptLength { get; init; } = 128;
    public int GenerationLength { get; init; } = 128;
    /// <summary>Weight dtype for memory and roofline figures: bfloat16, float16, float32 or fp8.</summary>
    public string WeightDtype { get; init; } = "bfloat16";
    public string KvDtype { get; init; } = "bfloat16";
    /// <summary>Where block times are measured.</summary>
    public string Device { get; init; } = "cpu";
    /// <summary>dtype the measurements run in on that device.</summary>
    public string MeasureDtype { get; init; } = "float32";
    public int WarmupRuns { get; init; } = 3;
    public int Repeats { get; init; } = 9;
}

/// <summary>The constraints of the mixed-integer program (see `puzzle search`).</summary>
public sealed record SearchSection
{
    public double? MaxMemoryGib { get; init; }
    public double? MinThroughputRatio { get; init; } = 2.0;
    public double? MinTokensPerS { get; init; }
    public double? MaxLatencyMs { get; init; }
    public long? MaxParams { get; init; }
    public string Target { get; init; } = "measured";
    public int Solutions { get; init; } = 1;
    public double Diversity { get; init; } = 0.8;
    /// <summary>A Pareto sweep for the report, e.g. "throughput-ratio=1.0:3.0:0.25"; empty for none.</summary>
    public string Sweep { get; init; } = "throughput-ratio=1.0:3.0:0.25";
}

/// <summary>Global knowledge distillation of the assembled child.</summary>
public sealed record GkdSection
{
    public long Tokens { get; init; } = 1_000_000;
    public int Batch { get; init; } = 16;
    public double Lr { get; init; } = 3e-4;
    public double CosineWeight { get; init; } = 1.0;
    public double KlWeight { get; init; } = 1.0;
    public double LmWeight { get; init; }
    public double Temperature { get; init; } = 1.0;
    public string Precision { get; init; } = "auto";
}

/// <summary>Evaluation and the side-by-side benchmark.</summary>
public sealed record EvaluationSection
{
    public string[] Tasks { get; init; } = [];
    public int TaskLimit { get; init; } = 300;
    public long MaxTokens { get; init; } = 16_384;
    public int BenchRepeats { get; init; } = 3;
    public string BenchDtype { get; init; } = "bfloat16";
}

public sealed record ExportSection
{
    public string Dtype { get; init; } = "bfloat16";
    public bool PadFfn { get; init; } = true;
}
