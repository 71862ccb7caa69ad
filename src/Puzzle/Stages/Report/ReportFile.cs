using System.Text.Json.Nodes;
using Puzzle.IO;
using Puzzle.Stages.Search;

namespace Puzzle.Stages.Report;

/// <summary>report.json's scenario: what the costs, the search's check and the benchmark were timed for.</summary>
public sealed record ReportScenario(int Batch, int PromptLength, int GenerationLength, string WeightDtype, string KvDtype, string MeasureDtype, string Device)
{
    public JsonObject ToJson() => new()
    {
        ["batch"] = Batch, ["prompt_length"] = PromptLength, ["generation_length"] = GenerationLength, ["weight_dtype"] = WeightDtype,
        ["kv_dtype"] = KvDtype, ["measure_dtype"] = MeasureDtype, ["device"] = Device,
    };

    public static ReportScenario Read(JsonField j) => new(j["batch"].Int(), j["prompt_length"].Int(), j["generation_length"].Int(),
        j["weight_dtype"].String(), j["kv_dtype"].String(), j["measure_dtype"].String(), j["device"].String());
}

/// <summary>
/// One model's column of the report: its size and memory at the scenario, the benchmark's speeds and the test split's
/// metrics. <c>Tasks</c> and <c>Ci95</c> are eval.json's sections, carried as written.
/// </summary>
public sealed record ReportSide(long Parameters, double MemoryAtScenarioBytes, long KvBytesPerToken, double EndToEndTokensPerS, double PrefillTokensPerS,
    double DecodeTokensPerS, double TimeToFirstTokenMs, double Perplexity, double NextTokenAccuracy, double KlToParent, double Top1Agreement,
    JsonObject Tasks, JsonObject? Ci95)
{
    public JsonObject ToJson() => new()
    {
        ["parameters"] = Parameters, ["memory_at_scenario_bytes"] = MemoryAtScenarioBytes, ["kv_bytes_per_token"] = KvBytesPerToken,
        ["end_to_end_tokens_per_s"] = EndToEndTokensPerS, ["prefill_tokens_per_s"] = PrefillTokensPerS, ["decode_tokens_per_s"] = DecodeTokensPerS,
        ["time_to_first_token_ms"] = TimeToFirstTokenMs, ["perplexity"] = Perplexity, ["next_token_accuracy"] = NextTokenAccuracy,
        ["kl_to_parent"] = KlToParent, ["top1_agreement"] = Top1Agreement, ["tasks"] = Tasks.DeepClone(), ["ci95"] = Ci95?.DeepClone(),
    };

    public static ReportSide Read(JsonField j) => new(j["parameters"].Long(), j["memory_at_scenario_bytes"].Double(), j["kv_bytes_per_token"].Long(),
        j["end_to_end_tokens_per_s"].Double(), j["prefill_tokens_per_s"].Double(), j["decode_tokens_per_s"].Double(), j["time_to_first_token_ms"].Double(),
        j["perplexity"].Double(), j["next_token_accuracy"].Double(), j["kl_to_parent"].Double(), j["top1_agreement"].Double(),
        j["tasks"].ObjectCopy(), j["ci95"].OptionalObjectCopy());
}

/// <summary>The spread of the benchmark's per-round child/parent ratio and the order the rounds ran in (ABBA, …).</summary>
public sealed record ReportRounds(double? Min, double? Max, string? Order)
{
    /// <summary>The 95% interval of the median per-round ratio (<see cref="Benchmark.BenchRow.AddRoundRatios"/>); null with fewer than 6 rounds.</summary>
    public double[]? Ci95 { get; init; }

    public JsonObject ToJson()
    {
        var o = new JsonObject { ["min"] = Min, ["max"] = Max, ["order"] = Order };
        if (Ci95 is { } ci) o["ci95"] = new JsonArray(ci[0], ci[1]);
        return o;
    }

    public static ReportRounds Read(JsonField j) => new(j["min"].OptionalDouble(), j["max"].OptionalDouble(), j["order"].OptionalString()) { Ci95 = Interval(j["ci95"]) };

    /// <summary>A [low, high] pair (report.json's ci95, bench.json's end_to_end_ratio_ci95); null where absent.</summary>
    public static double[]? Interval(JsonField j) => j.Node is JsonArray { Count: 2 } a ? [a[0]!.GetValue<double>(), a[1]!.GetValue<double>()] : null;
}

