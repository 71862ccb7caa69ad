using Puzzle.Tests.Data;
using Puzzle.Tokenization;

namespace Puzzle.Tests.Tokenization;

public sealed class BpeTrainerTests
{
    [Fact]
    public void LearnMerges_SmallCorpus_MatchesHandComputedMerges()
    {
        // "ab ab ab abc" pre-tokenizes to "ab", " ab" x2, " abc". Pair counts: (a,b) 4, (' ',a) 3, (b,c) 1.
        // Merge 1: a+b -> 256. Then (' ',256) 3, (256,c) 1. Merge 2: ' '+256 -> 257. Then only (257,c) 1: stop.
        var counts = BpeTrainer.CountWords(["ab ab ab abc"]);
        Assert.Equal(new Dictionary<string, long> { ["ab"] = 1, [" ab"] = 2, [" abc"] = 1 }, counts);
        var merges = BpeTrainer.LearnMerges(counts, 10);
        Assert.Equal([('a', 'b'), (' ', 256)], merges);
        Assert.Equal(["ab", "Ġab"], BpeTrainer.TokenStrings(merges).Skip(256));
    }

    [Fact]
    public void LearnMerges_Ties_BreakToLowestIds()
    {
        // "xy" and "yx" twice each: (x,y) and (y,x) tie at 2; x < y so (x,y) goes first.
        var merges = BpeTrainer.LearnMerges(new Dictionary<string, long> { ["yx"] = 2, ["xy"] = 2 }, 5);
        Assert.Equal([('x', 'y'), ('y', 'x')], merges);
    }

    [Fact]
    public void LearnMerges_OverlappingPairs_CountedPerOccurrence()
    {
        // "aaaa" x3: (a,a) occurs 3 times per word -> merge a+a; the word becomes [256,256]; then (256,256) x3.
        var merges = BpeTrainer.LearnMerges(new Dictionary<string, long> { ["aaaa"] = 3 }, 5);
        Assert.Equal([('a', 'a'), (256, 256)], merges);
    }

    [Fact]
    public void TrainedTokenizer_LoadsThroughHfTokenizers_AndRoundTrips()
    {
        string corpus = TestSupport.TempDir();
        File.WriteAllText(Path.Combine(corpus, "a.txt"), "ab ab ab abc");
        string dir = TestSupport.TempDir();
        var result = BpeTrainer.Train([corpus], 300, dir, log: _ => { });
        Assert.Equal(256 + 2 + 2, result.VocabSize);                                        // only 2 merges exist
        using var tokenizer = TextTokenizer.Load(dir);
        Assert.IsType<HfTokenizer>(tokenizer);
        Assert.Equal(258, tokenizer.BosId);
        Assert.Equal([259], tokenizer.EosIds);
        Assert.Equal(260, tokenizer.VocabSize);
        Assert.Equal([258, 256, 257, 'c'], tokenizer.Encode("ab abc"));
        string text = "Ünïcödé text, with 123 numbers!\n  and spaces";
        Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
    }

    [Fact]
    public void Train_RealisticCorpus_CompressesText()
    {
        string corpus = CorpusFixtures.TextFolder(20);
        string dir = CorpusFixtures.Tokenizer(corpus, 400);
        using var tokenizer = TextTokenizer.Load(dir);
        string text = CorpusFixtures.Document(3);
        int[] ids = tokenizer.Encode(text, addBos: false);
        Assert.True(ids.Length * 3 < System.Text.Encoding.UTF8.GetByteCount(text), $"{ids.Length} tokens for {text.Length} bytes");
        Assert.Equal(text, tokenizer.Decode(ids));
    }

    [Fact]
    public void Train_VocabTooSmall_Reported() =>
        Assert.Contains("--vocab-size must exceed the 256 byte tokens",
            Assert.Throws<PuzzleException>(() => BpeTrainer.Train([CorpusFixtures.TextFolder(2)], 200, TestSupport.TempDir())).Message);
}
