using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.IO;
using Puzzle.Stages.Baselines;
using Puzzle.Stages.Search;
using ScottPlot;

namespace Puzzle.Stages.Report;

/// <summary>
/// The baselines table and plots of the report (issue 19): one row per method (the Puzzle child first) from its
/// eval.json, bench.json and distilled child, in report.json under "baselines", a "Baselines" section of report.md,
/// report-baselines.png (accuracy retention vs measured throughput ratio) and, with a GKD sweep,
/// report-baselines-gkd.png (retention vs GKD tokens). Does nothing for runs without RUN/baselines/.
/// </summary>
public static partial class BaselinesReport
{
    const string Heading = "## Baselines at equal measured throughput";

    /// <summary>Adds the baselines to <paramref name="report"/> (or RUN/report.json), rewrites report.json and report.md, and returns the report (null without baselines).</summary>
    public static ReportFile? Write(RunDirectory run, ReportFile? report = null, Action<string>? log = null)
    {
        log ??= Log.Info;
        string root = run.Artifact(BaselinesStage.Folder);
        if (!Directory.Exists(root)) return null;
        string jsonPath = run.Report, mdPath = run.ReportMarkdown;
        report ??= ReportFile.Read(jsonPath);
        var table = Table(run);
        string[] plots = ["report-baselines.png", "report-baselines-gkd.png"];
        report = report with { Baselines = table, Plots = [.. report.Plots, .. plots.Where(png => File.Exists(run.Artifact(png)) && !report.Plots.Contains(png))] };
        report.Write(jsonPath);
        string md = File.Exists(mdPath) ? File.ReadAllText(mdPath) : "";
        int start = md.IndexOf(Heading, StringComparison.Ordinal);
        if (start >= 0)
        {
            int end = md.IndexOf("\n## ", start + Heading.Length, StringComparison.Ordinal);
            md = md[..start] + (end >= 0 ? md[(end + 1)..] : "");
        }
        AtomicFile.WriteAllText(mdPath, md.TrimEnd() + "\n\n" + Markdown(JsonNode.Parse(table.ToJsonString())!.AsObject()));
        log($"report: baselines table ({table["rows"]!.AsArray().Count} methods) -> {mdPath}, report-baselines.png");
        return report;
    }

    /// <summary>
    /// Accuracy retention of an eval.json (the paper's definition: mean child/parent accuracy on the test split, see
    /// EvalStage.RetentionDefinition) with its paired-bootstrap 95% interval. The one place the table reads retention.
    /// </summary>
    public static (double Value, double? Low, double? High) Retention(JsonNode eval)
    {
        var r = eval["retention"]!;
        var ci = r["ci95"];
        return (r["value"]?.GetValue<double>() ?? double.NaN, ci?[0]?.GetValue<double>(), ci?[1]?.GetValue<double>());   // NaN: undefined (a parent at 0 accuracy)
    }

    /// <summary>
    /// Measured end-to-end throughput ratio of a bench.json's second model to its first: the bench's paired estimator
    /// (<c>end_to_end_ratio</c>, the median over rounds of the parent's time over the child's in the same round, as the
    /// report's headline) with its 95% interval where the bench gives one, and the spread of the rounds. A bench.json
    /// written before the paired ratio gives the ratio of the two models' tokens/s.
    /// </summary>
    public static (double Value, double? Min, double? Max, double? Low, double? High) ThroughputRatio(JsonNode bench)
    {
        var rows = bench["models"]!.AsArray();
        var row = rows[1]!;
        double value = row["end_to_end_ratio"]?.GetValue<double>()
                       ?? row["end_to_end_tokens_per_s"]!.GetValue<double>() / rows[0]!["end_to_end_tokens_per_s"]!.GetValue<double>();
        var spread = row["end_to_end_ratio_spread"];
        var ci = row["end_to_end_ratio_ci95"];
        return (value, (spread?[0] ?? row["end_to_end_ratio_min"])?.GetValue<double>(), (spread?[1] ?? row["end_to_end_ratio_max"])?.GetValue<double>(),
            ci?[0]?.GetValue<double>(), ci?[1]?.GetValue<double>());
    }

    /// <summary>llama.cpp's paired end-to-end ratio of the same two models where the bench ran both engines, else null.</summary>
    public static double? LlamaCppRatio(JsonNode bench) =>
        bench["models"]![1]!["llama_cpp_end_to_end_ratio"]?.GetValue<double>() ?? bench["llama_cpp"]?["models"]?[1]?["end_to_end_ratio"]?.GetValue<double>();

