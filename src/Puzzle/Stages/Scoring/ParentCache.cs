using Puzzle.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Stages.Scoring;

/// <summary>
/// The parent on the scoring windows, in memory that scales with hidden size × tokens: every layer's input (bf16 by
/// default: L × N × T × H × 2 bytes), and per token what KL(p ‖ q) needs of the parent's distribution p (float64): its
/// expected head row E_p[w] = Σ_v p_v w_v (N × T × H × 8) and Σ_v p_v log p_v; the argmax and the targets.
/// Log-probabilities are never stored, nor recomputed per candidate: with q = softmax(h_q Wᵀ),
/// KL(p ‖ q) = Σ p log p − h_q · E_p[w] + logsumexp(h_q Wᵀ), so a candidate pays one pass of the LM head, its own
/// (<see cref="VocabularyChunks.AgainstParent"/>; before, the parent's logits were recomputed beside it: two passes).
/// </summary>
public sealed class ParentCache : IDisposable
{
    public required Tensor[] LayerInputs { get; init; }                                        // L × [N, T, H] (cache dtype)
    public required Tensor ExpectedRow { get; init; }                                          // [N, T, H] float64: E_p[w]
    public required Tensor NegEntropy { get; init; }                                           // [N, T] float64: Σ p log p
    public required Tensor ParentTop1 { get; init; }                                           // [N, T]
    public required Tensor Targets { get; init; }                                              // [N, T]
    public required long VocabChunk { get; init; }
    public double LmLoss { get; init; }

    /// <summary>Bytes the cache holds (the memory model's scoring term).</summary>
    public static long Bytes(int layers, int hidden, long tokens, int cacheElementBytes) =>
        tokens * hidden * ((long)layers * cacheElementBytes + 8) + tokens * 24;

    /// <summary>Vocabulary columns per chunk so that one [batch × T, chunk] fp32 block holds about 2^24 values.</summary>
    public static long DefaultVocabChunk(long batchTokens, int vocab) => Math.Min(vocab, Math.Max(128, (1L << 24) / Math.Max(1, batchTokens)));

    public static ParentCache Build(CausalLm parent, Tensor windows, int batch, ScalarType cacheDtype = ScalarType.BFloat16, long? vocabChunk = null)
    {
        using var noGrad = no_grad();
        long rows = windows.shape[0], t = windows.shape[1] - 1;
        int hidden = parent.Config.HiddenSize;
        long chunk = vocabChunk ?? DefaultVocabChunk(Math.Min(batch, rows) * t, parent.Config.VocabSize);
        // Filled in place batch by batch: no per-batch lists concatenated while alive.
        var layerInputs = new Tensor[parent.Config.NumLayers];
        Tensor? expected = null, negEntropy = null, top1 = null, targets = null;
        double nll = 0;
        try
        {
            for (int i = 0; i < layerInputs.Length; i++) layerInputs[i] = empty([rows, t, hidden], dtype: cacheDtype, device: parent.Device);
            expected = empty([rows, t, hidden], dtype: ScalarType.Float64, device: parent.Device);
            negEntropy = empty([rows, t], dtype: ScalarType.Float64, device: parent.Device);
            top1 = empty([rows, t], dtype: ScalarType.Int64, device: parent.Device);
            targets = windows.narrow(1, 1, t).contiguous();
            for (long start = 0; start < rows; start += batch)
            {
                using var scope = NewDisposeScope();
                long n = Math.Min(batch, rows - start);
                var ids = windows.narrow(0, start, n).narrow(1, 0, t);
                var inputs = parent.PrefillInputs(t, 0, parent.DType);
                var h = parent.Model.EmbedTokens.call(ids);
                for (int i = 0; i < parent.Config.NumLayers; i++)
                {
                    layerInputs[i].narrow(0, start, n).copy_(h);
                    h = parent.Layer(i).Forward(h, inputs with { Layer = i });
                }
                var normed = parent.Model.Norm.call(h).to(ScalarType.Float32);
                var stats = VocabularyChunks.Parent(normed, parent.LmHeadWeight, targets.narrow(0, start, n), chunk);
                expected.narrow(0, start, n).copy_(stats.ExpectedRow);
                negEntropy.narrow(0, start, n).copy_(stats.NegEntropy);
                top1.narrow(0, start, n).copy_(stats.Top1);
                nll += stats.Nll.sum().item<double>();
            }
        }
        catch
        {
            foreach (var x in layerInputs) x?.Dispose();
            expected?.Dispose();
            negEntropy?.Dispose();
            top1?.Dispose();
            targets?.Dispose();
            throw;
        }
        return new ParentCache
        {
            LayerInputs = layerInputs, ExpectedRow = expected, NegEntropy = negEntropy, ParentTop1 = top1, Targets = targets, VocabChunk = chunk,
            LmLoss = nll / (rows * t),
        };
    }

