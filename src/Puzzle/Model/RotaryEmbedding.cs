using static TorchSharp.torch;

namespace Puzzle.Model;

/// <summary>
/// Rotary position embedding as HF Llama (rotate-half convention), with <c>rope_scaling</c> "llama3" and "linear".
/// cos/sin tables are computed in float32 once and grown on demand up to <c>max_position_embeddings</c>; a position
/// past it is an error (the model was not trained there), never a silent extrapolation.
/// </summary>
public sealed class RotaryEmbedding : IDisposable
{
    readonly Device _device;
    readonly int _headDim;
    readonly int _maxPositions;
    public float[] InverseFrequencies { get; }
    Tensor _cos, _sin;                                                                   // [positions, headDim] float32

    public RotaryEmbedding(ModelConfig config, Device device)
    {
        _device = device;
        _headDim = config.HeadDim;
        _maxPositions = config.MaxPositionEmbeddings;
        InverseFrequencies = ComputeInverseFrequencies(config);
        (_cos, _sin) = Tables(Math.Min(config.MaxPositionEmbeddings, 4096));
    }

    public static float[] ComputeInverseFrequencies(ModelConfig config)
    {
        int dim = config.HeadDim;
        var inv = new float[dim / 2];
        for (int i = 0; i < inv.Length; i++)
            inv[i] = 1.0f / MathF.Pow((float)config.RopeTheta, (2 * i) / (float)dim);
        switch (config.RopeScaling)
        {
            case { Type: "linear" } s:
                for (int i = 0; i < inv.Length; i++) inv[i] /= (float)s.Factor;
                break;
            case { Type: "llama3" } s:
                double lowWavelen = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
                double highWavelen = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
                for (int i = 0; i < inv.Length; i++)
                {
                    double wavelen = 2 * Math.PI / inv[i];
                    if (wavelen > lowWavelen) inv[i] = (float)(inv[i] / s.Factor);          // low frequency: scaled
                    else if (wavelen >= highWavelen)                                           // medium: smooth blend
                    {
                        double smooth = (s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                        inv[i] = (float)((1 - smooth) * inv[i] / s.Factor + smooth * inv[i]);
                    }                                                                          // high frequency: unchanged
                }
                break;
        }
        return inv;
    }

    (Tensor Cos, Tensor Sin) Tables(long length)
    {
        using var scope = NewDisposeScope();
        var positions = arange(length, dtype: ScalarType.Float32, device: _device);
        var inv = tensor(InverseFrequencies, device: _device);
        var freqs = outer(positions, inv);                                                // [L, hd/2]
        var emb = cat([freqs, freqs], -1);                                                 // [L, hd]
        // The tables outlive whatever dispose scope the caller (a forward pass) has open: detach them from all scopes.
        return (emb.cos().DetachFromDisposeScope(), emb.sin().DetachFromDisposeScope());
    }

    /// <summary>cos and sin for the given positions [B, T] (or [1, T]), as [B, 1, T, headDim] in <paramref name="dtype"/>.</summary>
    public (Tensor Cos, Tensor Sin) For(Tensor positions, ScalarType dtype)
    {
        long needed;
        using (var max = positions.max()) needed = max.item<long>() + 1;
        if (needed > _maxPositions)
            throw new PuzzleException(
                $"position {needed - 1} is past the model's context: config max_position_embeddings is {_maxPositions} (positions 0..{_maxPositions - 1})");
        long length = _cos.shape[0];
        if (needed > length)
        {
            var (grownCos, grownSin) = Tables(Math.Min(Math.Max(needed, 2 * length), _maxPositions));
            _cos.Dispose();
            _sin.Dispose();
            (_cos, _sin) = (grownCos, grownSin);
        }
        using var flat = positions.reshape(-1);
        long b = positions.shape[0], t = positions.shape[1];
        using var cos = _cos.index_select(0, flat);
        using var sin = _sin.index_select(0, flat);
        return (cos.view(b, 1, t, _headDim).to(dtype), sin.view(b, 1, t, _headDim).to(dtype));
    }

    /// <summary>x * cos + rotate_half(x) * sin, x: [B, heads, T, hd].</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long half = x.shape[^1] / 2;
        var rotated = cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1);
        return (x * cos + rotated * sin).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        _cos.Dispose();
        _sin.Dispose();
    }
}
