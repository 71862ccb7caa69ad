using System.Text.Json;
using System.Text.Json.Nodes;
using Puzzle.Data;
using Puzzle.Model;
using Puzzle.Runtime;
using Puzzle.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Runtime;

public sealed record TokenMetrics(long Tokens, double MeanNll, double NextTokenAccuracy, double? KlToReference, double? Top1Agreement)
{
    public double Perplexity => Math.Exp(MeanNll);
    /// <summary>Per-window sums, in window order (window i starts at token i × T of the split).</summary>
    public IReadOnlyList<WindowStats> Windows { get; init; } = [];
    /// <summary>With a reference: the reference's own NLL and next-token accuracy on the same windows, from the same pass.</summary>
    public TokenMetrics? Reference { get; init; }
}

/// <summary>Sums over one window's T predictions: NLL, correct next tokens, KL to and top-1 agreement with the reference.</summary>
public sealed record WindowStats(double Nll, long Correct, double Kl, long Agree);

/// <summary>Per-item hits (acc: summed log-likelihood; acc_norm: per character) and the chance level (mean of 1 / choices).</summary>
public sealed record TaskMetrics(string Name, int Items, double Acc, double AccNorm)
{
    public IReadOnlyList<bool> Hits { get; init; } = [];
    public IReadOnlyList<bool> HitsNorm { get; init; } = [];
    public double Chance { get; init; }
}

/// <summary>A multiple-choice item: {"context": ..., "choices": [...], "label": i}.</summary>
public sealed record ChoiceItem(string Context, IReadOnlyList<string> Choices, int Label);

/// <summary>
/// Evaluation (design.md 5): held-out perplexity and next-token accuracy, KL to and top-1 agreement with a
/// reference, and multiple-choice tasks scored as lm-evaluation-harness does (summed log-likelihood of each choice
/// after the context; acc, and acc_norm dividing by the choice's length in characters).
/// </summary>
public static class Evaluator
{
    /// <summary>
    /// Metrics over the first windows of a split (in order): <paramref name="maxTokens"/> tokens, or every whole
    /// window of the split when null. A split too small for the tokens asked for is an error naming it (no fallback).
    /// With <paramref name="referenceStates"/>, the reference's final hidden states are read from it where stored
    /// (the reference does not run) and kept in it where computed: the metrics are the same to the last bit.
    /// </summary>
    public static TokenMetrics Tokens(CausalLm model, CausalLm? reference, TokenDataset data, int seqLen, long? maxTokens, int batch = 8,
        string purpose = "evaluation", long? chunkTokens = null, ReferenceStates? referenceStates = null)
    {
        using var noGrad = no_grad();
        var loader = new TokenBatchLoader(data, seqLen, 0, shuffle: false);
        long rows = maxTokens is { } max ? data.Manifest.RequireWindows(data.Split, max, purpose) : loader.Windows;
        var stats = new WindowStats[rows];
        var referenceStats = reference is null ? null : new WindowStats[rows];
        using var threads = WorkThreads.Enter(purpose);
        for (long start = 0; start < rows; start += batch)
        {
            threads.Step();
            using (NewDisposeScope())
            {
                int n = (int)Math.Min(batch, rows - start);
                var windows = tensor(loader.Next(n), [n, seqLen + 1], device: model.Device);
                var ids = windows.narrow(1, 0, seqLen);
                var targets = windows.narrow(1, 1, seqLen);
                // Final hidden states, then log-softmax a few tokens at a time (TokenChunks): no [n, T, V] tensor.
                var hidden = TokenChunks.FinalHidden(model, ids).reshape(n * seqLen, -1);
                NativeHeap.Trim();                                                                  // each forward leaves its temporaries' pages (NativeHeap)
                Tensor? referenceHidden = null;
                if (reference is not null)
                {
                    referenceHidden = referenceStates?.Read(start * seqLen, n * seqLen, reference.Device);
                    if (referenceHidden is null)
                    {
                        referenceHidden = TokenChunks.FinalHidden(reference, ids.to(reference.Device)).reshape(n * seqLen, -1);
                        NativeHeap.Trim();
                        referenceStates?.Write(start * seqLen, referenceHidden);
                    }
                }
                var t = TokenChunks.Stats(hidden, model.LmHeadWeight, targets.reshape(-1), referenceHidden, reference?.LmHeadWeight, chunkTokens);
                var predicted = t.Predicted.view(n, seqLen);
                float[] nll = t.Nll.view(n, seqLen).sum(1).cpu().data<float>().ToArray();
                long[] correct = predicted.eq(targets).sum(1).cpu().data<long>().ToArray();
                float[]? kl = t.Kl?.view(n, seqLen).sum(1).cpu().data<float>().ToArray();
                long[]? agree = t.ReferencePredicted is { } rp ? predicted.eq(rp.view(n, seqLen)).sum(1).cpu().data<long>().ToArray() : null;
                for (int r = 0; r < n; r++) stats[start + r] = new WindowStats(nll[r], correct[r], kl?[r] ?? 0, agree?[r] ?? 0);
                if (referenceStats is not null)
                {
                    float[] referenceNll = t.ReferenceNll!.view(n, seqLen).sum(1).cpu().data<float>().ToArray();
                    long[] referenceCorrect = t.ReferencePredicted!.view(n, seqLen).eq(targets).sum(1).cpu().data<long>().ToArray();
                    for (int r = 0; r < n; r++) referenceStats[start + r] = new WindowStats(referenceNll[r], referenceCorrect[r], 0, 0);
                }
            }
            NativeHeap.Trim();                                                                      // else the heap grows batch by batch (NativeHeap)
        }
        referenceStates?.Complete();
        long tokens = rows * seqLen;
        return new TokenMetrics(tokens, stats.Sum(w => w.Nll) / tokens, stats.Sum(w => w.Correct) / (double)tokens,
            reference is null ? null : stats.Sum(w => w.Kl) / tokens, reference is null ? null : stats.Sum(w => w.Agree) / (double)tokens)
        {
            Windows = stats,
            Reference = referenceStats is null ? null
                : new TokenMetrics(tokens, referenceStats.Sum(w => w.Nll) / tokens, referenceStats.Sum(w => w.Correct) / (double)tokens, null, null) { Windows = referenceStats },
        };
    }

