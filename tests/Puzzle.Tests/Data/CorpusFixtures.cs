using Puzzle.Tokenization;

namespace Puzzle.Tests.Data;

/// <summary>Small synthetic corpora and a tokenizer trained on them (no dependency on ../shared).</summary>
internal static class CorpusFixtures
{
    static readonly string[] Subjects = ["the cat", "a dog", "the bird", "my friend", "the old man", "a small child"];
    static readonly string[] Verbs = ["sees", "likes", "finds", "follows", "watches", "helps"];
    static readonly string[] Objects = ["the ball", "a tree", "the river", "some bread", "the red house", "a green hat"];

    public static string Document(int index, int sentences = 12)
    {
        var random = new Random(index);
        var parts = new List<string> { $"Story number {index}." };
        for (int i = 0; i < sentences; i++)
            parts.Add($"{Subjects[random.Next(Subjects.Length)]} {Verbs[random.Next(Verbs.Length)]} {Objects[random.Next(Objects.Length)]}.");
        return string.Join(" ", parts);
    }

    /// <summary>A folder of .txt documents.</summary>
    public static string TextFolder(int documents = 40, int sentences = 12)
    {
        string dir = TestSupport.TempDir();
        for (int i = 0; i < documents; i++) File.WriteAllText(Path.Combine(dir, $"doc{i:D3}.txt"), Document(i, sentences));
        return dir;
    }

    /// <summary>A byte-level BPE tokenizer trained on <paramref name="corpus"/>.</summary>
    public static string Tokenizer(string corpus, int vocabSize = 400)
    {
        string dir = TestSupport.TempDir();
        BpeTrainer.Train([corpus], vocabSize, dir, log: _ => { });
        return dir;
    }
}
