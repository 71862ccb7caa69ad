using Puzzle.Model;
using Puzzle.Training;
using static TorchSharp.torch;

namespace Puzzle.Tests.Training;

public sealed class MixedPrecisionOptimizerTests
{
    /// <summary>Four steps of a tiny LM in bf16 with fp32 masters, the same ids and learning rates for every optimizer.</summary>
    static void Train(CausalLm work, MixedPrecisionOptimizer optimizer, int steps, int seed)
    {
        int vocab = work.Config.VocabSize;
        for (int step = 0; step < steps; step++)
        {
            using var scope = NewDisposeScope();
            var ids = TestSupport.RandomIds(2, 8, vocab, seed + step);
            var logits = work.Forward(ids.narrow(1, 0, 7));
            nn.functional.cross_entropy(logits.to(ScalarType.Float32).view(-1, vocab), ids.narrow(1, 1, 7).reshape(-1)).backward();
            optimizer.Step(1e-2 * (step + 1));
        }
    }

    static float MaxMasterDiff(CausalLm a, CausalLm b) =>
        a.named_parameters().Zip(b.named_parameters()).Max(p => TestSupport.MaxAbsDiff(p.First.parameter, p.Second.parameter));

    [Fact]
    public void ChunkedStep_GivesTheOneShotStepsParameters_AndItsStateResumes()
    {
        var config = TestSupport.TinyParentConfig();
        using var oneMaster = TestSupport.Build(config);
        using var chunkedMaster = TestSupport.Build(config);
        using var oneWork = new CausalLm(config, CPU, ScalarType.BFloat16);
        using var chunkedWork = new CausalLm(config, CPU, ScalarType.BFloat16);
        using var start = TestSupport.Build(config);
        var settings = new AdamWSettings(WeightDecay: 0.1, ClipNorm: 0.5);                  // clipping across chunks, decay and no-decay groups
        using var one = new MixedPrecisionOptimizer(oneMaster, oneWork, settings, chunkElements: long.MaxValue);
        long largest = oneMaster.parameters().Max(p => p.numel());
        using var chunked = new MixedPrecisionOptimizer(chunkedMaster, chunkedWork, settings, chunkElements: largest / 2);
        Assert.Equal(1, one.Chunks);
        Assert.True(chunked.Chunks >= oneMaster.parameters().Count() / 2, $"{chunked.Chunks} chunks");   // a parameter over the bound is a chunk alone
        Assert.Equal(8 * largest, MixedPrecisionOptimizer.StepTemporaryBytes(oneMaster.parameters().Select(p => p.numel()), largest / 2));

        Train(oneWork, one, 4, 11);
        Train(chunkedWork, chunked, 4, 11);
        Assert.True(MaxMasterDiff(oneMaster, start) > 1e-3, "the steps moved the weights");
        Assert.True(MaxMasterDiff(oneMaster, chunkedMaster) <= 1e-6, $"chunked vs one-shot: {MaxMasterDiff(oneMaster, chunkedMaster)}");

        // The chunks' states in one file: a fresh optimizer of the same chunks resumes exactly; another chunking is refused.
        string dir = TestSupport.TempDir(), path = Path.Combine(dir, "optimizer.bin");
        chunked.SaveState(path);
        using var resumedMaster = TestSupport.Build(config);
        using var resumedWork = new CausalLm(config, CPU, ScalarType.BFloat16);
        using var resumed = new MixedPrecisionOptimizer(resumedMaster, resumedWork, settings, chunkElements: largest / 2);
        resumed.LoadMasters(name => chunkedMaster.named_parameters().First(p => p.name == name).parameter.clone());
        resumed.LoadState(path);
        Train(chunkedWork, chunked, 2, 40);
        Train(resumedWork, resumed, 2, 40);
        Assert.True(MaxMasterDiff(chunkedMaster, resumedMaster) <= 1e-6, $"resumed vs continued: {MaxMasterDiff(chunkedMaster, resumedMaster)}");
        using var otherMaster = TestSupport.Build(config);
        using var other = new MixedPrecisionOptimizer(otherMaster, null, settings, chunkElements: long.MaxValue);
        var error = Assert.Throws<PuzzleException>(() => other.LoadState(path));
        Assert.Contains(path, error.Message);
    }
}
