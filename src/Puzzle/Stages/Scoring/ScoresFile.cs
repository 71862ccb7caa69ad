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
        if (!File.Exists(path)) throw new PuzzleException($"{path}: not found; run `puzzle score` first");
        var j = JsonFile.Read(path);
        int version = j["format_version"].Int();
        if (version != FormatVersion)
            throw new PuzzleException($"{path}: format_version {version} is not {FormatVersion} (written by another version of Puzzle); rerun `puzzle score`");
        string mode = j["mode"].String();
        if (mode is not ("composed" or "subblocks")) throw j["mode"].Error("\"composed\" or \"subblocks\"");
        var file = new ScoresFile(j["fingerprint"].String(), mode, j["tokens"].Long(), j["parent_lm_loss"].Double(), j["candidates_total"].Int(),
            j["entries"].Items().Select(BlockScore.FromJson).ToList());
        if (j["complete"].Bool() != file.Complete)
            throw new PuzzleException($"{path}: complete is {j["complete"].Bool().ToString().ToLowerInvariant()} but it holds {file.Entries.Count} of {file.CandidatesTotal} candidates");
        return file;
    }
}
