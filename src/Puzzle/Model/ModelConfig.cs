namespace Puzzle.Model;

/// <summary>RoPE frequency scaling as in HF (<c>rope_scaling</c>); only "llama3" changes the frequencies here.</summary>
public sealed record RopeScaling(string Type, double Factor, double LowFreqFactor, double HighFreqFactor,
    int OriginalMaxPositionEmbeddings);

/// <summary>
/// The architecture of a (possibly heterogeneous) Llama-family decoder: global dimensions plus one
/// <see cref="BlockConfig"/> per layer. A plain Llama is the special case where every block is the same.
/// </summary>
public sealed record ModelConfig
{
    public required int VocabSize { get; init; }
    public required int HiddenSize { get; init; }
    public required int NumAttentionHeads { get; init; }
    public required int HeadDim { get; init; }
    public required IReadOnlyList<BlockConfig> Blocks { get; init; }
    public double RmsNormEps { get; init; } = 1e-5;
    public double RopeTheta { get; init; } = 10000.0;
    public RopeScaling? RopeScaling { get; init; }
    public int MaxPositionEmbeddings { get; init; } = 2048;
    public bool TieWordEmbeddings { get; init; }
    public int? BosTokenId { get; init; }
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    public int? PadTokenId { get; init; }
    /// <summary>dtype named in config.json (<c>torch_dtype</c>), e.g. "float32" or "bfloat16".</summary>
    public string TorchDtype { get; init; } = "float32";

    public int NumLayers => Blocks.Count;

    /// <summary>A sanity bound on the depth, so a corrupt config fails at once instead of building for minutes.</summary>
    public const int MaxLayers = 1024;

    /// <summary>True when every layer is full GQA + SwiGLU with the same sizes, i.e. the model is a plain Llama.</summary>
    public bool IsHomogeneousLlama =>
        Blocks.All(b => b.Attention.IsGqa && b.Ffn.IsSwiGlu) && Blocks.Distinct().Count() == 1;

    /// <summary>Throws a <see cref="PuzzleException"/> naming the offending field and numbers.</summary>
    public void Validate(string source)
    {
        void Positive(string name, long value)
        {
            if (value <= 0) throw new PuzzleException($"{source}: {name} must be positive, got {value}");
        }
        Positive("vocab_size", VocabSize);
        Positive("hidden_size", HiddenSize);
        Positive("num_attention_heads", NumAttentionHeads);
        Positive("head_dim", HeadDim);
        Positive("num_hidden_layers", NumLayers);
        Positive("max_position_embeddings", MaxPositionEmbeddings);
        if (NumLayers > MaxLayers)
            throw new PuzzleException($"{source}: num_hidden_layers ({NumLayers}) is more than the {MaxLayers} supported (the largest Llama-family models have a few hundred)");
        if (!double.IsFinite(RmsNormEps) || !double.IsFinite(RopeTheta))
            throw new PuzzleException($"{source}: rms_norm_eps ({RmsNormEps}) and rope_theta ({RopeTheta}) must be finite");
        if (RmsNormEps <= 0) throw new PuzzleException($"{source}: rms_norm_eps must be positive, got {RmsNormEps}");
        if (RopeTheta <= 0) throw new PuzzleException($"{source}: rope_theta must be positive, got {RopeTheta}");
        for (int i = 0; i < Blocks.Count; i++)
        {
            var (attention, ffn) = (Blocks[i].Attention, Blocks[i].Ffn);
            if (attention.NoOp && attention.ReplaceWithLinear)
                throw new PuzzleException($"{source}: layer {i} attention is both no_op and replace_with_linear");
            if (ffn.NoOp && ffn.ReplaceWithLinear)
                throw new PuzzleException($"{source}: layer {i} ffn is both no_op and replace_with_linear");
            if (attention.IsGqa)
            {
                int kv = attention.NumKeyValueHeads
                    ?? throw new PuzzleException($"{source}: layer {i} attention has no num_key_value_heads");
                if (kv <= 0 || NumAttentionHeads % kv != 0)
                    throw new PuzzleException(
                        $"{source}: layer {i}: num_key_value_heads ({kv}) must divide num_attention_heads ({NumAttentionHeads})");
            }
            if (ffn.IsSwiGlu && (ffn.IntermediateSize ?? 0) <= 0)
                throw new PuzzleException($"{source}: layer {i} ffn intermediate_size must be positive, got {ffn.IntermediateSize}");
            if (attention.ReplaceWithLinear && NumAttentionHeads * HeadDim != HiddenSize)
                throw new PuzzleException(
                    $"{source}: layer {i}: linear attention needs num_attention_heads * head_dim ({NumAttentionHeads} * {HeadDim}) == hidden_size ({HiddenSize})");
        }
        if (BosTokenId is { } bos && (bos < 0 || bos >= VocabSize))
            throw new PuzzleException($"{source}: bos_token_id ({bos}) is outside the vocabulary (vocab_size {VocabSize})");
        foreach (int eos in EosTokenIds)
            if (eos < 0 || eos >= VocabSize)
                throw new PuzzleException($"{source}: eos_token_id ({eos}) is outside the vocabulary (vocab_size {VocabSize})");
        if (RopeScaling is { } s)
        {
            if (s.Type == "llama3" && (s.Factor <= 0 || s.HighFreqFactor <= s.LowFreqFactor || s.OriginalMaxPositionEmbeddings <= 0))
                throw new PuzzleException(
                    $"{source}: rope_scaling llama3 needs factor > 0 and high_freq_factor ({s.HighFreqFactor}) > low_freq_factor ({s.LowFreqFactor}), original_max_position_embeddings > 0");
        }
    }

    // ---- Sizes (analytic; tests compare them with the built modules) ----

    public long AttentionParameters(AttentionConfig a) => a switch
    {
        { NoOp: true } => 0,
        { ReplaceWithLinear: true } => (long)HiddenSize * HiddenSize + HiddenSize,
        _ => 2L * HiddenSize * NumAttentionHeads * HeadDim + 2L * HiddenSize * a.NumKeyValueHeads!.Value * HeadDim + HiddenSize,
    };

    public long FfnParameters(FfnConfig f) => f switch
    {
        { NoOp: true } => 0,
        { ReplaceWithLinear: true } => (long)HiddenSize * HiddenSize + HiddenSize,
        _ => 3L * HiddenSize * f.IntermediateSize!.Value + HiddenSize,
    };

    /// <summary>Parameters outside the blocks: embeddings, final norm, untied LM head.</summary>
    public long NonBlockParameters =>
        (long)VocabSize * HiddenSize * (TieWordEmbeddings ? 1 : 2) + HiddenSize;

    public long BlockParameters(int layer) => AttentionParameters(Blocks[layer].Attention) + FfnParameters(Blocks[layer].Ffn);

    public long TotalParameters => NonBlockParameters + Enumerable.Range(0, NumLayers).Sum(BlockParameters);

    /// <summary>KV-cache bytes per token of one sequence for one layer (K and V), at the given element size.</summary>
    public long KvBytesPerToken(AttentionConfig a, int bytesPerElement) =>
        a.IsGqa ? 2L * a.NumKeyValueHeads!.Value * HeadDim * bytesPerElement : 0;

    public long KvBytesPerToken(int bytesPerElement) =>
        Blocks.Sum(b => KvBytesPerToken(b.Attention, bytesPerElement));

    /// <summary>A Llama with the same global dimensions and the given blocks.</summary>
    public ModelConfig WithBlocks(IEnumerable<BlockConfig> blocks) => this with { Blocks = blocks.ToArray() };
}
