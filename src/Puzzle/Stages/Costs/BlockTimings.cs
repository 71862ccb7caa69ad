using Puzzle.Domain;
using Puzzle.Config;
using Puzzle.Model;
using Puzzle.Stages.Library;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Stages.Costs;

/// <summary>The two ways <see cref="BlockCosts"/> times subblocks (see <see cref="CostMethod"/>); times in ms per request phase.</summary>
public static class BlockTimings
{
    /// <summary>
    /// Per distinct subblock (<see cref="Key"/>): prefill and one decode step; outside the blocks; the parent whole; and
    /// (in the engine) <see cref="Interaction"/>: what a layer holding both the parent's attention and its FFN costs
    /// beyond the two subblocks timed apart (ms, prefill and one decode step; negative where it costs less).
    /// </summary>
    public sealed record Result(IReadOnlyDictionary<string, (Timing Prefill, Timing Decode)> Subblocks, (Timing Prefill, Timing Decode) NonBlock, (Timing Prefill, Timing Decode) Whole)
    {
        public (double PrefillMs, double DecodeMs) Interaction { get; init; }
    }

    /// <summary>Same config, same cost: one timing per distinct sublayer config.</summary>
    public static string Key(SubblockVariant v) => v.Kind == SubblockKind.Attention ? $"attn:{v.Attention}" : $"ffn:{v.Ffn}";

    /// <summary>At most this many layers in the models that time a subblock in context.</summary>
    public const int MaxContextDepth = 8;

    /// <summary>
    /// In the engine: per distinct subblock a model whose every layer (depth min(L, 8), less where these models would
    /// hold more parameters than the parent or 1 Gi parameters) holds it and nothing else, a
    /// model of empty layers (embedding, final norm, LM head, sampling, the step loop) and the parent itself, all
    /// run through <see cref="EngineTimer"/> interleaved (the timing models share the parent's embedding and LM head:
    /// <see cref="SharingVocabulary"/>); a subblock's time in a round is (its model − the empty
    /// model) / depth, and the statistic is taken over rounds of these paired differences.
    /// </summary>
    public static Result InEngine(CausalLm parent, IReadOnlyList<SubblockVariant> variants, ScenarioCost scenario, int warmup, int repeats, TimingStatistic statistic) =>
        InEngineSamples(parent, variants, scenario, warmup, repeats).Reduce(statistic);

    /// <summary>
    /// The raw engine samples of <see cref="InEngine"/>: models[0] is the empty model, then one per distinct subblock,
    /// then (where <see cref="FullBlock"/>) a model whose every layer is the parent's layer 0 whole (attention and FFN),
    /// then the parent.
    /// </summary>
    public sealed record EngineSamples(IReadOnlyList<SubblockVariant> Variants, IReadOnlyList<SubblockVariant> Distinct, int Depth, ScenarioCost Scenario, List<EngineSample>[] Samples,
        bool FullBlock = false)
    {
        public Result Reduce(TimingStatistic statistic)
        {
            int steps = Scenario.DecodeSteps;
            var empty = Samples[0];
            // Median and trimmed mean of the paired per-round differences; the minimum is taken per model, then
            // subtracted (a minimum of differences would mix the luckiest round of one model with the unluckiest of
            // the other). A difference below zero is noise: clamped to 0.
            Timing Phase(IReadOnlyList<EngineSample> s, IReadOnlyList<EngineSample>? minus, Func<EngineSample, double> seconds, double divisor)
            {
                if (minus is not null && statistic == TimingStatistic.Min)
                {
                    var own = statistic.Summarise(s.Select(x => seconds(x) * 1e3 / divisor).ToList());
                    double baseline = statistic.Apply(minus.Select(x => seconds(x) * 1e3 / divisor).ToList());
                    return new Timing(Math.Max(0, own.MedianMs - baseline), own.P25Ms - baseline, own.P75Ms - baseline, own.Repeats);
                }
                var t = statistic.Summarise(s.Select((x, r) => (seconds(x) - (minus is null ? 0 : seconds(minus[r]))) * 1e3 / divisor).ToList());
                return t with { MedianMs = Math.Max(0, t.MedianMs) };
            }
            (Timing, Timing) Phases(IReadOnlyList<EngineSample> s, double divisor, IReadOnlyList<EngineSample>? minus) =>
                (Phase(s, minus, x => x.PrefillSeconds, divisor), steps == 0 ? Timing.None : Phase(s, minus, x => x.DecodeSeconds, (double)steps * divisor));
            var subblocks = new Dictionary<string, (Timing, Timing)>();
            foreach (var v in Variants)
                subblocks[Key(v)] = v.IsNoOp ? (Timing.None, Timing.None) : Phases(Samples[1 + Distinct.ToList().FindIndex(d => Key(d) == Key(v))], Depth, empty);
            var result = new Result(subblocks, Phases(empty, 1, null), Phases(Samples[^1], 1, null));
            if (!FullBlock) return result;
            // The parent's layer 0 whole, per layer, less its two subblocks as timed apart (by the same statistic).
            var (fullPrefill, fullDecode) = Phases(Samples[^2], Depth, empty);
            var parentKeys = Variants.Where(v => v.Layer == 0 && v.IsParent && !v.IsNoOp).Select(Key).ToList();
            double Apart(Func<(Timing Prefill, Timing Decode), Timing> phase) => parentKeys.Sum(k => phase(subblocks[k]).MedianMs);
            return result with { Interaction = (fullPrefill.MedianMs - Apart(t => t.Prefill), fullDecode.MedianMs - Apart(t => t.Decode)) };
        }
    }