/// <summary>
/// The benchmark in a second engine (llama.cpp, when evaluation.bench_engine runs both): its end-to-end tokens/s of
/// parent and child, its child/parent ratio with the spread of its rounds, ours beside it, and whether the two ratios
/// agree within <see cref="Tolerance"/> (llama.cpp's over ours within 1 ± 0.10).
/// </summary>
public sealed record ReportEngineCheck(string Engine, double ParentTokensPerS, double ChildTokensPerS, double Ratio, double? Min, double? Max,
    double OursRatio, int? Threads, string? Dtype)
{
    public const double Tolerance = 0.10;

    /// <summary>This engine's ratio over ours.</summary>
    public double Agreement => Ratio / OursRatio;

    public bool Agrees => Math.Abs(Agreement - 1) <= Tolerance;

    public JsonObject ToJson() => new()
    {
        ["engine"] = Engine, ["parent_end_to_end_tokens_per_s"] = ParentTokensPerS, ["child_end_to_end_tokens_per_s"] = ChildTokensPerS,
        ["end_to_end_ratio"] = Ratio, ["end_to_end_ratio_rounds"] = new JsonObject { ["min"] = Min, ["max"] = Max },
        ["ours_end_to_end_ratio"] = OursRatio, ["ratio_over_ours"] = Agreement, ["tolerance"] = Tolerance, ["agrees"] = Agrees,
        ["threads"] = Threads, ["dtype"] = Dtype,
    };

    public static ReportEngineCheck Read(JsonField j) => new(j["engine"].String(), j["parent_end_to_end_tokens_per_s"].Double(),
        j["child_end_to_end_tokens_per_s"].Double(), j["end_to_end_ratio"].Double(), j["end_to_end_ratio_rounds"]["min"].OptionalDouble(),
        j["end_to_end_ratio_rounds"]["max"].OptionalDouble(), j["ours_end_to_end_ratio"].Double(), j["threads"].OptionalInt(), j["dtype"].OptionalString());

    /// <summary>llama.cpp's figures in bench.json (<c>llama_cpp</c>, written by <c>puzzle bench --engine both</c>), or null.</summary>
    public static ReportEngineCheck? FromBench(JsonField bench, double oursRatio)
    {
        var llama = bench["llama_cpp"];
        if (llama.Node is null) return null;
        var (parent, child) = (llama["models"][0], llama["models"][1]);
        return new ReportEngineCheck(llama["engine"].OptionalString() ?? "llama.cpp", parent["end_to_end_tokens_per_s"].Double(),
            child["end_to_end_tokens_per_s"].Double(), child["end_to_end_ratio"].Double(), child["end_to_end_ratio_min"].OptionalDouble(),
            child["end_to_end_ratio_max"].OptionalDouble(), oursRatio, llama["scenario"]["threads"].OptionalInt(), llama["scenario"]["dtype"].OptionalString());
    }
}

/// <summary>Accuracy retention (eval.json's, the paper's definition) with its interval, components and what was left out.</summary>
public sealed record ReportRetention(double Value, JsonArray? Ci95, string? Definition, JsonObject Components, JsonObject? Excluded)
{
    /// <summary>False where the parent's accuracy is 0 on every accuracy metric (e.g. random weights): nothing to retain (value NaN, null in JSON).</summary>
    public bool Defined => !double.IsNaN(Value);

    /// <summary>"98.2%", or "undefined" with the reason.</summary>
    public string Percent => Defined ? $"{100 * Value:F1}%" : "undefined (the parent's accuracy is 0: nothing to retain, e.g. a parent with random weights)";

    public JsonObject ToJson() => new()
    {
        ["value"] = Defined ? Value : null, ["ci95"] = Ci95?.DeepClone(), ["definition"] = Definition, ["components"] = Components.DeepClone(), ["excluded"] = Excluded?.DeepClone(),
    };

    public static ReportRetention Read(JsonField j) => new(j["value"].OptionalDouble() ?? double.NaN, j["ci95"].Node is null ? null : (JsonArray)j["ci95"].Array().DeepClone(),
        j["definition"].OptionalString(), j["components"].ObjectCopy(), j["excluded"].OptionalObjectCopy());
}

/// <summary>One layer of the child: its variants' labels and their share of the parent's KV heads and FFN width.</summary>
public sealed record ReportLayer(int Layer, string Attention, string Ffn, double KvShare, double FfnShare)
{
    public JsonObject ToJson() => new() { ["layer"] = Layer, ["attention"] = Attention, ["ffn"] = Ffn, ["kv_share"] = KvShare, ["ffn_share"] = FfnShare };

    public static ReportLayer Read(JsonField j) => new(j["layer"].Int(), j["attention"].String(), j["ffn"].String(), j["kv_share"].Double(), j["ffn_share"].Double());
}

