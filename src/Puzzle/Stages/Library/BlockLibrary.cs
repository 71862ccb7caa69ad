using System.Text.Json.Nodes;
using Puzzle.Domain;
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

    /// <summary>Whether this record holds that variant's sublayer (the same id can mean another width when search_space.ffn_multiple changes).</summary>
    public bool Holds(SubblockVariant v) => Id == v.Id && Kind == v.Kind && Attention == v.Attention && Ffn == v.Ffn;

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
    public const string Folder = RunDirectory.LibraryFolder;
    public const string IndexFile = RunDirectory.LibraryIndexFile;

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
    public static LibraryIndex WriteIndex(string runDir, IReadOnlyList<SubblockVariant> variants, string fingerprint)
    {
        var records = variants.Select(v => TryRead(runDir, v.Id) is { } r && r.Fingerprint == fingerprint && r.Holds(v) ? r : null).OfType<VariantRecord>().ToList();
        var index = new LibraryIndex(fingerprint, variants.Count, records);
        index.Write(Path.Combine(runDir, Folder, IndexFile));
        return index;
    }
}

/// <summary>RUN/library/library.json: which variants are trained under which BLD fingerprint, and whether all are.</summary>
public sealed record LibraryIndex(string Fingerprint, int VariantsTotal, IReadOnlyList<VariantRecord> Variants)
{
    public const int FormatVersion = 1;
    public int VariantsDone => Variants.Count;
    public bool Complete => Variants.Count == VariantsTotal;

    public JsonObject ToJson() => new()
    {
        ["format_version"] = FormatVersion,
        ["fingerprint"] = Fingerprint,
        ["variants_total"] = VariantsTotal,
        ["variants_done"] = VariantsDone,
        ["complete"] = Complete,
        ["variants"] = new JsonArray(Variants.Select(r => (JsonNode)r.ToJson()).ToArray()),
    };

    public void Write(string path) => AtomicFile.WriteJson(path, ToJson());

    /// <summary>library.json, or null when absent; an error naming the file and field when it is malformed or of another format.</summary>
    public static LibraryIndex? Read(string path)
    {
        if (!File.Exists(path)) return null;
        var j = JsonFile.ReadVersioned(path, FormatVersion, "puzzle library");
        var index = new LibraryIndex(j["fingerprint"].String(), j["variants_total"].Int(), j["variants"].Items().Select(VariantRecord.FromJson).ToList());
        JsonFile.CheckComplete(j["complete"], index.Complete, $"lists {index.VariantsDone} of {index.VariantsTotal} variants");
        return index;
    }
}
