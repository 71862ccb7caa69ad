using Puzzle.Model;
using Puzzle.Runtime;
using static TorchSharp.torch;

namespace Puzzle.Tests.Model;

public sealed class ModelTests
{
    [Fact]
    public void IncrementalDecoding_HeterogeneousModel_EqualsFullForward()
    {
        using var model = TestSupport.Build(TestSupport.TinyChildConfig());
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = TestSupport.RandomIds(2, 12, 96, seed: 1);
        var full = model.Forward(ids);                                                      // [2, 12, V]
        using var cache = model.NewCache(2, 12);
        var pieces = new List<Tensor> { model.Forward(ids.narrow(1, 0, 5), cache) };        // prefill 5
        for (int t = 5; t < 12; t++) pieces.Add(model.Forward(ids.narrow(1, t, 1), cache));  // decode one at a time
        var incremental = cat(pieces, 1);
        Assert.Equal(12, cache.Length);
        Assert.True(TestSupport.MaxAbsDiff(full, incremental) < 1e-4, $"max diff {TestSupport.MaxAbsDiff(full, incremental)}");
    }

    [Theory]
    [InlineData(ScalarType.Float32, 1e-6)]
    [InlineData(ScalarType.BFloat16, 0.0)]
    public void FusedInference_PrefillAndDecode_EqualUnfused(ScalarType dtype, double tolerance)
    {
        // The generation engine's path (one QKV and one gate+up matmul, RoPE on query and key heads at once) against the
        // training path, through a prefill and decode steps over the cache. bf16: the same roundings, bit for bit.
        using var model = TestSupport.Build(TestSupport.TinyChildConfig(), dtype: dtype);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = TestSupport.RandomIds(2, 9, 96, seed: 3);
        Tensor Run()
        {
            using var cache = model.NewCache(2, 9);
            var pieces = new List<Tensor> { model.Forward(ids.narrow(1, 0, 6), cache) };
            for (int t = 6; t < 9; t++) pieces.Add(model.Forward(ids.narrow(1, t, 1), cache));
            return cat(pieces, 1).to(ScalarType.Float32);
        }
        var unfused = Run();
        model.Fuse();
        var fused = Run();
        model.Unfuse();
        var again = Run();
        Assert.True(TestSupport.MaxAbsDiff(unfused, fused) <= tolerance, $"{dtype}: fused vs unfused max diff {TestSupport.MaxAbsDiff(unfused, fused)}");
        Assert.Equal(0, TestSupport.MaxAbsDiff(unfused, again));
    }

    [Fact]
    public void Decode_OverTheWholeCacheWithItsTailMasked_EqualsOverTheWrittenPositions()
    {
        // A decode step attends over the whole cache once half of it is written (the unwritten tail masked, KvCache):
        // a cache just big enough does so from the first step; one four times bigger reads views of the written
        // positions. Same logits; the masked tail holds stale keys and values from an earlier, longer use.
        using var model = TestSupport.Build(TestSupport.TinyChildConfig());
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = TestSupport.RandomIds(2, 12, 96, seed: 7);
        Tensor Decode(int capacity, bool stale)
        {
            using var cache = model.NewCache(2, capacity);
            if (stale) { model.Forward(TestSupport.RandomIds(2, capacity, 96, seed: 8), cache); cache.Length = 0; }
            var pieces = new List<Tensor> { model.Forward(ids.narrow(1, 0, 8), cache, lastOnly: true) };
            for (int t = 8; t < 12; t++) pieces.Add(model.Forward(ids.narrow(1, t, 1), cache, lastOnly: true));
            return cat(pieces, 1);
        }
        var views = Decode(48, stale: false);
        var whole = Decode(12, stale: true);
        Assert.True(TestSupport.MaxAbsDiff(views, whole) < 1e-6, $"max diff {TestSupport.MaxAbsDiff(views, whole)}");
        Assert.True(TestSupport.MaxAbsDiff(views, Decode(12, stale: false)) < 1e-6);
    }

    [Fact]
    public void LeftPaddedBatch_RaggedPrompts_MatchEachPromptAlone()
    {
        using var model = TestSupport.Build(TestSupport.TinyChildConfig());
        int[] shortPrompt = [1, 5, 9];
        int[] longPrompt = [1, 7, 3, 22, 40, 8];
        var options = new GenerationOptions { MaxNewTokens = 6, StopAtEos = false };
        var batched = TextGenerator.Generate(model, [shortPrompt, longPrompt], options, []);
        var aloneShort = TextGenerator.Generate(model, [shortPrompt], options, []);
        var aloneLong = TextGenerator.Generate(model, [longPrompt], options, []);
        Assert.Equal(aloneShort.NewTokens[0], batched.NewTokens[0]);
        Assert.Equal(aloneLong.NewTokens[0], batched.NewTokens[1]);
    }

