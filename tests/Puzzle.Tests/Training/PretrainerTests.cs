using Puzzle.Checkpoints;
using Puzzle.Data;
using Puzzle.Tests.Data;
using Puzzle.Tokenization;
using Puzzle.Training;
using static TorchSharp.torch;

namespace Puzzle.Tests.Training;

public sealed class PretrainerTests
{
    static readonly Lazy<string> SharedData = new(() =>
    {
        string corpus = CorpusFixtures.TextFolder(60);
        string dataDir = TestSupport.TempDir();
        DataPreparer.Prepare(new DataPrepareOptions
        {
            TokenizerDir = CorpusFixtures.Tokenizer(corpus, 320), Inputs = [corpus], OutDir = dataDir, SeqLen = 32, ValidationFraction = 0.1,
        }, log: _ => { });
        return dataDir;
    });

    static PretrainOptions Options(string outDir, string precision = "fp32", int? stopAfter = null) => new()
    {
        DataDir = SharedData.Value, OutDir = outDir, Shape = ModelShape.Presets["tiny"], Tokens = 8 * 32 * 24, Batch = 8,
        LearningRate = 3e-3, CheckpointEvery = 5, EvalEvery = 12, LogEvery = 4, Precision = precision, StopAfterSteps = stopAfter,
    };

    [Fact]
    public void Pretrain_LowersLoss_WritesLoadableLlamaWithTokenizer_AndKeepsMemoryFlat()
    {
        string outDir = TestSupport.TempDir();
        var logs = new List<string>();
        var result = Pretrainer.Run(Options(outDir, "bf16"), logs.Add);
        Assert.True(result.Finished);
        Assert.Equal(24, result.Steps);
        Assert.True(result.TrainLoss < Math.Log(320) - 1.0, $"train loss {result.TrainLoss} vs uniform {Math.Log(320)}");
        Assert.True(double.IsFinite(result.ValidationLoss));
        Assert.Contains(logs, l => l.Contains("tokens/s") && l.Contains("ETA"));
        Assert.Contains(logs, l => l.Contains("validation loss"));
        // Every step allocates and frees the same tensors: the live count does not grow.
        Assert.True(result.LiveTensorsFirst == result.LiveTensorsLast, $"live tensors {result.LiveTensorsFirst} -> {result.LiveTensorsLast}: {string.Join(" / ", logs)}");

        using var model = Checkpoint.Load(outDir);
        Assert.Equal(2, model.Config.NumLayers);
        Assert.Equal("llama", System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")))!["model_type"]!.GetValue<string>());
        using var tokenizer = TextTokenizer.Load(outDir);
        Assert.Equal(320, tokenizer.VocabSize);
        Assert.True(File.Exists(Path.Combine(outDir, "training.json")));

        // The validation loss the trainer reports is the loss of the saved model.
        using var data = new TokenDataset(SharedData.Value, "validation");
        Assert.Equal(result.ValidationLoss, Pretrainer.Evaluate(model, data, 32, 8, 8), 2);

        var again = Pretrainer.Run(Options(outDir, "bf16"), _ => { });
        Assert.True(again.Reused);
    }

    [Fact]
    public void Pretrain_InterruptedAndRerun_EndsWithTheSameWeights()
    {
        string straight = TestSupport.TempDir(), interrupted = TestSupport.TempDir();
        Pretrainer.Run(Options(straight), _ => { });
        var first = Pretrainer.Run(Options(interrupted, stopAfter: 7), _ => { });           // "killed" after step 7; last checkpoint at 5
        Assert.False(first.Finished);
        var logs = new List<string>();
        var second = Pretrainer.Run(Options(interrupted), logs.Add);
        Assert.True(second.Finished);
        Assert.Contains(logs, l => l.Contains("resuming") && l.Contains("step 5/24"));
        using var a = Checkpoint.Load(straight);
        using var b = Checkpoint.Load(interrupted);
        foreach (var ((name, pa), (_, pb)) in a.named_parameters().Zip(b.named_parameters()))
            Assert.True(TestSupport.MaxAbsDiff(pa, pb) < 1e-6, name);
    }

    [Fact]
    public void Pretrain_CheckpointFromOtherSettings_IsRefused()
    {
        string outDir = TestSupport.TempDir();
        Pretrainer.Run(Options(outDir, stopAfter: 5), _ => { });
        var other = Options(outDir) with { LearningRate = 1e-3 };
        Assert.Contains("made with other settings", Assert.Throws<PuzzleException>(() => Pretrainer.Run(other, _ => { })).Message);
    }

    [Fact]
    public void Schedule_WarmsUpLinearly_ThenCosineToTheFloor()
    {
        var s = new LearningRateSchedule(1.0, WarmupSteps: 4, TotalSteps: 15, MinRatio: 0.1);
        Assert.Equal(0.25, s.At(0), tolerance: 1e-10);
        Assert.Equal(1.0, s.At(3), tolerance: 1e-10);
        Assert.Equal(1.0, s.At(4), tolerance: 1e-10);
        Assert.Equal(0.55, s.At(9), tolerance: 1e-10);                                                   // halfway through the decay: (1 + 0.1) / 2
        Assert.Equal(0.1, s.At(14), tolerance: 1e-10);
        for (int i = 4; i < 14; i++) Assert.True(s.At(i + 1) < s.At(i));
    }

    [Fact]
    public void MixedPrecision_MastersStayFloat32_AndTrackTheWorkingCopy()
    {
        var config = TestSupport.TinyParentConfig();
        using var master = TestSupport.Build(config);
        using var work = new Puzzle.Model.CausalLm(config, CPU, ScalarType.BFloat16);
        using var optimizer = new MixedPrecisionOptimizer(master, work, new AdamWSettings());
        Assert.True(optimizer.Mixed);
        var ids = TestSupport.RandomIds(2, 8, 96, 1);
        double before = 0, after = 0;
        for (int step = 0; step < 30; step++)
        {
            using var scope = NewDisposeScope();
            var logits = work.Forward(ids.narrow(1, 0, 7));
            var loss = nn.functional.cross_entropy(logits.to(ScalarType.Float32).view(-1, 96), ids.narrow(1, 1, 7).reshape(-1));
            loss.backward();
            if (step == 0) before = loss.item<float>();
            after = loss.item<float>();
            optimizer.Step(1e-2);
        }
        Assert.True(after < before - 1, $"loss {before} -> {after}");
        // Between steps no fp32 gradient is held (only the working copy's, zeroed): 4 bytes per trained parameter less at the next backward.
        Assert.All(master.parameters(), p => Assert.Null(p.grad));
        foreach (var ((name, m), (_, w)) in master.named_parameters().Zip(work.named_parameters()))
        {
            Assert.Equal(ScalarType.Float32, m.dtype);
            using var rounded = m.to(ScalarType.BFloat16);
            Assert.True(TestSupport.MaxAbsDiff(rounded, w) == 0, name);
        }
    }
}
