using System.Text.Json.Nodes;
using Puzzle.Data;

namespace Puzzle.Stages.Evaluation;

/// <summary>
/// One model's results per bootstrap unit, as eval.json keeps them under "per_unit": correct next tokens per test
/// document (or window) and, per multiple-choice task, whether each item was answered right by acc_norm.
/// </summary>
public sealed record UnitResults(IReadOnlyList<double> Correct, IReadOnlyDictionary<string, IReadOnlyList<bool>> HitsNorm);

/// <summary>One bootstrap resample: how often each test document (or window) and each item of each task is drawn.</summary>
public sealed record Resample(double[] Units, IReadOnlyDictionary<string, double[]> Items);

/// <summary>retention(A) − retention(B) with its 95% paired percentile-bootstrap interval and what it decides.</summary>
public sealed record RetentionDifference(double RetentionA, double RetentionB, double Value, double Low, double High, int Resamples)
{
    public const string Better = "Puzzle better", Worse = "baseline better", Undecided = "no significant difference";

    /// <summary>"Puzzle better" when the whole interval is above 0, "baseline better" when below, else "no significant difference".</summary>
    public string Verdict => Low > 0 ? Better : High < 0 ? Worse : Undecided;
}

/// <summary>
/// Accuracy retention (<see cref="EvalStage.RetentionDefinition"/>) from per-unit results, and the paired bootstrap
/// of the difference between two children of one parent: parent, child A and child B are resampled together (the
/// same documents and the same task items in every resample), so what the three share cancels and only the
/// difference between the children is left to vary. The resamples are those <see cref="EvalStage"/> draws for each
/// child's own interval (same seed, same order).
/// </summary>
public static class PairedRetention
{
    public const string Definition =
        "difference = retention(Puzzle child) − retention(baseline), both against the same parent on the same test documents and task items; 95% interval: " +
        "paired percentile bootstrap, the parent and both children resampled together (the same documents and the same items of each multiple-choice " +
        "task in every resample); \"Puzzle better\" / \"baseline better\" when the whole interval lies above / below 0, else \"no significant difference\"";

    /// <summary>
    /// The bootstrap resamples for <paramref name="units"/> documents (or windows) and the tasks' item counts, in the
    /// order drawn: each resample draws the units with replacement, then each task's items.
    /// </summary>
    public static IEnumerable<Resample> Resamples(int units, IReadOnlyList<(string Name, int Items)> tasks, int count, long seed)
    {
        var random = new Random((int)(Hashing.UnitInterval(seed, "eval bootstrap") * int.MaxValue));
        for (int b = 0; b < count; b++)
        {
            var unitCounts = new double[units];
            for (int i = 0; i < units; i++) unitCounts[random.Next(units)]++;
            var items = new Dictionary<string, double[]>();
            foreach (var (name, n) in tasks)
            {
                var counts = new double[n];
                for (int i = 0; i < n; i++) counts[random.Next(n)]++;
                items[name] = counts;
            }
            yield return new Resample(unitCounts, items);
        }
    }

    /// <summary>The resample that draws every unit and item once: the point estimate.</summary>
    public static Resample Once(int units, IEnumerable<(string Name, int Items)> tasks) =>
        new(Enumerable.Repeat(1.0, units).ToArray(), tasks.ToDictionary(t => t.Name, t => Enumerable.Repeat(1.0, t.Items).ToArray()));

    /// <summary>
    /// Retention of <paramref name="child"/> against <paramref name="parent"/> under the weights of
    /// <paramref name="resample"/>: the mean of next-token-accuracy ratio and the acc_norm ratio of each task in
    /// <paramref name="tasks"/> (those counting towards retention), computed as <see cref="EvalStage"/> computes it.
    /// </summary>
    public static double Retention(UnitResults child, UnitResults parent, IReadOnlyList<double> tokens, IReadOnlyList<string> tasks, Resample resample)
    {
        double n = 0, childCorrect = 0, parentCorrect = 0;
        for (int u = 0; u < resample.Units.Length; u++)
        {
            double w = resample.Units[u];
            if (w == 0) continue;
            n += w * tokens[u]; childCorrect += w * child.Correct[u]; parentCorrect += w * parent.Correct[u];
        }
        double sum = childCorrect / n / (parentCorrect / n);
        foreach (string task in tasks)
        {
            double[] w = resample.Items[task];
            double total = w.Sum();
            IReadOnlyList<bool> c = child.HitsNorm[task], p = parent.HitsNorm[task];
            double childAcc = Enumerable.Range(0, w.Length).Sum(i => c[i] ? w[i] : 0) / total;
            double parentAcc = Enumerable.Range(0, w.Length).Sum(i => p[i] ? w[i] : 0) / total;
            sum += childAcc / parentAcc;
        }
        return sum / (1 + tasks.Count);
    }

    /// <summary>retention(A) − retention(B) at the point estimate and over <paramref name="resamples"/>, with its 95% percentile interval.</summary>
    public static RetentionDifference Difference(UnitResults parent, UnitResults a, UnitResults b, IReadOnlyList<double> tokens, IReadOnlyList<string> tasks,
        IEnumerable<Resample> resamples)
    {
        var once = Once(tokens.Count, parent.HitsNorm.Select(t => (t.Key, t.Value.Count)));
        double ra = Retention(a, parent, tokens, tasks, once), rb = Retention(b, parent, tokens, tasks, once);
        var differences = new List<double>();
        foreach (var r in resamples)
        {
            double d = Retention(a, parent, tokens, tasks, r) - Retention(b, parent, tokens, tasks, r);
            if (double.IsFinite(d)) differences.Add(d);
        }
        if (differences.Count == 0) throw new PuzzleException("paired retention difference: no resample gave a finite difference (a parent accuracy of 0?)");
        var ci = EvalStage.Interval(differences);
        return new RetentionDifference(ra, rb, ra - rb, ci[0]!.GetValue<double>(), ci[1]!.GetValue<double>(), differences.Count);
    }

