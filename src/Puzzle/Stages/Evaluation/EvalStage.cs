using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Data;
using Puzzle.Model;
using Puzzle.Tokenization;

namespace Puzzle.Stages.Evaluation;

public sealed record EvalOptions
{
    public required string ModelDir { get; init; }
    public string? ReferenceDir { get; init; }
    public required string DataDir { get; init; }
    public IReadOnlyList<string> Tasks { get; init; } = [];
    public int? TaskLimit { get; init; } = 500;
    public int FewShot { get; init; }
    public long MaxTokens { get; init; } = 16_384;
    public string Device { get; init; } = "cpu";
}

/// <summary>`puzzle eval`: a model's metrics, the reference's, and the quality retention (model / reference per metric).</summary>
public static class EvalStage
{
    public static JsonObject Run(EvalOptions o, Action<string>? log = null)
    {
        log ??= Log.Info;
        var device = Runtime.Devices.Parse(o.Device);
        var manifest = DataManifest.Read(o.DataDir);
        string split = manifest.Splits.TryGetValue("validation", out var v) && v.Tokens > manifest.SeqLen * 2 ? "validation" : "train";
        using var data = new TokenDataset(o.DataDir, split);
        using var model = Checkpoint.Load(o.ModelDir, device);
        using var reference = o.ReferenceDir is null ? null : Checkpoint.Load(o.ReferenceDir, device);
        using var tokenizer = TextTokenizer.Load(o.ModelDir);
        var tasks = o.Tasks.Select(t => (Name: Path.GetFileNameWithoutExtension(t), Items: Evaluator.ReadTask(t, o.TaskLimit is { } l ? l + o.FewShot : null))).ToList();

        JsonObject Metrics(CausalLm m, CausalLm? r, string label)
        {
            var tokens = Evaluator.Tokens(m, r, data, manifest.SeqLen, o.MaxTokens);
            log($"eval: {label}: perplexity {tokens.Perplexity:F3}, next-token accuracy {tokens.NextTokenAccuracy:P2}" +
                (tokens.KlToReference is { } kl ? $", KL to reference {kl:F4}, top-1 agreement {tokens.Top1Agreement:P2}" : "") + $" on {tokens.Tokens:N0} {split} tokens");
            var taskJson = new JsonObject();
            foreach (var (name, items) in tasks)
            {
                var t = Evaluator.Task(m, tokenizer, name, items, o.FewShot);
                taskJson[name] = new JsonObject { ["items"] = t.Items, ["acc"] = t.Acc, ["acc_norm"] = t.AccNorm };
                log($"eval: {label}: {name}: acc {t.Acc:P2}, acc_norm {t.AccNorm:P2} ({t.Items} items)");
            }
            return new JsonObject
            {
                ["tokens"] = tokens.Tokens, ["split"] = split, ["mean_nll"] = tokens.MeanNll, ["perplexity"] = tokens.Perplexity,
                ["next_token_accuracy"] = tokens.NextTokenAccuracy, ["kl_to_reference"] = tokens.KlToReference,
                ["top1_agreement"] = tokens.Top1Agreement, ["tasks"] = taskJson,
                ["parameters"] = m.Config.TotalParameters,
            };
        }

        var result = new JsonObject
        {
            ["format_version"] = 1,
            ["model"] = Path.GetFullPath(o.ModelDir),
            ["reference"] = o.ReferenceDir is null ? null : Path.GetFullPath(o.ReferenceDir),
            ["data"] = Path.GetFullPath(o.DataDir),
            ["metrics"] = Metrics(model, reference, "model"),
        };
        if (reference is not null)
        {
            var referenceMetrics = Metrics(reference, null, "reference");
            result["reference_metrics"] = referenceMetrics;
            result["retention"] = Retention(result["metrics"]!, referenceMetrics);
        }
        return result;
    }

    /// <summary>
    /// Child metric / parent metric for next-token accuracy and each task's acc_norm, plus top-1 agreement with the
    /// parent (the parent agrees with itself fully); the retention figure is their mean.
    /// </summary>
    public static JsonObject Retention(JsonNode child, JsonNode parent)
    {
        var parts = new JsonObject
        {
            ["next_token_accuracy"] = child["next_token_accuracy"]!.GetValue<double>() / parent["next_token_accuracy"]!.GetValue<double>(),
            ["top1_agreement"] = child["top1_agreement"]!.GetValue<double>(),
        };
        foreach (var (name, task) in child["tasks"]!.AsObject())
        {
            double p = parent["tasks"]![name]!["acc_norm"]!.GetValue<double>();
            if (p > 0) parts[$"{name}.acc_norm"] = task!["acc_norm"]!.GetValue<double>() / p;
        }
        double mean = parts.Select(kv => kv.Value!.GetValue<double>()).Average();
        return new JsonObject
        {
            ["components"] = parts,
            ["mean"] = mean,
            ["perplexity_ratio"] = child["perplexity"]!.GetValue<double>() / parent["perplexity"]!.GetValue<double>(),
        };
    }
}
