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

    /// <summary>
    /// The one source of defaults: every section's initial values. Options records (EvalOptions, BenchOptions, …) and
    /// CLI flags that are not given fall back to these, never to numbers of their own.
    /// </summary>
    public static readonly RunConfig Defaults = new();
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
            var config = root.Deserialize<RunConfig>(Options) ?? new RunConfig();
            config.Validate(source);
            return config;
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
            try { yaml = new YamlDotNet.Serialization.DeserializerBuilder().WithDuplicateKeyChecking().Build().Deserialize<object>(text); }
            catch (YamlDotNet.Core.YamlException e)
            {
                string message = (e.InnerException ?? e).Message;
                throw new PuzzleException($"{path}: malformed YAML at line {e.Start.Line}: {(message.Contains("Duplicate key", StringComparison.OrdinalIgnoreCase) || message.Contains("same key", StringComparison.OrdinalIgnoreCase) ? "duplicate key: " : "")}{JsonFile.FirstLine(message)}");
            }
            return FromYaml(yaml) as JsonObject ?? (yaml is null ? new JsonObject() : throw new PuzzleException($"{path}: expected a mapping at the top"));
        }
        return JsonFile.Parse(text, path, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }).Object();
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

    /// <summary>Every setting checked before any work starts: errors name the key and the value.</summary>
    public void Validate(string source)
    {
        void Check(bool ok, string key, object? value, string rule)
        {
            if (!ok) throw new PuzzleException($"{source}: {key} must be {rule}, got {Show(value)}");
        }
        static string Show(object? value) => value switch
        {
            null => "null",
            double d => d.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            System.Collections.IEnumerable e and not string => $"[{string.Join(", ", e.Cast<object?>().Select(Show))}]",
            _ => value.ToString() ?? "",
        };
        void Positive(string key, double value) => Check(double.IsFinite(value) && value > 0, key, value, "a positive number");
        void NonNegative(string key, double value) => Check(double.IsFinite(value) && value >= 0, key, value, "a finite number >= 0");
        void Fraction(string key, double value, bool allowOne) => Check(double.IsFinite(value) && value >= 0 && (allowOne ? value <= 1 : value < 1), key, value, allowOne ? "in [0, 1]" : "in [0, 1)");

        Check(FormatVersion == 1, "format_version", FormatVersion, "1 (the only version this build reads)");
        Positive("data.seq_len", Data.SeqLen);
        Check(Data.SeqLen >= 2, "data.seq_len", Data.SeqLen, "at least 2");
        Fraction("data.validation_fraction", Data.ValidationFraction, allowOne: false);
        if (SearchSpace.KvHeads is { } kv) Check(kv.Length > 0 && kv.All(k => k > 0), "search_space.kv_heads", kv, "a non-empty list of positive head counts");
        Check(SearchSpace.FfnFractions.All(f => double.IsFinite(f) && f > 0 && f <= 1), "search_space.ffn_fractions", SearchSpace.FfnFractions, "fractions in (0, 1]");
        if (SearchSpace.FfnMultiple is { } multiple) Positive("search_space.ffn_multiple", multiple);
        Positive("bld.tokens_per_variant", Bld.TokensPerVariant);
        Positive("bld.batch", Bld.Batch);
        Positive("bld.lr", Bld.Lr);
        Fraction("bld.beta1", Bld.Beta1, allowOne: false);
        Fraction("bld.beta2", Bld.Beta2, allowOne: false);
        NonNegative("bld.weight_decay", Bld.WeightDecay);
        Fraction("bld.warmup_fraction", Bld.WarmupFraction, allowOne: true);
        Positive("bld.clip", Bld.Clip);
        Positive("bld.calibration_tokens", Bld.CalibrationTokens);
        Positive("bld.validation_tokens", Bld.ValidationTokens);
        if (Bld.DiskBudgetGib is { } diskBudget) NonNegative("bld.disk_budget_gib", diskBudget);
        Check(Scoring.CacheDtype is "bfloat16" or "float32" or "float16", "scoring.cache_dtype", Scoring.CacheDtype, "bfloat16, float16 or float32");
        Positive("scoring.validation_tokens", Scoring.ValidationTokens);
        Positive("scoring.batch", Scoring.Batch);
        Positive("scenario.batch", Scenario.Batch);
        Positive("scenario.prompt_length", Scenario.PromptLength);
        Positive("scenario.generation_length", Scenario.GenerationLength);
        NonNegative("scenario.warmup_runs", Scenario.WarmupRuns);
        Positive("scenario.repeats", Scenario.Repeats);
        if (Search.MaxMemoryGib is { } memory) Positive("search.max_memory_gib", memory);
        if (Search.MinThroughputRatio is { } ratio) Positive("search.min_throughput_ratio", ratio);
        if (Search.MinTokensPerS is { } tps) Positive("search.min_tokens_per_s", tps);
        if (Search.MaxLatencyMs is { } latency) Positive("search.max_latency_ms", latency);
        if (Search.MaxParams is { } parameters) Positive("search.max_params", parameters);
        Check(Search.Solutions >= 1, "search.solutions", Search.Solutions, "at least 1");
        Fraction("search.diversity", Search.Diversity, allowOne: true);
        Positive("gkd.tokens", Gkd.Tokens);
        Positive("gkd.batch", Gkd.Batch);
        Positive("gkd.lr", Gkd.Lr);
        Positive("gkd.temperature", Gkd.Temperature);
        NonNegative("gkd.cosine_weight", Gkd.CosineWeight);
        NonNegative("gkd.kl_weight", Gkd.KlWeight);
        NonNegative("gkd.lm_weight", Gkd.LmWeight);
        Check(Gkd.CosineWeight + Gkd.KlWeight + Gkd.LmWeight > 0, "gkd.cosine_weight + gkd.kl_weight + gkd.lm_weight", Gkd.CosineWeight + Gkd.KlWeight + Gkd.LmWeight, "positive (some loss to train on)");
        Positive("evaluation.task_limit", Evaluation.TaskLimit);
        if (Evaluation.MaxTokens is { } maxTokens) Positive("evaluation.max_tokens", maxTokens);
        Positive("evaluation.bench_repeats", Evaluation.BenchRepeats);
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
    /// <summary>Share of documents held out for evaluation only (`puzzle eval`, the report).</summary>
    public double TestFraction { get; init; } = 0.05;
    public string TextField { get; init; } = "text";
    /// <summary>.txt inputs: "file" (each file is one document) or "paragraphs" (blank-line separated blocks are documents).</summary>
    public string TxtDocuments { get; init; } = "file";
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
    /// "cache": the parent's activations for every batch, computed once and stored in bf16 on disk (fast; an error
    /// when the disk cannot hold them); "recompute": the parent's first layers rerun per batch and layer (no disk);
    /// "auto": cache when it fits, else recompute.
    /// </summary>
    public string Activations { get; init; } = "cache";
    /// <summary>Most disk the activation cache may take, GiB; null: the free space of the run directory's disk less 1 GiB.</summary>
    public double? DiskBudgetGib { get; init; }
}

