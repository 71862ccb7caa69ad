using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Puzzle.IO;

namespace Puzzle.Tokenization;

public sealed record BpeTrainingResult(int VocabSize, int Merges, long Words, long UniqueWords, double Seconds);

/// <summary>
/// Byte-level BPE training (GPT-2 / Llama-3 style): GPT-2 regex pre-tokenization, 256 byte tokens, merges of the
/// most frequent adjacent pair (ties: lowest ids first), written as a standard HF tokenizer.json. Neither C#
/// tokenizer library trains BPE, so it is done here.
/// </summary>
public static partial class BpeTrainer
{
    public const string BosToken = "<|begin_of_text|>";
    public const string EosToken = "<|end_of_text|>";

    [GeneratedRegex(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")]
    private static partial Regex Gpt2Split();

    /// <summary>GPT-2's reversible byte -> printable character map used by byte-level BPE.</summary>
    public static readonly string[] ByteToUnicode = BuildByteMap();

    static string[] BuildByteMap()
    {
        var printable = Enumerable.Range('!', '~' - '!' + 1).Concat(Enumerable.Range('¡', '¬' - '¡' + 1)).Concat(Enumerable.Range('®', 'ÿ' - '®' + 1)).ToHashSet();
        var map = new string[256];
        int extra = 0;
        for (int b = 0; b < 256; b++) map[b] = ((char)(printable.Contains(b) ? b : 256 + extra++)).ToString();
        return map;
    }

    /// <summary>Word frequencies after pre-tokenization.</summary>
    public static Dictionary<string, long> CountWords(IEnumerable<string> texts)
    {
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (string text in texts)
            foreach (Match m in Gpt2Split().Matches(text))
                counts[m.Value] = counts.GetValueOrDefault(m.Value) + 1;
        return counts;
    }

    /// <summary>Learns merges until <paramref name="mergeBudget"/> merges exist or no pair occurs twice.</summary>
    public static List<(int Left, int Right)> LearnMerges(IReadOnlyDictionary<string, long> wordCounts, int mergeBudget)
    {
        var words = new List<int[]>();
        var freqs = new List<long>();
        foreach (var (word, count) in wordCounts.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            words.Add(Encoding.UTF8.GetBytes(word).Select(b => (int)b).ToArray());
            freqs.Add(count);
        }
        var pairCounts = new Dictionary<(int, int), long>();
        var pairWords = new Dictionary<(int, int), HashSet<int>>();
        void AddPairs(int w, long sign)
        {
            var symbols = words[w];
            for (int i = 0; i + 1 < symbols.Length; i++)
            {
                var pair = (symbols[i], symbols[i + 1]);
                pairCounts[pair] = pairCounts.GetValueOrDefault(pair) + sign * freqs[w];
                if (sign > 0)
                {
                    if (!pairWords.TryGetValue(pair, out var set)) pairWords[pair] = set = new HashSet<int>();
                    set.Add(w);
                }
            }
        }
        for (int w = 0; w < words.Count; w++) AddPairs(w, +1);

        // Max-heap by count, ties to the lowest (left, right); stale entries are skipped when popped.
        var heap = new PriorityQueue<(int, int), (long, int, int)>(Comparer<(long, int, int)>.Create((x, y) =>
            x.Item1 != y.Item1 ? y.Item1.CompareTo(x.Item1) : x.Item2 != y.Item2 ? x.Item2.CompareTo(y.Item2) : x.Item3.CompareTo(y.Item3)));
        foreach (var (pair, count) in pairCounts) heap.Enqueue(pair, (count, pair.Item1, pair.Item2));

        var merges = new List<(int, int)>();
        while (merges.Count < mergeBudget && heap.TryDequeue(out var best, out var priority))
        {
            long current = pairCounts.GetValueOrDefault(best);
            if (current != priority.Item1) continue;                                       // stale
            if (current < 2) break;                                                        // nothing left worth merging
            int merged = 256 + merges.Count;
            merges.Add(best);
            var touched = new HashSet<(int, int)>();
            foreach (int w in pairWords[best].ToArray())
            {
                var symbols = words[w];
                AddPairs(w, -1);
                var updated = new List<int>(symbols.Length);
                for (int i = 0; i < symbols.Length; i++)
                {
                    if (i + 1 < symbols.Length && symbols[i] == best.Item1 && symbols[i + 1] == best.Item2)
                    {
                        updated.Add(merged);
                        i++;
                    }
                    else updated.Add(symbols[i]);
                }
                foreach (var pair in Pairs(symbols)) touched.Add(pair);
                words[w] = [.. updated];
                AddPairs(w, +1);
                foreach (var pair in Pairs(words[w])) touched.Add(pair);
            }
            pairCounts.Remove(best);
            pairWords.Remove(best);
            foreach (var pair in touched)
                if (pairCounts.TryGetValue(pair, out long c) && c > 0) heap.Enqueue(pair, (c, pair.Item1, pair.Item2));
        }
        return merges;
    }

    static IEnumerable<(int, int)> Pairs(int[] symbols)
    {
        for (int i = 0; i + 1 < symbols.Length; i++) yield return (symbols[i], symbols[i + 1]);
    }

    /// <summary>Token strings (byte-level characters) of the 256 bytes followed by every merge.</summary>
    public static List<string> TokenStrings(IReadOnlyList<(int Left, int Right)> merges)
    {
        var tokens = ByteToUnicode.ToList();
        foreach (var (l, r) in merges) tokens.Add(tokens[l] + tokens[r]);
        return tokens;
    }

    /// <summary>Trains on the documents of <paramref name="inputs"/> and writes tokenizer.json + tokenizer_config.json.</summary>
    public static BpeTrainingResult Train(IReadOnlyList<string> inputs, int vocabSize, string outDir, string textField = "text", Action<string>? log = null)
    {
        log ??= Log.Info;
        const int specials = 2;
        if (vocabSize < 256 + specials + 1)
            throw new PuzzleException($"--vocab-size must exceed the 256 byte tokens and {specials} special tokens, got {vocabSize}");
        var clock = Stopwatch.StartNew();
        var sources = new DocumentSources(inputs, textField);
        var counts = CountWords(sources.Read().Select(p => p.Text));
        if (sources.Skips.Total > 0)
            Log.Warning($"tokenizer: skipped {sources.Skips.Total} documents: {string.Join("; ", sources.Skips.Counts.Select(kv => $"{kv.Key}: {kv.Value}"))}");
        long words = counts.Values.Sum();
        log($"tokenizer: {words:N0} words, {counts.Count:N0} distinct, learning up to {vocabSize - 256 - specials} merges");
        if (counts.Count == 0)
            throw new PuzzleException($"{string.Join(", ", inputs)}: no usable text to train a tokenizer on ({sources.Skips.Total} documents skipped: {string.Join("; ", sources.Skips.Counts.Select(kv => $"{kv.Key}: {kv.Value}"))})");
        var merges = LearnMerges(counts, vocabSize - 256 - specials);
        if (merges.Count == 0)
            throw new PuzzleException($"{string.Join(", ", inputs)}: the text supports 0 merges (no byte pair occurs twice in {words:N0} words); give more text");
        if (merges.Count < vocabSize - 256 - specials)
            Log.Warning($"tokenizer: the corpus supports only {merges.Count} merges (no pair occurs twice beyond that); vocabulary is {256 + merges.Count + specials}");
        Write(outDir, merges);
        var result = new BpeTrainingResult(256 + merges.Count + specials, merges.Count, words, counts.Count, clock.Elapsed.TotalSeconds);
        log($"tokenizer: {result.VocabSize} tokens ({result.Merges} merges) in {result.Seconds:F1} s -> {outDir}");
        return result;
    }

    public static void Write(string outDir, IReadOnlyList<(int Left, int Right)> merges)
    {
        var tokens = TokenStrings(merges);
        int bos = tokens.Count, eos = tokens.Count + 1;
        var vocab = new JsonObject();
        for (int i = 0; i < tokens.Count; i++) vocab[tokens[i]] = i;
        JsonObject Special(int id, string content) => new()
        {
            ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
            ["normalized"] = false, ["special"] = true,
        };
        JsonObject ByteLevel(bool prefix) => new()
        {
            ["type"] = "ByteLevel", ["add_prefix_space"] = prefix, ["trim_offsets"] = true, ["use_regex"] = true,
        };
        JsonObject SpecialStep(string token, int typeId) => new() { ["SpecialToken"] = new JsonObject { ["id"] = token, ["type_id"] = typeId } };
        JsonObject SequenceStep(string id, int typeId) => new() { ["Sequence"] = new JsonObject { ["id"] = id, ["type_id"] = typeId } };
        var tokenizer = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = new JsonArray(Special(bos, BosToken), Special(eos, EosToken)),
            ["normalizer"] = null,
            ["pre_tokenizer"] = ByteLevel(false),
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(SpecialStep(BosToken, 0), SequenceStep("A", 0)),
                ["pair"] = new JsonArray(SpecialStep(BosToken, 0), SequenceStep("A", 0), SpecialStep(BosToken, 1), SequenceStep("B", 1)),
                ["special_tokens"] = new JsonObject
                {
                    [BosToken] = new JsonObject { ["id"] = BosToken, ["ids"] = new JsonArray(bos), ["tokens"] = new JsonArray(BosToken) },
                },
            },
            ["decoder"] = ByteLevel(true),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = false,
                ["vocab"] = vocab,
                ["merges"] = new JsonArray(merges.Select(m => (JsonNode)$"{tokens[m.Left]} {tokens[m.Right]}").ToArray()),
            },
        };
        AtomicFile.WriteJson(Path.Combine(outDir, "tokenizer.json"), tokenizer);
        AtomicFile.WriteJson(Path.Combine(outDir, "tokenizer_config.json"), new JsonObject
        {
            ["add_bos_token"] = true,
            ["add_eos_token"] = false,
            ["bos_token"] = BosToken,
            ["eos_token"] = EosToken,
            ["clean_up_tokenization_spaces"] = false,
            ["model_max_length"] = 1 << 20,
            ["tokenizer_class"] = "PreTrainedTokenizerFast",
        });
        AtomicFile.WriteJson(Path.Combine(outDir, "special_tokens_map.json"), new JsonObject
        {
            ["bos_token"] = BosToken,
            ["eos_token"] = EosToken,
        });
    }
}