    public static List<ChoiceItem> ReadTask(string path, int? limit = null)
    {
        if (!File.Exists(path)) throw new PuzzleException($"{path}: task file not found");
        var items = new List<ChoiceItem>();
        int line = 0;
        foreach (string text in File.ReadLines(path))
        {
            line++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            try
            {
                var j = JsonNode.Parse(text)!;
                var choices = j["choices"]!.AsArray().Select(c => c!.GetValue<string>()).ToArray();
                int label = j["label"]!.GetValue<int>();
                if (choices.Length < 2 || label < 0 || label >= choices.Length)
                    throw new PuzzleException($"{path}:{line}: needs at least 2 choices and a label in range (label {label}, {choices.Length} choices)");
                items.Add(new ChoiceItem(j["context"]?.GetValue<string>() ?? "", choices, label));
            }
            catch (Exception e) when (e is JsonException or InvalidOperationException or NullReferenceException)
            {
                throw new PuzzleException($"{path}:{line}: not a task item {{\"context\", \"choices\", \"label\"}}: {e.Message}");
            }
            if (limit is { } l && items.Count >= l) break;
        }
        if (items.Count == 0) throw new PuzzleException($"{path}: no items");
        return items;
    }

    /// <summary>
    /// Scores every item: continuation tokens are those of encode(context + choice) after encode(context), as the
    /// harness does; choices of an item run as one right-padded batch (causal: padding cannot affect real positions).
    /// BOS comes first only where the tokenizer's config adds it; an empty context without BOS is the EOS token, as
    /// lm-evaluation-harness does, so that every continuation token is scored.
    /// </summary>
    public static TaskMetrics Task(CausalLm model, TextTokenizer tokenizer, string name, IReadOnlyList<ChoiceItem> items, int fewShot = 0)
    {
        using var noGrad = no_grad();
        string prefix = string.Concat(items.Take(fewShot).Select(i => i.Context + i.Choices[i.Label] + "\n\n"));
        var evaluated = items.Skip(fewShot).ToList();
        if (evaluated.Count == 0) throw new PuzzleException($"task {name}: no items left after {fewShot} few-shot examples");
        var hits = new bool[evaluated.Count];
        var hitsNorm = new bool[evaluated.Count];
        using var threads = WorkThreads.Enter($"task {name}");
        for (int k = 0; k < evaluated.Count; k++)
        {
            threads.Step();
            var item = evaluated[k];
            var sequences = Sequences(tokenizer, prefix + item.Context, item.Choices, model.Config.MaxPositionEmbeddings, name);
            var scores = LogLikelihoods(model, sequences);
            hits[k] = ArgMax(scores) == item.Label;
            hitsNorm[k] = ArgMax(scores.Select((s, i) => s / Math.Max(1, item.Choices[i].Length)).ToArray()) == item.Label;
        }
        return new TaskMetrics(name, evaluated.Count, hits.Count(h => h) / (double)evaluated.Count, hitsNorm.Count(h => h) / (double)evaluated.Count)
        {
            Hits = hits, HitsNorm = hitsNorm, Chance = evaluated.Average(i => 1.0 / i.Choices.Count),
        };
    }

