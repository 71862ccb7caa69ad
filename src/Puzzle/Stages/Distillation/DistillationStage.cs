using Puzzle.IO;
using Puzzle.Stages.Assembly;
using Puzzle.Training;

namespace Puzzle.Stages.Distillation;

/// <summary>
/// Stage 8: global knowledge distillation of RUN/child into RUN/child-gkd with the run's gkd settings. A child-gkd
/// distilled from another assembly of the child (the puzzle_library.json it copied differs) is discarded first; an
/// interrupted distillation resumes (Distiller's checkpoint), a finished one is reused.
/// </summary>
public static class DistillationStage
{
    public static void Run(RunDirectory run)
    {
        string child = run.Child, outDir = run.ChildGkd;
        // A child-gkd of a run from before this key was copied has none: kept, and the Distiller's own fingerprint
        // (teacher, student config and weights, settings) decides whether it still stands.
        if (AssembledFrom(outDir) is { } from && from != AssembledFrom(child))
        {
            Log.Info($"distill: {outDir} was distilled from another assembly of the child; starting over");
            Directory.Delete(outDir, recursive: true);
        }
        if (File.Exists(Path.Combine(outDir, "config.json"))) CheckpointDirectory.IntactOrDiscarded(outDir);
        Distiller.Run(ChildRecipe.DistillOptionsFor(run, child, outDir, run.Config.Gkd.Tokens));
        foreach (string name in new[] { "puzzle_solution.json", AssemblyStage.LibraryKeyFile })
        {
            string source = Path.Combine(child, name);
            if (File.Exists(source)) AtomicFile.Copy(source, Path.Combine(outDir, name));
        }
    }

    /// <summary>The assembly's library key a child directory carries (RUN/child writes it, RUN/child-gkd copies it).</summary>
    static string? AssembledFrom(string dir) => JsonFile.ReadDerived(Path.Combine(dir, AssemblyStage.LibraryKeyFile))?["key"].OptionalString();
}
