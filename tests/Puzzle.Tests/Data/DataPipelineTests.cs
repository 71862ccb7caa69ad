using System.Text;
using System.Text.Json.Nodes;
using Parquet;
using Parquet.Schema;
using Puzzle.Data;
using Puzzle.IO;
using Puzzle.Tokenization;

namespace Puzzle.Tests.Data;

public sealed class DataPipelineTests
{
    static DataPrepareResult Prepare(string tokenizer, string[] inputs, string outDir, double validation = 0.2, int seqLen = 16, string field = "text", long seed = 0, double test = 0) =>
        DataPreparer.Prepare(new DataPrepareOptions
        {
            TokenizerDir = tokenizer, Inputs = inputs, OutDir = outDir, SeqLen = seqLen, ValidationFraction = validation, TestFraction = test, TextField = field, Seed = seed,
        }, log: _ => { });

    static long[] AllTokens(string dataDir, string split)
    {
        using var data = new TokenDataset(dataDir, split);
        var tokens = new long[data.Tokens];
        data.Read(0, tokens);
        return tokens;
    }

    [Fact]
    public void Prepare_TextFolder_WritesBosTextEosPerDocument_AndDisjointSplits()
    {
        string corpus = CorpusFixtures.TextFolder(40);
        string tokenizerDir = CorpusFixtures.Tokenizer(corpus);
        string outDir = TestSupport.TempDir();
        var result = Prepare(tokenizerDir, [corpus], outDir, test: 0.2);
        using var tokenizer = TextTokenizer.Load(tokenizerDir);
        Assert.Equal("uint16", result.Manifest.TokenDtype);
        var train = result.Manifest.Splits["train"];
        var validation = result.Manifest.Splits["validation"];
        var test = result.Manifest.Splits["test"];
        Assert.Equal(40, train.Documents + validation.Documents + test.Documents);
        Assert.InRange(validation.Documents, 2, 16);
        Assert.InRange(test.Documents, 2, 16);

        // Decode each split back into documents: every document appears whole, in exactly one split.
        var seen = new Dictionary<string, string>();
        foreach (string split in new[] { "train", "validation", "test" })
        {
            long[] tokens = AllTokens(outDir, split);
            int bos = tokenizer.BosId!.Value, eos = tokenizer.EosIds[0];
            var current = new List<int>();
            foreach (long t in tokens)
            {
                if (t == bos) { Assert.Empty(current); continue; }
                if (t == eos)
                {
                    string text = tokenizer.Decode(current);
                    string number = text.Split(' ')[2].TrimEnd('.');
                    Assert.Equal(CorpusFixtures.Document(int.Parse(number)), text);
                    Assert.True(seen.TryAdd(number, split), $"document {number} is in {seen.GetValueOrDefault(number)} and {split}");
                    current.Clear();
                    continue;
                }
                current.Add((int)t);
            }
            Assert.Empty(current);
        }
        Assert.Equal(40, seen.Count);
        Assert.Equal(train.Tokens + validation.Tokens + test.Tokens, result.Manifest.Splits.Values.Sum(s => s.Tokens));
        Assert.Equal(2, JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "manifest.json")))!["format_version"]!.GetValue<int>());
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "manifest.json")))!;
        Assert.Equal(40, manifest["sources"]!.AsArray().Count);
        Assert.Equal(64, manifest["sources"]![0]!["sha256"]!.GetValue<string>().Length);
        Assert.True(File.Exists(Path.Combine(outDir, "tokenizer", "tokenizer.json")));
    }

    [Fact]
    public void Prepare_SameSeed_SameSplit_OtherSeed_OtherSplit_AndRerunReuses()
    {
        string corpus = CorpusFixtures.TextFolder(40);
        string tokenizerDir = CorpusFixtures.Tokenizer(corpus);
        string a = TestSupport.TempDir(), b = TestSupport.TempDir(), c = TestSupport.TempDir();
        Prepare(tokenizerDir, [corpus], a);
        Prepare(tokenizerDir, [corpus], b);
        Prepare(tokenizerDir, [corpus], c, seed: 99);
        Assert.Equal(AllTokens(a, "validation"), AllTokens(b, "validation"));
        Assert.NotEqual(AllTokens(a, "validation"), AllTokens(c, "validation"));
        Assert.True(Prepare(tokenizerDir, [corpus], a).Reused);
        Assert.False(Prepare(tokenizerDir, [corpus], a, seqLen: 32).Reused);                    // settings changed: redone
    }

    [Fact]
    public void TestSplit_TakesOnlyTrainDocuments_KeepsValidation_AndDocumentStartsFindEveryDocument()
    {
        string corpus = CorpusFixtures.TextFolder(40);
        string tokenizerDir = CorpusFixtures.Tokenizer(corpus);
        string without = TestSupport.TempDir(), with = TestSupport.TempDir();
        Prepare(tokenizerDir, [corpus], without, test: 0);
        var result = Prepare(tokenizerDir, [corpus], with, test: 0.25);
        Assert.Equal(AllTokens(without, "validation"), AllTokens(with, "validation"));              // growing the test split moves no validation document
        using var tokenizer = TextTokenizer.Load(tokenizerDir);
        HashSet<string> Documents(string dir, string split)
        {
            using var data = new TokenDataset(dir, split);
            long[] starts = data.DocumentStarts();
            long[] all = AllTokens(dir, split);
            var texts = starts.Select((s, i) => tokenizer.Decode(all[(int)s..(int)(i + 1 < starts.Length ? starts[i + 1] : all.Length)].Select(t => (int)t).ToArray())).ToHashSet();
            Assert.Equal(DataManifest.Read(dir).Splits[split].Documents, starts.Length);
            return texts;
        }
        var test = Documents(with, "test");
        Assert.Equal(result.Manifest.Splits["test"].Documents, test.Count);
        Assert.InRange(test.Count, 3, 20);
        Assert.Subset(Documents(without, "train"), test);                                           // test documents come from the old train split
        Assert.Empty(test.Intersect(Documents(with, "train")));
        Assert.All(test, t => Assert.StartsWith("Story number", t));

        // Old data directories (format 1, no test split) and too-small splits: one clear line each.
        string manifestPath = Path.Combine(without, "manifest.json");
        var old = JsonNode.Parse(File.ReadAllText(manifestPath))!.AsObject();
        old["format_version"] = 1;
        old["splits"]!.AsObject().Remove("test");
        File.WriteAllText(manifestPath, old.ToJsonString());
        string message = Assert.Throws<PuzzleException>(() => new TokenDataset(without, "test")).Message;
        Assert.Contains($"{manifestPath}: no 'test' split (data format 1", message);
        Assert.Contains("re-prepare it with `puzzle data prepare`", message);
        var manifest = DataManifest.Read(with);
        long validationTokens = manifest.Splits["validation"].Tokens;
        message = Assert.Throws<PuzzleException>(() => manifest.RequireWindows("validation", validationTokens + 64, "scoring (scoring.validation_tokens)")).Message;
        Assert.Contains($"split 'validation' holds {validationTokens:N0} tokens ({(validationTokens - 1) / 16} windows of 16), but scoring (scoring.validation_tokens) needs " +
                        $"{(validationTokens + 64) / 16 * 16:N0} tokens", message);
        Assert.Equal((int)((validationTokens - 1) / 16), manifest.RequireWindows("validation", (validationTokens - 1) / 16 * 16, "x"));
    }

    [Fact]
    public void TxtParagraphs_AreDocuments_WhenAsked()
    {
        string dir = TestSupport.TempDir();
        string file = Path.Combine(dir, "stories.txt");
        File.WriteAllText(file, "first story line one\nline two\n\n\nsecond story\n  \nthird story\n");
        var parts = new DocumentSources([file], txtDocuments: "paragraphs").Read().ToList();
        Assert.Equal(["first story line one\nline two", "second story", "third story"], parts.Select(p => p.Text));
        Assert.Equal(["stories.txt#0", "stories.txt#1", "stories.txt#2"], parts.Select(p => p.DocumentKey));
        Assert.All(parts, p => Assert.True(p.IsFirst && p.IsLast));
        Assert.Single(new DocumentSources([file]).Read());                                           // default: the file is one document
        Assert.Contains("data.txt_documents 'lines'", Assert.Throws<PuzzleException>(() => new DocumentSources([file], txtDocuments: "lines")).Message);
    }

    [Fact]
    public void Prepare_BadInputs_AreCountedAndReported()
    {
        string corpus = CorpusFixtures.TextFolder(10);
        string tokenizerDir = CorpusFixtures.Tokenizer(corpus);
        string bad = TestSupport.TempDir();
        File.WriteAllText(Path.Combine(bad, "empty.txt"), "");
        File.WriteAllBytes(Path.Combine(bad, "latin1.txt"), [0x63, 0x61, 0x66, 0xE9, 0x20, 0x6F, 0x6B]);   // "café ok" in Latin-1
        File.WriteAllText(Path.Combine(bad, "docs.jsonl"), string.Join("\n",
            """{"text": "a good document about the cat"}""",
            """{"text": "another good one"}""",
            "this is not json",
            """{"body": "no text field"}""",
            """{"text": 42}""",
            """["an array"]""",
            "",
            """{"text": "   "}"""));
        string outDir = TestSupport.TempDir();
        var result = Prepare(tokenizerDir, [corpus, bad], outDir, validation: 0);
        var skips = result.Skips.Counts;
        Assert.Equal(1, skips["empty file"]);
        Assert.Equal(1, skips["invalid UTF-8"]);
        Assert.Equal(1, skips["line is not valid JSON"]);
        Assert.Equal(1, skips["no 'text' field"]);
        Assert.Equal(1, skips["'text' is not a string"]);
        Assert.Equal(1, skips["line is not a JSON object"]);
        Assert.Equal(1, skips["empty document (whitespace only)"]);
        Assert.Contains(result.Skips.Examples, e => e.Contains("docs.jsonl:3") && e.Contains("not valid JSON"));
        Assert.Contains(result.Skips.Examples, e => e.Contains("latin1.txt") && e.Contains("near byte 3"));
        Assert.Equal(12, result.Manifest.Splits["train"].Documents);                        // 10 txt + 2 good jsonl lines
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "manifest.json")))!;
        Assert.Equal(7, manifest["skipped"]!["total"]!.GetValue<int>());
    }

    static async Task<string> WriteParquet(string column, string[] values)
    {
        string path = Path.Combine(TestSupport.TempDir(), "docs.parquet");
        var field = new DataField<string>(column);
        await using var stream = File.Create(path);
        await using (var writer = await ParquetWriter.CreateAsync(new ParquetSchema(field), stream))
        using (var group = writer.CreateRowGroup())
            await group.WriteAsync(field, values, null);
        return path;
    }

    [Fact]
    public async Task Prepare_Parquet_ReadsTheTextColumn_AndMissingColumnNamesTheColumns()
    {
        string corpus = CorpusFixtures.TextFolder(5);
        string tokenizerDir = CorpusFixtures.Tokenizer(corpus);
        string parquet = await WriteParquet("content", [CorpusFixtures.Document(1), CorpusFixtures.Document(2), ""]);
        var result = Prepare(tokenizerDir, [parquet], TestSupport.TempDir(), validation: 0, field: "content");
        Assert.Equal(2, result.Manifest.Splits["train"].Documents);
        Assert.Equal(1, result.Skips.Counts["empty document (null or whitespace)"]);
        string message = Assert.Throws<PuzzleException>(() => Prepare(tokenizerDir, [parquet], TestSupport.TempDir(), validation: 0)).Message;
        Assert.Contains("no column 'text' (columns: content)", message);
        Assert.Contains("docs.parquet", message);
    }

    [Fact]
    public void Prepare_LargeTextFile_IsStreamedInParts_OneBosOneEos()
    {
        string corpus = CorpusFixtures.TextFolder(5);
        string tokenizerDir = CorpusFixtures.Tokenizer(corpus);
        string big = Path.Combine(TestSupport.TempDir(), "big.txt");
        var text = new StringBuilder();
        for (int i = 0; text.Length < DocumentSources.TextPartChars * 2.5; i++) text.Append(CorpusFixtures.Document(i)).Append('\n');
        File.WriteAllText(big, text.ToString());
        var parts = new DocumentSources([big]).Read().ToList();
        Assert.Equal(3, parts.Count);
        Assert.All(parts, p => Assert.True(p.Text.Length <= DocumentSources.TextPartChars * 2));
        Assert.Equal(text.ToString(), string.Concat(parts.Select(p => p.Text)));
        Assert.True(parts[0].IsFirst && !parts[0].IsLast && parts[2].IsLast && !parts[1].IsFirst);

        string outDir = TestSupport.TempDir();
        var result = Prepare(tokenizerDir, [big], outDir, validation: 0);
        using var tokenizer = TextTokenizer.Load(tokenizerDir);
        long[] tokens = AllTokens(outDir, "train");
        Assert.Equal(1, tokens.Count(t => t == tokenizer.BosId));
        Assert.Equal(1, tokens.Count(t => t == tokenizer.EosIds[0]));
        Assert.Equal(tokenizer.BosId, (int)tokens[0]);
        Assert.Equal(tokenizer.EosIds[0], (int)tokens[^1]);
        Assert.True(result.PeakWorkingSetBytes > 0);
    }

    [Fact]
    public void Prepare_LargeVocabulary_UsesUint32()
    {
        string corpus = CorpusFixtures.TextFolder(5);
        string tokenizerDir = CorpusFixtures.Tokenizer(corpus);
        string path = Path.Combine(tokenizerDir, "tokenizer.json");
        var json = JsonNode.Parse(File.ReadAllText(path))!;
        json["added_tokens"]![1]!["id"] = 70000;                                          // EOS id beyond uint16
        File.WriteAllText(path, json.ToJsonString());
        string outDir = TestSupport.TempDir();
        var result = Prepare(tokenizerDir, [corpus], outDir, validation: 0);
        Assert.Equal("uint32", result.Manifest.TokenDtype);
        Assert.Equal(70000, AllTokens(outDir, "train")[^1]);
    }

    [Fact]
    public void Loader_ServesWindows_Seeded_Resumable_AndCoversAnEpoch()
    {
        string corpus = CorpusFixtures.TextFolder(20);
        string outDir = TestSupport.TempDir();
        Prepare(CorpusFixtures.Tokenizer(corpus), [corpus], outDir, validation: 0, seqLen: 8);
        long[] all = AllTokens(outDir, "train");
        using var data = new TokenDataset(outDir, "train");
        var loader = new TokenBatchLoader(data, 8, seed: 5);
        long windows = loader.Windows;
        Assert.Equal((all.Length - 1) / 8, windows);

        // One epoch serves every window [kT, kT + T] exactly once, in a shuffled order.
        var served = new List<string>();
        for (long n = 0; n < windows; n += 4)
        {
            int rows = (int)Math.Min(4, windows - n);
            long[] batch = loader.Next(rows);
            for (int r = 0; r < rows; r++) served.Add(string.Join(",", batch.AsSpan(r * 9, 9).ToArray()));
        }
        var expectedWindows = Enumerable.Range(0, (int)windows).Select(w => string.Join(",", all.AsSpan(w * 8, 9).ToArray())).ToList();
        Assert.Equal(expectedWindows.Order(StringComparer.Ordinal), served.Order(StringComparer.Ordinal));
        Assert.NotEqual(expectedWindows, served);
        Assert.Equal(new LoaderState(0, windows), loader.State);
        loader.Next(1);
        Assert.Equal(new LoaderState(1, 1), loader.State);                                   // the next epoch begins

        var fresh = new TokenBatchLoader(data, 8, seed: 5);
        fresh.Next(3);
        var state = fresh.State;
        long[] expected = fresh.Next(5);
        var resumed = new TokenBatchLoader(data, 8, seed: 5) { State = state };
        Assert.Equal(expected, resumed.Next(5));
        Assert.NotEqual(expected, new TokenBatchLoader(data, 8, seed: 6) { State = state }.Next(5));
    }

    [Fact]
    public void Inputs_Missing_Or_Unsupported_AreErrors()
    {
        Assert.Contains("/no/such/file.txt: input not found", Assert.Throws<PuzzleException>(() => new DocumentSources(["/no/such/file.txt"])).Message);
        string csv = Path.Combine(TestSupport.TempDir(), "a.csv");
        File.WriteAllText(csv, "x");
        Assert.Contains("unsupported input type", Assert.Throws<PuzzleException>(() => new DocumentSources([csv])).Message);
    }
}
