using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Domain;
using Puzzle.IO;
using Puzzle.Model;
using Puzzle.Stages.Search;

namespace Puzzle.Stages.Report;

/// <summary>
/// RUN/report.md + report.json + PNGs: the parent-vs-child table (measured, not estimated), the child's per-layer
/// architecture, and the search's Pareto front with the chosen point.
/// </summary>
public static class ReportStage
{
    public static JsonObject Write(RunDirectory run, string solutionName, string childDir, JsonNode eval, JsonNode bench, JsonNode? distillation, Action<string>? log = null)
    {
        log ??= Log.Info;
        var parent = HfConfig.Read(run.ParentDir);
        var child = HfConfig.Read(childDir);
        var solution = SolutionFile.Read(run.Artifact(SearchStage.Folder, solutionName + ".json"));
        var sc = run.Config.Scenario;
        var scenario = Costs.ScenarioCost.From(sc);
        JsonObject Side(ModelConfig c, JsonNode metrics, JsonNode benchRow) => new()
        {
            ["parameters"] = c.TotalParameters,
            ["memory_at_scenario_bytes"] = scenario.MemoryBytes(c),
            ["kv_bytes_per_token"] = c.KvBytesPerToken(scenario.KvBytes),
            ["end_to_end_tokens_per_s"] = benchRow["end_to_end_tokens_per_s"]!.GetValue<double>(),
            ["prefill_tokens_per_s"] = benchRow["prefill_tokens_per_s"]!.GetValue<double>(),
            ["decode_tokens_per_s"] = benchRow["decode_tokens_per_s"]!.GetValue<double>(),
            ["time_to_first_token_ms"] = benchRow["time_to_first_token_ms"]!.GetValue<double>(),
            ["perplexity"] = metrics["perplexity"]!.GetValue<double>(),
            ["next_token_accuracy"] = metrics["next_token_accuracy"]!.GetValue<double>(),
            ["kl_to_parent"] = metrics["kl_to_reference"]?.GetValue<double>() ?? 0.0,
            ["top1_agreement"] = metrics["top1_agreement"]?.GetValue<double>() ?? 1.0,
            ["tasks"] = metrics["tasks"]!.DeepClone(),
            ["ci95"] = metrics["ci95"]?.DeepClone(),
        };
        var benchRows = bench["models"]!.AsArray();
        var parentSide = Side(parent, eval["reference_metrics"]!, benchRows[0]!);
        var childSide = Side(child, eval["metrics"]!, benchRows[1]!);
        double throughputRatio = childSide["end_to_end_tokens_per_s"]!.GetValue<double>() / parentSide["end_to_end_tokens_per_s"]!.GetValue<double>();
        var retentionNode = eval["retention"] ?? throw new PuzzleException("report: the eval result has no retention (run `puzzle eval` with --reference PARENT)");
        if (retentionNode["value"] is null)
            throw new PuzzleException("report: the eval result predates accuracy retention on the test split (eval format 1); rerun `puzzle eval`");
        double retention = retentionNode["value"]!.GetValue<double>();
        var childBench = benchRows[1]!;

        var layers = new JsonArray();
        var map = new List<(int, double, double, string, string)>();
        for (int i = 0; i < child.NumLayers; i++)
        {
            var (pa, pf, ca, cf) = (parent.Blocks[i].Attention, parent.Blocks[i].Ffn, child.Blocks[i].Attention, child.Blocks[i].Ffn);
            double kvShare = ca.NoOp ? 0 : ca.ReplaceWithLinear ? 0.05 : (double)ca.NumKeyValueHeads!.Value / (pa.NumKeyValueHeads ?? 1);
            double ffnShare = cf.NoOp ? 0 : cf.ReplaceWithLinear ? 0.05 : (double)cf.IntermediateSize!.Value / (pf.IntermediateSize ?? 1);
            string a = VariantLabel.Of(ca), f = VariantLabel.Of(cf);
            layers.Add(new JsonObject { ["layer"] = i, ["attention"] = a, ["ffn"] = f, ["kv_share"] = kvShare, ["ffn_share"] = ffnShare });
            map.Add((i, kvShare, ffnShare, a, f));
        }
        Plots.ArchitectureMap(run.Artifact("report-architecture.png"), map, $"Child architecture ({solutionName}) relative to the parent");
        string paretoPath = run.Artifact(SearchStage.Folder, "pareto.json");
        bool hasPareto = File.Exists(paretoPath);
        if (hasPareto)
        {
            Plots.ParetoFront(run.Artifact("report-pareto.png"), JsonFile.Read(paretoPath).Node!,
                (solution.Verified.ThroughputRatio, solution.Verified.Kl, $"chosen: {solutionName}"));
        }

        var report = new JsonObject
        {
            ["format_version"] = 1,
            ["solution"] = solutionName,
            ["parent_dir"] = run.ParentDir,
            ["child_dir"] = Path.GetFullPath(childDir),
            ["scenario"] = new JsonObject { ["batch"] = sc.Batch, ["prompt_length"] = sc.PromptLength, ["generation_length"] = sc.GenerationLength, ["weight_dtype"] = sc.WeightDtype, ["kv_dtype"] = sc.KvDtype, ["measure_dtype"] = sc.MeasureDtype, ["device"] = sc.Device },
            ["constraints"] = solution.RequestJson(),
            ["estimated"] = solution.Verified.ToJson(),
            ["parent"] = parentSide,
            ["child"] = childSide,
            ["measured_throughput_ratio"] = throughputRatio,
            // The cost model's prediction (ScenarioCost over costs.json, as the search used it) against the benchmark.
            ["cost_model_error"] = throughputRatio / solution.Verified.ThroughputRatio - 1,
            ["measured_throughput_ratio_rounds"] = new JsonObject
            {
                ["min"] = childBench["end_to_end_ratio_min"]?.DeepClone(), ["max"] = childBench["end_to_end_ratio_max"]?.DeepClone(),
                ["order"] = bench["scenario"]?["order"]?.DeepClone(),
            },
            ["accuracy_retention"] = new JsonObject
            {
                ["value"] = retention, ["ci95"] = retentionNode["ci95"]?.DeepClone(), ["definition"] = retentionNode["definition"]?.DeepClone(),
                ["components"] = retentionNode["components"]?.DeepClone(), ["excluded"] = retentionNode["excluded"]?.DeepClone(),
            },
            ["fidelity"] = eval["fidelity"]?.DeepClone(),
            ["protocol"] = eval["protocol"]?.DeepClone(),
            ["distillation"] = distillation?.DeepClone(),
            ["layers"] = layers,
            ["bench"] = bench.DeepClone(),
            ["plots"] = new JsonArray("report-architecture.png", hasPareto ? "report-pareto.png" : null),
        };
        AtomicFile.WriteJson(run.Artifact("report.json"), report);
        // Re-read: numbers built in memory keep their CLR type, parsed ones convert freely.
        AtomicFile.WriteAllText(run.Artifact("report.md"), Markdown(JsonNode.Parse(report.ToJsonString())!.AsObject(), hasPareto));
        BaselinesReport.Write(run, report, log);
        log($"report: measured throughput {throughputRatio:F2}x the parent, accuracy retention {retention:P1} {Evaluation.EvalStage.FormatInterval(retentionNode["ci95"], percent: true)} on the test split -> {run.Artifact("report.md")}");
        return report;
    }

