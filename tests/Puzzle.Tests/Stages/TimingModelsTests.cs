using Puzzle.Config;
using Puzzle.Domain;
using Puzzle.Model;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Library;
using static TorchSharp.torch;

namespace Puzzle.Tests.Stages;

public sealed class TimingModelsTests
{
    /// <summary>Whether a write to <paramref name="a"/> shows in <paramref name="b"/> (then undone).</summary>
    static bool SameStorage(Tensor a, Tensor b)
    {
        using var noGrad = no_grad();
        using var savedA = a.clone();
        using var savedB = b.clone();
        a.fill_(3.0);
        bool shared = TestSupport.MaxAbsDiff(b, savedB) > 0;
        a.copy_(savedA);
        return shared;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void EngineTimingModels_ShareTheParentsEmbeddingAndHead_AndTimeEverySublayer(bool tied)
    {
        var config = TestSupport.TinyParentConfig(tied: tied);
        using var parent = TestSupport.Build(config, dtype: ScalarType.BFloat16);
        using var embedding = parent.Model.EmbedTokens.Weight.clone();
        using var head = parent.LmHeadWeight.clone();
        var ffn = new BlockConfig(AttentionConfig.NoOperation, config.Blocks[0].Ffn);
        using (var model = BlockTimings.SharingVocabulary(parent, config.WithBlocks(Enumerable.Repeat(ffn, 3)), 1))
        {
            Assert.True(SameStorage(parent.Model.EmbedTokens.Weight, model.Model.EmbedTokens.Weight));
            Assert.True(SameStorage(parent.LmHeadWeight, model.LmHeadWeight));
            Assert.Equal(tied, SameStorage(model.Model.EmbedTokens.Weight, model.LmHeadWeight));
            // Its own layers are initialised (std 0.02), not left empty; its norms are 1.
            var up = model.named_parameters().First(p => p.name.EndsWith("mlp.up_proj.weight")).parameter;
            Assert.InRange(up.to(ScalarType.Float32).std().item<float>(), 0.015, 0.025);
            Assert.All(model.named_parameters().Where(p => p.name.EndsWith("norm.weight")), p => Assert.Equal(1.0f, p.parameter.to(ScalarType.Float32).min().item<float>()));
        }
        // Disposing a timing model leaves the parent's vocabulary tensors whole and unchanged.
        Assert.Equal(0, TestSupport.MaxAbsDiff(embedding, parent.Model.EmbedTokens.Weight));
        Assert.Equal(0, TestSupport.MaxAbsDiff(head, parent.LmHeadWeight));

        // The engine timing through the shared models: every distinct sublayer has a positive prefill and decode time.
        var space = new SearchSpaceSection { KvHeads = [2], AttentionLinear = false, FfnFractions = [1.0, 0.5], FfnLinear = false };
        var variants = SearchSpace.Expand(config, space);
        var scenario = ScenarioCost.From(new ScenarioSection { Batch = 2, PromptLength = 8, GenerationLength = 4, Repeats = 3, WarmupRuns = 1 });
        var timings = BlockTimings.InEngine(parent, variants, scenario, 1, 3, TimingStatistic.Median);
        Assert.Equal(variants.Select(BlockTimings.Key).Distinct().Count(), timings.Subblocks.Count);
        Assert.All(variants.Where(v => !v.IsNoOp), v => Assert.True(timings.Subblocks[BlockTimings.Key(v)].Prefill.Repeats == 3, BlockTimings.Key(v)));
        Assert.True(timings.Whole.Prefill.MedianMs > 0 && timings.Whole.Decode.MedianMs > 0);
        Assert.Equal(0, TestSupport.MaxAbsDiff(embedding, parent.Model.EmbedTokens.Weight));

        // The parent's whole layer is timed too (the model before the parent): its interaction is that model's per-layer
        // time less the parent's two subblocks, each by the same statistic (second computation from the raw samples).
        var samples = BlockTimings.InEngineSamples(parent, variants, scenario, 1, 3);
        Assert.True(samples.FullBlock);
        Assert.Equal(2 + samples.Distinct.Count + 1, samples.Samples.Length);
        var reduced = samples.Reduce(TimingStatistic.Min);
        double PerLayer(int model, Func<EngineSample, double> seconds) =>
            Math.Max(0, samples.Samples[model].Min(x => seconds(x)) * 1e3 - samples.Samples[0].Min(x => seconds(x)) * 1e3) / samples.Depth;
        int Model(SubblockVariant v) => 1 + samples.Distinct.ToList().FindIndex(d => BlockTimings.Key(d) == BlockTimings.Key(v));
        var parentVariants = variants.Where(v => v.Layer == 0 && v.IsParent).ToList();
        double expected = PerLayer(samples.Samples.Length - 2, x => x.PrefillSeconds) - parentVariants.Sum(v => PerLayer(Model(v), x => x.PrefillSeconds));
        Assert.Equal(expected, reduced.Interaction.PrefillMs, tolerance: 1e-9);
    }
}