    public void Dispose()
    {
        foreach (var t in LayerInputs) t.Dispose();
        ExpectedRow.Dispose();
        NegEntropy.Dispose();
        ParentTop1.Dispose();
        Targets.Dispose();
    }
}

/// <summary>
/// KL(p || q), −log q(target) and argmax q per token, where p = softmax(h_p Wᵀ) and q = softmax(h_q Wᵀ), computed over
/// the vocabulary in chunks in one pass with running maxima (online log-sum-exp). With a = h_p Wᵀ, b = h_q Wᵀ and A, B
/// their log-sum-exps, KL = E_p[a] − A − E_p[b] + B, and E_p[b] = h_q · E_p[w] (w a row of W): the parent's side is
/// summarised once per token (<see cref="Parent"/>), each candidate pays its own head only (<see cref="AgainstParent"/>).
/// Memory: a few [tokens, chunk] fp32 blocks.
/// </summary>
public static class VocabularyChunks
{
    /// <summary>Per-token results, [.., T] each: KL (float64), NLL of the targets under q (float64), argmax q (int64).</summary>
    public sealed record Result(Tensor Kl, Tensor Nll, Tensor Top1);

    /// <summary>The parent's side of <see cref="AgainstParent"/>, per token: E_p[w] [.., T, H] and Σ p log p [.., T]
    /// (float64), the NLL of the targets (float64) and the argmax (int64).</summary>
    public sealed record ParentStats(Tensor ExpectedRow, Tensor NegEntropy, Tensor Nll, Tensor Top1);

