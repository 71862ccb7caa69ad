using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace Puzzle.Model;

/// <summary>The decoder trunk (HF prefix <c>model.</c>): embeddings, heterogeneous layers, final norm.</summary>
public sealed class DecoderStack : nn.Module
{
    [ComponentName(Name = "embed_tokens")] readonly Embedding _embedTokens;
    [ComponentName(Name = "layers")] readonly ModuleList<DecoderLayer> _layers;
    [ComponentName(Name = "norm")] readonly RmsNorm _norm;

    public DecoderStack(ModelConfig config, Device device, ScalarType dtype) : base(nameof(DecoderStack))
    {
        _embedTokens = new Embedding(config.VocabSize, config.HiddenSize, device, dtype);
        _layers = new ModuleList<DecoderLayer>(config.Blocks.Select(b => new DecoderLayer(config, b, device, dtype)).ToArray());
        _norm = new RmsNorm(config.HiddenSize, config.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    public Embedding EmbedTokens => _embedTokens;
    public ModuleList<DecoderLayer> Layers => _layers;
    public RmsNorm Norm => _norm;
}

/// <summary>
/// A heterogeneous Llama-family causal LM (HF LlamaForCausalLM / DeciLMForCausalLM layout): field names are the
/// state-dict keys. Parameters are created uninitialised; load a checkpoint or call <see cref="InitializeRandom"/>.
/// </summary>
public sealed class CausalLm : nn.Module
{
    [ComponentName(Name = "model")] readonly DecoderStack _model;
    [ComponentName(Name = "lm_head")] readonly Projection? _lmHead;
    readonly RotaryEmbedding _rotary;

    public ModelConfig Config { get; }
    public Device Device { get; }
    public ScalarType DType { get; }

    public CausalLm(ModelConfig config, Device device, ScalarType dtype) : base(nameof(CausalLm))
    {
        config.Validate("model config");
        if (device.type == DeviceType.CPU) MemoryBudget.Require(config.TotalParameters * ElementBytes(dtype),
                $"model config (vocab_size {config.VocabSize}, hidden_size {config.HiddenSize}, {config.NumLayers} layers): {config.TotalParameters:N0} parameters in {dtype}");
        Config = config;
        Device = device;
        DType = dtype;
        _model = new DecoderStack(config, device, dtype);
        if (!config.TieWordEmbeddings) _lmHead = new Projection(config.HiddenSize, config.VocabSize, device, dtype);
        _rotary = new RotaryEmbedding(config, device.type == DeviceType.META ? CPU : device);
        RegisterComponents();
    }

    public DecoderStack Model => _model;
    public RotaryEmbedding Rotary => _rotary;
    public DecoderLayer Layer(int i) => _model.Layers[i];
    public Tensor LmHeadWeight => _lmHead?.Weight ?? _model.EmbedTokens.Weight;

    /// <summary>HF-style init: normal(0, 0.02) for matrices, ones for norms; deterministic for a seed.</summary>
    public CausalLm InitializeRandom(long seed, double std = 0.02)
    {
        using var noGrad = no_grad();
        var generator = new Generator((ulong)seed, Device.type == DeviceType.META ? CPU : Device);
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith("norm.weight", StringComparison.Ordinal)) p.fill_(1.0);
            else p.normal_(0, std, generator);
        }
        return this;
    }

