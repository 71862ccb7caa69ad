using System.Text;
using System.Text.Json.Nodes;
using Puzzle.Stages.Evaluation;

namespace Puzzle.Stages.Report;

/// <summary>
/// The baselines' paired comparisons (issue 19): for the Puzzle child against each rule baseline, each
/// `puzzle-at-NAME` against NAME (equal speed), at the full GKD budget and at every GKD-sweep fraction both have,
/// retention(Puzzle) − retention(baseline) with a 95% paired bootstrap interval over the same resamples of test
/// documents and task items for the parent and both children (<see cref="PairedRetention"/>), and a plain verdict.
/// Also the measured check's figures per row, marked where the check was suspect.
/// </summary>
public static partial class BaselinesReport
{
    static JsonArray Paired(RunDirectory run, JsonArray rows, Dictionary<string, SortedDictionary<double, JsonNode>> evals)
    {
        var pairs = new List<(string A, string B, bool EqualSpeed)>();
        foreach (var r in rows)
        {
            string method = r!["method"]!.GetValue<string>();
            if (method == "puzzle") continue;
            pairs.Add(r["matched_to"]?.GetValue<string>() is { } baseline ? (method, baseline, true) : ("puzzle", method, false));
        }
        var result = new JsonArray();
        foreach (var (a, b, equalSpeed) in pairs)
        {
            if (!evals.TryGetValue(a, out var byFractionA) || !evals.TryGetValue(b, out var byFractionB)) continue;
            foreach (var (fraction, evalA) in byFractionA)
            {
                if (!byFractionB.TryGetValue(fraction, out var evalB)) continue;
                var entry = new JsonObject
                {
                    ["a"] = a, ["b"] = b, ["equal_speed"] = equalSpeed, ["gkd_fraction"] = fraction,
                    ["gkd_tokens"] = (long)Math.Round(fraction * run.Config.Gkd.Tokens),
                };
                result.Add(entry);
                try
                {
                    var (ua, ub) = (PairedRetention.Read(evalA), PairedRetention.Read(evalB));
                    string? problem = ua is null || ub is null
                        ? "an eval.json without per-document results (written before eval.json format 3); rerun `puzzle baselines` and `puzzle run` to re-evaluate"
                        : ua.Resamples < 1 ? "no bootstrap resamples (evaluation.bootstrap_resamples is 0)" : ua.PairingProblem(ub);
                    if (problem is not null)
                    {
                        entry["verdict"] = null;
                        entry["reason"] = problem;
                        continue;
                    }
                    var d = PairedRetention.Difference(ua!.Reference, ua.Model, ub!.Model, ua.Tokens, ua.RetentionTasks,
                        PairedRetention.Resamples(ua.Tokens.Length, ua.Tasks, ua.Resamples, ua.Seed));
                    entry["retention_a"] = d.RetentionA;
                    entry["retention_b"] = d.RetentionB;
                    entry["difference"] = d.Value;
                    entry["difference_low"] = d.Low;
                    entry["difference_high"] = d.High;
                    entry["resamples"] = d.Resamples;
                    entry["units"] = $"{ua.Tokens.Length} {ua.TokenUnits}" + string.Concat(ua.RetentionTasks.Select(t => $"; {ua.Model.HitsNorm[t].Count} items of {t}"));
                    entry["verdict"] = d.Verdict;
                }
                catch (Exception e) when (e is PuzzleException or KeyNotFoundException or InvalidOperationException or NullReferenceException or IndexOutOfRangeException)
                {
                    entry["verdict"] = null;
                    entry["reason"] = $"per-document results unreadable: {e.Message}";
                }
            }
        }
        return result;
    }

    /// <summary>The measured check a row's architecture was chosen on: its last measured ratio, and whether it was re-timed or suspect.</summary>
    static void MeasuredCheckColumns(JsonObject row, JsonNode? solution)
    {
        if (solution?["measured_check"]?["attempts"]?.AsArray().LastOrDefault() is { } last)
        {
            row["measured_check_ratio"] = last["measured_ratio"]?.GetValue<double>();
            row["measured_check_first_ratio"] = last["first_measured_ratio"]?.GetValue<double>();
            row["measured_check_suspect"] = last["suspect"]?.GetValue<bool>() ?? false;
            // A check stored before the re-timing guard: say where it is as far from the estimate as a suspect one would be.
            if (last["suspect"] is null && row["measured_check_ratio"]?.GetValue<double>() is { } m && last["estimated_ratio"]?.GetValue<double>() is { } e)
                row["measured_check_far_from_estimate"] = Search.ArchitectureTimer.Disagrees(m, e);
        }
        else if (solution?["measured_ratio"]?.GetValue<double>() is { } measured)
            row["measured_check_ratio"] = measured;
    }

