using System.Text.Json.Nodes;
using Puzzle.IO;
using Puzzle.Model;

namespace Puzzle.Stages.Library;

/// <summary>A work unit's record: RUN/library/&lt;id&gt;.json, written atomically after its weights.</summary>
public sealed record VariantRecord(string Id, int Layer, SubblockKind Kind, AttentionConfig? Attention, FfnConfig? Ffn,
    bool IsParent, bool Trained, string? File, long Parameters, int Steps, long Tokens, double NmseInit, double NmseFinal,
    double Seconds, string Fingerprint)
{
    public JsonObject ToJson() => new()
    {
        ["format_version"] = 1,
        ["id"] = Id,
        ["layer"] = Layer,
        ["kind"] = Kind == SubblockKind.Attention ? "attention" : "ffn",
        ["no_op"] = Kind == SubblockKind.Attention ? Attention!.NoOp : Ffn!.NoOp,
        ["replace_with_linear"] = Kind == SubblockKind.Attention ? Attention!.ReplaceWithLinear : Ffn!.ReplaceWithLinear,
        ["num_key_value_heads"] = Attention?.NumKeyValueHeads,
        ["intermediate_size"] = Ffn?.IntermediateSize,
        ["is_parent"] = IsParent,
        ["trained"] = Trained,
        ["file"] = File,
        ["parameters"] = Parameters,
        ["steps"] = Steps,
        ["tokens"] = Tokens,
        ["nmse_init"] = NmseInit,
        ["nmse_final"] = NmseFinal,
        ["seconds"] = Math.Round(Seconds, 3),
        ["fingerprint"] = Fingerprint,
    };

    public static VariantRecord FromJson(JsonNode j)
    {
        var kind = j["kind"]!.GetValue<string>() == "attention" ? SubblockKind.Attention : SubblockKind.Ffn;
        bool noOp = j["no_op"]!.GetValue<bool>(), linear = j["replace_with_linear"]!.GetValue<bool>();
        return new VariantRecord(
            j["id"]!.GetValue<string>(), j["layer"]!.GetValue<int>(), kind,
            kind == SubblockKind.Attention ? new AttentionConfig(noOp, linear, j["num_key_value_heads"]?.GetValue<int>()) : null,
            kind == SubblockKind.Ffn ? new FfnConfig(noOp, linear, j["intermediate_size"]?.GetValue<int>()) : null,
            j["is_parent"]!.GetValue<bool>(), j["trained"]!.GetValue<bool>(), j["file"]?.GetValue<string>(),
            j["parameters"]!.GetValue<long>(), j["steps"]!.GetValue<int>(), j["tokens"]!.GetValue<long>(),
            j["nmse_init"]!.GetValue<double>(), j["nmse_final"]!.GetValue<double>(), j["seconds"]!.GetValue<double>(),
            j["fingerprint"]!.GetValue<string>());
    }
}

/// <summary>The block library of a run: RUN/library/ with one record (and weights, when trained) per variant.</summary>
public static class BlockLibrary
{
    public const string Folder = "library";
    public const string IndexFile = "library.json";

    public static string RecordPath(string runDir, string id) => Path.Combine(runDir, Folder, id + ".json");
    public static string WeightsPath(string runDir, string id) => Path.Combine(runDir, Folder, id + ".safetensors");

    public static VariantRecord? TryRead(string runDir, string id)
    {
        string path = RecordPath(runDir, id);
        if (!System.IO.File.Exists(path)) return null;
        try { return VariantRecord.FromJson(JsonNode.Parse(System.IO.File.ReadAllText(path))!); }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or NullReferenceException)
        {
            Log.Warning($"{path}: unreadable record ({e.Message}); the unit will be redone");
            return null;
        }
    }

    /// <summary>Rewrites library.json from the records on disk (all shards' work, whoever writes last).</summary>
    public static JsonObject WriteIndex(string runDir, IReadOnlyList<SubblockVariant> variants, string fingerprint)
    {
        var records = variants.Select(v => TryRead(runDir, v.Id)).Where(r => r is not null && r.Fingerprint == fingerprint).ToList();
        var index = new JsonObject
        {
            ["format_version"] = 1,
            ["fingerprint"] = fingerprint,
            ["variants_total"] = variants.Count,
            ["variants_done"] = records.Count,
            ["complete"] = records.Count == variants.Count,
            ["variants"] = new JsonArray(records.Select(r => (JsonNode)r!.ToJson()).ToArray()),
        };
        AtomicFile.WriteJson(Path.Combine(runDir, Folder, IndexFile), index);
        return index;
    }
}
