using Puzzle.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Stages.Scoring;

/// <summary>
/// The parent on the scoring windows, in memory that scales with hidden size × tokens: every layer's input (bf16 by
/// default: L × N × T × H × 2 bytes), the normed final hidden state (fp32, N × T × H × 4), the argmax and the targets.
/// Log-probabilities are not stored; they are recomputed per batch (<see cref="BlockScorer.ScoreBlock"/>).
/// </summary>
public sealed class ParentCache : IDisposable
{
    public required Tensor[] LayerInputs { get; init; }                                        // L × [N, T, H] (cache dtype)
    public required Tensor FinalHidden { get; init; }                                          // [N, T, H] float32, after the final norm
    public required Tensor ParentTop1 { get; init; }                                           // [N, T]
    public required Tensor Targets { get; init; }                                              // [N, T]
    public required long VocabChunk { get; init; }
    public double LmLoss { get; init; }

    /// <summary>Bytes the cache holds (the memory model's scoring term).</summary>
    public static long Bytes(int layers, int hidden, long tokens, int cacheElementBytes) =>
        tokens * hidden * ((long)layers * cacheElementBytes + 4) + tokens * 16;

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
        Tensor? final = null, top1 = null, targets = null;
        double nll = 0;
        try
        {
            for (int i = 0; i < layerInputs.Length; i++) layerInputs[i] = empty([rows, t, hidden], dtype: cacheDtype, device: parent.Device);
            final = empty([rows, t, hidden], dtype: ScalarType.Float32, device: parent.Device);
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
                final.narrow(0, start, n).copy_(normed);
                var stats = VocabularyChunks.Compare(normed, normed, parent.LmHeadWeight, targets.narrow(0, start, n), chunk);
                top1.narrow(0, start, n).copy_(stats.Top1);
                nll += stats.Nll.sum().item<double>();
            }
        }
        catch
        {
            foreach (var x in layerInputs) x?.Dispose();
            final?.Dispose();
            top1?.Dispose();
            targets?.Dispose();
            throw;
        }
        return new ParentCache
        {
            LayerInputs = layerInputs, FinalHidden = final, ParentTop1 = top1, Targets = targets, VocabChunk = chunk,
            LmLoss = nll / (rows * t),
        };
    }

    public void Dispose()
    {
        foreach (var t in LayerInputs) t.Dispose();
        FinalHidden.Dispose();
        ParentTop1.Dispose();
        Targets.Dispose();
    }
}

/// <summary>
/// KL(p || q), −log q(target) and argmax q per token, where p = softmax(h_p Wᵀ) and q = softmax(h_q Wᵀ), computed over
/// the vocabulary in chunks in one pass with running maxima (online log-sum-exp): with a = h_p Wᵀ, b = h_q Wᵀ and
/// A, B their log-sum-exps, KL = E_p[a − b] − (A − B). Memory: a few [tokens, chunk] fp32 blocks.
/// </summary>
public static class VocabularyChunks
{
    /// <summary>Per-token results, [.., T] each: KL (float64), NLL of the targets under q (float64), argmax q (int64).</summary>
    public sealed record Result(Tensor Kl, Tensor Nll, Tensor Top1);

    public static Result Compare(Tensor hiddenP, Tensor hiddenQ, Tensor weight, Tensor targets, long chunk)
    {
        using var scope = NewDisposeScope();
        if (chunk <= 0) throw new PuzzleException($"vocabulary chunk must be positive, got {chunk}");
        var hp = hiddenP.to(ScalarType.Float32);
        var hq = hiddenQ.to(ScalarType.Float32);
        long vocab = weight.shape[0];
        var shape = hp.shape[..^1];
        var device = hp.device;
        Tensor mA = full(shape, double.NegativeInfinity, dtype: ScalarType.Float32, device: device), sA = zeros(shape, device: device), w = zeros(shape, device: device);
        Tensor mB = full(shape, double.NegativeInfinity, dtype: ScalarType.Float32, device: device), sB = zeros(shape, device: device);
        Tensor best = full(shape, double.NegativeInfinity, dtype: ScalarType.Float32, device: device), arg = zeros(shape, dtype: ScalarType.Int64, device: device);
        Tensor target = zeros(shape, device: device);
        for (long start = 0; start < vocab; start += chunk)
        {
            using var chunkScope = NewDisposeScope();
            long c = Math.Min(chunk, vocab - start);
            var wc = weight.narrow(0, start, c).to(ScalarType.Float32);
            var a = nn.functional.linear(hp, wc);
            var b = ReferenceEquals(hiddenP, hiddenQ) ? a : nn.functional.linear(hq, wc);
            var newA = maximum(mA, a.amax([-1]));
            var scaleA = (mA - newA).exp_();
            var e = (a - newA.unsqueeze(-1)).exp_();
            var newS = sA * scaleA + e.sum(-1);
            var newW = w * scaleA + (e * (a - b)).sum(-1);
            var newB = maximum(mB, b.amax([-1]));
            var newSB = sB * (mB - newB).exp_() + (b - newB.unsqueeze(-1)).exp_().sum(-1);
            var (values, indices) = b.max(-1);
            var better = values.gt(best);
            var newBest = where(better, values, best);
            var newArg = where(better, indices + start, arg);
            var local = targets - start;
            var inside = local.ge(0).logical_and(local.lt(c));
            var picked = b.gather(-1, local.clamp(0, c - 1).unsqueeze(-1)).squeeze(-1);
            var newTarget = where(inside, picked, target);
            foreach (var x in new[] { mA, sA, w, mB, sB, best, arg, target }) x.Dispose();
            (mA, sA, w, mB, sB, best, arg, target) = (newA.MoveToOuterDisposeScope(), newS.MoveToOuterDisposeScope(), newW.MoveToOuterDisposeScope(),
                newB.MoveToOuterDisposeScope(), newSB.MoveToOuterDisposeScope(), newBest.MoveToOuterDisposeScope(), newArg.MoveToOuterDisposeScope(),
                newTarget.MoveToOuterDisposeScope());
        }
        var lseA = mA.to(ScalarType.Float64) + sA.to(ScalarType.Float64).log();
        var lseB = mB.to(ScalarType.Float64) + sB.to(ScalarType.Float64).log();
        var kl = w.to(ScalarType.Float64) / sA.to(ScalarType.Float64) - (lseA - lseB);
        var nll = lseB - target.to(ScalarType.Float64);
        return new Result(kl.MoveToOuterDisposeScope(), nll.MoveToOuterDisposeScope(), arg.MoveToOuterDisposeScope());
    }
}
