using Puzzle.Model;
using static TorchSharp.torch;

namespace Puzzle.Tests.Model;

public sealed class RotaryEmbeddingTests
{
    [Fact]
    public void InverseFrequencies_Llama3Scaling_MatchDirectFormula()
    {
        // Llama-3.1 settings: theta 500000, head_dim 128, factor 8, low 1, high 4, original 8192.
        var config = TestSupport.TinyParentConfig() with
        {
            HeadDim = 128, NumAttentionHeads = 1, HiddenSize = 128, RopeTheta = 500000,
            RopeScaling = new RopeScaling("llama3", 8, 1, 4, 8192),
        };
        float[] actual = RotaryEmbedding.ComputeInverseFrequencies(config);
        Assert.Equal(64, actual.Length);
        int scaled = 0, kept = 0, blended = 0;
        for (int i = 0; i < 64; i++)
        {
            double inv = 1.0 / Math.Pow(500000, 2.0 * i / 128);
            double wavelen = 2 * Math.PI / inv;
            double expected;
            if (wavelen < 8192 / 4.0) { expected = inv; kept++; }
            else if (wavelen > 8192 / 1.0) { expected = inv / 8; scaled++; }
            else
            {
                double smooth = (8192 / wavelen - 1) / (4 - 1);
                expected = (1 - smooth) * inv / 8 + smooth * inv;
                blended++;
            }
            Assert.InRange(actual[i] / expected, 1 - 1e-5, 1 + 1e-5);
        }
        Assert.True(scaled > 0 && kept > 0 && blended > 0, $"all three regimes are exercised: {scaled}/{kept}/{blended}");
    }

    [Fact]
    public void Apply_RotatesPairsByPositionTimesFrequency()
    {
        var config = TestSupport.TinyParentConfig();                                          // head_dim 16, theta 1e4
        using var rotary = new RotaryEmbedding(config, CPU);
        using var scope = NewDisposeScope();
        var x = randn(1, 1, 3, 16, generator: new Generator(11));
        var positions = tensor(new long[] { 0, 5, 17 }, [1, 3]);
        var (cos, sin) = rotary.For(positions, ScalarType.Float32);
        var y = RotaryEmbedding.Apply(x, cos, sin);
        float[] xs = x.data<float>().ToArray(), ys = y.data<float>().ToArray();
        long[] pos = [0, 5, 17];
        for (int t = 0; t < 3; t++)
            for (int i = 0; i < 8; i++)
            {
                // HF rotate-half pairs dimension i with i + 8: a complex rotation by pos * theta^(-2i/d).
                double angle = pos[t] * Math.Pow(10000, -2.0 * i / 16);
                double a = xs[t * 16 + i], b = xs[t * 16 + i + 8];
                Assert.InRange(ys[t * 16 + i] - (a * Math.Cos(angle) - b * Math.Sin(angle)), -1e-4, 1e-4);
                Assert.InRange(ys[t * 16 + i + 8] - (b * Math.Cos(angle) + a * Math.Sin(angle)), -1e-4, 1e-4);
            }
    }
}
