using System.Text.Json.Nodes;
using Puzzle.Config;
using Puzzle.Data;
using Puzzle.Tests.Data;
using Puzzle.Training;

namespace Puzzle.Tests.Stages;

/// <summary>A tiny parent pretrained on a synthetic corpus, its prepared data, and fresh run directories over them.</summary>
public sealed class RunFixture
{
    public string ParentDir { get; }
    public string DataDir { get; }

    public RunFixture() => (ParentDir, DataDir) = Pretrained(ModelShape.Presets["tiny"]);

    /// <summary>A parent of <paramref name="shape"/> pretrained on a synthetic corpus (60 documents, windows of 32), and its prepared data.</summary>
    public static (string ParentDir, string DataDir) Pretrained(ModelShape shape)
    {
        string corpus = CorpusFixtures.TextFolder(60);
        string dataDir = TestSupport.TempDir();
        DataPreparer.Prepare(new DataPrepareOptions
        {
            TokenizerDir = CorpusFixtures.Tokenizer(corpus, 320), Inputs = [corpus], OutDir = dataDir, SeqLen = 32, ValidationFraction = 0.15, TestFraction = 0.1,
        }, log: _ => { });
        string parentDir = TestSupport.TempDir();
        Pretrainer.Run(new PretrainOptions
        {
            DataDir = dataDir, OutDir = parentDir, Shape = shape, Tokens = 8 * 32 * 40, Batch = 8,
            LearningRate = 3e-3, CheckpointEvery = 1000, EvalEvery = 1000, Precision = "bf16",
        }, _ => { });
        return (parentDir, dataDir);
    }

    /// <summary>A new run directory whose config points at the fixture's parent and data, with small budgets.</summary>
    public string NewRun(Action<JsonObject>? edit = null)
    {
        string run = TestSupport.TempDir();
        var config = new RunConfig
        {
            Parent = new ParentSection { Path = ParentDir },
            Data = new DataSection { Path = DataDir },
            Bld = new BldSection { TokensPerVariant = 8 * 32 * 12, Batch = 8, Lr = 3e-4, CalibrationTokens = 32 * 16, ValidationTokens = 32 * 16 },
        }.ToJson();
        edit?.Invoke(config);
        File.WriteAllText(Path.Combine(run, RunConfig.FileName), config.ToJsonString());
        return run;
    }
}
