using Puzzle.Model;
using Puzzle.Runtime;
using static TorchSharp.torch;

namespace Puzzle.Tests.Runtime;

/// <summary>Tests here change the process's intra-op thread count (set_num_threads): they run alone, not beside other tests.</summary>
[CollectionDefinition(nameof(ProcessThreadsCollection), DisableParallelization = true)]
public sealed class ProcessThreadsCollection;

[Collection(nameof(ProcessThreadsCollection))]
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
    public void Sessions_SteppedAlternately_GiveWhatGenerateGives_AndTimeTheirOwnSteps()
    {
        // What EngineTimer does with PUZZLE_STEPS_PER_TURN: two models' sessions advanced a step each in turn.
        using var a = TestSupport.Build(TestSupport.TinyChildConfig());
        using var b = TestSupport.Build(TestSupport.TinyParentConfig(), seed: 3);
        int[][] prompts = [[1, 4, 9, 16], [2, 3, 5, 7]];
        var options = new GenerationOptions { MaxNewTokens = 6, StopAtEos = false };
        var expectedA = TextGenerator.Generate(a, prompts, options, []);
        var expectedB = TextGenerator.Generate(b, prompts, options, []);
        b.Fuse();                                                                             // a caller's fusion is kept
        var emitted = new List<int[]>();
        using (var sa = new GenerationSession(a, prompts, options, [], emitted.Add))
        using (var sb = new GenerationSession(b, prompts, options, []))
        {
            Assert.True(a.IsFused);                                                           // fused for the session
            double prefill = sa.Prefill();
            sb.Prefill();
            double steps = 0;
            while (!sa.Finished || !sb.Finished)
            {
                if (!sa.Finished) steps += sa.Step();
                if (!sb.Finished) sb.Step();
            }
            Assert.Equal(5, sa.Steps);
            Assert.Equal(expectedA.NewTokens, sa.Result.NewTokens);
            Assert.Equal(expectedB.NewTokens, sb.Result.NewTokens);
            Assert.Equal(prefill, sa.Result.PrefillSeconds);
            Assert.Equal(steps, sa.Result.DecodeSeconds, tolerance: 1e-12);
            Assert.Equal(6, emitted.Count);                                                   // the first tokens, then one per step
            Assert.Equal(expectedA.NewTokens.Select(t => t[^1]), emitted[^1]);
            Assert.Throws<InvalidOperationException>(() => sa.Step());
        }
        Assert.False(a.IsFused);
        Assert.True(b.IsFused);
        b.Unfuse();
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void DecodeStep_OneThreadOrTwo_BitForBit(ScalarType dtype)
    {
        // DecodeThreads may switch the intra-op threads between decode steps: the logits must not depend on it.
        var config = TestSupport.TinyParentConfig() with
        {
            VocabSize = 2048, HiddenSize = 256, NumAttentionHeads = 4, HeadDim = 64,
            Blocks = [BlockConfig.Llama(2, 768), BlockConfig.Llama(1, 512)], MaxPositionEmbeddings = 64,
        };
        using var model = TestSupport.Build(config, dtype: dtype);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var ids = TestSupport.RandomIds(16, 40, 2048, seed: 5);
        int process = get_num_threads();
        model.Fuse();
        Tensor Decode(int threads)
        {
            using var cache = model.NewCache(16, 40);
            model.Forward(ids.narrow(1, 0, 37), cache, lastOnly: true);
            set_num_threads(threads);
            try { return cat([.. Enumerable.Range(37, 3).Select(t => model.Forward(ids.narrow(1, t, 1), cache, lastOnly: true))], 1).to(ScalarType.Float32); }
            finally { set_num_threads(process); }
        }
        var one = Decode(1);
        var two = Decode(2);
        model.Unfuse();
        Assert.Equal(0, TestSupport.MaxAbsDiff(one, two));
    }

    [Fact]
    public void DecodeThreads_ProbesBothCountsThenKeepsTheFaster()
    {
        int process = get_num_threads();
        var chooser = new DecodeThreads(2, null);
        var used = new List<int>();
        try
        {
            for (int step = 0; step < DecodeThreads.ProbeSteps + 4; step++)
            {
                chooser.Begin(step);
                used.Add(chooser.Current);
                if (chooser.Current == 2) Thread.Sleep(5);                                  // two threads made slow on purpose
                chooser.End(step);
            }
        }
        finally
        {
            chooser.Restore();
        }
        Assert.Equal(2, get_num_threads());                                                  // the count it was given back
        set_num_threads(process);
        Assert.Equal([2, 1, 1, 2, 2, 1, 1, 2], used.Take(DecodeThreads.ProbeSteps));
        Assert.All(used.Skip(DecodeThreads.ProbeSteps), t => Assert.Equal(1, t));
        var fixedOne = new DecodeThreads(process, 1);
        fixedOne.Begin(0);
        Assert.Equal(1, get_num_threads());
        fixedOne.Restore();
        Assert.Equal(process, get_num_threads());
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