    /// <summary>
    /// One pass over the vocabulary in chunks with running maxima: A = logsumexp(a), E_p[a], E_p[w] (the chunk's
    /// softmax weights times its head rows, accumulated in float64), argmax and the target's logit; a = h_p Wᵀ.
    /// </summary>
    public static ParentStats Parent(Tensor hiddenP, Tensor weight, Tensor targets, long chunk)
    {
        using var scope = NewDisposeScope();
        if (chunk <= 0) throw new PuzzleException($"vocabulary chunk must be positive, got {chunk}");
        var hp = hiddenP.to(ScalarType.Float32);
        long vocab = weight.shape[0], hidden = weight.shape[1];
        var shape = hp.shape[..^1];
        var device = hp.device;
        Tensor m = full(shape, double.NegativeInfinity, dtype: ScalarType.Float32, device: device);
        Tensor sum = zeros(shape, dtype: ScalarType.Float64, device: device), ea = zeros(shape, dtype: ScalarType.Float64, device: device);
        Tensor row = zeros([.. shape, hidden], dtype: ScalarType.Float64, device: device), arg = zeros(shape, dtype: ScalarType.Int64, device: device);
        Tensor target = zeros(shape, device: device);
        for (long start = 0; start < vocab; start += chunk)
        {
            using var chunkScope = NewDisposeScope();
            long c = Math.Min(chunk, vocab - start);
            var wc = weight.narrow(0, start, c).to(ScalarType.Float32);
            var a = nn.functional.linear(hp, wc);
            var (values, indices) = a.max(-1);
            var newM = maximum(m, values);
            var scale = (m - newM).exp_().to(ScalarType.Float64);
            var e = (a - newM.unsqueeze(-1)).exp_();                                            // ≤ 1: p up to the final scale
            var newSum = sum * scale + e.sum(-1).to(ScalarType.Float64);
            var newEa = ea * scale + (e * a).sum(-1).to(ScalarType.Float64);
            var newRow = row * scale.unsqueeze(-1) + e.matmul(wc).to(ScalarType.Float64);
            var (newArg, newTarget) = ArgmaxAndTarget(a, values, indices, m, arg, target, targets, start);
            foreach (var x in new[] { m, sum, ea, row, arg, target }) x.Dispose();
            (m, sum, ea, row, arg, target) = (newM.MoveToOuterDisposeScope(), newSum.MoveToOuterDisposeScope(), newEa.MoveToOuterDisposeScope(),
                newRow.MoveToOuterDisposeScope(), newArg.MoveToOuterDisposeScope(), newTarget.MoveToOuterDisposeScope());
        }
        var lse = m.to(ScalarType.Float64) + sum.log();
        var negEntropy = ea / sum - lse;                                                        // E_p[a] − A = Σ p log p
        var expected = row / sum.unsqueeze(-1);
        var nll = lse - target.to(ScalarType.Float64);
        return new ParentStats(expected.MoveToOuterDisposeScope(), negEntropy.MoveToOuterDisposeScope(), nll.MoveToOuterDisposeScope(), arg.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// KL(p ‖ q), −log q(target) and argmax q per token against a parent summarised by <see cref="Parent"/>: one pass of
    /// the candidate's head b = h_q Wᵀ (B = logsumexp(b)); KL = Σ p log p − h_q · E_p[w] + B, in float64.
    /// </summary>
    public static Result AgainstParent(Tensor expectedRow, Tensor negEntropy, Tensor hiddenQ, Tensor weight, Tensor targets, long chunk)
    {
        using var scope = NewDisposeScope();
        if (chunk <= 0) throw new PuzzleException($"vocabulary chunk must be positive, got {chunk}");
        var hq = hiddenQ.to(ScalarType.Float32);
        long vocab = weight.shape[0];
        var shape = hq.shape[..^1];
        var device = hq.device;
        Tensor m = full(shape, double.NegativeInfinity, dtype: ScalarType.Float32, device: device), sum = zeros(shape, device: device);
        Tensor arg = zeros(shape, dtype: ScalarType.Int64, device: device);
        Tensor target = zeros(shape, device: device);
        for (long start = 0; start < vocab; start += chunk)
        {
            using var chunkScope = NewDisposeScope();
            long c = Math.Min(chunk, vocab - start);
            var b = nn.functional.linear(hq, weight.narrow(0, start, c).to(ScalarType.Float32));
            var (values, indices) = b.max(-1);
            var newM = maximum(m, values);
            var newSum = sum * (m - newM).exp_() + (b - newM.unsqueeze(-1)).exp_().sum(-1);
            var (newArg, newTarget) = ArgmaxAndTarget(b, values, indices, m, arg, target, targets, start);
            foreach (var x in new[] { m, sum, arg, target }) x.Dispose();
            (m, sum, arg, target) = (newM.MoveToOuterDisposeScope(), newSum.MoveToOuterDisposeScope(), newArg.MoveToOuterDisposeScope(),
                newTarget.MoveToOuterDisposeScope());
        }
        var lseB = m.to(ScalarType.Float64) + sum.to(ScalarType.Float64).log();
        var crossTerm = (hq.to(ScalarType.Float64) * expectedRow.to(ScalarType.Float64)).sum(-1);       // E_p[b]
        var kl = negEntropy.to(ScalarType.Float64) - crossTerm + lseB;
        var nll = lseB - target.to(ScalarType.Float64);
        return new Result(kl.MoveToOuterDisposeScope(), nll.MoveToOuterDisposeScope(), arg.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The argmax so far and the target's logit, after one chunk of <paramref name="logits"/> (vocabulary columns from
    /// <paramref name="start"/>): the chunk's row maxima <paramref name="values"/> at <paramref name="indices"/> win where they
    /// exceed the running maximum before the chunk (the first of equal maxima stays, as argmax over the whole row).
    /// </summary>
    static (Tensor Arg, Tensor Target) ArgmaxAndTarget(Tensor logits, Tensor values, Tensor indices, Tensor previousMax, Tensor arg, Tensor target,
        Tensor targets, long start)
    {
        long c = logits.shape[^1];
        var better = values.gt(previousMax);
        var local = targets - start;
        var inside = local.ge(0).logical_and(local.lt(c));
        var picked = logits.gather(-1, local.clamp(0, c - 1).unsqueeze(-1)).squeeze(-1);
        return (where(better, indices + start, arg), where(inside, picked, target));
    }
}
