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
    public static ReportFile Write(RunDirectory run, string solutionName, string childDir, JsonNode eval, JsonNode bench, JsonNode? distillation, Action<string>? log = null)
    {
        log ??= Log.Info;
        var parent = HfConfig.Read(run.ParentDir);
        var child = HfConfig.Read(childDir);
        var solution = SolutionFile.Read(run.Solution(solutionName));
        var sc = run.Config.Scenario;
        var scenario = Costs.ScenarioCost.From(sc);
        // Re-parsed, so numbers built in memory read like parsed ones and a missing field is named.
        var e = JsonFile.Parse(eval.ToJsonString(), "eval result");
        var b = JsonFile.Parse(bench.ToJsonString(), "bench result");
        ReportSide Side(ModelConfig c, JsonField metrics, JsonField benchRow) => new(
            c.TotalParameters, scenario.MemoryBytes(c), c.KvBytesPerToken(scenario.KvBytes),
            benchRow["end_to_end_tokens_per_s"].Double(), benchRow["prefill_tokens_per_s"].Double(), benchRow["decode_tokens_per_s"].Double(),
            benchRow["time_to_first_token_ms"].Double(), metrics["perplexity"].Double(), metrics["next_token_accuracy"].Double(),
            metrics["kl_to_reference"].OptionalDouble() ?? 0.0, metrics["top1_agreement"].OptionalDouble() ?? 1.0,
            metrics["tasks"].ObjectCopy(), metrics["ci95"].OptionalObjectCopy());
        var parentSide = Side(parent, e["reference_metrics"], b["models"][0]);
        var childSide = Side(child, e["metrics"], b["models"][1]);
        // The bench's paired estimator (the median of per-round ratios, as the definitions below say and llama.cpp's row
        // uses); a bench.json written before the rounds were paired gives the ratio of the median tokens/s.
        double throughputRatio = b["models"][1]["end_to_end_ratio"].OptionalDouble() ?? childSide.EndToEndTokensPerS / parentSide.EndToEndTokensPerS;
        var retentionNode = e["retention"];
        if (!retentionNode.Exists) throw new PuzzleException("report: the eval result has no retention (run `puzzle eval` with --reference PARENT)");
        if (!retentionNode["metric"].Exists)
            throw new PuzzleException("report: the eval result predates accuracy retention on the test split (eval format 1); rerun `puzzle eval`");
        var childBench = b["models"][1];

        var layers = new List<ReportLayer>();
        for (int i = 0; i < child.NumLayers; i++)
        {
            var (pa, pf, ca, cf) = (parent.Blocks[i].Attention, parent.Blocks[i].Ffn, child.Blocks[i].Attention, child.Blocks[i].Ffn);
            double kvShare = ca.NoOp ? 0 : ca.ReplaceWithLinear ? 0.05 : (double)ca.NumKeyValueHeads!.Value / (pa.NumKeyValueHeads ?? 1);
            double ffnShare = cf.NoOp ? 0 : cf.ReplaceWithLinear ? 0.05 : (double)cf.IntermediateSize!.Value / (pf.IntermediateSize ?? 1);
            layers.Add(new ReportLayer(i, VariantLabel.Of(ca), VariantLabel.Of(cf), kvShare, ffnShare));
        }
        Plots.ArchitectureMap(run.Artifact("report-architecture.png"), layers.Select(l => (l.Layer, l.KvShare, l.FfnShare, l.Attention, l.Ffn)).ToList(),
            $"Child architecture ({solutionName}) relative to the parent");
        string paretoPath = run.Artifact(SearchStage.Folder, "pareto.json");
        bool hasPareto = File.Exists(paretoPath);
        if (hasPareto)
        {
            Plots.ParetoFront(run.Artifact("report-pareto.png"), JsonFile.Read(paretoPath).Node!,
                (solution.Verified.ThroughputRatio, solution.Verified.Kl, $"chosen: {solutionName}"));
        }

        var report = new ReportFile(solutionName, run.ParentDir, Path.GetFullPath(childDir),
            new ReportScenario(sc.Batch, sc.PromptLength, sc.GenerationLength, sc.WeightDtype, sc.KvDtype, sc.MeasureDtype, sc.Device),
            solution.RequestJson(), solution.Verified, parentSide, childSide, throughputRatio, throughputRatio / solution.Verified.ThroughputRatio - 1,
            new ReportRounds(childBench["end_to_end_ratio_min"].OptionalDouble(), childBench["end_to_end_ratio_max"].OptionalDouble(), b["scenario"]["order"].OptionalString())
            { Ci95 = ReportRounds.Interval(childBench["end_to_end_ratio_ci95"]) },
            ReportRetention.Read(retentionNode),
            e["fidelity"].OptionalObjectCopy(), e["protocol"].OptionalObjectCopy(), distillation is null ? null : JsonFile.Parse(distillation.ToJsonString(), "distillation result").ObjectCopy(),
            layers, b.ObjectCopy(), hasPareto ? ["report-architecture.png", "report-pareto.png"] : ["report-architecture.png"])
        {
            LlamaCpp = ReportEngineCheck.FromBench(b, throughputRatio),
        };
        report.Write(run.Report);
        AtomicFile.WriteAllText(run.ReportMarkdown, Markdown(ReportFile.Read(run.Report), hasPareto, run.Report));
        report = BaselinesReport.Write(run, report, log) ?? report;
        if (report.LlamaCpp is { } l)
            log($"report: llama.cpp measured {l.Ratio:F2}x against our {l.OursRatio:F2}x (llama.cpp / ours {l.Agreement:F3}: " +
                $"{(l.Agrees ? "within" : "outside")} ±{ReportEngineCheck.Tolerance:P0})");
        log($"report: measured throughput {throughputRatio:F2}x the parent, accuracy retention {report.AccuracyRetention.Percent} " +
            $"{Evaluation.EvalStage.FormatInterval(report.AccuracyRetention.Ci95, percent: true)} on the test split -> {run.ReportMarkdown}");
        return report;
    }

    static string F(double v, string format) => v.ToString(format, CultureInfo.InvariantCulture);

    static string Markdown(ReportFile r, bool hasPareto, string source)
    {
        var (p, c, s) = (r.Parent, r.Child, r.Scenario);
        var md = new StringBuilder();
        md.AppendLine($"# Puzzle report: {r.Solution}");
        md.AppendLine();
        md.AppendLine($"Parent `{r.ParentDir}` → child `{r.ChildDir}`. Scenario: batch {s.Batch}, prompt {s.PromptLength}, " +
                      $"generation {s.GenerationLength}, weights {s.WeightDtype}, KV cache {s.KvDtype}; costs, the search's check and the benchmark timed in {s.MeasureDtype} on {s.Device}. Throughput and quality are measured " +
                      "(`puzzle bench`, `puzzle eval`), not estimated.");
        md.AppendLine();
        // eval.json's sections, as the report carries them: a missing field is named.
        var protocol = new JsonField(r.Protocol, source, "protocol");
        var fidelity = new JsonField(r.Fidelity, source, "fidelity");
        var retention = r.AccuracyRetention;
        var components = new JsonField(retention.Components, source, "accuracy_retention.components");
        var intervals = protocol["intervals"];
        string Ci(JsonNode? ci, bool percent = false, string format = "0.000") =>
            Evaluation.EvalStage.FormatInterval(ci, percent, format) is { Length: > 0 } text ? " " + text : "";
        md.AppendLine($"Quality is measured on the held-out **{protocol["split"].String()}** split ({protocol["tokens"].Long():N0} tokens in {protocol["windows"].Long()} windows from " +
                      $"{protocol["documents"].Long()} documents), which no stage that trains or selects reads. Brackets are 95% intervals " +
                      $"({intervals["method"].String()} over {intervals["token_units"].String()} for token metrics and over items for tasks, " +
                      $"{intervals["resamples"].Long()} resamples, seed {intervals["seed"].Long()}).");
        md.AppendLine();
        md.AppendLine("| | parent | child | child / parent |");
        md.AppendLine("|---|---:|---:|---:|");
        void Row(string name, double a, double b, string format)
        {
            md.AppendLine($"| {name} | {F(a, format)} | {F(b, format)} | {(a != 0 ? F(b / a, "0.000") : "–")} |");
        }
        Row("parameters", p.Parameters, c.Parameters, "N0");
        Row("memory at scenario (bytes)", p.MemoryAtScenarioBytes, c.MemoryAtScenarioBytes, "N0");
        Row("KV cache per token (bytes)", p.KvBytesPerToken, c.KvBytesPerToken, "N0");
        var rounds = r.Rounds;
        string spread = (rounds.Ci95 is { } ci ? $" [95%: {F(ci[0], "0.000")}, {F(ci[1], "0.000")}]" : "") +
                        (rounds.Min is { } lo && rounds.Max is { } hi ? $" (rounds {F(lo, "0.000")}–{F(hi, "0.000")})" : "");
        md.AppendLine($"| end-to-end throughput (tokens/s) | {F(p.EndToEndTokensPerS, "N0")} | {F(c.EndToEndTokensPerS, "N0")} | " +
                      $"{F(r.MeasuredThroughputRatio, "0.000")}{spread} |");
        string Spread(double? lo, double? hi) => lo is { } a && hi is { } b ? $" (rounds {F(a, "0.000")}–{F(b, "0.000")})" : "";
        if (r.LlamaCpp is { } llama)
            md.AppendLine($"| end-to-end throughput in {llama.Engine} (tokens/s) | {F(llama.ParentTokensPerS, "N0")} | {F(llama.ChildTokensPerS, "N0")} | " +
                          $"{F(llama.Ratio, "0.000")}{Spread(llama.Min, llama.Max)} |");
        Row("prefill (tokens/s)", p.PrefillTokensPerS, c.PrefillTokensPerS, "N0");
        Row("decode (tokens/s)", p.DecodeTokensPerS, c.DecodeTokensPerS, "N0");
        Row("time to first token (ms)", p.TimeToFirstTokenMs, c.TimeToFirstTokenMs, "0.0");
        string Pct(double v) => F(100 * v, "0.00") + "%";
        // A component's child/parent ratio; null where the parent's accuracy is 0 (nothing to retain).
        string Ratio(JsonField comp) => comp["ratio"].OptionalDouble() is { } v ? $"{F(v, "0.000")}{Ci(comp["ci95"].Node)}" : "undefined (parent at 0)";
        var (pci, cci) = (new JsonField(p.Ci95, source, "parent.ci95"), new JsonField(c.Ci95, source, "child.ci95"));
        md.AppendLine($"| next-token accuracy (accuracy) | {Pct(p.NextTokenAccuracy)}{Ci(pci["next_token_accuracy"].Node, true)} | " +
                      $"{Pct(c.NextTokenAccuracy)}{Ci(cci["next_token_accuracy"].Node, true)} | " +
                      $"{Ratio(components["next_token_accuracy"])} |");
        var parentTasks = new JsonField(p.Tasks, source, "parent.tasks");
        foreach (var (name, task) in new JsonField(c.Tasks, source, "child.tasks").Properties())
        {
            double a = parentTasks[name]["acc_norm"].Double(), b = task["acc_norm"].Double();
            var comp = components[$"{name}.acc_norm"];
            string ratio = comp.Exists
                ? Ratio(comp)
                : $"– (parent not significantly above chance {Pct(task["chance"].OptionalDouble() ?? 0)}; not in retention)";
            md.AppendLine($"| {name} acc_norm (accuracy, {task["items"].Long()} items) | {Pct(a)}{Ci(pci["tasks"][name]["acc_norm"].Node, true)} | " +
                          $"{Pct(b)}{Ci(cci["tasks"][name]["acc_norm"].Node, true)} | {ratio} |");
        }
        md.AppendLine($"| perplexity (fidelity) | {F(p.Perplexity, "0.000")}{Ci(pci["perplexity"].Node)} | " +
                      $"{F(c.Perplexity, "0.000")}{Ci(cci["perplexity"].Node)} | " +
                      $"{F(fidelity["perplexity_ratio"]["value"].Double(), "0.000")}{Ci(fidelity["perplexity_ratio"]["ci95"].Node)} |");
        md.AppendLine($"| top-1 agreement with the parent (fidelity) | 100% | {Pct(fidelity["top1_agreement"]["value"].Double())}{Ci(fidelity["top1_agreement"]["ci95"].Node, true)} | |");
        md.AppendLine($"| KL(parent ‖ child) per token, nats (fidelity) | 0 | {F(fidelity["kl_parent_child"]["value"].Double(), "0.0000")}{Ci(fidelity["kl_parent_child"]["ci95"].Node, false, "0.0000")} | |");
        md.AppendLine();
        md.AppendLine($"**Measured throughput: {F(r.MeasuredThroughputRatio, "0.00")}x the parent{spread}. " +
                      (retention.Defined
                          ? $"Accuracy retention: {F(100 * retention.Value, "0.0")}%{Ci(retention.Ci95, true)}** " +
                            $"(mean of {string.Join(", ", components.Properties().Select(kv => $"{kv.Name} {F(kv.Value["ratio"].Double(), "0.000")}"))})."
                          : $"Accuracy retention: {retention.Percent}**; the fidelity rows above still compare the child with the parent."));
        if (BusyBench(r.Bench) is { } busy) md.AppendLine($"\n**{busy}**");
        if (r.LlamaCpp is { } second)
            md.AppendLine($"\n{second.Engine} (`llama-batched-bench`, the same scenario and rounds, {second.Dtype ?? "?"} GGUF weights, {second.Threads?.ToString(CultureInfo.InvariantCulture) ?? "?"} threads) " +
                          $"measured the child at {F(second.Ratio, "0.00")}x the parent{Spread(second.Min, second.Max)}, against {F(second.OursRatio, "0.00")}x in our engine: " +
                          $"the two {(second.Agrees ? "agree" : "do not agree")} within ±{F(100 * ReportEngineCheck.Tolerance, "0")}% ({second.Engine} / ours = {F(second.Agreement, "0.000")}).");
        else if (r.Bench["llama_cpp_error"]?.GetValue<string>() is { } error)
            md.AppendLine($"\nllama.cpp's side of the benchmark is missing: {error}.");
        if (r.Distillation is { } distillation)
        {
            var d = new JsonField(distillation, source, "distillation");
            md.AppendLine($"\nGlobal distillation: validation KL {F(d["initial_validation_kl"].Double(), "0.0000")} → {F(d["best_validation_kl"].Double(), "0.0000")} ({d["tokens"].Long()} tokens).");
        }
        var e = r.Estimated;
        md.AppendLine($"\nThe search estimated {F(e.ThroughputRatio, "0.00")}x throughput at summed replace-1-block KL {F(e.Kl, "0.0000")}" +
                      (r.CostModelError is { } err ? $"; the benchmark measured {F(100 * err, "+0.0;-0.0")}% against that estimate." : "."));
        md.AppendLine();
        md.AppendLine("## Definitions and data");
        md.AppendLine();
        md.AppendLine($"- **Accuracy retention** (`accuracy_retention`): {retention.Definition}");
        if (retention.Excluded is { Count: > 0 } excluded)
            md.AppendLine($"- Left out of retention: {string.Join("; ", excluded.Select(kv => $"{kv.Key} ({kv.Value})"))}.");
        md.AppendLine($"- **Fidelity**: {fidelity["definition"].String()}.");
        string engine = r.Bench["engine"]?.GetValue<string>() is { } other ? $"`puzzle bench --engine {other}`" : "`puzzle bench`";
        md.AppendLine($"- **Throughput**: end-to-end tokens/s of {engine} (same engine, prompts and scenario), medians over rounds run in " +
                      $"{rounds.Order ?? "alternating"} order; the ratio is the median of the per-round ratios (parent's time over the child's in the same round), " +
                      "the spread their min and max." +
                      (r.LlamaCpp is { } lc ? $" The {lc.Engine} row: the same models exported to GGUF, timed by its own benchmark in the same way." : ""));
        md.AppendLine($"- **Intervals**: {intervals["definition"].String()}; {intervals["resamples"].Long()} resamples, seed {intervals["seed"].Long()}.");
        md.AppendLine();
        md.AppendLine("| split | documents | tokens | read by |");
        md.AppendLine("|---|---:|---:|---|");
        var readers = new Dictionary<string, string>
        {
            ["train"] = "block library training (BLD), global distillation training",
            ["validation"] = "BLD and GKD checkpoint choice, replace-1-block scoring (hence the search)",
            ["test"] = "`puzzle eval` and this report only",
        };
        foreach (var (name, split) in protocol["splits"].Properties())
            md.AppendLine($"| {name} | {split["documents"].Long():N0} | {split["tokens"].Long():N0} | {readers.GetValueOrDefault(name, "")} |");
        md.AppendLine();
        md.AppendLine("## Architecture");
        md.AppendLine();
        md.AppendLine("![per-layer architecture](report-architecture.png)");
        md.AppendLine();
        md.AppendLine("| layer | attention | FFN |");
        md.AppendLine("|---:|---|---|");
        foreach (var l in r.Layers) md.AppendLine($"| {l.Layer} | {l.Attention} | {l.Ffn} |");
        if (hasPareto)
        {
            md.AppendLine();
            md.AppendLine("## Search: quality vs throughput");
            md.AppendLine();
            md.AppendLine("![Pareto front](report-pareto.png)");
        }
        return md.ToString();
    }

    /// <summary>
    /// The report's notes on the bench's machine: a warning where other processes took the cores its rounds ran on
    /// (bench.json other_cpu_share_of_timing_cores, or other_cpu_share before it was recorded), and a line where the
    /// rounds ran with fewer threads than the process has, on the cores others left free; null for neither.
    /// </summary>
    public static string? BusyBench(JsonObject bench)
    {
        if ((bench["other_cpu_share_of_timing_cores"] ?? bench["other_cpu_share"])?.GetValue<double>() is { } share && share > Runtime.CpuContention.BusyShare)
            return $"The benchmark ran on a busy machine: other processes used {100 * share:F0}% of the cores its rounds ran on, so the measured ratio is " +
                   "not this machine's; rerun `puzzle bench --run RUN` when it is idle.";
        if (bench["threads"]?.GetValue<int>() is { } threads && bench["other_cpu_share"]?.GetValue<double>() is { } others && others > Runtime.CpuContention.BusyShare)
            return $"Other processes held {100 * others:F0}% of the machine's cores during the benchmark; its rounds ran with {threads} torch " +
                   $"thread{(threads == 1 ? "" : "s")} on the cores they left free, so its ratios are this machine's at that thread count.";
        return null;
    }
}