    static JsonObject Table(RunDirectory run)
    {
        var sc = run.Config.Scenario;
        var scenario = Costs.ScenarioCost.From(sc);
        string root = run.Artifact(BaselinesStage.Folder);
        JsonNode? Read(string path) => File.Exists(path) ? JsonNode.Parse(File.ReadAllText(path)) : null;
        // Every method's evaluations by GKD fraction (1 = the run's full GKD budget), for the paired comparisons.
        var evals = new Dictionary<string, SortedDictionary<double, JsonNode>>();

        JsonArray Sweep(string method, string dir, JsonNode? main)
        {
            var points = new List<(double F, JsonNode Eval)>();
            if (Directory.Exists(dir))
                foreach (string point in Directory.GetDirectories(dir, "gkd-*"))
                    if (double.TryParse(Path.GetFileName(point)[4..], NumberStyles.Float, CultureInfo.InvariantCulture, out double f) && Read(Path.Combine(point, "eval.json")) is { } e)
                        points.Add((f, e));
            var byFraction = evals[method] = new SortedDictionary<double, JsonNode>(points.Where(p => p.F < 1).ToDictionary(p => p.F, p => p.Eval));
            if (main is not null) byFraction[1.0] = main;
            if (main is not null && points.Count > 0) points.Add((1.0, main));
            return new JsonArray(points.OrderBy(p => p.F).Select(p =>
            {
                var (value, low, high) = Retention(p.Eval);
                return (JsonNode)new JsonObject
                {
                    ["gkd_fraction"] = p.F, ["gkd_tokens"] = (long)Math.Round(p.F * run.Config.Gkd.Tokens),
                    ["accuracy_retention"] = value, ["retention_low"] = low, ["retention_high"] = high,
                    ["perplexity_ratio"] = PerplexityRatio(p.Eval), ["kl_to_parent"] = p.Eval["metrics"]!["kl_to_reference"]?.GetValue<double>(),
                };
            }).ToArray());
        }

        JsonObject Row(string method, string? childDir, JsonNode? eval, JsonNode? bench, JsonNode? solution, string sweepDir)
        {
            var row = new JsonObject { ["method"] = method };
            if (solution?["status"]?.GetValue<string>() is { } status && status != "ok")
            {
                row["status"] = status;
                row["reason"] = solution["reason"]!.GetValue<string>();
                return row;
            }
            if (eval is null || bench is null || childDir is null || !File.Exists(Path.Combine(childDir, "config.json")))
            {
                row["status"] = "incomplete";
                row["reason"] = "not yet distilled, evaluated and benchmarked";
                return row;
            }
            var config = HfConfig.Read(childDir);
            var (ratio, min, max, ratioLow, ratioHigh) = ThroughputRatio(bench);
            var (retention, low, high) = Retention(eval);
            row["status"] = "ok";
            row["measured_throughput_ratio"] = ratio;
            row["throughput_ratio_min"] = min;
            row["throughput_ratio_max"] = max;
            row["throughput_ratio_low"] = ratioLow;
            row["throughput_ratio_high"] = ratioHigh;
            row["llama_cpp_throughput_ratio"] = LlamaCppRatio(bench);
            row["estimated_throughput_ratio"] = solution?["verified"]?["throughput_ratio"]?.GetValue<double>();
            MeasuredCheckColumns(row, solution);
            row["summed_block_kl"] = solution?["verified"]?["kl"]?.GetValue<double>();
            row["accuracy_retention"] = retention;
            row["retention_low"] = low;
            row["retention_high"] = high;
            row["perplexity_ratio"] = PerplexityRatio(eval);
            row["kl_to_parent"] = eval["metrics"]!["kl_to_reference"]?.GetValue<double>();
            row["top1_agreement"] = eval["metrics"]!["top1_agreement"]?.GetValue<double>();
            row["parameters"] = config.TotalParameters;
            row["memory_at_scenario_bytes"] = scenario.MemoryBytes(config);
            row["kv_bytes_per_token"] = config.KvBytesPerToken(scenario.KvBytes);
            row["gkd_sweep"] = Sweep(method, sweepDir, eval);
            return row;
        }

        var rows = new JsonArray();
        rows.Add(Row("puzzle", run.Artifact("child-gkd"), Read(run.Artifact("eval", "eval.json")), Read(run.Artifact("eval", "bench.json")),
            Read(run.Artifact(SearchStage.Folder, ChildRecipe.Solution + ".json")), Path.Combine(root, BaselinesStage.PuzzleName)));
        foreach (string name in BaselineRules.Names.Where(n => Directory.Exists(Path.Combine(root, n))))
        {
            string dir = Path.Combine(root, name);
            rows.Add(Row(name, Path.Combine(dir, "child-gkd"), Read(Path.Combine(dir, "eval.json")), Read(Path.Combine(dir, "bench.json")),
                Read(Path.Combine(dir, "solution.json")), dir));
        }
        // The Puzzle search rerun at a rule baseline's speed (BaselinesStage `matched`): the comparison at equal speed.
        foreach (string name in BaselineRules.Names)
        {
            string folder = BaselinesStage.MatchedFolder(name), dir = Path.Combine(root, folder);
            if (!Directory.Exists(dir)) continue;
            var row = Row(folder, Path.Combine(dir, "child-gkd"), Read(Path.Combine(dir, "eval.json")), Read(Path.Combine(dir, "bench.json")),
                Read(run.Artifact(SearchStage.Folder, folder + ".json")), dir);
            row["matched_to"] = name;
            rows.Add(row);
        }
        var table = new JsonObject
        {
            ["target_ratio"] = run.Config.Search.MinThroughputRatio,
            ["target"] = run.Config.Search.Target,
            ["gkd_tokens"] = run.Config.Gkd.Tokens,
            ["retention_definition"] = Evaluation.EvalStage.RetentionDefinition,
            ["rows"] = rows,
            ["paired_definition"] = Evaluation.PairedRetention.Definition,
            ["paired"] = Paired(run, rows, evals),
        };
        var parsed = JsonNode.Parse(table.ToJsonString())!.AsObject();
        if (rows.Any(r => r!["status"]!.GetValue<string>() == "ok"))
        {
            RetentionVsThroughput(run.Artifact("report-baselines.png"), parsed);
            if (parsed["rows"]!.AsArray().Any(r => r!["gkd_sweep"] is JsonArray { Count: > 0 }))
                RetentionVsGkd(run.Artifact("report-baselines-gkd.png"), parsed);
        }
        return table;
    }

