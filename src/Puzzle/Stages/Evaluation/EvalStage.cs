using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Config;
using Puzzle.Data;
using Puzzle.IO;
using Puzzle.Model;
using Puzzle.Runtime;
using Puzzle.Tokenization;

namespace Puzzle.Stages.Evaluation;

public sealed record EvalOptions
{
    public required string ModelDir { get; init; }
    public string? ReferenceDir { get; init; }
    public required string DataDir { get; init; }
    /// <summary>The split evaluated: "test" (held out from every stage that trains or selects); others only for comparisons.</summary>
    public string Split { get; init; } = "test";
    public IReadOnlyList<string> Tasks { get; init; } = [];
    public int? TaskLimit { get; init; } = RunConfig.Defaults.Evaluation.TaskLimit;
    public int FewShot { get; init; }
    /// <summary>Tokens of the split evaluated (its first whole windows); null: every window of the split.</summary>
    public long? MaxTokens { get; init; }
    /// <summary>Items of the in-domain continuation task built from the split (0: none).</summary>
    public int ContinuationItems { get; init; }
    /// <summary>Where to write the continuation task's items (jsonl), if anywhere.</summary>
    public string? ContinuationTaskPath { get; init; }
    public int BootstrapResamples { get; init; } = RunConfig.Defaults.Evaluation.BootstrapResamples;
    public long Seed { get; init; }
    public string Device { get; init; } = RunConfig.Defaults.Scenario.Device;
    /// <summary>
    /// Where the reference's own metrics are kept between evaluations (a run evaluates its child, every baseline and
    /// every GKD-sweep point against the same parent on the same split); null: always measured.
    /// </summary>
    public string? ReferenceCache { get; init; }
    /// <summary>
    /// Where the reference's final hidden states on the split are kept between evaluations (<see cref="ReferenceStates"/>):
    /// a later evaluation against the same parent runs the model alone; null: the reference runs every time.
    /// </summary>
    public string? ReferenceStatesPath { get; init; }
}

/// <summary>
/// `puzzle eval`: a model's metrics on the held-out test split and, given a reference (the parent), the accuracy
/// retention as the Puzzle paper defines it, fidelity figures apart from it, and 95% paired-bootstrap intervals.
/// </summary>
public static partial class EvalStage
{
    /// <summary>Why retention has no value: the reference's accuracy is 0 (e.g. random weights), so no ratio to it exists.</summary>
    public static string UndefinedRetention(TokenMetrics reference) =>
        $"undefined: the reference's next-token accuracy is {reference.NextTokenAccuracy:P2} on {reference.Tokens:N0} tokens " +
        "(and no task counts), so there is no accuracy to retain (e.g. a parent with random weights); see the fidelity figures";

    /// <summary>Windows per evaluation batch (part of the reference states' key: a batch's forward is what they store).</summary>
    public const int EvalBatch = 8;

    public const string RetentionDefinition =
        "accuracy_retention = mean, over the run's accuracy metrics, of child accuracy / parent accuracy: next-token accuracy on the " +
        "held-out test split, and acc_norm of each multiple-choice task on which the parent scores significantly above chance (the lower " +
        "end of the 95% Wilson interval of its acc_norm above the task's chance level; the Puzzle paper's " +
        "\"accuracy retention\": the child's downstream accuracy relative to the parent's). Perplexity ratio, KL(parent ‖ child) and " +
        "top-1 agreement measure fidelity to the parent and are reported separately, never averaged into it.";

    public const string IntervalDefinition =
        "95% intervals: paired percentile bootstrap (child and parent resampled together) over test documents for token metrics " +
        "and over items for each task";