    /// <summary>
    /// The per-unit results an eval.json keeps (its "per_unit" section): the child's and the parent's, the tokens
    /// per unit, the metrics counted towards retention and the bootstrap's seed and resamples; null for an eval.json
    /// without them (written before format 3, or without a reference).
    /// </summary>
    public static EvalUnits? Read(JsonNode eval)
    {
        if (eval["per_unit"] is not JsonObject u || eval["protocol"]?["intervals"] is not JsonObject intervals) return null;
        double[] D(JsonNode? a) => a!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
        bool[] B(JsonNode? a) => a!.AsArray().Select(x => x!.GetValue<bool>()).ToArray();
        var tasks = u["tasks"]!.AsObject();
        UnitResults Side(string side) => new(D(u[side]!["correct"]),
            tasks.ToDictionary(t => t.Key, t => (IReadOnlyList<bool>)B(t.Value![side + "_hits_norm"])));
        var metrics = u["retention_metrics"]!.AsArray().Select(x => x!.GetValue<string>()).ToArray();
        return new EvalUnits(u["token_units"]!.GetValue<string>(), D(u["tokens"]), Side("model"), Side("reference"), metrics,
            tasks.Select(t => (t.Key, t.Value!["model_hits_norm"]!.AsArray().Count)).ToArray(),
            intervals["resamples"]!.GetValue<int>(), intervals["seed"]!.GetValue<long>());
    }

    /// <summary>The "per_unit" section of eval.json: what a later paired comparison against another child needs.</summary>
    public static JsonObject Write(string tokenUnits, IReadOnlyList<double> tokens, IReadOnlyList<double> childCorrect, IReadOnlyList<double> childNll,
        IReadOnlyList<double>? childKl, IReadOnlyList<double>? childAgree, IReadOnlyList<double> parentCorrect, IReadOnlyList<double> parentNll,
        IEnumerable<(string Name, IReadOnlyList<bool> Child, IReadOnlyList<bool> Parent)> tasks, IEnumerable<string> retentionMetrics)
    {
        static JsonArray A<T>(IEnumerable<T> values) => new(values.Select(v => JsonValue.Create(v)).ToArray<JsonNode?>());
        var model = new JsonObject { ["correct"] = A(childCorrect), ["nll"] = A(childNll) };
        if (childKl is not null) model["kl"] = A(childKl);
        if (childAgree is not null) model["agree"] = A(childAgree);
        return new JsonObject
        {
            ["definition"] = "sums per bootstrap unit (test document, else window), in unit order: tokens predicted, correct next tokens, summed NLL " +
                             "(and for the model summed KL to the parent and top-1 agreements); per task item: acc_norm hits; the metrics counted " +
                             "towards retention. Paired comparisons between two children of one parent (the baselines report) resample these.",
            ["token_units"] = tokenUnits,
            ["tokens"] = A(tokens),
            ["model"] = model,
            ["reference"] = new JsonObject { ["correct"] = A(parentCorrect), ["nll"] = A(parentNll) },
            ["tasks"] = new JsonObject(tasks.Select(t => KeyValuePair.Create(t.Name, (JsonNode?)new JsonObject
            {
                ["model_hits_norm"] = A(t.Child), ["reference_hits_norm"] = A(t.Parent),
            }))),
            ["retention_metrics"] = A(retentionMetrics),
        };
    }
}

/// <summary>An eval.json's per-unit results (<see cref="PairedRetention.Read"/>).</summary>
public sealed record EvalUnits(string TokenUnits, double[] Tokens, UnitResults Model, UnitResults Reference, string[] RetentionMetrics,
    (string Name, int Items)[] Tasks, int Resamples, long Seed)
{
    /// <summary>The tasks counted towards retention (the metrics besides next-token accuracy).</summary>
    public string[] RetentionTasks => RetentionMetrics.Where(m => m != "next_token_accuracy").Select(m => m[..m.LastIndexOf('.')]).ToArray();

    /// <summary>Null when <paramref name="other"/> was evaluated against the same parent results on the same units and counts the same metrics; else why not.</summary>
    public string? PairingProblem(EvalUnits other)
    {
        if (TokenUnits != other.TokenUnits || !Tokens.SequenceEqual(other.Tokens)) return $"different test units ({Tokens.Length} {TokenUnits} vs {other.Tokens.Length} {other.TokenUnits})";
        if (!Reference.Correct.SequenceEqual(other.Reference.Correct)) return "the parent's per-document results differ (another parent or split)";
        if (!RetentionMetrics.SequenceEqual(other.RetentionMetrics))
            return $"retention counts different metrics ({string.Join(", ", RetentionMetrics)} vs {string.Join(", ", other.RetentionMetrics)})";
        foreach (string task in RetentionTasks)
            if (!other.Reference.HitsNorm.TryGetValue(task, out var hits) || !Reference.HitsNorm[task].SequenceEqual(hits))
                return $"the parent's results on task {task} differ (other items)";
        return null;
    }
}
