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

    public static VariantRecord FromJson(JsonNode j) => FromJson(new JsonField(j, "library record", ""));

    public static VariantRecord FromJson(JsonField j)
    {
        string kindName = j["kind"].String();
        var kind = kindName switch
        {
            "attention" => SubblockKind.Attention,
            "ffn" => SubblockKind.Ffn,
            _ => throw j["kind"].Error("\"attention\" or \"ffn\""),
        };
        bool noOp = j["no_op"].Bool(), linear = j["replace_with_linear"].Bool();
        if (noOp && linear) throw new PuzzleException($"{j.File}: no_op and replace_with_linear are both true");
        return new VariantRecord(
            j["id"].String(), j["layer"].Int(), kind,
            kind == SubblockKind.Attention ? new AttentionConfig(noOp, linear, j["num_key_value_heads"].OptionalInt()) : null,
            kind == SubblockKind.Ffn ? new FfnConfig(noOp, linear, j["intermediate_size"].OptionalInt()) : null,
            j["is_parent"].Bool(), j["trained"].Bool(), j["file"].OptionalString(),
            j["parameters"].Long(), j["steps"].Int(), j["tokens"].Long(),
            j["nmse_init"].Double(), j["nmse_final"].Double(), j["seconds"].Double(),
            j["fingerprint"].String());
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
        VariantRecord? record = null;
        if (JsonFile.ReadDerived(path, j => (record = VariantRecord.FromJson(j)) is not null) is null) return null;
        // A record vouches for its weights: weights deleted or torn since mean the unit is redone.
        if (record!.File is { } file)
        {
            string weights = Path.Combine(runDir, Folder, file);
            string? problem = !System.IO.File.Exists(weights) ? "is missing" : null;
            if (problem is null)
                try { using var _ = Checkpoints.SafeTensorsFile.Open(weights); }
                catch (PuzzleException e) { problem = $"is unreadable ({e.Message})"; }
            if (problem is not null)
            {
                Log.Warning($"{weights}: the weights of library variant {id} {problem}; the variant is trained again");
                System.IO.File.Delete(path);
                return null;
            }
        }
        return record;
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
