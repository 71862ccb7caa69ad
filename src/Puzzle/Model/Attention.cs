using TorchSharp;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace Puzzle.Model;

/// <summary>What every attention sublayer of one forward shares: RoPE tables, the additive mask, the cache.</summary>
public sealed record AttentionInputs(Tensor Cos, Tensor Sin, Tensor? Mask, KvCache? Cache, int Layer);

/// <summary>An attention sublayer variant: GQA or a linear map (no-op variants are simply not built).</summary>
public abstract class AttentionSublayer(string name) : nn.Module(name)
{
    public abstract Tensor Forward(Tensor x, AttentionInputs inputs);                 // [B, T, H] -> [B, T, H]

    /// <summary>Prepare fused weights for inference (no-op unless the sublayer has several projections).</summary>
    public virtual void Fuse() { }

    public virtual void Unfuse() { }

    protected override void Dispose(bool disposing)
    {
        if (disposing) Unfuse();
        base.Dispose(disposing);
    }
}

/// <summary>Grouped-query attention with its own KV-head count (HF names q_proj, k_proj, v_proj, o_proj).</summary>
public sealed class GqaAttention : AttentionSublayer
{
    [ComponentName(Name = "q_proj")] readonly Projection _qProj;
    [ComponentName(Name = "k_proj")] readonly Projection _kProj;
    [ComponentName(Name = "v_proj")] readonly Projection _vProj;
    [ComponentName(Name = "o_proj")] readonly Projection _oProj;
    readonly int _heads, _kvHeads, _headDim;
    readonly double _scale;
    readonly Scalar _scaleScalar;                                                        // held: see CausalLm.AdditiveMask
    Tensor? _fusedQkv;                                                                      // inference only: [q; k; v] rows

    public GqaAttention(ModelConfig config, int kvHeads, Device device, ScalarType dtype) : base(nameof(GqaAttention))
    {
        (_heads, _kvHeads, _headDim) = (config.NumAttentionHeads, kvHeads, config.HeadDim);
        _scale = 1.0 / Math.Sqrt(_headDim);
        _scaleScalar = _scale.ToScalar();
        _qProj = new Projection(config.HiddenSize, _heads * _headDim, device, dtype);
        _kProj = new Projection(config.HiddenSize, _kvHeads * _headDim, device, dtype);
        _vProj = new Projection(config.HiddenSize, _kvHeads * _headDim, device, dtype);
        _oProj = new Projection(_heads * _headDim, config.HiddenSize, device, dtype);
        RegisterComponents();
    }

    public Projection QProj => _qProj;
    public Projection KProj => _kProj;
    public Projection VProj => _vProj;
    public Projection OProj => _oProj;
    public int KeyValueHeads => _kvHeads;

    /// <summary>One QKV matmul instead of three (a copy of the weights; call again after they change).</summary>
    public override void Fuse()
    {
        Unfuse();
        using var noGrad = no_grad();
        _fusedQkv = cat([_qProj.Weight, _kProj.Weight, _vProj.Weight], 0).detach();
    }

    public override void Unfuse()
    {
        _fusedQkv?.Dispose();
        _fusedQkv = null;
    }

    public override Tensor Forward(Tensor x, AttentionInputs inputs)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        int group = _heads / _kvHeads;
        Tensor q, k, v;
        if (_fusedQkv is not null)
        {
            // One matmul, then RoPE on the query and key heads together (the same elementwise ops as below, once).
            var qkv = nn.functional.linear(x, _fusedQkv);                                    // [B, T, (nH + 2 nKV) hd]
            var qk = qkv.narrow(-1, 0, (_heads + _kvHeads) * _headDim)
                .view(b, t, _heads + _kvHeads, _headDim).transpose(1, 2);                    // [B, nH + nKV, T, hd]
            qk = RotaryEmbedding.Apply(qk, inputs.Cos, inputs.Sin);
            q = qk.narrow(1, 0, _heads);
            k = qk.narrow(1, _heads, _kvHeads);
            v = qkv.narrow(-1, (_heads + _kvHeads) * _headDim, _kvHeads * _headDim).view(b, t, _kvHeads, _headDim).transpose(1, 2);
        }
        else
        {
            q = _qProj.call(x).view(b, t, _heads, _headDim).transpose(1, 2);                // [B, nH, T, hd]
            k = _kProj.call(x).view(b, t, _kvHeads, _headDim).transpose(1, 2);              // [B, nKV, T, hd]
            v = _vProj.call(x).view(b, t, _kvHeads, _headDim).transpose(1, 2);
            q = RotaryEmbedding.Apply(q, inputs.Cos, inputs.Sin);
            k = RotaryEmbedding.Apply(k, inputs.Cos, inputs.Sin);
        }
        Tensor? tail = null;
        // A decode step without a padding mask may attend over the whole cache, the unwritten tail masked (KvCache).
        if (inputs.Cache is { } cache) (k, v, tail) = cache.Append(inputs.Layer, k, v, wholeCapacity: t == 1 && inputs.Mask is null);
        long s = k.shape[2];                                                              // [B, nKV, S, hd]
        // Query head h uses KV head h / group: fold the group into the query rows, no copy of K or V.
        var qg = q.reshape(b, _kvHeads, group * t, _headDim);                            // [B, nKV, G*T, hd]
        var scores = qg.matmul(k.transpose(-1, -2)).mul_(_scaleScalar);                   // [B, nKV, G*T, S]
        if (tail is not null) scores.add_(tail, HeldScalars.One);                         // a held alpha (HeldScalars)
        if (inputs.Mask is { } mask)
            scores = (scores.view(b, _kvHeads, group, t, s) + mask).view(b, _kvHeads, group * t, s);
        var probs = scores.dtype == ScalarType.Float32
            ? scores.softmax(-1)
            : scores.softmax(-1, ScalarType.Float32).to(scores.dtype);
        var context = probs.matmul(v)                                                     // [B, nKV, G*T, hd]
            .view(b, _heads, t, _headDim).transpose(1, 2).reshape(b, t, _heads * _headDim);
        return _oProj.call(context).MoveToOuterDisposeScope();
    }
}

/// <summary>Attention replaced by one H×H map per token (no mixing across positions; HF name linear_attn).</summary>
public sealed class LinearAttention : AttentionSublayer
{
    [ComponentName(Name = "linear_attn")] readonly Projection _linear;

    public LinearAttention(ModelConfig config, Device device, ScalarType dtype) : base(nameof(LinearAttention))
    {
        _linear = new Projection(config.HiddenSize, config.HiddenSize, device, dtype);
        RegisterComponents();
    }

    public Projection Linear => _linear;

    public override Tensor Forward(Tensor x, AttentionInputs inputs) => _linear.call(x);
}
