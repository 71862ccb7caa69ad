using System.Text.Json.Nodes;
using Puzzle.IO;

namespace Puzzle.Stages.Assembly;

/// <summary>
/// Stage 7: RUN/child from the run's solution (<see cref="ChildRecipe.Solution"/>), unless it already holds exactly
/// that solution assembled from the same library records (RUN/child/puzzle_library.json).
/// </summary>
public static class AssemblyStage
{
    public const string LibraryKeyFile = "puzzle_library.json";

    /// <returns>true when the child was (re)assembled.</returns>
    public static bool Run(RunDirectory run)
    {
        var solution = JsonFile.Read(run.Solution(ChildRecipe.Solution));
        string child = run.Child;
        string libraryKeyPath = Path.Combine(child, LibraryKeyFile);
        string libraryKey = LibraryKey(run, solution);
        var existing = JsonFile.ReadDerived(Path.Combine(child, "puzzle_solution.json"));
        if (existing is { } e && e["layers"].Node?.ToJsonString() == solution["layers"].Node?.ToJsonString() && CheckpointDirectory.IntactOrDiscarded(child))
        {
            if (JsonFile.ReadDerived(libraryKeyPath)?["key"].OptionalString() == libraryKey)
            {
                Log.Info("assemble: RUN/child already holds this solution; reusing it");
                return false;
            }
            Log.Warning($"{child}: library variants it was assembled from were trained again (or their record is missing); assembling it again");
        }
        ChildAssembler.Run(run, ChildRecipe.Solution, child);
        AtomicFile.WriteJson(libraryKeyPath, new JsonObject { ["format_version"] = 1, ["key"] = libraryKey });
        return true;
    }

    /// <summary>The library records of the variants a solution uses: changes when one of them was trained again.</summary>
    static string LibraryKey(RunDirectory run, JsonField solution) =>
        LibraryKey(run, solution["layers"].Items().SelectMany(l => new[] { l["attention"].String(), l["ffn"].String() }));

    /// <summary>The library records of these variants (their ids where a variant has none: the parent's own).</summary>
    public static string LibraryKey(RunDirectory run, IEnumerable<string> variantIds) => Fingerprint.Hash(string.Join("|",
        variantIds.Distinct().Order(StringComparer.Ordinal)
            .Select(id => File.Exists(run.LibraryRecord(id)) ? File.ReadAllText(run.LibraryRecord(id)) : id)));
}