    public static JsonObject Run(EvalOptions o, Action<string>? log = null)
    {
        log ??= Log.Info;
        var device = Runtime.Devices.Parse(o.Device);
        var manifest = DataManifest.Read(o.DataDir);
        using var data = new TokenDataset(o.DataDir, o.Split);
        int seqLen = manifest.SeqLen;
        using var model = Checkpoint.Load(o.ModelDir, device);
        using var reference = o.ReferenceDir is null ? null : Checkpoint.Load(o.ReferenceDir, device);
        using var tokenizer = TextTokenizer.Load(o.ModelDir);
        var tasks = o.Tasks.Select(t => (Name: Path.GetFileNameWithoutExtension(t), Items: Evaluator.ReadTask(t, o.TaskLimit is { } l ? l + o.FewShot : null), FewShot: o.FewShot)).ToList();
        if (o.ContinuationItems > 0)
        {
            var items = ContinuationTask.Build(data, tokenizer, o.ContinuationItems, o.Seed);
            if (o.ContinuationTaskPath is not null) ContinuationTask.Write(o.ContinuationTaskPath, items);
            tasks.Add((ContinuationTask.Name(o.Split), items, 0));
            log($"eval: built {items.Count} continuation items (4 choices) from the {o.Split} split's documents");
        }

        // Bootstrap units: the documents that own windows (a window belongs to the document it starts in).
        long[] starts = data.DocumentStarts();
        var windowsLoader = new TokenBatchLoader(data, seqLen, 0, shuffle: false);
        long windowCount = o.MaxTokens is { } max ? manifest.RequireWindows(o.Split, max, "evaluation.max_tokens") : windowsLoader.Windows;
        int[] windowDocument = new int[windowCount];
        for (long w = 0; w < windowCount; w++)
        {
            int index = Array.BinarySearch(starts, w * seqLen);
            windowDocument[w] = index >= 0 ? index : ~index - 1;
        }
        var documentIds = windowDocument.Distinct().Order().ToArray();
        bool byDocument = documentIds.Length >= 2;
        int[] windowUnit = byDocument ? windowDocument.Select(d => Array.BinarySearch(documentIds, d)).ToArray() : Enumerable.Range(0, (int)windowCount).ToArray();
        int units = byDocument ? documentIds.Length : (int)windowCount;

        using var referenceStates = reference is not null && o.ReferenceStatesPath is { } statesPath
            ? ReferenceStates.File(statesPath, Fingerprint.Of("reference-states-v1", Fingerprint.OfModel(o.ReferenceDir!), manifest.TokenizerSha256, o.Split,
                manifest.Splits.GetValueOrDefault(o.Split), seqLen, windowCount, EvalBatch, o.Device), windowCount * seqLen)
            : null;
        if (referenceStates is { Stored: true })
            log($"eval: the reference's final hidden states on these {windowCount * seqLen:N0} {o.Split} tokens are read from {o.ReferenceStatesPath} " +
                $"({referenceStates.Bytes / (double)(1 << 20):F0} MiB): the reference does not run");

        (TokenMetrics Tokens, Dictionary<string, TaskMetrics> Tasks) Measure(CausalLm m, CausalLm? r, string label, TokenMetrics? measured = null)
        {
            var tokens = measured ?? Evaluator.Tokens(m, r, data, seqLen, windowCount * seqLen, EvalBatch, "evaluation.max_tokens", referenceStates: r is null ? null : referenceStates);
            log($"eval: {label}: perplexity {tokens.Perplexity:F3}, next-token accuracy {tokens.NextTokenAccuracy:P2}" +
                (tokens.KlToReference is { } kl ? $", KL to reference {kl:F4}, top-1 agreement {tokens.Top1Agreement:P2}" : "") +
                $" on {tokens.Tokens:N0} {o.Split} tokens ({units} {(byDocument ? "documents" : "windows")})");
            var taskMetrics = new Dictionary<string, TaskMetrics>();
            foreach (var (name, items, fewShot) in tasks)
            {
                var t = Evaluator.Task(m, tokenizer, name, items, fewShot);
                taskMetrics[name] = t;
                log($"eval: {label}: {name}: acc {t.Acc:P2}, acc_norm {t.AccNorm:P2} ({t.Items} items, chance {t.Chance:P1})");
            }
            return (tokens, taskMetrics);
        }

        using var threads = Runtime.WorkThreads.Enter("eval", log);                        // the cores others leave free, for both models
        var child = Measure(model, reference, "model");
        (TokenMetrics, Dictionary<string, TaskMetrics>)? parent = null;
        if (reference is not null)
        {
            string cacheKey = ReferenceMetricsCache.Key(o, manifest, windowCount, tasks.Select(t => (t.Name, t.Items, t.FewShot)));
            parent = o.ReferenceCache is { } cachePath ? ReferenceMetricsCache.Read(cachePath, cacheKey) : null;
            if (parent is { } cached)
                log($"eval: reference: perplexity {cached.Item1.Perplexity:F3}, next-token accuracy {cached.Item1.NextTokenAccuracy:P2} on {cached.Item1.Tokens:N0} " +
                    $"{o.Split} tokens, measured before for this parent, split and tasks ({o.ReferenceCache})");
            else
            {
                parent = Measure(reference, null, "reference", child.Tokens.Reference);                   // its token metrics come from the model's pass
                if (o.ReferenceCache is { } path) ReferenceMetricsCache.Write(path, cacheKey, parent.Value.Item1, parent.Value.Item2);
            }
        }

        // Which accuracy metrics count towards retention is decided on the point estimates, then held fixed.
        var included = new List<string>();
        var excluded = new JsonObject();
        if (parent is { } pm)
        {
            included.Add("next_token_accuracy");
            foreach (var (name, t) in pm.Item2)
            {
                // A parent at chance makes the ratio noise: a task counts only where the parent is significantly above it.
                double lower = WilsonLower(t.AccNorm, t.Items);
                if (lower > t.Chance) included.Add($"{name}.acc_norm");
                else excluded[$"{name}.acc_norm"] = $"parent acc_norm {t.AccNorm:F4} on {t.Items} items is not significantly above chance {t.Chance:F4} " +
                                                    $"(95% Wilson interval's lower end {lower:F4})";
            }
        }

        Dictionary<string, double> Statistics(double[] windowWeights, Dictionary<string, double[]> itemWeights)
        {
            var s = new Dictionary<string, double>();
            void Side(string prefix, TokenMetrics tokens, Dictionary<string, TaskMetrics> taskMetrics, bool withReference)
            {
                double n = 0, nll = 0, correct = 0, kl = 0, agree = 0;
                for (int w = 0; w < windowWeights.Length; w++)
                {
                    double weight = windowWeights[w];
                    if (weight == 0) continue;
                    var x = tokens.Windows[w];
                    n += weight * seqLen; nll += weight * x.Nll; correct += weight * x.Correct; kl += weight * x.Kl; agree += weight * x.Agree;
                }
                s[$"{prefix}.next_token_accuracy"] = correct / n;
                s[$"{prefix}.perplexity"] = Math.Exp(nll / n);
                if (withReference) { s[$"{prefix}.kl_to_reference"] = kl / n; s[$"{prefix}.top1_agreement"] = agree / n; }
                foreach (var (name, t) in taskMetrics)
                {
                    double[] weights = itemWeights[name];
                    double total = weights.Sum();
                    s[$"{prefix}.{name}.acc"] = Enumerable.Range(0, weights.Length).Sum(i => t.Hits[i] ? weights[i] : 0) / total;
                    s[$"{prefix}.{name}.acc_norm"] = Enumerable.Range(0, weights.Length).Sum(i => t.HitsNorm[i] ? weights[i] : 0) / total;
                }
            }
            Side("model", child.Tokens, child.Tasks, reference is not null);
            if (parent is { } p)
            {
                Side("reference", p.Item1, p.Item2, false);
                double sum = 0;
                foreach (string metric in included)
                {
                    double ratio = s[$"model.{metric}"] / s[$"reference.{metric}"];
                    s[$"ratio.{metric}"] = ratio;
                    sum += ratio;
                }
                foreach (var name in tasks.Select(t => t.Name))
                    s[$"ratio.{name}.acc"] = s[$"model.{name}.acc"] / s[$"reference.{name}.acc"];
                s["accuracy_retention"] = sum / included.Count;
                s["perplexity_ratio"] = s["model.perplexity"] / s["reference.perplexity"];
            }
            return s;
        }

        var ones = Enumerable.Repeat(1.0, (int)windowCount).ToArray();
        var point = Statistics(ones, tasks.ToDictionary(t => t.Name, t => Enumerable.Repeat(1.0, child.Tasks[t.Name].Items).ToArray()));
        var replicates = point.Keys.ToDictionary(k => k, _ => new List<double>());
        foreach (var resample in PairedRetention.Resamples(units, tasks.Select(t => (t.Name, child.Tasks[t.Name].Items)).ToList(), o.BootstrapResamples, o.Seed))
        {
            var windowWeights = windowUnit.Select(u => resample.Units[u]).ToArray();
            if (windowWeights.Sum() == 0) continue;
            foreach (var (key, value) in Statistics(windowWeights, resample.Items.ToDictionary()))
                if (double.IsFinite(value)) replicates[key].Add(value);
        }
        JsonNode? Ci(string key) => replicates.TryGetValue(key, out var values) && values.Count > 0 ? Interval(values) : null;

        JsonObject Side(string prefix, TokenMetrics tokens, Dictionary<string, TaskMetrics> taskMetrics, CausalLm m)
        {
            var taskJson = new JsonObject();
            var taskCi = new JsonObject();
            foreach (var (name, t) in taskMetrics)
            {
                taskJson[name] = new JsonObject { ["items"] = t.Items, ["acc"] = t.Acc, ["acc_norm"] = t.AccNorm, ["chance"] = t.Chance };
                taskCi[name] = new JsonObject { ["acc"] = Ci($"{prefix}.{name}.acc"), ["acc_norm"] = Ci($"{prefix}.{name}.acc_norm") };
            }
            return new JsonObject
            {
                ["tokens"] = tokens.Tokens, ["split"] = o.Split, ["mean_nll"] = tokens.MeanNll, ["perplexity"] = tokens.Perplexity,
                ["next_token_accuracy"] = tokens.NextTokenAccuracy, ["kl_to_reference"] = tokens.KlToReference,
                ["top1_agreement"] = tokens.Top1Agreement, ["tasks"] = taskJson,
                ["parameters"] = m.Config.TotalParameters,
                ["ci95"] = new JsonObject
                {
                    ["next_token_accuracy"] = Ci($"{prefix}.next_token_accuracy"), ["perplexity"] = Ci($"{prefix}.perplexity"),
                    ["kl_to_reference"] = Ci($"{prefix}.kl_to_reference"), ["top1_agreement"] = Ci($"{prefix}.top1_agreement"), ["tasks"] = taskCi,
                },
            };
        }

        var splits = new JsonObject();
        foreach (var (name, info) in manifest.Splits) splits[name] = new JsonObject { ["documents"] = info.Documents, ["tokens"] = info.Tokens };
        var result = new JsonObject
        {
            ["format_version"] = 3,
            ["model"] = Path.GetFullPath(o.ModelDir),
            ["reference"] = o.ReferenceDir is null ? null : Path.GetFullPath(o.ReferenceDir),
            ["data"] = Path.GetFullPath(o.DataDir),
            ["protocol"] = new JsonObject
            {
                ["split"] = o.Split,
                ["tokens"] = windowCount * seqLen,
                ["windows"] = windowCount,
                ["documents"] = documentIds.Length,
                ["splits"] = splits,
                ["intervals"] = new JsonObject
                {
                    ["level"] = 0.95, ["method"] = "paired percentile bootstrap", ["resamples"] = o.BootstrapResamples, ["seed"] = o.Seed,
                    ["token_units"] = byDocument ? "documents" : "windows", ["task_units"] = "items", ["definition"] = IntervalDefinition,
                },
            },
            ["metrics"] = Side("model", child.Tokens, child.Tasks, model),
        };
        if (parent is { } pu)
        {
            // Sums per bootstrap unit, kept so that two children of this parent can later be compared paired (the baselines report).
            double[] UnitSums(TokenMetrics t, Func<WindowStats, double> f)
            {
                var sums = new double[units];
                for (int w = 0; w < windowCount; w++) sums[windowUnit[w]] += f(t.Windows[w]);
                return sums;
            }
            result["per_unit"] = PairedRetention.Write(byDocument ? "documents" : "windows", UnitSums(child.Tokens, _ => seqLen),
                UnitSums(child.Tokens, x => x.Correct), UnitSums(child.Tokens, x => x.Nll), UnitSums(child.Tokens, x => x.Kl), UnitSums(child.Tokens, x => x.Agree),
                UnitSums(pu.Item1, x => x.Correct), UnitSums(pu.Item1, x => x.Nll),
                tasks.Select(t => (t.Name, child.Tasks[t.Name].HitsNorm, pu.Item2[t.Name].HitsNorm)), included);
        }
        if (parent is { } pp)
        {
            result["reference_metrics"] = Side("reference", pp.Item1, pp.Item2, reference!);
            var components = new JsonObject();
            foreach (string metric in included)
                components[metric] = new JsonObject
                {
                    ["child"] = point[$"model.{metric}"], ["parent"] = point[$"reference.{metric}"], ["ratio"] = Num(point[$"ratio.{metric}"]), ["ci95"] = Ci($"ratio.{metric}"),
                };
            result["retention"] = new JsonObject
            {
                ["metric"] = "accuracy_retention",
                ["definition"] = RetentionDefinition,
                ["value"] = Num(point["accuracy_retention"]),
                ["ci95"] = Ci("accuracy_retention"),
                ["components"] = components,
                ["excluded"] = excluded,
                ["task_acc_ratios"] = new JsonObject(tasks.Select(t => KeyValuePair.Create(t.Name, (JsonNode?)new JsonObject
                {
                    ["ratio"] = Num(point[$"ratio.{t.Name}.acc"]), ["ci95"] = Ci($"ratio.{t.Name}.acc"),
                }))),
            };
            result["fidelity"] = new JsonObject
            {
                ["definition"] = "agreement with the parent, not accuracy: perplexity ratio (child / parent), mean per-token KL(parent ‖ child) in nats, " +
                                 "top-1 agreement (share of positions where child and parent predict the same next token)",
                ["perplexity_ratio"] = new JsonObject { ["value"] = Num(point["perplexity_ratio"]), ["ci95"] = Ci("perplexity_ratio") },
                ["kl_parent_child"] = new JsonObject { ["value"] = point["model.kl_to_reference"], ["ci95"] = Ci("model.kl_to_reference") },
                ["top1_agreement"] = new JsonObject { ["value"] = point["model.top1_agreement"], ["ci95"] = Ci("model.top1_agreement") },
            };
            log(double.IsFinite(point["accuracy_retention"])
                ? $"eval: accuracy retention {point["accuracy_retention"]:P1} {FormatInterval(result["retention"]!["ci95"], true)} " +
                  $"(mean of {string.Join(", ", included)}); perplexity ratio {point["perplexity_ratio"]:F3}"
                : $"eval: accuracy retention {UndefinedRetention(pp.Item1)}; perplexity ratio {point["perplexity_ratio"]:F3}");
        }
        return result;
    }
}
