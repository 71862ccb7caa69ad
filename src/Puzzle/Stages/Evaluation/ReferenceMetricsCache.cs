using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Puzzle.Data;
using Puzzle.IO;
using Puzzle.Runtime;

namespace Puzzle.Stages.Evaluation;

/// <summary>
/// The reference's (parent's) per-window and per-item results on an evaluation split, stored once and read back by
/// every later evaluation against the same parent: the child, each baseline and each GKD-sweep point. The key names
/// everything the figures depend on: the parent's weights, the split (tokenizer, documents, tokens), the windows
/// evaluated, each task's items and few-shot count, and the device. Numbers round-trip exactly through JSON, so an
/// evaluation that reads the cache reports the same figures, intervals included, as one that measures again.
/// </summary>
public static class ReferenceMetricsCache
{
    public static string Key(EvalOptions o, DataManifest manifest, long windows, IEnumerable<(string Name, List<ChoiceItem> Items, int FewShot)> tasks) =>
        Fingerprint.Of("reference-metrics-v1", Fingerprint.OfModel(o.ReferenceDir!), manifest.TokenizerSha256, o.Split,
            manifest.Splits.GetValueOrDefault(o.Split), manifest.SeqLen, windows,
            tasks.Select(t => $"{t.Name}|{t.FewShot}|{ItemsHash(t.Items)}").ToArray(), o.Device);

    static string ItemsHash(IEnumerable<ChoiceItem> items)
    {
        var text = new StringBuilder();
        foreach (var i in items) text.Append(new JsonArray(i.Context, new JsonArray(i.Choices.Select(c => (JsonNode?)c).ToArray()), i.Label).ToJsonString()).Append('\n');
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));
    }

    /// <summary>The stored metrics when the file holds this key; null when absent, unreadable or for other inputs.</summary>
    public static (TokenMetrics, Dictionary<string, TaskMetrics>)? Read(string path, string key)
    {
        if (JsonFile.ReadDerived(path)?.Node is not JsonObject j || j["key"]?.GetValue<string>() != key) return null;
        var w = j["windows"]!;
        double[] nll = w["nll"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
        long[] correct = w["correct"]!.AsArray().Select(x => x!.GetValue<long>()).ToArray();
        var stats = nll.Select((n, i) => new WindowStats(n, correct[i], 0, 0)).ToArray();
        long tokens = j["tokens"]!.GetValue<long>();
        var metrics = new TokenMetrics(tokens, stats.Sum(s => s.Nll) / tokens, stats.Sum(s => s.Correct) / (double)tokens, null, null) { Windows = stats };
        var tasks = new Dictionary<string, TaskMetrics>();
        foreach (var (name, t) in j["tasks"]!.AsObject())
        {
            bool[] hits = t!["hits"]!.AsArray().Select(x => x!.GetValue<bool>()).ToArray();
            bool[] hitsNorm = t["hits_norm"]!.AsArray().Select(x => x!.GetValue<bool>()).ToArray();
            tasks[name] = new TaskMetrics(name, hits.Length, hits.Count(h => h) / (double)hits.Length, hitsNorm.Count(h => h) / (double)hits.Length)
            {
                Hits = hits, HitsNorm = hitsNorm, Chance = t["chance"]!.GetValue<double>(),
            };
        }
        return (metrics, tasks);
    }

    public static void Write(string path, string key, TokenMetrics tokens, Dictionary<string, TaskMetrics> tasks)
    {
        var taskJson = new JsonObject();
        foreach (var (name, t) in tasks)
            taskJson[name] = new JsonObject
            {
                ["chance"] = t.Chance,
                ["hits"] = new JsonArray(t.Hits.Select(h => (JsonNode?)h).ToArray()),
                ["hits_norm"] = new JsonArray(t.HitsNorm.Select(h => (JsonNode?)h).ToArray()),
            };
        AtomicFile.WriteJson(path, new JsonObject
        {
            ["format_version"] = 1, ["key"] = key, ["tokens"] = tokens.Tokens,
            ["windows"] = new JsonObject
            {
                ["nll"] = new JsonArray(tokens.Windows.Select(x => (JsonNode?)x.Nll).ToArray()),
                ["correct"] = new JsonArray(tokens.Windows.Select(x => (JsonNode?)x.Correct).ToArray()),
            },
            ["tasks"] = taskJson,
        });
    }
}