/// <summary>
/// RUN/report.json (format 1): the parent-vs-child comparison, measured. Its field names are read by other tools and
/// stay as they are. The sections other stages own (the solution's request as <c>constraints</c>, eval.json's
/// <c>fidelity</c> and <c>protocol</c>, distillation.json, bench.json, the baselines table) are carried as written.
/// </summary>
public sealed record ReportFile(string Solution, string ParentDir, string ChildDir, ReportScenario Scenario, JsonObject Constraints, SolutionTotals Estimated,
    ReportSide Parent, ReportSide Child, double MeasuredThroughputRatio, double? CostModelError, ReportRounds Rounds, ReportRetention AccuracyRetention,
    JsonObject? Fidelity, JsonObject? Protocol, JsonObject? Distillation, IReadOnlyList<ReportLayer> Layers, JsonObject Bench, IReadOnlyList<string> Plots)
{
    public const int FormatVersion = 1;
    const string Rerun = "puzzle report";

    /// <summary>The baselines table (BaselinesReport), for runs with baselines.</summary>
    public JsonObject? Baselines { get; init; }

    /// <summary>llama.cpp's ratio beside ours (<c>llama_cpp</c>), for runs benched in both engines; absent otherwise (a field added within format 1).</summary>
    public ReportEngineCheck? LlamaCpp { get; init; }

    public JsonObject ToJson()
    {
        var o = new JsonObject
        {
            ["format_version"] = FormatVersion,
            ["solution"] = Solution,
            ["parent_dir"] = ParentDir,
            ["child_dir"] = ChildDir,
            ["scenario"] = Scenario.ToJson(),
            ["constraints"] = Constraints.DeepClone(),
            ["estimated"] = Estimated.ToJson(),
            ["parent"] = Parent.ToJson(),
            ["child"] = Child.ToJson(),
            ["measured_throughput_ratio"] = MeasuredThroughputRatio,
            // The cost model's prediction (ScenarioCost over costs.json, as the search used it) against the benchmark.
            ["cost_model_error"] = CostModelError,
            ["measured_throughput_ratio_rounds"] = Rounds.ToJson(),
            ["accuracy_retention"] = AccuracyRetention.ToJson(),
            ["fidelity"] = Fidelity?.DeepClone(),
            ["protocol"] = Protocol?.DeepClone(),
            ["distillation"] = Distillation?.DeepClone(),
            ["layers"] = new JsonArray(Layers.Select(l => (JsonNode)l.ToJson()).ToArray()),
            ["bench"] = Bench.DeepClone(),
            ["plots"] = new JsonArray(Plots.Select(p => (JsonNode)JsonValue.Create(p)).ToArray()),
        };
        if (Baselines is not null) o["baselines"] = Baselines.DeepClone();
        if (LlamaCpp is not null) o["llama_cpp"] = LlamaCpp.ToJson();
        return o;
    }

    /// <summary>
    /// The report as JSON, for the callers that still hold it so (EvaluationStage.Run, Pipeline.Run, Demo.Run); the same
    /// tree <see cref="ToJson"/> gives. New code reads <see cref="ReportFile"/> (or <see cref="Read"/>s report.json).
    /// </summary>
    public static implicit operator JsonObject(ReportFile report) => report.ToJson();

    /// <summary>Writes report.json atomically.</summary>
    public void Write(string path) => AtomicFile.WriteJson(path, ToJson());

    /// <summary>report.json, checked: format 1, every field the report itself computes typed; errors name the file and the field.</summary>
    public static ReportFile Read(string path) => Parse(JsonFile.ReadVersioned(path, FormatVersion, Rerun));

    public static ReportFile Parse(JsonField j) => new(
        j["solution"].String(), j["parent_dir"].String(), j["child_dir"].String(), ReportScenario.Read(j["scenario"]),
        j["constraints"].ObjectCopy(), SolutionTotals.Read(j["estimated"]), ReportSide.Read(j["parent"]), ReportSide.Read(j["child"]),
        j["measured_throughput_ratio"].Double(), j["cost_model_error"].OptionalDouble(), ReportRounds.Read(j["measured_throughput_ratio_rounds"]),
        ReportRetention.Read(j["accuracy_retention"]), j["fidelity"].OptionalObjectCopy(), j["protocol"].OptionalObjectCopy(), j["distillation"].OptionalObjectCopy(),
        j["layers"].Items().Select(ReportLayer.Read).ToList(), j["bench"].ObjectCopy(),
        // Reports before this record wrote a null where a plot was not drawn.
        j["plots"].Items().Where(p => p.Node is not null).Select(p => p.String()).ToList())
    {
        Baselines = j["baselines"].OptionalObjectCopy(),
        LlamaCpp = j["llama_cpp"].Node is null ? null : ReportEngineCheck.Read(j["llama_cpp"]),
    };
}
