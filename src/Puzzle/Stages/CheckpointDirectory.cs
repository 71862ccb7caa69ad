using Puzzle.Checkpoints;

namespace Puzzle.Stages;

/// <summary>Checkpoint directories a stage writes (RUN/child, RUN/child-gkd, a baseline's).</summary>
public static class CheckpointDirectory
{
    /// <summary>
    /// False, after a warning and deleting it, when the directory's config or weights are torn, so the stage that
    /// wrote it redoes it instead of every later stage failing; false when it does not exist.
    /// </summary>
    public static bool IntactOrDiscarded(string dir)
    {
        if (!Directory.Exists(dir)) return false;
        try
        {
            HfConfig.Read(dir);
            foreach (string file in Checkpoint.WeightMap(dir).Values.Distinct()) using (SafeTensorsFile.Open(file)) { }
            return true;
        }
        catch (PuzzleException e)
        {
            Log.Warning($"{dir}: torn or incomplete checkpoint ({e.Message}); discarding it, the stage that wrote it is redone");
            Directory.Delete(dir, recursive: true);
            return false;
        }
    }
}