    /// <summary>The token sequence of each choice after the context, and where its continuation starts (always ≥ 1).</summary>
    public static List<(int[] Ids, int ContinuationStart)> Sequences(TextTokenizer tokenizer, string context, IReadOnlyList<string> choices, int maxLength, string task = "task")
    {
        int[] contextIds = tokenizer.Encode(context);
        bool emptyContext = contextIds.Length == 0;
        if (emptyContext)
        {
            // No context and no BOS: the harness conditions on the end-of-text token instead.
            int? prefixToken = tokenizer.EosIds.Count > 0 ? tokenizer.EosIds[0] : tokenizer.BosId;
            if (prefixToken is not { } p)
                throw new PuzzleException($"{task}: an item has an empty context and the tokenizer has neither an EOS nor a BOS token to condition on");
            contextIds = [p];
        }
        var sequences = new List<(int[] Ids, int ContinuationStart)>();
        foreach (string choice in choices)
        {
            int[] whole = emptyContext ? [] : tokenizer.Encode(context + choice);
            int start = !emptyContext && whole.Length > contextIds.Length && whole.AsSpan(0, contextIds.Length).SequenceEqual(contextIds)
                ? contextIds.Length
                : -1;
            if (start < 0)
            {
                // The boundary merged across context and choice (or there is no context): encode the choice on its own.
                whole = [.. contextIds, .. tokenizer.Encode(choice, addBos: false)];
                start = contextIds.Length;
            }
            if (whole.Length > maxLength) { start -= whole.Length - maxLength; whole = whole[^maxLength..]; }
            sequences.Add((whole, Math.Max(1, start)));
        }
        return sequences;
    }

    static int ArgMax(IReadOnlyList<double> values)
    {
        int best = 0;
        for (int i = 1; i < values.Count; i++) if (values[i] > values[best]) best = i;
        return best;
    }

    /// <summary>Σ log p(token | prefix) over each sequence's continuation.</summary>
    static double[] LogLikelihoods(CausalLm model, IReadOnlyList<(int[] Ids, int ContinuationStart)> sequences)
    {
        using var scope = NewDisposeScope();
        int longest = sequences.Max(s => s.Ids.Length);
        var ids = new long[sequences.Count * longest];
        for (int r = 0; r < sequences.Count; r++)
            for (int c = 0; c < sequences[r].Ids.Length; c++) ids[r * longest + c] = sequences[r].Ids[c];
        var input = tensor(ids, [sequences.Count, longest], device: model.Device);
        var hidden = TokenChunks.FinalHidden(model, input);                                        // [R, L, H]; log-probs only where scored
        var result = new double[sequences.Count];
        for (int r = 0; r < sequences.Count; r++)
        {
            var (seq, start) = sequences[r];
            int count = seq.Length - start;
            if (count <= 0) continue;
            var positions = hidden[r].narrow(0, start - 1, count);                                  // predictions of tokens start..end
            var targets = tensor(seq[start..].Select(t => (long)t).ToArray(), device: model.Device);
            result[r] = -TokenChunks.Stats(positions, model.LmHeadWeight, targets).Nll.sum().item<float>();
        }
        return result;
    }
}
