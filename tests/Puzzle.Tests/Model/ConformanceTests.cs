using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Runtime;
using Puzzle.Tokenization;
using static TorchSharp.torch;

namespace Puzzle.Tests.Model;

/// <summary>A real pretrained Llama no one here trained (stories260K) against its oracle outputs.</summary>
public sealed class ConformanceTests
{
    sealed record Reference(string Text, int[] Ids, int[] Argmax, double[] FirstLogits, double MeanNll);

    static Reference ReadReference(string dir)
    {
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "reference_outputs.json")))!;
        return new Reference(
            root["text"]!.GetValue<string>(),
            root["input_ids_with_bos"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray(),
            root["argmax_per_position"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray(),
            root["logits_pos0_first8"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray(),
            root["mean_nll_nats"]!.GetValue<double>());
    }

    [SkippableFact]
    public void Tokenizers_EncodeReferenceText_GiveReferenceIds()
    {
        string dir = TestSupport.Stories260K();
        var reference = ReadReference(dir);
        using var json = TextTokenizer.Load(dir);
        Assert.IsType<HfTokenizer>(json);
        Assert.Equal(reference.Ids, json.Encode(reference.Text));
        using var sentencePiece = new SentencePieceTokenizer(Path.Combine(dir, "tokenizer.model"), TokenizerSettings.Read(dir));
        Assert.Equal(reference.Ids, sentencePiece.Encode(reference.Text));
        Assert.Equal(reference.Text, json.Decode(reference.Ids));
    }

    [SkippableFact]
    public void Forward_ReferenceText_MatchesArgmaxLogitsAndNll()
    {
        string dir = TestSupport.Stories260K();
        var reference = ReadReference(dir);
        using var model = Checkpoint.Load(dir);
        using var scope = NewDisposeScope();
        var ids = tensor(reference.Ids.Select(i => (long)i).ToArray(), [1, reference.Ids.Length]);
        var logits = model.Forward(ids);
        Assert.Equal(reference.Argmax, logits.argmax(-1)[0].data<long>().Select(i => (int)i).ToArray());
        float[] first = logits[0, 0].narrow(0, 0, 8).data<float>().ToArray();
        for (int i = 0; i < 8; i++) Assert.InRange(first[i] - reference.FirstLogits[i], -1e-4, 1e-4);
        var nll = PerplexityEvaluator.Evaluate(model, reference.Ids);
        Assert.Equal(reference.Ids.Length - 1, nll.Tokens);
        Assert.InRange(nll.MeanNll - reference.MeanNll, -1e-4, 1e-4);
    }

    [SkippableFact]
    public void Generate_GreedyFromBos_ReproducesLlama2c()
    {
        string dir = TestSupport.Stories260K();
        string expected = File.ReadAllText(Path.Combine(dir, "reference_greedy200_run_c.txt"));
        expected = expected[..expected.LastIndexOf("achieved tok/s:", StringComparison.Ordinal)];   // speed report, not model output
        using var model = Checkpoint.Load(dir);
        using var tokenizer = TextTokenizer.Load(dir);
        var result = TextGenerator.Generate(model, [[tokenizer.BosId!.Value]], new GenerationOptions { MaxNewTokens = 200, StopAtEos = false }, tokenizer.EosIds);
        Assert.Equal(200, result.NewTokens[0].Length);
        Assert.Equal(expected, tokenizer.Decode(result.NewTokens[0]));
    }
}
