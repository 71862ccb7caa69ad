using System.Text.Json;
using System.Text.Json.Nodes;
using Puzzle.Data;
using Puzzle.Model;
using Puzzle.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Stages.Evaluation;

public sealed record TokenMetrics(long Tokens, double MeanNll, double NextTokenAccuracy, double? KlToReference, double? Top1Agreement)
{
    public double Perplexity => Math.Exp(MeanNll);
}

public sealed record TaskMetrics(string Name, int Items, double Acc, double AccNorm);

/// <summary>A multiple-choice item: {"context": ..., "choices": [...], "label": i}.</summary>
public sealed record ChoiceItem(string Context, IReadOnlyList<string> Choices, int Label);

/// <summary>
/// Evaluation (design.md 5): held-out perplexity and next-token accuracy, KL to and top-1 agreement with a
/// reference, and multiple-choice tasks scored as lm-evaluation-harness does (summed log-likelihood of each choice
/// after the context; acc, and acc_norm dividing by the choice's length in characters).
/// </summary>
public static class Evaluator
{
    /// <summary>Metrics over the first windows of a split (in order).</summary>
    public static TokenMetrics Tokens(CausalLm model, CausalLm? reference, TokenDataset data, int seqLen, long maxTokens, int batch = 8)
    {
        using var noGrad = no_grad();
        var loader = new TokenBatchLoader(data, seqLen, 0, shuffle: false);
        long rows = Math.Clamp(maxTokens / seqLen, 1, loader.Windows);
        double nll = 0, correct = 0, kl = 0, agree = 0;
        for (long start = 0; start < rows; start += batch)
        {
            using var scope = NewDisposeScope();
            int n = (int)Math.Min(batch, rows - start);
            var windows = tensor(loader.Next(n), [n, seqLen + 1], device: model.Device);
            var ids = windows.narrow(1, 0, seqLen);
            var targets = windows.narrow(1, 1, seqLen);
            var logq = model.Forward(ids).to(ScalarType.Float32).log_softmax(-1);
            nll -= logq.gather(-1, targets.unsqueeze(-1)).sum().item<float>();
            correct += logq.argmax(-1).eq(targets).sum().item<long>();
            if (reference is not null)
            {
                var logp = reference.Forward(ids.to(reference.Device)).to(ScalarType.Float32).log_softmax(-1).to(model.Device);
                kl += (logp.exp() * (logp - logq)).sum().item<float>();
                agree += logq.argmax(-1).eq(logp.argmax(-1)).sum().item<long>();
            }
        }
        long tokens = rows * seqLen;
        return new TokenMetrics(tokens, nll / tokens, correct / tokens, reference is null ? null : kl / tokens, reference is null ? null : agree / tokens);
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
    /// </summary>
    public static TaskMetrics Task(CausalLm model, TextTokenizer tokenizer, string name, IReadOnlyList<ChoiceItem> items, int fewShot = 0)
    {
        using var noGrad = no_grad();
        string prefix = string.Concat(items.Take(fewShot).Select(i => i.Context + i.Choices[i.Label] + "\n\n"));
        var evaluated = items.Skip(fewShot).ToList();
        int acc = 0, accNorm = 0;
        foreach (var item in evaluated)
        {
            string context = prefix + item.Context;
            int[] contextIds = tokenizer.Encode(context);
            var sequences = new List<(int[] Ids, int ContinuationStart)>();
            foreach (string choice in item.Choices)
            {
                int[] whole = tokenizer.Encode(context + choice);
                int start = whole.Length > contextIds.Length && whole.AsSpan(0, contextIds.Length).SequenceEqual(contextIds)
                    ? contextIds.Length
                    : -1;
                if (start < 0)
                {
                    // The boundary merged across context and choice: encode the choice on its own.
                    whole = [.. contextIds, .. tokenizer.Encode(choice, addBos: false)];
                    start = contextIds.Length;
                }
                int max = model.Config.MaxPositionEmbeddings;
                if (whole.Length > max) { start -= whole.Length - max; whole = whole[^max..]; }
                sequences.Add((whole, Math.Max(1, start)));
            }
            var scores = LogLikelihoods(model, sequences);
            int best = ArgMax(scores);
            int bestNorm = ArgMax(scores.Select((s, i) => s / Math.Max(1, item.Choices[i].Length)).ToArray());
            if (best == item.Label) acc++;
            if (bestNorm == item.Label) accNorm++;
        }
        return new TaskMetrics(name, evaluated.Count, acc / (double)evaluated.Count, accNorm / (double)evaluated.Count);
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
        var logp = model.Forward(input).to(ScalarType.Float32).log_softmax(-1).cpu();             // [R, L, V]
        var result = new double[sequences.Count];
        for (int r = 0; r < sequences.Count; r++)
        {
            var (seq, start) = sequences[r];
            int count = seq.Length - start;
            if (count <= 0) continue;
            var positions = logp[r].narrow(0, start - 1, count);                                    // predictions of tokens start..end
            var targets = tensor(seq[start..].Select(t => (long)t).ToArray()).unsqueeze(-1);
            result[r] = positions.gather(-1, targets).sum().item<float>();
        }
        return result;
    }
}
