using Puzzle.Stages.Scoring;
using Xunit;
using static TorchSharp.torch;

namespace Puzzle.Tests.Memory;

/// <summary>The vocabulary-chunked, cached-hidden-state scoring against the full-vocabulary computation it replaced.</summary>
public class ScoringMemoryTests
{
    [Theory]
    [InlineData(7L)]     // uneven chunks, the last one short
    [InlineData(32L)]
    [InlineData(96L)]    // one chunk
    public void Chunked_kl_nll_and_argmax_equal_the_full_vocabulary_computation(long chunk)
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(5);
        var weight = randn([96, 64], generator: generator) * 0.3;
        var hp = randn([3, 10, 64], generator: generator);
        var hq = hp + randn([3, 10, 64], generator: generator) * 0.2;
        var targets = randint(96, [3, 10], generator: generator);

        var logp = nn.functional.linear(hp, weight).log_softmax(-1);
        var logq = nn.functional.linear(hq, weight).log_softmax(-1);
        var klFull = (logp.exp() * (logp - logq)).sum(-1);
        var nllFull = -logq.gather(-1, targets.unsqueeze(-1)).squeeze(-1);

        var parent = VocabularyChunks.Parent(hp, weight, targets, chunk);
        Assert.True(allclose(parent.Nll.to(ScalarType.Float32), -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1), rtol: 1e-5, atol: 1e-5));
        Assert.True(parent.Top1.eq(logp.argmax(-1)).all().item<bool>());
        Assert.True(allclose(parent.NegEntropy.to(ScalarType.Float32), (logp.exp() * logp).sum(-1), rtol: 1e-5, atol: 1e-5));
        Assert.True(allclose(parent.ExpectedRow.to(ScalarType.Float32), logp.exp().matmul(weight), rtol: 1e-4, atol: 1e-6));

        var r = VocabularyChunks.AgainstParent(parent.ExpectedRow, parent.NegEntropy, hq, weight, targets, chunk);
        Assert.True(allclose(r.Kl.to(ScalarType.Float32), klFull, rtol: 1e-4, atol: 1e-6), $"KL {r.Kl.sum().item<double>()} vs {klFull.sum().item<float>()}");
        Assert.True(allclose(r.Nll.to(ScalarType.Float32), nllFull, rtol: 1e-5, atol: 1e-5));
        Assert.True(r.Top1.eq(logq.argmax(-1)).all().item<bool>());
        Assert.True(klFull.min().item<float>() > 1e-3, "the two distributions differ");

        var same = VocabularyChunks.AgainstParent(parent.ExpectedRow, parent.NegEntropy, hp, weight, targets, chunk);
        Assert.True(same.Kl.abs().max().item<double>() < 1e-6, $"KL of the parent to itself {same.Kl.abs().max().item<double>()}");
    }

    [Fact]
    public void Scores_from_the_bf16_cache_match_the_old_full_computation_within_bf16_tolerance()
    {
        using var parent = new Puzzle.Model.CausalLm(TestSupport.TinyParentConfig(layers: 3), CPU, ScalarType.Float32).InitializeRandom(7, std: 0.15);
        parent.eval();
        using var scope = NewDisposeScope();
        var windows = TestSupport.RandomIds(10, 17, 96, seed: 3);
        using var block = new Puzzle.Model.DecoderLayer(parent.Config, new Puzzle.Model.BlockConfig(Puzzle.Model.AttentionConfig.Gqa(2), Puzzle.Model.FfnConfig.NoOperation), CPU, ScalarType.Float32);
        using (no_grad())
            foreach (var (name, p) in block.named_parameters()) p.copy_(parent.Layer(1).named_parameters().Single(x => x.name == name).parameter);

        // The computation before: fp32 layer inputs and full-vocabulary log-probs of the parent, kept for all tokens.
        double oldKl, oldNll, oldAgree;
        using (no_grad())
        {
            var ids = windows.narrow(1, 0, 16);
            var targets = windows.narrow(1, 1, 16);
            var inputs = parent.PrefillInputs(16, 0, ScalarType.Float32);
            var logp = parent.Forward(ids).log_softmax(-1);
            var h = parent.LayerInput(ids, 1);
            h = block.Forward(h, inputs with { Layer = 1 });
            h = parent.Layer(2).Forward(h, inputs with { Layer = 2 });
            var logq = nn.functional.linear(parent.Model.Norm.call(h), parent.LmHeadWeight).log_softmax(-1);
            oldKl = (logp.exp() * (logp - logq)).sum().item<float>() / 160;
            oldNll = -logq.gather(-1, targets.unsqueeze(-1)).sum().item<float>() / 160;
            oldAgree = logq.argmax(-1).eq(logp.argmax(-1)).sum().item<long>() / 160.0;
        }
        Assert.True(oldKl > 1e-3, $"dropping the FFN changes the output (KL {oldKl})");

        using var exact = ParentCache.Build(parent, windows, batch: 4, ScalarType.Float32, vocabChunk: 10);
        var s32 = BlockScorer.ScoreBlock(parent, block, 1, "a", "f", exact, batch: 3);
        Assert.Equal(oldKl, s32.Kl, 1e-5);
        Assert.Equal(oldNll, s32.LmLoss, 1e-5);
        Assert.Equal(oldAgree, s32.Top1Agreement, 1e-9);

        using var bf16 = ParentCache.Build(parent, windows, batch: 4);
        Assert.Equal(ScalarType.BFloat16, bf16.LayerInputs[0].dtype);
        var s16 = BlockScorer.ScoreBlock(parent, block, 1, "a", "f", bf16, batch: 4);
        Assert.InRange(Math.Abs(s16.Kl - oldKl) / oldKl, 0, 0.02);
        Assert.Equal(oldNll, s16.LmLoss, 2e-3);
        Assert.Equal(exact.LmLoss, bf16.LmLoss, 1e-6);                                  // the parent's own pass is not rounded
    }

    [Fact]
    public void The_cache_holds_hidden_times_tokens_not_vocabulary_times_tokens()
    {
        var config = TestSupport.TinyParentConfig(layers: 3);
        using var parent = TestSupport.Build(config);
        var windows = TestSupport.RandomIds(6, 9, 96, seed: 4);
        using var cache = ParentCache.Build(parent, windows, batch: 4);
        long held = cache.LayerInputs.Sum(t => t.NumberOfElements * t.ElementSize) + cache.ExpectedRow.NumberOfElements * cache.ExpectedRow.ElementSize +
                    cache.NegEntropy.NumberOfElements * cache.NegEntropy.ElementSize + cache.ParentTop1.NumberOfElements * 8 + cache.Targets.NumberOfElements * 8;
        Assert.Equal(ParentCache.Bytes(3, 64, 6 * 8, 2), held);
    }
}