    [Fact]
    public void DecoderLayer_ForwardEqualsPreNormResidualComposition()
    {
        var config = TestSupport.TinyChildConfig();
        using var model = TestSupport.Build(config);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var h = randn(2, 5, 64, generator: new Generator(3));
        var (positions, mask) = model.PositionsAndMask(2, 5, 0, null);
        var rotary = new RotaryEmbedding(config, CPU);
        var (cos, sin) = rotary.For(positions, ScalarType.Float32);
        for (int i = 0; i < config.NumLayers; i++)
        {
            var layer = model.Layer(i);
            var inputs = new AttentionInputs(cos, sin, mask, null, i);
            var expected = h;
            if (layer.SelfAttn is not null) expected = expected + layer.SelfAttn.Forward(layer.InputLayernorm!.call(expected), inputs);
            if (layer.Mlp is not null) expected = expected + layer.Mlp.call(layer.PostAttentionLayernorm!.call(expected));
            Assert.True(TestSupport.MaxAbsDiff(expected, layer.Forward(h, inputs)) < 1e-6, $"layer {i}");
        }
        // A block with both sublayers no-op is the identity and has no parameters.
        var identity = model.Layer(5);
        Assert.Empty(identity.parameters());
        Assert.Equal(0, TestSupport.MaxAbsDiff(h, identity.Forward(h, new AttentionInputs(cos, sin, mask, null, 5))));
        rotary.Dispose();
    }

    [Fact]
    public void LinearAttention_MixesNoPositions()
    {
        using var model = TestSupport.Build(TestSupport.TinyChildConfig());
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var layer = model.Layer(2);                                                           // linear attention + linear FFN
        var x = randn(1, 4, 64, generator: new Generator(5));
        var (positions, mask) = model.PositionsAndMask(1, 4, 0, null);
        var dummy = zeros(1, 1, 4, 16);
        var all = layer.Forward(x, new AttentionInputs(dummy, dummy, mask, null, 2));
        var last = layer.Forward(x.narrow(1, 3, 1), new AttentionInputs(dummy.narrow(2, 3, 1), dummy.narrow(2, 3, 1), null, null, 2));
        Assert.True(TestSupport.MaxAbsDiff(all.narrow(1, 3, 1), last) < 1e-6);
    }

    [Fact]
    public void ParameterCounts_Analytic_EqualBuiltModules()
    {
        foreach (var config in new[] { TestSupport.TinyParentConfig(), TestSupport.TinyParentConfig(tied: true), TestSupport.TinyChildConfig() })
        {
            using var model = new CausalLm(config, META, ScalarType.Float32);
            long built = model.parameters().Sum(p => p.NumberOfElements);
            Assert.Equal(config.TotalParameters, built);
            for (int i = 0; i < config.NumLayers; i++)
                Assert.Equal(config.BlockParameters(i), model.Layer(i).parameters().Sum(p => p.NumberOfElements));
        }
    }

    [Fact]
    public void KvCache_SizedPerLayerByOwnKvHeads()
    {
        var config = TestSupport.TinyChildConfig();
        using var cache = new KvCache(config, batchSize: 3, capacity: 10, CPU, ScalarType.Float32);
        // layers: kv2, kv1, linear, no-op, kv4, no-op -> (2 + 1 + 4) heads * 16 dims * K,V * 4 bytes per token
        Assert.Equal(2L * (2 + 1 + 4) * 16 * 4, config.KvBytesPerToken(4));
        Assert.Equal(config.KvBytesPerToken(4) * 3 * 10, cache.Bytes);
        Assert.False(cache.HasLayer(2));
        Assert.False(cache.HasLayer(3));
        Assert.True(cache.HasLayer(4));
    }

    [Fact]
    public void Validate_BadConfigs_NameFieldAndNumbers()
    {
        var bad = TestSupport.TinyParentConfig() with { Blocks = [BlockConfig.Llama(3, 160)] };
        var e = Assert.Throws<PuzzleException>(() => bad.Validate("x/config.json"));
        Assert.Contains("num_key_value_heads (3) must divide num_attention_heads (4)", e.Message);
        Assert.Contains("x/config.json", e.Message);
        var badEos = TestSupport.TinyParentConfig() with { EosTokenIds = [500] };
        Assert.Contains("eos_token_id (500)", Assert.Throws<PuzzleException>(() => badEos.Validate("c")).Message);
    }

    [Fact]
    public void Bf16Model_CloseToFloat32()
    {
        var config = TestSupport.TinyChildConfig();
        using var f32 = TestSupport.Build(config);
        using var bf16 = new CausalLm(config, CPU, ScalarType.BFloat16);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var ((_, source), (_, target)) in f32.named_parameters().Zip(bf16.named_parameters())) target.copy_(source);
        var ids = TestSupport.RandomIds(1, 8, 96, 2);
        var a = f32.Forward(ids);
        var b = bf16.Forward(ids);
        Assert.Equal(ScalarType.BFloat16, b.dtype);
        Assert.True(TestSupport.MaxAbsDiff(a, b) < 0.05, $"bf16 vs f32 max diff {TestSupport.MaxAbsDiff(a, b)}");
    }
}
