using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.IO;

namespace Puzzle.Stages.Assembly;

/// <summary>
/// Stage 7: RUN/child from the run's solution (<see cref="ChildRecipe.Solution"/>), unless it already holds exactly
/// that solution assembled from the same library records and coupled settings (RUN/child/puzzle_library.json). With
/// assembly.coupled_bld_tokens, the layers that differ from the parent's are first trained as whole blocks
/// (<see cref="CoupledBld"/>) and come from those blocks; RUN/child/puzzle_coupled_bld.json records them.
/// </summary>
public static class AssemblyStage
{
    public const string LibraryKeyFile = "puzzle_library.json";
    public const string CoupledFile = "puzzle_coupled_bld.json";

    /// <returns>true when the child was (re)assembled.</returns>
    public static bool Run(RunDirectory run, Action<string>? log = null)
    {
        log ??= Log.Info;
        string solutionPath = run.Solution(ChildRecipe.Solution);
        var solution = JsonFile.Read(solutionPath);
        string child = run.Child;
        string libraryKeyPath = Path.Combine(child, LibraryKeyFile);
        bool coupled = run.Config.Assembly.CoupledBldTokens > 0;
        // Off, the key is the library key alone (as before coupled BLD existed): a run's child stays valid.
        string libraryKey = LibraryKey(run, solution);
        string key = coupled ? CoupledBld.ChildKey(run, libraryKey) : libraryKey;
        var existing = JsonFile.ReadDerived(Path.Combine(child, "puzzle_solution.json"));
        if (existing is { } e && e["layers"].Node?.ToJsonString() == solution["layers"].Node?.ToJsonString() && CheckpointDirectory.IntactOrDiscarded(child))
        {
            if (JsonFile.ReadDerived(libraryKeyPath)?["key"].OptionalString() == key)
            {
                log("assemble: RUN/child already holds this solution; reusing it");
                return false;
            }
            Log.Warning($"{child}: library variants it was assembled from were trained again, the coupled BLD setting changed (or the record is missing); assembling it again");
        }
        Assemble(run, ChildRecipe.Solution, child, log);
        AtomicFile.WriteJson(libraryKeyPath, new JsonObject { ["format_version"] = 1, ["key"] = key });
        return true;
    }

    /// <summary>
    /// The child of solution <paramref name="solutionName"/> in <paramref name="outDir"/>, as stage 7 builds the run's
    /// child: with assembly.coupled_bld_tokens, its changed layers trained as whole blocks first (<see cref="CoupledBld"/>;
    /// shared with every solution choosing the same variants for a layer) and recorded in <see cref="CoupledFile"/>.
    /// What `puzzle assemble --solution NAME` runs.
    /// </summary>
    public static AssemblyResult Assemble(RunDirectory run, string solutionName, string outDir, Action<string>? log = null)
    {
        log ??= Log.Info;
        string solutionPath = run.Solution(solutionName);
        CoupledResult? blocks = null;
        string? key = null;
        // A missing solution or one of another parent's depth: the assembler's own error.
        if (run.Config.Assembly.CoupledBldTokens > 0 && File.Exists(solutionPath)
            && JsonFile.Read(solutionPath) is var solution && solution["layers"].Items() is { } layers && layers.Count == HfConfig.Read(run.ParentDir).NumLayers)
        {
            blocks = CoupledBld.Run(run, ChildAssembler.Choices(run, solutionPath, layers), log);
            key = CoupledBld.ChildKey(run, LibraryKey(run, solution));
        }
        var result = ChildAssembler.Run(run, solutionName, outDir, log, blocks?.Weights);
        string coupledPath = Path.Combine(outDir, CoupledFile);
        if (blocks is not null) AtomicFile.WriteJson(coupledPath, CoupledBld.Summary(run, blocks, key!));
        else if (File.Exists(coupledPath)) File.Delete(coupledPath);
        return result;
    }

    /// <summary>The library records of the variants a solution uses: changes when one of them was trained again.</summary>
    static string LibraryKey(RunDirectory run, JsonField solution) =>
        LibraryKey(run, solution["layers"].Items().SelectMany(l => new[] { l["attention"].String(), l["ffn"].String() }));

    /// <summary>The library records of these variants (their ids where a variant has none: the parent's own).</summary>
    public static string LibraryKey(RunDirectory run, IEnumerable<string> variantIds) => Fingerprint.Hash(string.Join("|",
        variantIds.Distinct().Order(StringComparer.Ordinal)
            .Select(id => File.Exists(run.LibraryRecord(id)) ? File.ReadAllText(run.LibraryRecord(id)) : id)));
}
