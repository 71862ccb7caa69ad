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
    public AssemblySection Assembly { get; init; } = new();
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

    /// <summary>What a numeric setting must be: its rule's words in the error and the test.</summary>
    public enum Bound { Positive, NonNegative, BelowOne, UpToOne }

    static string Words(Bound b) => b switch
    {
        Bound.Positive => "a positive number",
        Bound.NonNegative => "a finite number >= 0",
        Bound.BelowOne => "in [0, 1)",
        _ => "in [0, 1]",
    };

    static bool Holds(Bound b, double v) => double.IsFinite(v) && b switch
    {
        Bound.Positive => v > 0,
        Bound.NonNegative => v >= 0,
        Bound.BelowOne => v >= 0 && v < 1,
        _ => v >= 0 && v <= 1,
    };

    /// <summary>One rule per numeric setting, in config order; a null value (an optional setting left unset) is not checked.</summary>
    public static readonly IReadOnlyList<(string Key, Bound Bound, Func<RunConfig, double?> Value)> NumberRules =
    [
        ("data.seq_len", Bound.Positive, c => c.Data.SeqLen),
        ("data.validation_fraction", Bound.BelowOne, c => c.Data.ValidationFraction),
        ("search_space.ffn_multiple", Bound.Positive, c => c.SearchSpace.FfnMultiple),
        ("bld.tokens_per_variant", Bound.Positive, c => c.Bld.TokensPerVariant),
        ("bld.batch", Bound.Positive, c => c.Bld.Batch),
        ("bld.lr", Bound.Positive, c => c.Bld.Lr),
        ("bld.beta1", Bound.BelowOne, c => c.Bld.Beta1),
        ("bld.beta2", Bound.BelowOne, c => c.Bld.Beta2),
        ("bld.weight_decay", Bound.NonNegative, c => c.Bld.WeightDecay),
        ("bld.warmup_fraction", Bound.UpToOne, c => c.Bld.WarmupFraction),
        ("bld.clip", Bound.Positive, c => c.Bld.Clip),
        ("bld.calibration_tokens", Bound.Positive, c => c.Bld.CalibrationTokens),
        ("bld.validation_tokens", Bound.Positive, c => c.Bld.ValidationTokens),
        ("bld.disk_budget_gib", Bound.NonNegative, c => c.Bld.DiskBudgetGib),
        ("scoring.validation_tokens", Bound.Positive, c => c.Scoring.ValidationTokens),
        ("scoring.batch", Bound.Positive, c => c.Scoring.Batch),
        ("scenario.batch", Bound.Positive, c => c.Scenario.Batch),
        ("scenario.prompt_length", Bound.Positive, c => c.Scenario.PromptLength),
        ("scenario.generation_length", Bound.Positive, c => c.Scenario.GenerationLength),
        ("scenario.warmup_runs", Bound.NonNegative, c => c.Scenario.WarmupRuns),
        ("scenario.repeats", Bound.Positive, c => c.Scenario.Repeats),
        ("search.max_memory_gib", Bound.Positive, c => c.Search.MaxMemoryGib),
        ("search.min_throughput_ratio", Bound.Positive, c => c.Search.MinThroughputRatio),
        ("search.min_tokens_per_s", Bound.Positive, c => c.Search.MinTokensPerS),
        ("search.max_latency_ms", Bound.Positive, c => c.Search.MaxLatencyMs),
        ("search.max_params", Bound.Positive, c => c.Search.MaxParams),
        ("search.diversity", Bound.UpToOne, c => c.Search.Diversity),
        ("search.max_overshoot", Bound.Positive, c => c.Search.MaxOvershoot),
        ("search.probe_tokens", Bound.NonNegative, c => c.Search.ProbeTokens),
        ("assembly.coupled_bld_tokens", Bound.NonNegative, c => c.Assembly.CoupledBldTokens),
        ("gkd.tokens", Bound.Positive, c => c.Gkd.Tokens),
        ("gkd.batch", Bound.Positive, c => c.Gkd.Batch),
        ("gkd.lr", Bound.Positive, c => c.Gkd.Lr),
        ("gkd.temperature", Bound.Positive, c => c.Gkd.Temperature),
        ("gkd.cosine_weight", Bound.NonNegative, c => c.Gkd.CosineWeight),
        ("gkd.kl_weight", Bound.NonNegative, c => c.Gkd.KlWeight),
        ("gkd.lm_weight", Bound.NonNegative, c => c.Gkd.LmWeight),
        ("evaluation.task_limit", Bound.Positive, c => c.Evaluation.TaskLimit),
        ("evaluation.max_tokens", Bound.Positive, c => c.Evaluation.MaxTokens),
        ("evaluation.bench_repeats", Bound.Positive, c => c.Evaluation.BenchRepeats),
    ];

    /// <summary>Every setting checked before any work starts: errors name the file, the key and the value.</summary>
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

        Check(FormatVersion == 1, "format_version", FormatVersion, "1 (the only version this build reads)");
        foreach (var (key, bound, get) in NumberRules)
            if (get(this) is { } value) Check(Holds(bound, value), key, value, Words(bound));
        Check(Data.SeqLen >= 2, "data.seq_len", Data.SeqLen, "at least 2");
        if (SearchSpace.KvHeads is { } kv) Check(kv.Length > 0 && kv.All(k => k > 0), "search_space.kv_heads", kv, "a non-empty list of positive head counts");
        Check(SearchSpace.FfnFractions.All(f => double.IsFinite(f) && f > 0 && f <= 1), "search_space.ffn_fractions", SearchSpace.FfnFractions, "fractions in (0, 1]");
        Check(Scoring.CacheDtype is "bfloat16" or "float32" or "float16", "scoring.cache_dtype", Scoring.CacheDtype, "bfloat16, float16 or float32");
        Check(Search.Objective is "kl" or "lm_loss" or "top1", "search.objective", Search.Objective, "kl, lm_loss or top1");
        Check(EvaluationSection.BenchEngines.Contains(Evaluation.BenchEngine), "evaluation.bench_engine", Evaluation.BenchEngine, "one of " + string.Join(", ", EvaluationSection.BenchEngines));
        Check(Search.Solutions >= 1, "search.solutions", Search.Solutions, "at least 1");
        Check(SearchSection.ProbeCandidateKinds.Contains(Search.ProbeCandidates), "search.probe_candidates", Search.ProbeCandidates, "one of " + string.Join(", ", SearchSection.ProbeCandidateKinds));
        Check(Gkd.CosineWeight + Gkd.KlWeight + Gkd.LmWeight > 0, "gkd.cosine_weight + gkd.kl_weight + gkd.lm_weight", Gkd.CosineWeight + Gkd.KlWeight + Gkd.LmWeight, "positive (some loss to train on)");
    }

    public JsonObject ToJson() => JsonSerializer.SerializeToNode(this, Options)!.AsObject();

    public void Save(string path) => AtomicFile.WriteJson(path, ToJson());
}
