using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Puzzle.Data;
using Puzzle.IO;
using Puzzle.Runtime;
using Puzzle.Tokenization;

namespace Puzzle.Stages.Evaluation;

/// <summary>
/// An in-domain multiple-choice task built from a split's own documents (for the demo: the held-out test addresses):
/// a passage of consecutive sentences, then its true next sentence among distractor sentences of similar length taken
/// from other documents of the same split. Seeded, so the same data always gives the same items.
/// </summary>
public static partial class ContinuationTask
{
    /// <summary>Sentences outside this length range (characters) are not used as choices.</summary>
    const int MinSentenceChars = 24, MaxSentenceChars = 320;

    [GeneratedRegex(@"(?<=[.!?][""')\]]?)\s+")]
    private static partial Regex SentenceEnd();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();

    public static string Name(string split) => $"{split}_continuation";

    /// <summary>
    /// <paramref name="items"/> items of <paramref name="choices"/> choices; fails with a clear error when the split
    /// cannot give that many (too few documents or sentences).
    /// </summary>
    public static List<ChoiceItem> Build(TokenDataset data, TextTokenizer tokenizer, int items, long seed, int choices = 4, int contextChars = 400)
    {
        if (items <= 0) throw new PuzzleException($"continuation task: items must be positive, got {items}");
        if (choices < 2) throw new PuzzleException($"continuation task: needs at least 2 choices, got {choices}");
        long[] starts = data.DocumentStarts();
        var documents = new List<string[]>();
        for (int d = 0; d < starts.Length; d++)
        {
            long end = d + 1 < starts.Length ? starts[d + 1] : data.Tokens;
            var ids = new long[end - starts[d]];
            data.Read(starts[d], ids);
            string text = Whitespace().Replace(tokenizer.Decode(ids.Select(i => (int)i).ToArray()), " ").Trim();
            documents.Add(SentenceEnd().Split(text).Select(x => x.Trim()).Where(x => x.Length > 0).ToArray());
        }
        string where = $"{data.Manifest.ManifestPath}: split '{data.Split}'";
        if (documents.Count < 2)
            throw new PuzzleException($"{where} has {documents.Count} document(s); the continuation task needs at least 2 (distractors come from other documents)");

        bool Usable(string s) => s.Length is >= MinSentenceChars and <= MaxSentenceChars;
        var targets = new List<(int Doc, int Index)>();
        for (int d = 0; d < documents.Count; d++)
            for (int i = 1; i < documents[d].Length; i++)
                if (Usable(documents[d][i])) targets.Add((d, i));
        var random = new Random((int)(Hashing.UnitInterval(seed, "continuation task") * int.MaxValue));
        var order = targets.ToArray();
        random.Shuffle(order);

        var result = new List<ChoiceItem>();
        foreach (var (doc, index) in order)
        {
            if (result.Count == items) break;
            string truth = documents[doc][index];
            // Distractors: sentences of other documents within 2/3x..3/2x of the true sentence's length (no length cue).
            var pool = new List<string>();
            for (int attempt = 0; attempt < 200 && pool.Count < choices - 1; attempt++)
            {
                int other = random.Next(documents.Count);
                if (other == doc || documents[other].Length == 0) continue;
                string candidate = documents[other][random.Next(documents[other].Length)];
                if (Usable(candidate) && candidate.Length * 3 >= truth.Length * 2 && candidate.Length * 2 <= truth.Length * 3 && !pool.Contains(candidate) && candidate != truth)
                    pool.Add(candidate);
            }
            if (pool.Count < choices - 1) continue;
            var context = new List<string> { documents[doc][index - 1] };
            for (int i = index - 2; i >= 0 && context.Sum(c => c.Length + 1) + documents[doc][i].Length <= contextChars; i--)
                context.Insert(0, documents[doc][i]);
            int label = random.Next(choices);
            pool.Insert(label, truth);
            result.Add(new ChoiceItem(string.Join(" ", context), pool.Select(c => " " + c).ToArray(), label));
        }
        if (result.Count < items)
            throw new PuzzleException($"{where} ({documents.Count} documents, {targets.Count} usable sentences) yields {result.Count} continuation items, " +
                                      $"but {items} were asked for; lower evaluation.continuation_items or prepare a larger test split");
        return result;
    }

    /// <summary>Writes the items as task jsonl ({"context", "choices", "label"}), the format `puzzle eval --tasks` reads.</summary>
    public static void Write(string path, IEnumerable<ChoiceItem> items) =>
        AtomicFile.WriteAllText(path, string.Concat(items.Select(i => new JsonObject
        {
            ["context"] = i.Context, ["choices"] = new JsonArray(i.Choices.Select(c => (JsonNode)c).ToArray()), ["label"] = i.Label,
        }.ToJsonString() + "\n")));
}
