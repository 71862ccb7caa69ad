using Puzzle.Model;
using static TorchSharp.torch;

namespace Puzzle.Runtime;

public sealed record PerplexityResult(double MeanNll, long Tokens)
{
    public double Perplexity => Math.Exp(MeanNll);
}

/// <summary>Mean next-token negative log-likelihood over a token stream, in windows of at most the context length.</summary>
public static class PerplexityEvaluator
{
    public static PerplexityResult Evaluate(CausalLm model, IReadOnlyList<int> ids, int? window = null, Action<long, long>? progress = null, long? chunkTokens = null)
    {
        if (ids.Count < 2) throw new PuzzleException($"perplexity needs at least 2 tokens, got {ids.Count}");
        int length = Math.Min(window ?? model.Config.MaxPositionEmbeddings, model.Config.MaxPositionEmbeddings);
        // A long context's attention scores ([heads, T, T], twice) may not fit: use shorter windows, not all memory.
        while (window is null && length > 512 && 2L * model.Config.NumAttentionHeads * length * length * 4 > MemoryBudget.AvailableBytes / 4) length /= 2;
        if (length < 2) throw new PuzzleException($"window must be at least 2 tokens, got {length}");
        double total = 0;
        long count = 0;
        using var noGrad = no_grad();
        // Consecutive windows overlap by one token so every token after the first is predicted exactly once.
        for (int start = 0; start + 1 < ids.Count; start += length - 1)
        {
            using var scope = NewDisposeScope();
            int n = Math.Min(length, ids.Count - start);
            var chunk = tensor(ids.Skip(start).Take(n).Select(i => (long)i).ToArray(), [1, n], device: model.Device);
            // Final hidden states, then log-softmax a few tokens at a time: no [n-1, V] tensor (TokenChunks).
            var hidden = TokenChunks.FinalHidden(model, chunk.narrow(1, 0, n - 1)).squeeze(0);   // [n-1, H]
            var targets = chunk.narrow(1, 1, n - 1).squeeze(0);
            total += TokenChunks.Stats(hidden, model.LmHeadWeight, targets, chunkTokens: chunkTokens).Nll.sum().item<float>();
            count += n - 1;
            progress?.Invoke(count, ids.Count - 1);
        }
        return new PerplexityResult(total / count, count);
    }
}