    /// <summary>
    /// Logits [B, T, V] (or [B, 1, V] with <paramref name="lastOnly"/>) for input ids [B, T].
    /// With a cache, the T new positions follow the cached ones and are appended to it.
    /// <paramref name="attentionMask"/> [B, S] (1 = real token, 0 = left padding) covers cached + new positions.
    /// <paramref name="hiddenStates"/>, when given, receives each layer's output [B, T, H] (owned by the caller).
    /// </summary>
    public Tensor Forward(Tensor inputIds, KvCache? cache = null, Tensor? attentionMask = null,
        bool lastOnly = false, List<Tensor>? hiddenStates = null)
    {
        using var scope = NewDisposeScope();
        var h = ForwardTrunk(inputIds, cache, attentionMask, hiddenStates);
        if (lastOnly) h = h.narrow(1, h.shape[1] - 1, 1);
        var logits = nn.functional.linear(_model.Norm.call(h), LmHeadWeight);
        if (hiddenStates is not null) foreach (var state in hiddenStates) state.MoveToOuterDisposeScope();
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>The last layer's output before the final norm, [B, T, H].</summary>
    public Tensor ForwardTrunk(Tensor inputIds, KvCache? cache = null, Tensor? attentionMask = null,
        List<Tensor>? hiddenStates = null)
    {
        using var scope = NewDisposeScope();
        long b = inputIds.shape[0], t = inputIds.shape[1];
        int past = cache?.Length ?? 0;
        if (b <= 0 || t <= 0) throw new PuzzleException($"a forward needs at least one sequence of at least one token, got input ids [{b}, {t}]");
        if (past + t > Config.MaxPositionEmbeddings)
            throw new PuzzleException(
                $"{past + t} positions are past the model's context: config max_position_embeddings is {Config.MaxPositionEmbeddings}");
        if (Device.type == DeviceType.CPU && t > 1)
        {
            // Attention scores and probabilities [B, heads, T, S] plus the [T, S] mask, before they are allocated.
            long s = past + t;
            MemoryBudget.Require(2 * b * Config.NumAttentionHeads * t * s * ElementBytes(DType) + t * s * 5,
                $"attention over {t} new and {s} total positions (batch {b})");
        }
        var (positions, mask) = PositionsAndMask(b, t, past, attentionMask);
        var (cos, sin) = _rotary.For(positions, DType);
        var h = _model.EmbedTokens.call(inputIds);
        for (int i = 0; i < Config.NumLayers; i++)
        {
            h = _model.Layers[i].Forward(h, new AttentionInputs(cos, sin, mask, cache, i));
            if (hiddenStates is not null) hiddenStates.Add(h.alias().MoveToOuterDisposeScope());
        }
        if (cache is not null) cache.Length = past + (int)t;
        return h.MoveToOuterDisposeScope();
    }

    /// <summary>Rotary inputs and the additive mask shared by all layers of one forward.</summary>
    public (Tensor Positions, Tensor? Mask) PositionsAndMask(long b, long t, int past, Tensor? attentionMask)
    {
        long s = past + t;
        var device = Device;
        if (attentionMask is null)
        {
            var positions = arange(past, s, dtype: ScalarType.Int64, device: device).unsqueeze(0);   // [1, T]
            if (t == 1) return (positions, null);                                                      // decode: all keys visible
            var causal = ones(t, s, dtype: ScalarType.Bool, device: device).tril(past);                 // [T, S]
            return (positions, Additive(causal).view(1, 1, 1, t, s));
        }
        if (attentionMask.shape[0] != b || attentionMask.shape[1] != s)
            throw new PuzzleException($"attention mask has shape [{string.Join(", ", attentionMask.shape)}] but the forward needs [{b}, {s}]");
        var valid = attentionMask.to(ScalarType.Bool);
        var allPositions = (valid.to(ScalarType.Int64).cumsum(1) - 1).clamp_min(0);                  // [B, S]
        var newPositions = allPositions.narrow(1, past, t);                                           // [B, T]
        var visible = ones(t, s, dtype: ScalarType.Bool, device: device).tril(past).unsqueeze(0)      // [1, T, S]
            .logical_and(valid.unsqueeze(1));                                                        // [B, T, S]
        return (newPositions, Additive(visible).view(b, 1, 1, t, s));
    }

    static long ElementBytes(ScalarType dtype) => dtype is ScalarType.Float32 or ScalarType.Int32 ? 4 : dtype is ScalarType.Float64 or ScalarType.Int64 ? 8 : 2;

    Tensor Additive(Tensor visible) => AdditiveMask(visible, DType);

    /// <summary>0 where visible, the dtype's most negative value elsewhere.</summary>
    public static Tensor AdditiveMask(Tensor visible, ScalarType dtype)
    {
        double min = dtype == ScalarType.BFloat16 ? -3.3895e38 : dtype == ScalarType.Float16 ? -65504.0 : float.MinValue;
        // An explicit Scalar alive until the call returns: an implicit one can be finalized by the GC while libtorch
        // reads it (seen as "Expected false to be true" in Scalar::toFloat, from masked_fill, in a parallel test run).
        using var fill = min.ToScalar();
        return zeros(visible.shape, dtype, visible.device).masked_fill(visible.logical_not(), fill);
    }

    /// <summary>RoPE tables and causal mask for a full (uncached) forward of T positions, in <paramref name="dtype"/>.</summary>
    public AttentionInputs PrefillInputs(long t, int layer, ScalarType dtype)
    {
        var positions = arange(t, dtype: ScalarType.Int64, device: Device).unsqueeze(0);
        var (cos, sin) = _rotary.For(positions, dtype);
        var mask = AdditiveMask(ones(t, t, dtype: ScalarType.Bool, device: Device).tril(), dtype).view(1, 1, 1, t, t);
        return new AttentionInputs(cos, sin, mask, null, layer);
    }

    /// <summary>The input of layer <paramref name="layer"/> (the embeddings for layer 0) for ids [B, T].</summary>
    public Tensor LayerInput(Tensor inputIds, int layer)
    {
        using var scope = NewDisposeScope();
        var inputs = PrefillInputs(inputIds.shape[1], 0, DType);
        var h = _model.EmbedTokens.call(inputIds);
        for (int i = 0; i < layer; i++) h = _model.Layers[i].Forward(h, inputs with { Layer = i });
        return h.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Fused QKV and gate+up weights for fast inference. They are copies: call <see cref="Unfuse"/> (or fuse again)
    /// once the weights change. <see cref="Runtime.TextGenerator"/> fuses for the duration of a generation unless the
    /// model is already fused (<see cref="IsFused"/>): a timing loop fuses its models once for all its requests
    /// (<see cref="Stages.Costs.EngineTimer"/>), so the copies are not reallocated per request — the allocator kept
    /// those per-request copies as heap growth (a 1B parent's costs stage grew by 5 GiB over its rounds).
    /// </summary>
    public bool IsFused { get; private set; }

    public void Fuse()
    {
        IsFused = true;
        foreach (var layer in _model.Layers)
        {
            layer.SelfAttn?.Fuse();
            (layer.Mlp as SwiGluFfn)?.Fuse();
        }
    }

    public void Unfuse()
    {
        IsFused = false;
        foreach (var layer in _model.Layers)
        {
            layer.SelfAttn?.Unfuse();
            (layer.Mlp as SwiGluFfn)?.Unfuse();
        }
    }

    public KvCache NewCache(int batchSize, int capacity, ScalarType? dtype = null) =>
        new(Config, batchSize, capacity, Device, dtype ?? DType);

    /// <summary>Names and shapes of every parameter, in state-dict order ("name [d0, d1]").</summary>
    public IEnumerable<string> StateDictListing() =>
        named_parameters().Select(p => $"{p.name} [{string.Join(", ", p.parameter.shape)}]");

    protected override void Dispose(bool disposing)
    {
        if (disposing) _rotary.Dispose();
        base.Dispose(disposing);
    }
}
