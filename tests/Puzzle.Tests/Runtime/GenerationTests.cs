using Puzzle.Runtime;
using static TorchSharp.torch;

namespace Puzzle.Tests.Runtime;

public sealed class GenerationTests
{
    [Fact]
    public void Greedy_EqualsArgmaxOfFullForwardAtEachStep()
    {
        using var model = TestSupport.Build(TestSupport.TinyChildConfig());
        int[] prompt = [1, 4, 9, 16];
        var result = TextGenerator.Generate(model, [prompt], new GenerationOptions { MaxNewTokens = 5, StopAtEos = false }, []);
        var sequence = prompt.ToList();
        using var noGrad = no_grad();
        foreach (int token in result.NewTokens[0])
        {
            using var scope = NewDisposeScope();
            var logits = model.Forward(tensor(sequence.Select(i => (long)i).ToArray(), [1, sequence.Count]));
            Assert.Equal(logits[0, -1].argmax().item<long>(), token);
            sequence.Add(token);
        }
    }

    [Fact]
    public void Sampling_SameSeedSameTokens_DifferentSeedDiffers()
    {
        using var model = TestSupport.Build(TestSupport.TinyChildConfig());
        int[][] prompts = [[1, 2, 3], [1, 5, 6]];
        GenerationOptions Options(long seed) => new() { MaxNewTokens = 20, Temperature = 1.5, TopP = 0.95, Seed = seed, StopAtEos = false };
        var a = TextGenerator.Generate(model, prompts, Options(42), []);
        var b = TextGenerator.Generate(model, prompts, Options(42), []);
        var c = TextGenerator.Generate(model, prompts, Options(43), []);
        Assert.Equal(a.NewTokens, b.NewTokens);
        Assert.NotEqual(a.NewTokens[0].Concat(a.NewTokens[1]), c.NewTokens[0].Concat(c.NewTokens[1]));
    }

    [Fact]
    public void TopP_TinyMass_KeepsOnlyTheBestToken()
    {
        using var scope = NewDisposeScope();
        var logits = tensor(new float[] { 0.1f, 3f, 2.9f, -1f, 0.5f, 2.95f }, [2, 3]);
        var options = new GenerationOptions { Temperature = 1.0, TopP = 1e-6 };
        var generator = new Generator(1);
        for (int i = 0; i < 20; i++)
            Assert.Equal(new long[] { 1, 2 }, TextGenerator.Sample(logits, options, generator).data<long>().ToArray());
    }

    [Fact]
    public void TopP_DrawsOnlyFromTheNucleus()
    {
        using var scope = NewDisposeScope();
        // probabilities 0.5, 0.3, 0.15, 0.05: top-p 0.7 keeps the first two (0.5 < 0.7 needs the second).
        var probs = tensor(new float[] { 0.5f, 0.3f, 0.15f, 0.05f }, [1, 4]);
        var options = new GenerationOptions { Temperature = 1.0, TopP = 0.7 };
        var generator = new Generator(2);
        var seen = new HashSet<long>();
        for (int i = 0; i < 300; i++) seen.Add(TextGenerator.Sample(probs.log(), options, generator).item<long>());
        Assert.Equal(new HashSet<long> { 0, 1 }, seen);
    }

    [Fact]
    public void Generate_StopsRowsAtEos()
    {
        using var model = TestSupport.Build(TestSupport.TinyChildConfig());
        var greedy = TextGenerator.Generate(model, [[1, 2, 3]], new GenerationOptions { MaxNewTokens = 8, StopAtEos = false }, []);
        int eos = greedy.NewTokens[0][2];
        var stopped = TextGenerator.Generate(model, [[1, 2, 3]], new GenerationOptions { MaxNewTokens = 8 }, [eos]);
        int firstEos = Array.IndexOf(greedy.NewTokens[0], eos);
        Assert.Equal(greedy.NewTokens[0][..(firstEos + 1)], stopped.NewTokens[0]);
    }
}
