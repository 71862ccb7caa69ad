using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Model;
using static TorchSharp.torch;

namespace Puzzle.Tests.Reliability;

/// <summary>Positions past the first RoPE table (4096) work up to max_position_embeddings; past it is a clear error.</summary>
public sealed class LongContextTests
{
    static ModelConfig LongConfig(int vocab = 96) => new()
    {
        VocabSize = vocab, HiddenSize = 16, NumAttentionHeads = 1, HeadDim = 16,
        Blocks = [BlockConfig.Llama(1, 32)], MaxPositionEmbeddings = 8192, BosTokenId = 1, EosTokenIds = [2],
    };

    [Fact]
    public void Rope_GrowsInsideADisposeScope_AndMatchesTheDirectFormula()
    {
        var config = LongConfig();
        using var rope = new RotaryEmbedding(config, CPU);
        // The growth happens inside a caller's dispose scope (a forward pass); the table must survive it.
        for (int round = 0; round < 2; round++)
        {
            using var scope = NewDisposeScope();
            var positions = tensor(new long[] { 0, 4095, 4096, 8191 }).unsqueeze(0);
            var (cos, sin) = rope.For(positions, ScalarType.Float32);
            Assert.Equal(new long[] { 1, 1, 4, 16 }, cos.shape);
            float inv0 = rope.InverseFrequencies[0], inv3 = rope.InverseFrequencies[3];
            Assert.Equal(Math.Cos(8191.0 * inv0), cos[0, 0, 3, 0].item<float>(), 3);
            Assert.Equal(Math.Sin(4096.0 * inv3), sin[0, 0, 2, 3].item<float>(), 3);
        }
        var error = Assert.Throws<PuzzleException>(() => rope.For(tensor(new long[] { 8192 }).unsqueeze(0), ScalarType.Float32));
        Assert.Contains("position 8192 is past the model's context: config max_position_embeddings is 8192", error.Message);
    }

    [Fact]
    public void Forward_At8kPositions_MatchesTheCachedDecodeOfTheSameTokens()
    {
        using var model = TestSupport.Build(LongConfig());
        using var noGrad = no_grad();
        var ids = TestSupport.RandomIds(1, 8192, 96, seed: 3);
        using var full = model.Forward(ids, lastOnly: true);                       // one forward over all 8192 positions
        Assert.True(full.isfinite().all().item<bool>());
        // The same last position through the KV cache: prefill 8190 positions (table grown in the scope), then 2 decode steps.
        using var cache = model.NewCache(1, 8192);
        model.Forward(ids.narrow(1, 0, 8190), cache, lastOnly: true).Dispose();
        model.Forward(ids.narrow(1, 8190, 1), cache, lastOnly: true).Dispose();
        using var last = model.Forward(ids.narrow(1, 8191, 1), cache, lastOnly: true);
        Assert.True(TestSupport.MaxAbsDiff(full, last) < 1e-3, $"max diff {TestSupport.MaxAbsDiff(full, last)}");
        var error = Assert.Throws<PuzzleException>(() => model.Forward(ids.narrow(1, 0, 1), cache).Dispose());
        Assert.Contains("8193 positions are past the model's context: config max_position_embeddings is 8192", error.Message);
    }

    [SkippableFact]
    public void Perplexity_OfAnEightThousandTokenText_Succeeds_ThroughTheCli()
    {
        string stories = TestSupport.Stories260K();
        string tiny = Path.Combine(TestSupport.SharedDir()!, "data", "tinystories-val.txt");
        // A parent with stories260K's tokenizer and an 8k context (random weights: the numbers only need to be finite).
        string dir = TestSupport.TempDir();
        using (var model = TestSupport.Build(LongConfig(vocab: 512)))
            Checkpoint.SaveLlama(model, dir, tokenizerDir: stories);
        string text = Path.Combine(TestSupport.TempDir(), "long.txt");
        File.WriteAllText(text, File.ReadAllText(tiny)[..60_000]);
        var result = InProcessCli.Run(TimeSpan.FromSeconds(120), "perplexity", dir, "--text", text, "--max-tokens", "9000", "--json");
        Assert.True(result.Code == 0, result.Stderr);
        var json = JsonNode.Parse(result.Stdout)!;
        Assert.Equal(8999, json["tokens"]!.GetValue<long>());
        double nll = json["mean_nll"]!.GetValue<double>();
        Assert.InRange(nll, 0.5 * Math.Log(512), 2 * Math.Log(512));               // an untrained model: about ln(vocab)

        // generate across position 4096 (the first table's end) in the decode loop.
        string prompt = string.Concat(Enumerable.Repeat("Once upon a time there was a girl. ", 420));
        result = InProcessCli.Run(TimeSpan.FromSeconds(120), "generate", dir, "--prompt", prompt, "--max-new-tokens", "200");
        Assert.True(result.Code == 0, result.Stderr);
        Assert.Contains("200 tokens", result.Stderr);
    }

    /// <summary>The real program as a process: exit code, one stderr line, nothing on stdout, for a few corpus cases.</summary>
    [SkippableFact]
    public void BadInput_AsARealProcess_ExitsNonZero_WithOneLine()
    {
        string stories = TestSupport.Stories260K();
        string text = Path.Combine(TestSupport.TempDir(), "t.txt");
        File.WriteAllBytes(text, [0x4f, 0x6e, 0xff, 0x20, 0x75]);
        var (code, stdout, stderr) = TestSupport.RunCli("perplexity", stories, "--text", text);
        Assert.Equal(1, code);
        Assert.Equal("", stdout);
        Assert.Equal($"error: {text}: not UTF-8 text (invalid byte 0xFF at offset 2)", stderr.Trim());

        string model = TestSupport.TempDir();
        foreach (string file in Directory.GetFiles(stories)) File.Copy(file, Path.Combine(model, Path.GetFileName(file)));
        File.WriteAllText(Path.Combine(model, "config.json"), File.ReadAllText(Path.Combine(stories, "config.json")).Replace("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": \"yes\""));
        (code, stdout, stderr) = TestSupport.RunCli("info", model);
        Assert.Equal(1, code);
        Assert.Equal($"error: {Path.Combine(model, "config.json")}: tie_word_embeddings must be true or false, got \"yes\"", stderr.Trim());

        (code, _, stderr) = TestSupport.RunCli("generate", stories, "--prompt", "Once", "--top-p", "NaN");
        Assert.Equal(1, code);
        Assert.Equal("error: --top-p must be in (0, 1], got NaN", stderr.Trim());
    }
}
