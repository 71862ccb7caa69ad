using Puzzle.Config;
using Puzzle.Domain;
using Puzzle.Model;
using Puzzle.Stages.Library;
using static TorchSharp.torch;

namespace Puzzle.Tests.Stages;

public sealed class VariantInitializerTests
{
    static readonly ModelConfig Config = TestSupport.TinyParentConfig();                     // 4 heads × 16, 2 KV heads, FFN 160

    static SubblockVariant Variant(string id) => SearchSpace.Expand(Config, new SearchSpaceSection()).Single(v => v.Id == id);

    [Fact]
    public void FullWidthAndAllKvHeads_ReproduceTheParentBlockExactly()
    {
        using var parent = TestSupport.Build(Config);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var h = randn(2, 6, 64, generator: new Generator(1));
        var inputs = parent.PrefillInputs(6, 0, ScalarType.Float32);
        var expected = parent.Layer(0).Forward(h, inputs);
        var scores = rand(160, generator: new Generator(2));
        foreach (string id in new[] { "L0.attn.kv2", "L0.ffn.w1" })
        {
            using var block = VariantInitializer.BuildBlock(Config, parent.Layer(0), Variant(id), scores, CPU, ScalarType.Float32);
            Assert.True(Variant(id).IsParent);
            Assert.Equal(0, TestSupport.MaxAbsDiff(expected, block.Forward(h, inputs)));
        }
    }

    [Fact]
    public void FewerKvHeads_AreTheMeanOfConsecutiveHeads_QAndOUnchanged()
    {
        using var parent = TestSupport.Build(Config);
        using var block = VariantInitializer.BuildBlock(Config, parent.Layer(0), Variant("L0.attn.kv1"), null, CPU, ScalarType.Float32);
        var p = (GqaAttention)parent.Layer(0).SelfAttn!;
        var c = (GqaAttention)block.SelfAttn!;
        float[] pk = p.KProj.Weight.data<float>().ToArray(), ck = c.KProj.Weight.data<float>().ToArray();
        float[] pv = p.VProj.Weight.data<float>().ToArray(), cv = c.VProj.Weight.data<float>().ToArray();
        Assert.Equal(16 * 64, ck.Length);
        for (int d = 0; d < 16; d++)
            for (int j = 0; j < 64; j++)
            {
                // one new head = mean of parent heads 0 and 1 (rows d and 16 + d)
                Assert.Equal((pk[d * 64 + j] + pk[(16 + d) * 64 + j]) / 2, ck[d * 64 + j], 6);
                Assert.Equal((pv[d * 64 + j] + pv[(16 + d) * 64 + j]) / 2, cv[d * 64 + j], 6);
            }
        Assert.Equal(0, TestSupport.MaxAbsDiff(p.QProj.Weight, c.QProj.Weight));
        Assert.Equal(0, TestSupport.MaxAbsDiff(p.OProj.Weight, c.OProj.Weight));
        Assert.Equal(0, TestSupport.MaxAbsDiff(parent.Layer(0).InputLayernorm!.Weight, block.InputLayernorm!.Weight));
    }

    [Fact]
    public void LinearAttention_EqualsParentAttentionOnASingleToken()
    {
        // With one position, softmax is 1: attention = W_o · repeat(W_v x), which is what W_o · W_v computes.
        using var parent = TestSupport.Build(Config);
        using var block = VariantInitializer.BuildBlock(Config, parent.Layer(0), Variant("L0.attn.linear"), null, CPU, ScalarType.Float32);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var x = randn(3, 1, 64, generator: new Generator(4));
        var inputs = parent.PrefillInputs(1, 0, ScalarType.Float32);
        var expected = parent.Layer(0).SelfAttn!.Forward(x, inputs);
        Assert.True(TestSupport.MaxAbsDiff(expected, block.SelfAttn!.Forward(x, inputs)) < 1e-6);
    }

    [Fact]
    public void LinearFfn_IsDownTimesUp_GateIgnored()
    {
        using var parent = TestSupport.Build(Config);
        using var block = VariantInitializer.BuildBlock(Config, parent.Layer(0), Variant("L0.ffn.linear"), null, CPU, ScalarType.Float32);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var p = (SwiGluFfn)parent.Layer(0).Mlp!;
        var x = randn(5, 64, generator: new Generator(6));
        var expected = p.DownProj.call(p.UpProj.call(x));
        Assert.True(TestSupport.MaxAbsDiff(expected, block.Mlp!.call(x)) < 1e-6);
        Assert.Equal(0, TestSupport.MaxAbsDiff(parent.Layer(0).PostAttentionLayernorm!.Weight, block.PostAttentionLayernorm!.Weight));
    }

    [Fact]
    public void ChannelContribution_MatchesDirectComputation_AndNarrowKeepsTheTopChannels()
    {
        using var parent = TestSupport.Build(Config);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ffn = (SwiGluFfn)parent.Layer(0).Mlp!;
        var n = randn(2, 7, 64, generator: new Generator(8));
        var scores = VariantInitializer.ChannelContribution(ffn, n);

        // Direct: for each token and channel, x_i = silu(g_i·n) * (u_i·n); C_i = mean |x_i| * sqrt(sum_r W_down[r, i]^2).
        float[] g = ffn.GateProj.Weight.data<float>().ToArray(), u = ffn.UpProj.Weight.data<float>().ToArray();
        float[] d = ffn.DownProj.Weight.data<float>().ToArray(), inputs = n.data<float>().ToArray();
        var expected = new double[160];
        for (int i = 0; i < 160; i++)
        {
            double sumAbs = 0;
            for (int t = 0; t < 14; t++)
            {
                double gi = 0, ui = 0;
                for (int k = 0; k < 64; k++) { gi += g[i * 64 + k] * inputs[t * 64 + k]; ui += u[i * 64 + k] * inputs[t * 64 + k]; }
                sumAbs += Math.Abs(gi / (1 + Math.Exp(-gi)) * ui);
            }
            double norm = Math.Sqrt(Enumerable.Range(0, 64).Sum(r => (double)d[r * 160 + i] * d[r * 160 + i]));
            expected[i] = sumAbs / 14 * norm;
        }
        float[] actual = scores.data<float>().ToArray();
        for (int i = 0; i < 160; i++) Assert.Equal(expected[i], actual[i], 1e-5 + 1e-4 * expected[i]);

        // w0.5 -> 80 channels: exactly the 80 best, in their original order, in gate/up rows and down columns.
        using var block = VariantInitializer.BuildBlock(Config, parent.Layer(0), Variant("L0.ffn.w0.5"), scores, CPU, ScalarType.Float32);
        var child = (SwiGluFfn)block.Mlp!;
        var best = Enumerable.Range(0, 160).OrderByDescending(i => actual[i]).Take(80).Order().ToArray();
        float[] cg = child.GateProj.Weight.data<float>().ToArray(), cd = child.DownProj.Weight.data<float>().ToArray();
        for (int j = 0; j < 80; j++)
        {
            Assert.Equal(g[best[j] * 64 + 5], cg[j * 64 + 5]);
            Assert.Equal(d[3 * 160 + best[j]], cd[3 * 80 + j]);
        }
    }
}
