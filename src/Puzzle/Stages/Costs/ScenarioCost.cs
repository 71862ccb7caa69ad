using Puzzle.Domain;
using Puzzle.Config;
using Puzzle.Model;
using Puzzle.Stages.Library;

namespace Puzzle.Stages.Costs;

/// <summary>FLOPs and bytes moved by one phase (prefill of the prompt, or one decode step).</summary>
public sealed record PhaseWork(double Flops, double Bytes);

/// <summary>
/// The serving scenario's arithmetic in one place, used by costs, search, the measured check, the benchmark and the
/// report. The engine (<see cref="Runtime.TextGenerator"/>) runs one prefill of the prompt, which yields the first
/// generated token, then <see cref="DecodeSteps"/> = generation − 1 decode steps; step s (1-based) runs with
/// prompt + s − 1 positions cached, so the mean cached length over the steps is <see cref="DecodeContext"/>.
/// Memory is weights at the weight dtype plus a KV cache of the engine's capacity (prompt + generation positions per
/// sequence) at the KV dtype, in bytes (GiB = 2^30 bytes where shown).
/// </summary>
public sealed record ScenarioCost(int Batch, int PromptLength, int GenerationLength, int WeightBytes, int KvBytes)
{
    public static ScenarioCost From(ScenarioSection sc) =>
        Create(sc.Batch, sc.PromptLength, sc.GenerationLength, DtypeBytes(sc.WeightDtype, "scenario.weight_dtype"), DtypeBytes(sc.KvDtype, "scenario.kv_dtype"), "scenario");

    /// <summary>Validates the lengths; <paramref name="source"/> names where they came from in the error.</summary>
    public static ScenarioCost Create(int batch, int promptLength, int generationLength, int weightBytes, int kvBytes, string source)
    {
        if (batch <= 0 || promptLength <= 0 || generationLength <= 0)
            throw new PuzzleException($"{source}: batch ({batch}), prompt_length ({promptLength}) and generation_length ({generationLength}) must be positive");
        return new ScenarioCost(batch, promptLength, generationLength, weightBytes, kvBytes);
    }

    /// <summary>Bytes per element of a dtype named in a config or on the command line (the one such table outside checkpoint formats).</summary>
    public static int DtypeBytes(string dtype, string field) => dtype switch
    {
        "float32" => 4,
        "bfloat16" or "float16" => 2,
        "fp8" or "int8" => 1,
        _ => throw new PuzzleException($"{field}: unknown dtype '{dtype}' (float32, bfloat16, float16, fp8, int8)"),
    };

    /// <summary>Forward passes of one new position after the prefill: the prefill already yields the first token.</summary>
    public int DecodeSteps => GenerationLength - 1;

    /// <summary>Mean cached positions over the decode steps: prompt + (generation − 2) / 2 (rounded down).</summary>
    public int DecodeContext => PromptLength + Math.Max(0, GenerationLength - 2) / 2;

    /// <summary>Positions the engine allocates per sequence: prompt + generation.</summary>
    public int CacheCapacity => PromptLength + GenerationLength;

    /// <summary>Tokens one scenario request generates: batch × generation length.</summary>
    public double GeneratedTokens => (double)Batch * GenerationLength;

    /// <summary>Time of one request from a prefill time and a decode-step time (ms): prefill + (generation − 1) steps.</summary>
    public double TimeMs(double prefillMs, double decodeStepMs) => prefillMs + DecodeSteps * decodeStepMs;

    /// <summary>End-to-end throughput (generated tokens per second) of a request that takes <paramref name="timeMs"/>.</summary>
    public double TokensPerSecond(double timeMs) => GeneratedTokens / (timeMs / 1e3);

    /// <summary>KV cache bytes of the scenario for <paramref name="kvBytesPerToken"/> (already at the KV dtype).</summary>
    public double KvCacheBytes(double kvBytesPerToken) => (double)Batch * CacheCapacity * kvBytesPerToken;

    /// <summary>Weights at the weight dtype plus the scenario's KV cache (kv bytes per token at the KV dtype).</summary>
    public double MemoryBytes(long parameters, double kvBytesPerToken) => (double)parameters * WeightBytes + KvCacheBytes(kvBytesPerToken);

    /// <summary>Memory of a whole model at the scenario.</summary>
    public double MemoryBytes(ModelConfig model) => MemoryBytes(model.TotalParameters, model.KvBytesPerToken(KvBytes));

    public PhaseWork Prefill(ModelConfig c, SubblockVariant v) => Work(c, v, Batch, PromptLength, 0);

    public PhaseWork Decode(ModelConfig c, SubblockVariant v) => Work(c, v, Batch, 1, DecodeContext);

    /// <summary>Outside the blocks at prefill: embedding lookup of the prompt, final norm and LM head at the last position.</summary>
    public PhaseWork NonBlockPrefill(ModelConfig c) =>
        new(2.0 * Batch * c.HiddenSize * c.VocabSize, (double)c.NonBlockParameters * WeightBytes + 2.0 * Batch * PromptLength * c.HiddenSize * 2);

    /// <summary>Outside the blocks per decode step: one embedding row, final norm and the LM head.</summary>
    public PhaseWork NonBlockDecode(ModelConfig c) =>
        new(2.0 * Batch * c.HiddenSize * c.VocabSize, (double)c.VocabSize * c.HiddenSize * WeightBytes + 2.0 * Batch * c.HiddenSize * 2);

    /// <summary>
    /// Analytic FLOPs and bytes of one sublayer for <paramref name="tokens"/> new positions per sequence with
    /// <paramref name="past"/> positions cached: matmuls count 2 FLOPs per multiply-add; activations are read and
    /// written once at 2 bytes; attention reads the whole cache including the new entries.
    /// </summary>
    public PhaseWork Work(ModelConfig c, SubblockVariant v, int batch, int tokens, int past)
    {
        double n = (double)batch * tokens, h = c.HiddenSize, activations = 2 * n * h * 2;
        if (v.IsNoOp) return new PhaseWork(0, 0);
        if (v.Kind == SubblockKind.Attention)
        {
            var a = v.Attention!;
            if (a.ReplaceWithLinear) return new PhaseWork(2 * n * h * h, h * h * WeightBytes + activations);
            double kv = a.NumKeyValueHeads!.Value, heads = c.NumAttentionHeads, d = c.HeadDim;
            double projections = 2 * n * h * (2 * heads * d + 2 * kv * d);                     // Q and O: heads·d; K and V: kv·d
            double pairs = batch * (tokens * (double)past + tokens * (tokens + 1.0) / 2);       // causal query-key pairs
            double attention = 2 * 2 * heads * d * pairs;                                       // QKᵀ and PV
            double kvTraffic = batch * (past + tokens) * 2 * kv * d * KvBytes;
            return new PhaseWork(projections + attention, c.AttentionParameters(a) * (double)WeightBytes + kvTraffic + activations);
        }
        var f = v.Ffn!;
        if (f.ReplaceWithLinear) return new PhaseWork(2 * n * h * h, h * h * WeightBytes + activations);
        double width = f.IntermediateSize!.Value;
        return new PhaseWork(2 * n * 3 * h * width, c.FfnParameters(f) * (double)WeightBytes + activations + 3 * n * width * 2);
    }
}
