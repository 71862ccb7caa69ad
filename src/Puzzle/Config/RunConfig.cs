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