    public static EngineSamples InEngineSamples(CausalLm parent, IReadOnlyList<SubblockVariant> variants, ScenarioCost scenario, int warmup, int repeats)
    {
        var config = parent.Config;
        var shapes = config with { MaxPositionEmbeddings = Math.Max(config.MaxPositionEmbeddings, scenario.CacheCapacity) };
        var distinct = variants.Where(v => !v.IsNoOp).GroupBy(Key).Select(g => g.First()).ToList();
        // Memory: all these models together hold at most as many block parameters as the parent (or 2 GiB).
        // The parent's layer 0 whole: a layer that keeps both sublayers costs more (or less) than its two parts timed
        // apart, and only such layers carry the difference (a child that drops whole layers drops it with them).
        bool full = config.Blocks[0].KeepsBoth;
        long perLayer = distinct.Sum(v => v.Kind == SubblockKind.Attention ? config.AttentionParameters(v.Attention!) : config.FfnParameters(v.Ffn!))
                        + (full ? config.BlockParameters(0) : 0);
        long budget = Math.Max(config.TotalParameters, (2L << 30) / 2);
        int depth = Math.Min(config.NumLayers, MaxContextDepth);
        while (depth > 1 && depth * perLayer > budget) depth--;
        var models = new List<CausalLm>();
        try
        {
            CausalLm Uniform(BlockConfig block) => SharingVocabulary(parent, shapes.WithBlocks(Enumerable.Repeat(block, depth)), 1);
            models.Add(Uniform(new BlockConfig(AttentionConfig.NoOperation, FfnConfig.NoOperation)));
            foreach (var v in distinct)
                models.Add(Uniform(v.Kind == SubblockKind.Attention ? new BlockConfig(v.Attention!, FfnConfig.NoOperation) : new BlockConfig(AttentionConfig.NoOperation, v.Ffn!)));
            if (full) models.Add(Uniform(config.Blocks[0]));
            return new EngineSamples(variants, distinct, depth, scenario, EngineTimer.Interleaved([.. models, parent], scenario, warmup, repeats), full);
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }

    /// <summary>
    /// A timing model of <paramref name="config"/>'s layers that holds the parent's embedding and LM head, not copies:
    /// the engine's models differ only in their layers, and the vocabulary tensors (V × H, 0.5 GB each for a 128k
    /// vocabulary in bf16) are the same work in every one (the same shapes, gathered and multiplied alike), so one set
    /// serves them all. Its own layers and final norm are random (normal(0, 0.02), norms 1; deterministic for a seed).
    /// </summary>
    public static CausalLm SharingVocabulary(CausalLm parent, ModelConfig config, long seed)
    {
        if (config.VocabSize != parent.Config.VocabSize || config.HiddenSize != parent.Config.HiddenSize || config.TieWordEmbeddings != parent.Config.TieWordEmbeddings)
            throw new ArgumentException($"a timing model shares the parent's vocabulary tensors: vocab {config.VocabSize} vs {parent.Config.VocabSize}, hidden {config.HiddenSize} vs {parent.Config.HiddenSize}, tied {config.TieWordEmbeddings} vs {parent.Config.TieWordEmbeddings}");
        var model = new CausalLm(config, parent.Device, parent.DType);
        using var noGrad = no_grad();
        // The model's own (never written, so never resident) vocabulary storage is released as it takes the parent's.
        // (set_ returns the tensor itself: not disposed here.)
        model.Model.EmbedTokens.Weight.set_(parent.Model.EmbedTokens.Weight);
        if (!config.TieWordEmbeddings) model.LmHeadWeight.set_(parent.LmHeadWeight);
        var generator = new Generator((ulong)seed, parent.Device.type == DeviceType.META ? CPU : parent.Device);
        foreach (var (name, p) in model.named_parameters())
        {
            if (name is "model.embed_tokens.weight" or "lm_head.weight") continue;
            if (name.EndsWith("norm.weight", StringComparison.Ordinal)) p.fill_(1.0);
            else p.normal_(0, 0.02, generator);
        }
        return model;
    }

    /// <summary>Each subblock alone (h + sublayer(norm(h))) on random inputs; the non-block parts alone; the parent's forward whole.</summary>
    public static Result Isolated(CausalLm parent, IReadOnlyList<SubblockVariant> variants, ScenarioCost scenario, int warmup, int repeats, TimingStatistic statistic)
    {
        var timer = new Timer(warmup, repeats, parent.Device, statistic);
        var subblocks = new Dictionary<string, (Timing, Timing)>();
        foreach (var v in variants)
            if (!subblocks.ContainsKey(Key(v)))
                subblocks[Key(v)] = MeasureSubblock(parent.Config, v, scenario, parent.Device, parent.DType, timer);
        return new Result(subblocks, MeasureNonBlock(parent, scenario, timer), MeasureWhole(parent, scenario, timer));
    }

    /// <summary>Warm-up, then repeats timed on a <see cref="Runtime.DeviceClock"/> (synchronised before every read on CUDA).</summary>
    public sealed class Timer(int warmup, int repeats, Device device, TimingStatistic statistic = TimingStatistic.Median, Action? synchronize = null)
    {
        public Timing Measure(Action action)
        {
            for (int i = 0; i < warmup; i++) action();
            var samples = new double[repeats];
            var clock = new Runtime.DeviceClock(device, synchronize);
            for (int i = 0; i < repeats; i++)
            {
                clock.Restart();
                action();
                samples[i] = clock.ElapsedMilliseconds;
            }
            return statistic.Summarise(samples);
        }
    }

    static (Timing Prefill, Timing Decode) MeasureSubblock(ModelConfig config, SubblockVariant v, ScenarioCost sc, Device device, ScalarType dtype, Timer timer)
    {
        if (v.IsNoOp) return (Timing.None, Timing.None);
        var block = v.Kind == SubblockKind.Attention
            ? new BlockConfig(v.Attention!, FfnConfig.NoOperation)
            : new BlockConfig(AttentionConfig.NoOperation, v.Ffn!);
        int context = sc.DecodeContext;
        var single = config with { Blocks = [block], MaxPositionEmbeddings = Math.Max(config.MaxPositionEmbeddings, context + 2) };
        using var model = new CausalLm(single, device, dtype).InitializeRandom(1);
        using var noGrad = no_grad();
        using var cache = model.NewCache(sc.Batch, Math.Max(sc.PromptLength, context + 1));
        var layer = model.Layer(0);
        using var scope = NewDisposeScope();
        var prompt = randn([sc.Batch, sc.PromptLength, config.HiddenSize], dtype: dtype, device: device);
        var step = randn([sc.Batch, 1, config.HiddenSize], dtype: dtype, device: device);
        var prefillInputs = Inputs(model, sc.Batch, sc.PromptLength, 0, cache);
        var decodeInputs = Inputs(model, sc.Batch, 1, context, cache);
        Timing Run(Tensor x, AttentionInputs inputs, int past) => timer.Measure(() =>
        {
            using var s = NewDisposeScope();
            cache.Length = past;
            _ = v.Kind == SubblockKind.Attention ? layer.ForwardAttention(x, inputs) : layer.ForwardFfn(x);
        });
        return (Run(prompt, prefillInputs, 0), Run(step, decodeInputs, context));
    }

    static AttentionInputs Inputs(CausalLm model, int batch, int tokens, int past, KvCache cache)
    {
        var (positions, mask) = model.PositionsAndMask(batch, tokens, past, null);
        var (cos, sin) = model.Rotary.For(positions, model.DType);
        return new AttentionInputs(cos, sin, mask, cache, 0);
    }

    static (Timing Prefill, Timing Decode) MeasureNonBlock(CausalLm parent, ScenarioCost sc, Timer timer)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var ids = randint(parent.Config.VocabSize, [sc.Batch, sc.PromptLength], dtype: ScalarType.Int64, device: parent.Device);
        var one = ids.narrow(1, 0, 1);
        Timing Run(Tensor input) => timer.Measure(() =>
        {
            using var s = NewDisposeScope();
            var h = parent.Model.EmbedTokens.call(input);
            h = h.narrow(1, h.shape[1] - 1, 1);
            _ = nn.functional.linear(parent.Model.Norm.call(h), parent.LmHeadWeight);
        });
        return (Run(ids), Run(one));
    }

    /// <summary>The parent's forward: a prefill writing the cache, a decode step at the mean decode context.</summary>
    static (Timing Prefill, Timing Decode) MeasureWhole(CausalLm parent, ScenarioCost sc, Timer timer)
    {
        int context = sc.DecodeContext;
        using var noGrad = no_grad();
        using var cache = parent.NewCache(sc.Batch, Math.Max(sc.PromptLength, context + 1));
        using var scope = NewDisposeScope();
        var ids = randint(parent.Config.VocabSize, [sc.Batch, sc.PromptLength], dtype: ScalarType.Int64, device: parent.Device);
        var step = ids.narrow(1, 0, 1);
        var prefill = timer.Measure(() =>
        {
            using var s = NewDisposeScope();
            cache.Length = 0;
            parent.Forward(ids, cache, lastOnly: true);
        });
        var decode = timer.Measure(() =>
        {
            using var s = NewDisposeScope();
            cache.Length = context;
            parent.Forward(step, cache, lastOnly: true);
        });
        return (prefill, decode);
    }
}
