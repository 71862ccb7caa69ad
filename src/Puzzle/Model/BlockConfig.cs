namespace Puzzle.Model;

/// <summary>Attention sublayer variant: grouped-query attention with its own KV-head count, a linear map, or nothing.</summary>
public sealed record AttentionConfig(bool NoOp, bool ReplaceWithLinear, int? NumKeyValueHeads)
{
    public static AttentionConfig Gqa(int numKeyValueHeads) => new(false, false, numKeyValueHeads);
    public static readonly AttentionConfig Linear = new(false, true, null);
    public static readonly AttentionConfig NoOperation = new(true, false, null);

    public bool IsGqa => !NoOp && !ReplaceWithLinear;

    public override string ToString() =>
        NoOp ? "no_op" : ReplaceWithLinear ? "linear" : $"gqa(kv={NumKeyValueHeads})";
}

/// <summary>FFN sublayer variant: SwiGLU of a given width, a linear map, or nothing.</summary>
public sealed record FfnConfig(bool NoOp, bool ReplaceWithLinear, int? IntermediateSize)
{
    public static FfnConfig SwiGlu(int intermediateSize) => new(false, false, intermediateSize);
    public static readonly FfnConfig Linear = new(false, true, null);
    public static readonly FfnConfig NoOperation = new(true, false, null);

    public bool IsSwiGlu => !NoOp && !ReplaceWithLinear;

    public override string ToString() =>
        NoOp ? "no_op" : ReplaceWithLinear ? "linear" : $"swiglu({IntermediateSize})";
}

/// <summary>One decoder layer's architecture: an attention variant and an FFN variant (design.md 3).</summary>
public sealed record BlockConfig(AttentionConfig Attention, FfnConfig Ffn)
{
    public static BlockConfig Llama(int numKeyValueHeads, int intermediateSize) =>
        new(AttentionConfig.Gqa(numKeyValueHeads), FfnConfig.SwiGlu(intermediateSize));

    /// <summary>Neither sublayer is a no-op: the layer carries the cost model's interaction (<c>CostsFile.PairTimeMs</c>).</summary>
    public bool KeepsBoth => !Attention.NoOp && !Ffn.NoOp;

    public override string ToString() => $"{Attention} + {Ffn}";
}
