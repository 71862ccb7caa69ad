using System.Text.Json.Nodes;
using Puzzle.IO;

namespace Puzzle.Stages.Scoring;

/// <summary>
/// RUN/scores.json: every candidate's replace-1-block score under one scoring fingerprint, and whether all are
/// there. Format 1 (the layout written since the first release).
/// </summary>
public sealed record ScoresFile(string Fingerprint, string Mode, long Tokens, double ParentLmLoss, int CandidatesTotal, IReadOnlyList<BlockScore> Entries)
{
    public const int FormatVersion = 1;
    public bool Complete => Entries.Count == CandidatesTotal;

    public JsonObject ToJson() => new()
    {
        ["format_version"] = FormatVersion,
        ["fingerprint"] = Fingerprint,
        ["mode"] = Mode,
        ["tokens"] = Tokens,
        ["parent_lm_loss"] = ParentLmLoss,
        ["candidates_total"] = CandidatesTotal,
        ["complete"] = Complete,
        ["entries"] = new JsonArray(Entries.Select(x => (JsonNode)x.ToJson()).ToArray()),
    };

    public void Write(string path) => AtomicFile.WriteJson(path, ToJson());

    /// <summary>scores.json, checked: its format, its mode, complete agreeing with its entries; errors name the file and the field.</summary>
    public static ScoresFile Read(string path)
    {
        var j = JsonFile.ReadVersioned(path, FormatVersion, "puzzle score");
        string mode = j["mode"].String();
        if (mode is not ("composed" or "subblocks")) throw j["mode"].Error("\"composed\" or \"subblocks\"");
        var file = new ScoresFile(j["fingerprint"].String(), mode, j["tokens"].Long(), j["parent_lm_loss"].Double(), j["candidates_total"].Int(),
            j["entries"].Items().Select(BlockScore.FromJson).ToList());
        JsonFile.CheckComplete(j["complete"], file.Complete, $"holds {file.Entries.Count} of {file.CandidatesTotal} candidates");
        return file;
    }
}