/// <summary>Replace-1-block scoring.</summary>
public sealed record ScoringSection
{
    /// <summary>"composed": every (attention, FFN) pair of a layer; "subblocks": each sublayer alone, assumed additive.</summary>
    public string Mode { get; init; } = "composed";
    public long ValidationTokens { get; init; } = 8_192;
    public int Batch { get; init; } = 16;
    public string Device { get; init; } = "cpu";
    /// <summary>dtype of the cached layer inputs: bfloat16 (half the memory) or float32 (bit-exact with the parent).</summary>
    public string CacheDtype { get; init; } = "bfloat16";
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
    /// <summary>Where block times are measured, and where GKD, evaluation and the benchmark run.</summary>
    public string Device { get; init; } = "cpu";
    /// <summary>The one dtype block costs, the search's measured check and the benchmark run in on that device.</summary>
    public string MeasureDtype { get; init; } = "bfloat16";
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
    /// <summary>Validation tokens the best checkpoint is chosen on (KL to the parent).</summary>
    public long ValidationTokens { get; init; } = 16_384;
}

/// <summary>Evaluation and the side-by-side benchmark.</summary>
public sealed record EvaluationSection
{
    public string[] Tasks { get; init; } = [];
    public int TaskLimit { get; init; } = 300;
    /// <summary>Test-split tokens evaluated (its first windows); null: the whole test split.</summary>
    public long? MaxTokens { get; init; }
    /// <summary>Items of the in-domain continuation task built from the test split (0: none).</summary>
    public int ContinuationItems { get; init; }
    /// <summary>Resamples of the paired bootstrap behind the 95% intervals.</summary>
    public int BootstrapResamples { get; init; } = 1000;
    /// <summary>Seed of the bootstrap and of the continuation task.</summary>
    public long Seed { get; init; }
    public int BenchRepeats { get; init; } = 3;
}

public sealed record ExportSection
{
    public string Dtype { get; init; } = "bfloat16";
    public bool PadFfn { get; init; } = true;
    /// <summary>hf (DeciLM directory) and/or gguf (OUT/model.gguf for llama.cpp).</summary>
    public string[] Formats { get; init; } = ["hf"];
}