    static double PerplexityRatio(JsonNode eval) =>
        eval["metrics"]!["perplexity"]!.GetValue<double>() / eval["reference_metrics"]!["perplexity"]!.GetValue<double>();

    static string F(double? v, string format) => v is { } x ? x.ToString(format, CultureInfo.InvariantCulture) : "–";

    static string Interval(double value, double? low, double? high, string format, double scale = 1, string unit = "") =>
        F(value * scale, format) + unit + (low is { } l && high is { } h ? $" [{F(l * scale, format)}, {F(h * scale, format)}]" : "");

    static string Markdown(JsonObject t)
    {
        var md = new StringBuilder();
        md.AppendLine(Heading);
        md.AppendLine();
        md.AppendLine($"Every method picks one variant per layer from the same search space at the search's target of {F(t["target_ratio"]?.GetValue<double>(), "0.00")}x " +
                      $"({t["target"]} target; architectures checked by timing them in the engine where the target is measured), then takes the Puzzle child's path: " +
                      $"assemble, global distillation ({t["gkd_tokens"]!.GetValue<long>():N0} tokens), `puzzle eval` and a side-by-side `puzzle bench` against the parent. " +
                      "Baselines: `uniform` one KV-head count and FFN width in every layer (widest that reaches the target), `depth` whole layers removed by lowest " +
                      "ShortGPT block influence, `subblock` the MIP on subblock (not composed) scores, `random` a seeded random architecture; " +
                      "`puzzle-at-NAME` is the Puzzle search run again at baseline NAME's measured speed, where NAME landed more than 3% above the Puzzle child (a rule moves in steps), " +
                      "so that pair compares at equal speed. " +
                      "Throughput ratio: measured end to end in our engine, the median over rounds of the parent's time over the child's in the same round, " +
                      "with its 95% interval in brackets (the rounds' spread for a bench that records no interval); llama.cpp: the same paired ratio in " +
                      "`llama-batched-bench` where the bench ran both engines; retention: " +
                      $"{t["retention_definition"]} with its 95% interval where the evaluation gives one. Measured check: the search's in-engine timing " +
                      $"the architecture was chosen on, sequential: {Search.ArchitectureTimer.MinRounds} rounds or more, until the {Search.ArchitectureTimer.Confidence:P0} signed-rank interval of the " +
                      "paired ratio (Wilcoxon, on the rounds' log ratios) lies wholly on one side of the target; its figure the median paired ratio; timed again where it was more than " +
                      $"{Search.ArchitectureTimer.SuspectDisagreement:P0} from the cost model's estimate, and **suspect** where the re-timing still was.");
        md.AppendLine();
        md.AppendLine("| method | measured throughput ratio | llama.cpp ratio | accuracy retention | perplexity ratio | KL(parent ‖ child) | top-1 agreement | parameters | memory at scenario (bytes) | KV bytes/token | estimated ratio (cost model) | measured check | summed replace-1-block KL |");
        md.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        var rows = t["rows"]!.AsArray();
        foreach (var r in rows)
        {
            if (r!["status"]!.GetValue<string>() != "ok")
            {
                md.AppendLine($"| {r["method"]} | {r["status"]}: {r["reason"]!.GetValue<string>().Replace("|", "/")} | | | | | | | | | | | |");
                continue;
            }
            double? D(string key) => r[key]?.GetValue<double>();
            bool ci = D("throughput_ratio_low") is not null && D("throughput_ratio_high") is not null;
            md.AppendLine($"| {r["method"]} | {Interval(D("measured_throughput_ratio")!.Value, D(ci ? "throughput_ratio_low" : "throughput_ratio_min"), D(ci ? "throughput_ratio_high" : "throughput_ratio_max"), "0.00")}x " +
                          $"| {(D("llama_cpp_throughput_ratio") is { } llama ? F(llama, "0.00") + "x" : "–")} " +
                          $"| {Interval(D("accuracy_retention")!.Value, D("retention_low"), D("retention_high"), "0.0", 100, "%")} | {F(D("perplexity_ratio"), "0.000")} " +
                          $"| {F(D("kl_to_parent"), "0.0000")} | {F(100 * D("top1_agreement"), "0.00")}% | {r["parameters"]!.GetValue<long>():N0} " +
                          $"| {r["memory_at_scenario_bytes"]!.GetValue<long>():N0} | {r["kv_bytes_per_token"]!.GetValue<long>():N0} " +
                          $"| {F(D("estimated_throughput_ratio"), "0.00")}x | {MeasuredCheckCell(r!)} | {F(D("summed_block_kl"), "0.0000")} |");
        }
        md.AppendLine();
        var paired = t["paired"]?.AsArray() ?? [];
        var puzzle = rows.FirstOrDefault(r => r!["method"]!.GetValue<string>() == "puzzle" && r["status"]!.GetValue<string>() == "ok");
        if (puzzle is not null)
            foreach (var r in rows.Where(r => r != puzzle && r!["status"]!.GetValue<string>() == "ok" && r["matched_to"] is null))
                md.AppendLine($"- Puzzle vs {r!["method"]}: {Verdict(puzzle, r, MainPair(paired, "puzzle", r["method"]!.GetValue<string>()))}");
        foreach (var m in rows.Where(r => r!["matched_to"] is not null && r["status"]!.GetValue<string>() == "ok"))
        {
            string baseline = m!["matched_to"]!.GetValue<string>();
            if (rows.FirstOrDefault(r => r!["method"]!.GetValue<string>() == baseline && r["status"]!.GetValue<string>() == "ok") is { } b)
                md.AppendLine($"- Puzzle searched at {baseline}'s speed vs {baseline} (equal speed): {Verdict(m, b, MainPair(paired, m["method"]!.GetValue<string>(), baseline))}");
        }
        PairedMarkdown(md, t);
        md.AppendLine();
        md.AppendLine("![accuracy retention vs measured throughput](report-baselines.png)");
        if (rows.Any(r => r!["gkd_sweep"] is JsonArray { Count: > 0 }))
        {
            md.AppendLine();
            md.AppendLine("GKD budget sweep (accuracy retention of each method distilled with a share of the GKD tokens; 0 = as assembled):");
            md.AppendLine();
            md.AppendLine("| method | GKD tokens | accuracy retention | perplexity ratio | KL(parent ‖ child) |");
            md.AppendLine("|---|---:|---:|---:|---:|");
            foreach (var r in rows)
                foreach (var p in r!["gkd_sweep"]?.AsArray() ?? [])
                    md.AppendLine($"| {r["method"]} | {p!["gkd_tokens"]!.GetValue<long>():N0} | " +
                                  $"{Interval(p["accuracy_retention"]!.GetValue<double>(), p["retention_low"]?.GetValue<double>(), p["retention_high"]?.GetValue<double>(), "0.0", 100, "%")} " +
                                  $"| {F(p["perplexity_ratio"]!.GetValue<double>(), "0.000")} | {F(p["kl_to_parent"]?.GetValue<double>(), "0.0000")} |");
            md.AppendLine();
            md.AppendLine("![accuracy retention vs GKD tokens](report-baselines-gkd.png)");
        }
        return md.ToString();
    }
}
