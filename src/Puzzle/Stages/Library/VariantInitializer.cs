using Puzzle.Domain;
using Puzzle.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Stages.Library;

/// <summary>
/// Training-free initialisation of child subblocks from the parent (design.md 5): averaged KV heads, FFN channels
/// ranked by contribution, linear maps from products of the parent's matrices. Norms are copied.
/// </summary>
public static class VariantInitializer
{
    /// <summary>
    /// A whole block: the variant's sublayer initialised from the parent, the other sublayer the parent's own.
    /// <paramref name="channelScores"/> [I] ranks FFN channels (needed for narrower FFNs).
    /// </summary>
    public static DecoderLayer BuildBlock(ModelConfig parentConfig, DecoderLayer parentLayer, SubblockVariant variant,
        Tensor? channelScores, Device device, ScalarType dtype)
    {
        var block = variant.Kind == SubblockKind.Attention
            ? parentLayer.Block with { Attention = variant.Attention! }
            : parentLayer.Block with { Ffn = variant.Ffn! };
        var layer = new DecoderLayer(parentConfig, block, device, dtype);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        if (variant.Kind == SubblockKind.Attention)
        {
            InitAttention(parentConfig, parentLayer, layer);
            CopyFfn(parentLayer, layer);
        }
        else
        {
            CopyAttention(parentLayer, layer);
            InitFfn(parentLayer, layer, channelScores);
        }
        return layer;
    }

    static void CopyAttention(DecoderLayer from, DecoderLayer to)
    {
        if (from.SelfAttn is null) return;
        to.InputLayernorm!.Weight.copy_(from.InputLayernorm!.Weight);
        foreach (var ((_, source), (_, target)) in from.SelfAttn.named_parameters().Zip(to.SelfAttn!.named_parameters())) target.copy_(source);
    }

    static void CopyFfn(DecoderLayer from, DecoderLayer to)
    {
        if (from.Mlp is null) return;
        to.PostAttentionLayernorm!.Weight.copy_(from.PostAttentionLayernorm!.Weight);
        foreach (var ((_, source), (_, target)) in from.Mlp.named_parameters().Zip(to.Mlp!.named_parameters())) target.copy_(source);
    }

    static void InitAttention(ModelConfig config, DecoderLayer parent, DecoderLayer child)
    {
        if (child.SelfAttn is null) return;                                                  // no-op: nothing to initialise
        child.InputLayernorm!.Weight.copy_(parent.InputLayernorm!.Weight);
        var p = parent.SelfAttn as GqaAttention
            ?? throw new PuzzleException("attention variants are initialised from a GQA parent layer");
        switch (child.SelfAttn)
        {
            case GqaAttention c:
                c.QProj.Weight.copy_(p.QProj.Weight);
                c.OProj.Weight.copy_(p.OProj.Weight);
                // In the child's dtype: a bf16-held parent's weights are exact in fp32, their means and products are not in bf16.
                c.KProj.Weight.copy_(MeanHeadGroups(p.KProj.Weight.to(c.KProj.Weight.dtype), p.KeyValueHeads, c.KeyValueHeads, config.HeadDim));
                c.VProj.Weight.copy_(MeanHeadGroups(p.VProj.Weight.to(c.VProj.Weight.dtype), p.KeyValueHeads, c.KeyValueHeads, config.HeadDim));
                break;
            case LinearAttention c:
                c.Linear.Weight.copy_(LinearAttentionWeight(p, config, c.Linear.Weight.dtype));
                break;
        }
    }

    /// <summary>[kv·hd, H] -> [k·hd, H]: the mean of each group of kv/k consecutive heads.</summary>
    public static Tensor MeanHeadGroups(Tensor weight, int kv, int k, int headDim)
    {
        long hidden = weight.shape[1];
        return weight.view(k, kv / k, headDim, hidden).mean([1]).reshape(k * headDim, hidden);
    }

    /// <summary>W_o · W_v with the V heads repeated per query group: attention that attends only to itself.</summary>
    public static Tensor LinearAttentionWeight(GqaAttention parent, ModelConfig config, ScalarType? dtype = null)
    {
        int group = config.NumAttentionHeads / parent.KeyValueHeads;
        var v = parent.VProj.Weight.to(dtype ?? parent.VProj.Weight.dtype).view(parent.KeyValueHeads, config.HeadDim, config.HiddenSize)
            .repeat_interleave(group, 0).reshape(config.NumAttentionHeads * config.HeadDim, config.HiddenSize);
        return parent.OProj.Weight.to(dtype ?? parent.OProj.Weight.dtype).matmul(v);         // [H, nH·hd] @ [nH·hd, H]
    }

    static void InitFfn(DecoderLayer parent, DecoderLayer child, Tensor? channelScores)
    {
        if (child.Mlp is null) return;
        child.PostAttentionLayernorm!.Weight.copy_(parent.PostAttentionLayernorm!.Weight);
        var p = parent.Mlp as SwiGluFfn ?? throw new PuzzleException("FFN variants are initialised from a SwiGLU parent layer");
        switch (child.Mlp)
        {
            case SwiGluFfn c:
                var keep = KeptChannels(channelScores, p.GateProj.Weight.shape[0], c.GateProj.Weight.shape[0]);
                c.GateProj.Weight.copy_(p.GateProj.Weight.index_select(0, keep));
                c.UpProj.Weight.copy_(p.UpProj.Weight.index_select(0, keep));
                c.DownProj.Weight.copy_(p.DownProj.Weight.index_select(1, keep));
                break;
            case LinearFfn c:
                c.Linear.Weight.copy_(p.DownProj.Weight.to(c.Linear.Weight.dtype).matmul(p.UpProj.Weight.to(c.Linear.Weight.dtype)));   // [H, I] @ [I, H]
                break;
        }
    }

    /// <summary>Indices (ascending) of the <paramref name="width"/> highest-scoring channels.</summary>
    public static Tensor KeptChannels(Tensor? scores, long parentWidth, long width)
    {
        if (width == parentWidth) return arange(parentWidth, dtype: ScalarType.Int64, device: scores?.device ?? CPU);
        if (scores is null) throw new PuzzleException("narrowing an FFN needs channel-contribution scores from calibration data");
        return scores.topk((int)width).indexes.sort().Values;
    }

    /// <summary>
    /// Channel contribution C_i = mean over tokens of |x_i| · ||W_down[:, i]||₂, where x = silu(gate(n)) * up(n) is the
    /// FFN's intermediate activation on its (normalised) inputs <paramref name="ffnInput"/> [.., H].
    /// </summary>
    public static Tensor ChannelContribution(SwiGluFfn ffn, Tensor normalisedInput)
    {
        using var scope = NewDisposeScope();
        var x = nn.functional.silu(ffn.GateProj.call(normalisedInput)) * ffn.UpProj.call(normalisedInput);
        var meanAbs = x.abs().to(ScalarType.Float32).reshape(-1, x.shape[^1]).mean([0]);      // [I], summed in fp32 (x may be bf16)
        var columnNorms = ffn.DownProj.Weight.to(ScalarType.Float32).norm(0, false, 2);       // ||W_down[:, i]||, [I]
        return (meanAbs * columnNorms).MoveToOuterDisposeScope();
    }
}
