using Puzzle.Checkpoints;
using Puzzle.Data;
using Puzzle.IO;

namespace Puzzle.Stages;

/// <summary>
/// Stage 2: the run's token data. data.inputs are prepared into RUN/data with the parent's tokenizer (reused when
/// unchanged and intact); data.path, prepared elsewhere, is checked: a test split, the parent's tokenizer.
/// </summary>
public static class DataStage
{
    public static void Run(RunDirectory run)
    {
        var d = run.Config.Data;
        if (!string.IsNullOrWhiteSpace(d.Path))
        {
            var manifest = DataManifest.Read(run.DataDir);                                           // prepared elsewhere: check it
            manifest.Split("test");                                                                   // it must have a test split
            CheckAgainstParent(run, manifest);
            return;
        }
        var options = new DataPrepareOptions
        {
            TokenizerDir = run.ParentDir, Inputs = d.Inputs.Select(run.Resolve).ToArray(), OutDir = run.DataDir,
            SeqLen = d.SeqLen, ValidationFraction = d.ValidationFraction, TestFraction = d.TestFraction, TextField = d.TextField, TxtDocuments = d.TxtDocuments,
        };
        var prepared = DataPreparer.Prepare(options);
        if (!prepared.Reused) return;
        try
        {
            foreach (string split in prepared.Manifest.Splits.Keys) using (new TokenDataset(run.DataDir, split)) { }
        }
        catch (PuzzleException e)
        {
            JsonFile.Discard(Path.Combine(run.DataDir, DataManifest.FileName), $"its shards do not match it ({e.Message})");
            DataPreparer.Prepare(options);
        }
    }

    /// <summary>Data given by data.path must be tokenized with the parent's tokenizer: ids past its vocabulary crash, others mislead.</summary>
    static void CheckAgainstParent(RunDirectory run, DataManifest manifest)
    {
        string manifestPath = Path.Combine(run.DataDir, DataManifest.FileName);
        var parent = HfConfig.Read(run.ParentDir);
        if (manifest.VocabSize > parent.VocabSize)
            throw new PuzzleException(
                $"{manifestPath}: tokenizer.vocab_size {manifest.VocabSize} is larger than the parent's vocab_size {parent.VocabSize} ({run.ParentDir}); prepare the data with the parent's tokenizer");
        string parentTokenizer;
        try { parentTokenizer = DataPreparer.TokenizerChecksum(run.ParentDir); }
        catch (PuzzleException)
        {
            Log.Warning($"{run.ParentDir}: no tokenizer files, so data.path cannot be checked against the parent's tokenizer");
            return;
        }
        if (parentTokenizer != manifest.TokenizerSha256)
            throw new PuzzleException(
                $"{manifestPath}: tokenizer.sha256 {manifest.TokenizerSha256[..12]}… is not the parent's tokenizer ({parentTokenizer[..12]}… in {run.ParentDir}); prepare the data with the parent's tokenizer");
    }
}