    static string MeasuredCheckCell(JsonNode r)
    {
        if (r["measured_check_ratio"]?.GetValue<double>() is not { } ratio) return "–";
        string cell = F(ratio, "0.00") + "x";
        if (r["measured_check_first_ratio"]?.GetValue<double>() is { } first) cell += $" (re-timed; first {F(first, "0.00")}x)";
        if (r["measured_check_suspect"]?.GetValue<bool>() == true) cell += " **suspect**";
        if (r["measured_check_far_from_estimate"]?.GetValue<bool>() == true) cell += " **far from the estimate** (checked before re-timing)";
        return cell;
    }

    static JsonNode? MainPair(JsonArray paired, string a, string b) =>
        paired.FirstOrDefault(p => p!["a"]!.GetValue<string>() == a && p["b"]!.GetValue<string>() == b && p["gkd_fraction"]!.GetValue<double>() == 1.0);

    static string Points(double v, bool sign = true) => (sign && v >= 0 ? "+" : "") + F(100 * v, "0.0");

    /// <summary>The paired-differences table: every comparison at every GKD budget both methods were evaluated at.</summary>
    static void PairedMarkdown(StringBuilder md, JsonObject t)
    {
        if (t["paired"] is not JsonArray { Count: > 0 } paired) return;
        md.AppendLine();
        md.AppendLine($"Paired differences in accuracy retention (points): {t["paired_definition"]}.");
        md.AppendLine();
        md.AppendLine("| Puzzle child | baseline | equal speed | GKD tokens | retention, Puzzle | retention, baseline | difference [95% paired] | verdict |");
        md.AppendLine("|---|---|---|---:|---:|---:|---:|---|");
        foreach (var p in paired)
        {
            string head = $"| {p!["a"]} | {p["b"]} | {(p["equal_speed"]!.GetValue<bool>() ? "yes" : "no")} | {p["gkd_tokens"]!.GetValue<long>():N0} ";
            if (p["verdict"] is null)
            {
                md.AppendLine(head + $"| | | | not compared: {p["reason"]!.GetValue<string>().Replace("|", "/")} |");
                continue;
            }
            double D(string key) => p[key]!.GetValue<double>();
            md.AppendLine(head + $"| {Points(D("retention_a"), false)}% | {Points(D("retention_b"), false)}% " +
                          $"| {Points(D("difference"))} [{Points(D("difference_low"))}, {Points(D("difference_high"))}] | {p["verdict"]} |");
        }
    }

    /// <summary>
    /// The Puzzle child against a baseline in one line: retentions, the paired difference with its interval and the
    /// verdict, at which measured speeds; without a paired comparison, the point estimates and why there is no verdict.
    /// </summary>
    static string Verdict(JsonNode puzzle, JsonNode other, JsonNode? pair)
    {
        double a = puzzle["accuracy_retention"]!.GetValue<double>(), b = other["accuracy_retention"]!.GetValue<double>();
        double ra = puzzle["measured_throughput_ratio"]!.GetValue<double>(), rb = other["measured_throughput_ratio"]!.GetValue<double>();
        string speed = $"at {F(ra, "0.00")}x vs {F(rb, "0.00")}x measured";
        string retention = $"retention {F(100 * a, "0.0")}% vs {F(100 * b, "0.0")}%";
        if (pair?["verdict"]?.GetValue<string>() is { } verdict)
        {
            double D(string key) => pair[key]!.GetValue<double>();
            return $"{retention} ({Points(D("difference"))} points, 95% paired interval [{Points(D("difference_low"))}, {Points(D("difference_high"))}]) {speed}: " +
                   $"**{verdict}**.";
        }
        string why = pair?["reason"]?.GetValue<string>() ?? "no paired comparison";
        return $"{retention} ({Points(a - b)} points) {speed}; no verdict: {why} (overlapping per-row intervals do not decide a difference).";
    }
}
