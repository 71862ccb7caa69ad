using TorchSharp;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace Puzzle.Model;

/// <summary>
/// One decoder layer that builds or skips its sublayers from a <see cref="BlockConfig"/>. Pre-norm residual:
/// unless attention is no_op, h = h + Attn(RMSNorm_in(h)); unless the FFN is no_op, h = h + FFN(RMSNorm_post(h)).
/// A no-op sublayer has no module and no norm, hence no tensors.
/// </summary>
public sealed class DecoderLayer : nn.Module
{
    [ComponentName(Name = "input_layernorm")] readonly RmsNorm? _inputLayernorm;
    [ComponentName(Name = "self_attn")] readonly AttentionSublayer? _selfAttn;
    [ComponentName(Name = "post_attention_layernorm")] readonly RmsNorm? _postAttentionLayernorm;
    [ComponentName(Name = "mlp")] readonly nn.Module<Tensor, Tensor>? _mlp;

    public BlockConfig Block { get; }

    public DecoderLayer(ModelConfig config, BlockConfig block, Device device, ScalarType dtype) : base(nameof(DecoderLayer))
    {
        Block = block;
        int hidden = config.HiddenSize;
        if (!block.Attention.NoOp)
        {
            _inputLayernorm = new RmsNorm(hidden, config.RmsNormEps, device, dtype);
            _selfAttn = block.Attention.ReplaceWithLinear
                ? new LinearAttention(config, device, dtype)
                : new GqaAttention(config, block.Attention.NumKeyValueHeads!.Value, device, dtype);
        }
        if (!block.Ffn.NoOp)
        {
            _postAttentionLayernorm = new RmsNorm(hidden, config.RmsNormEps, device, dtype);
            _mlp = block.Ffn.ReplaceWithLinear
                ? new LinearFfn(hidden, device, dtype)
                : new SwiGluFfn(hidden, block.Ffn.IntermediateSize!.Value, device, dtype);
        }
        RegisterComponents();
    }

    public RmsNorm? InputLayernorm => _inputLayernorm;
    public AttentionSublayer? SelfAttn => _selfAttn;
    public RmsNorm? PostAttentionLayernorm => _postAttentionLayernorm;
    public nn.Module<Tensor, Tensor>? Mlp => _mlp;

    public Tensor Forward(Tensor h, AttentionInputs inputs)                               // [B, T, H] -> [B, T, H]
    {
        using var scope = NewDisposeScope();
        return ForwardFfn(ForwardAttention(h, inputs)).MoveToOuterDisposeScope();
    }

    /// <summary>The attention half alone: h + Attn(RMSNorm_in(h)); a copy of h for no-op.</summary>
    public Tensor ForwardAttention(Tensor h, AttentionInputs inputs)
    {
        if (_selfAttn is null) return h.alias();
        using var scope = NewDisposeScope();
        return h.add(_selfAttn.Forward(_inputLayernorm!.call(h), inputs), One).MoveToOuterDisposeScope();
    }

    /// <summary>The FFN half alone: h + FFN(RMSNorm_post(h)); a copy of h for no-op.</summary>
    public Tensor ForwardFfn(Tensor h)
    {
        if (_mlp is null) return h.alias();
        using var scope = NewDisposeScope();
        return h.add(_mlp.call(_postAttentionLayernorm!.call(h)), One).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The residual adds' alpha, held for the process: `a + b` makes an implicit Scalar that nothing references once its
    /// handle is read, and a GC finalizing it during the native add failed a test in Scalar::toFloat (BaselinesTests on
    /// 3 Dec, as LongContextTests' masked_fill did before; commit 04208ae).
    /// </summary>
    static readonly Scalar One = 1.ToScalar();
}