    static string F(double v, string format) => v.ToString(format, CultureInfo.InvariantCulture);

    static string Markdown(JsonObject r, bool hasPareto)
    {
        var p = r["parent"]!;
        var c = r["child"]!;
        var s = r["scenario"]!;
        var md = new StringBuilder();
        md.AppendLine($"# Puzzle report: {r["solution"]}");
        md.AppendLine();
        md.AppendLine($"Parent `{r["parent_dir"]}` → child `{r["child_dir"]}`. Scenario: batch {s["batch"]}, prompt {s["prompt_length"]}, " +
                      $"generation {s["generation_length"]}, weights {s["weight_dtype"]}, KV cache {s["kv_dtype"]}; costs, the search's check and the benchmark timed in {s["measure_dtype"]} on {s["device"]}. Throughput and quality are measured " +
                      "(`puzzle bench`, `puzzle eval`), not estimated.");
        md.AppendLine();
        var protocol = r["protocol"]!;
        var retention = r["accuracy_retention"]!;
        var fidelity = r["fidelity"]!;
        string Ci(JsonNode? ci, bool percent = false, string format = "0.000") =>
            Evaluation.EvalStage.FormatInterval(ci, percent, format) is { Length: > 0 } text ? " " + text : "";
        md.AppendLine($"Quality is measured on the held-out **{protocol["split"]}** split ({protocol["tokens"]!.GetValue<long>():N0} tokens in {protocol["windows"]} windows from " +
                      $"{protocol["documents"]} documents), which no stage that trains or selects reads. Brackets are 95% intervals " +
                      $"({protocol["intervals"]!["method"]} over {protocol["intervals"]!["token_units"]} for token metrics and over items for tasks, " +
                      $"{protocol["intervals"]!["resamples"]} resamples, seed {protocol["intervals"]!["seed"]}).");
        md.AppendLine();
        md.AppendLine("| | parent | child | child / parent |");
        md.AppendLine("|---|---:|---:|---:|");
        void Row(string name, string key, string format, bool percent = false)
        {
            double a = p[key]!.GetValue<double>(), b = c[key]!.GetValue<double>();
            string Show(double v) => percent ? F(100 * v, "0.00") + "%" : F(v, format);
            md.AppendLine($"| {name} | {Show(a)} | {Show(b)} | {(a != 0 ? F(b / a, "0.000") : "–")} |");
        }
        Row("parameters", "parameters", "N0");
        Row("memory at scenario (bytes)", "memory_at_scenario_bytes", "N0");
        Row("KV cache per token (bytes)", "kv_bytes_per_token", "N0");
        var rounds = r["measured_throughput_ratio_rounds"];
        string spread = rounds?["min"] is { } lo && rounds["max"] is { } hi
            ? $" (rounds {F(lo.GetValue<double>(), "0.000")}–{F(hi.GetValue<double>(), "0.000")})" : "";
        md.AppendLine($"| end-to-end throughput (tokens/s) | {F(p["end_to_end_tokens_per_s"]!.GetValue<double>(), "N0")} | {F(c["end_to_end_tokens_per_s"]!.GetValue<double>(), "N0")} | " +
                      $"{F(r["measured_throughput_ratio"]!.GetValue<double>(), "0.000")}{spread} |");
        Row("prefill (tokens/s)", "prefill_tokens_per_s", "N0");
        Row("decode (tokens/s)", "decode_tokens_per_s", "N0");
        Row("time to first token (ms)", "time_to_first_token_ms", "0.0");
        string Pct(double v) => F(100 * v, "0.00") + "%";
        var components = retention["components"]!.AsObject();
        md.AppendLine($"| next-token accuracy (accuracy) | {Pct(p["next_token_accuracy"]!.GetValue<double>())}{Ci(p["ci95"]?["next_token_accuracy"], true)} | " +
                      $"{Pct(c["next_token_accuracy"]!.GetValue<double>())}{Ci(c["ci95"]?["next_token_accuracy"], true)} | " +
                      $"{F(components["next_token_accuracy"]!["ratio"]!.GetValue<double>(), "0.000")}{Ci(components["next_token_accuracy"]!["ci95"])} |");
        foreach (var (name, task) in c["tasks"]!.AsObject())
        {
            double a = p["tasks"]![name]!["acc_norm"]!.GetValue<double>(), b = task!["acc_norm"]!.GetValue<double>();
            string key = $"{name}.acc_norm";
            string ratio = components[key] is { } comp
                ? $"{F(comp["ratio"]!.GetValue<double>(), "0.000")}{Ci(comp["ci95"])}"
                : $"– (parent not significantly above chance {Pct(task["chance"]?.GetValue<double>() ?? 0)}; not in retention)";
            md.AppendLine($"| {name} acc_norm (accuracy, {task["items"]} items) | {Pct(a)}{Ci(p["ci95"]?["tasks"]?[name]?["acc_norm"], true)} | " +
                          $"{Pct(b)}{Ci(c["ci95"]?["tasks"]?[name]?["acc_norm"], true)} | {ratio} |");
        }
        md.AppendLine($"| perplexity (fidelity) | {F(p["perplexity"]!.GetValue<double>(), "0.000")}{Ci(p["ci95"]?["perplexity"])} | " +
                      $"{F(c["perplexity"]!.GetValue<double>(), "0.000")}{Ci(c["ci95"]?["perplexity"])} | " +
                      $"{F(fidelity["perplexity_ratio"]!["value"]!.GetValue<double>(), "0.000")}{Ci(fidelity["perplexity_ratio"]!["ci95"])} |");
        md.AppendLine($"| top-1 agreement with the parent (fidelity) | 100% | {Pct(fidelity["top1_agreement"]!["value"]!.GetValue<double>())}{Ci(fidelity["top1_agreement"]!["ci95"], true)} | |");
        md.AppendLine($"| KL(parent ‖ child) per token, nats (fidelity) | 0 | {F(fidelity["kl_parent_child"]!["value"]!.GetValue<double>(), "0.0000")}{Ci(fidelity["kl_parent_child"]!["ci95"], false, "0.0000")} | |");
        md.AppendLine();
        md.AppendLine($"**Measured throughput: {F(r["measured_throughput_ratio"]!.GetValue<double>(), "0.00")}x the parent{spread}. " +
                      $"Accuracy retention: {F(100 * retention["value"]!.GetValue<double>(), "0.0")}%{Ci(retention["ci95"], true)}** " +
                      $"(mean of {string.Join(", ", components.Select(kv => $"{kv.Key} {F(kv.Value!["ratio"]!.GetValue<double>(), "0.000")}"))}).");
        if (r["distillation"] is JsonObject d)
            md.AppendLine($"\nGlobal distillation: validation KL {F(d["initial_validation_kl"]!.GetValue<double>(), "0.0000")} → {F(d["best_validation_kl"]!.GetValue<double>(), "0.0000")} ({d["tokens"]} tokens).");
        var e = r["estimated"]!;
        md.AppendLine($"\nThe search estimated {F(e["throughput_ratio"]!.GetValue<double>(), "0.00")}x throughput at summed replace-1-block KL {F(e["kl"]!.GetValue<double>(), "0.0000")}" +
                      (r["cost_model_error"] is { } err ? $"; the benchmark measured {F(100 * err.GetValue<double>(), "+0.0;-0.0")}% against that estimate." : "."));
        md.AppendLine();
        md.AppendLine("## Definitions and data");
        md.AppendLine();
        md.AppendLine($"- **Accuracy retention** (`accuracy_retention`): {retention["definition"]}");
        if (retention["excluded"] is JsonObject excluded && excluded.Count > 0)
            md.AppendLine($"- Left out of retention: {string.Join("; ", excluded.Select(kv => $"{kv.Key} ({kv.Value})"))}.");
        md.AppendLine($"- **Fidelity**: {fidelity["definition"]}.");
        md.AppendLine($"- **Throughput**: end-to-end tokens/s of `puzzle bench` (same engine, prompts and scenario), medians over rounds run in " +
                      $"{rounds?["order"]?.GetValue<string>() ?? "alternating"} order; the spread is the min and max of the per-round ratio.");
        md.AppendLine($"- **Intervals**: {protocol["intervals"]!["definition"]}; {protocol["intervals"]!["resamples"]} resamples, seed {protocol["intervals"]!["seed"]}.");
        md.AppendLine();
        md.AppendLine("| split | documents | tokens | read by |");
        md.AppendLine("|---|---:|---:|---|");
        var readers = new Dictionary<string, string>
        {
            ["train"] = "block library training (BLD), global distillation training",
            ["validation"] = "BLD and GKD checkpoint choice, replace-1-block scoring (hence the search)",
            ["test"] = "`puzzle eval` and this report only",
        };
        foreach (var (name, split) in protocol["splits"]!.AsObject())
            md.AppendLine($"| {name} | {split!["documents"]!.GetValue<long>():N0} | {split["tokens"]!.GetValue<long>():N0} | {readers.GetValueOrDefault(name, "")} |");
        md.AppendLine();
        md.AppendLine("## Architecture");
        md.AppendLine();
        md.AppendLine("![per-layer architecture](report-architecture.png)");
        md.AppendLine();
        md.AppendLine("| layer | attention | FFN |");
        md.AppendLine("|---:|---|---|");
        foreach (var l in r["layers"]!.AsArray()) md.AppendLine($"| {l!["layer"]} | {l["attention"]} | {l["ffn"]} |");
        if (hasPareto)
        {
            md.AppendLine();
            md.AppendLine("## Search: quality vs throughput");
            md.AppendLine();
            md.AppendLine("![Pareto front](report-pareto.png)");
        }
        return md.ToString();
    }
}
