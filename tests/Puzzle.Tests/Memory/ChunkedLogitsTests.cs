using Puzzle.Checkpoints;
using Puzzle.Data;
using Puzzle.Model;
using Puzzle.Runtime;
using Puzzle.Stages.Evaluation;
using Puzzle.Tests.Data;
using Puzzle.Training;
using Xunit;
using static TorchSharp.torch;

namespace Puzzle.Tests.Memory;

/// <summary>
/// GKD, evaluation and perplexity take log-softmax a few tokens at a time (no [tokens, V] tensor); here against the
/// whole-logits computation they replaced, on tiny random models.
/// </summary>
public class ChunkedLogitsTests
{
    static ModelConfig Config(bool tied, int vocab = 96) => TestSupport.TinyParentConfig(tied: tied) with { VocabSize = vocab };

    [Theory]
    [InlineData(false, 5L, 2.0)]     // uneven chunks, the last one short
    [InlineData(true, 5L, 2.0)]      // tied: the LM head's gradient reaches the embedding twice
    [InlineData(true, 1L, 2.0)]
    [InlineData(true, 5L, 1.0)]      // temperature 1: the LM term reuses the KL term's log-softmax
    public void Gkd_chunked_step_gives_the_loss_and_gradients_of_the_whole_logits(bool tied, long chunk, double temperature)
    {
        using var scope = NewDisposeScope();
        using var teacher = TestSupport.Build(Config(tied), seed: 3);
        using var student = TestSupport.Build(Config(tied), seed: 4);
        var ids = TestSupport.RandomIds(3, 12, 96, 5);
        var targets = TestSupport.RandomIds(3, 12, 96, 6);
        var o = new DistillOptions { TeacherDir = "", StudentDir = "", DataDir = "", OutDir = "", LmWeight = 0.5, Temperature = temperature, ChunkTokens = chunk };

        double chunked = Distiller.StepLoss(o, student, teacher, ids, targets);
        var chunkedGrads = student.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.clone());
        student.zero_grad();

        var teacherStates = new List<Tensor>();
        Tensor teacherLogits;
        using (no_grad()) teacherLogits = teacher.Forward(ids, hiddenStates: teacherStates);
        var studentStates = new List<Tensor>();
        var whole = Distiller.Loss(o, student.Forward(ids, hiddenStates: studentStates), teacherLogits, studentStates, teacherStates, targets);
        whole.backward();

        Assert.Equal(whole.item<float>(), chunked, 4);
        Assert.True(whole.item<float>() > 0.1, $"the loss is not trivial: {whole.item<float>()}");
        foreach (var (name, p) in student.named_parameters())
        {
            var expected = p.grad!;
            Assert.True(expected.abs().max().item<float>() > 0, $"{name} gets a gradient");
            Assert.True(allclose(chunkedGrads[name], expected, rtol: 1e-4, atol: 1e-6),
                $"{name}: max difference {(chunkedGrads[name] - expected).abs().max().item<float>()} of {expected.abs().max().item<float>()}");
        }
    }

    static string DataDir()
    {
        string corpus = CorpusFixtures.TextFolder(30);
        string dataDir = TestSupport.TempDir();
        DataPreparer.Prepare(new DataPrepareOptions
        {
            TokenizerDir = CorpusFixtures.Tokenizer(corpus, 320), Inputs = [corpus], OutDir = dataDir, SeqLen = 16, ValidationFraction = 0.2, TestFraction = 0.2,
        }, log: _ => { });
        return dataDir;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Gkd_with_frozen_embeddings_keeps_them_and_trains_the_blocks(bool tied)
    {
        string dataDir = DataDir(), teacherDir = TestSupport.TempDir(), studentDir = TestSupport.TempDir(), outDir = TestSupport.TempDir();
        using (var teacher = TestSupport.Build(Config(tied, vocab: 320), seed: 12)) Checkpoint.SaveDeciLm(teacher, teacherDir);
        using (var student = TestSupport.Build(Config(tied, vocab: 320), seed: 13)) Checkpoint.SaveDeciLm(student, studentDir);
        var result = Distiller.Run(new DistillOptions
        {
            TeacherDir = teacherDir, StudentDir = studentDir, DataDir = dataDir, OutDir = outDir, Tokens = 6 * 4 * 16, Batch = 4, CosineWeight = 0,
            LearningRate = 1e-2, EvalEvery = 6, ValidationTokens = 4 * 16, Precision = "bf16", TrainEmbeddings = false, ChunkTokens = 9,
        }, _ => { });
        Assert.True(result.BestValidationKl < result.InitialValidationKl, $"KL {result.InitialValidationKl} -> {result.BestValidationKl}");
        using var before = Checkpoint.Load(studentDir);
        using var after = Checkpoint.Load(outDir);
        using (var teacher = Checkpoint.Load(teacherDir))
        using (var validation = new TokenDataset(dataDir, "validation"))
        {
            double fp32 = Distiller.ValidationKl(before, teacher, validation, 16, 4 * 16, 4);
            Assert.InRange(result.InitialValidationKl, fp32 * 0.9, fp32 * 1.1);                       // the bf16 working copy got the embeddings too
        }
        var old = before.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in after.named_parameters())
        {
            bool embedding = name.Contains("embed_tokens") || name.Contains("lm_head");
            bool same = p.eq(old[name]).all().item<bool>();
            Assert.True(embedding == same, $"{name}: {(same ? "unchanged" : "changed")}");
        }
    }

    [Fact]
    public void Evaluation_metrics_in_token_chunks_equal_those_of_whole_logits()
    {
        string dataDir = DataDir();
        using var model = TestSupport.Build(Config(tied: true, vocab: 320), seed: 8);
        using var reference = TestSupport.Build(Config(tied: false, vocab: 320), seed: 9);
        using var data = new TokenDataset(dataDir, "validation");
        const int T = 16, rows = 6;

        var chunked = Evaluator.Tokens(model, reference, data, T, rows * T, batch: 4, chunkTokens: 7);

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var loader = new TokenBatchLoader(data, T, 0, shuffle: false);
        var windows = tensor(loader.Next(rows), [rows, T + 1]);
        var ids = windows.narrow(1, 0, T);
        var targets = windows.narrow(1, 1, T);
        var logq = model.Forward(ids).log_softmax(-1);
        var logp = reference.Forward(ids).log_softmax(-1);
        var nll = -logq.gather(-1, targets.unsqueeze(-1)).squeeze(-1);
        var kl = (logp.exp() * (logp - logq)).sum(-1);
        long tokens = rows * T;
        Assert.Equal(tokens, chunked.Tokens);
        Assert.Equal(nll.mean().item<float>(), chunked.MeanNll, 4);
        Assert.Equal(kl.mean().item<float>(), chunked.KlToReference!.Value, 4);
        Assert.Equal(logq.argmax(-1).eq(targets).sum().item<long>() / (double)tokens, chunked.NextTokenAccuracy, tolerance: 1e-10);
        Assert.Equal(logq.argmax(-1).eq(logp.argmax(-1)).sum().item<long>() / (double)tokens, chunked.Top1Agreement!.Value, tolerance: 1e-10);
        for (int r = 0; r < rows; r++)
        {
            Assert.Equal(nll[r].sum().item<float>(), chunked.Windows[r].Nll, 3);
            Assert.Equal(kl[r].sum().item<float>(), chunked.Windows[r].Kl, 3);
        }
        Assert.True(kl.mean().item<float>() > 0.01, "the two models differ");
    }

    [Fact]
    public void Perplexity_in_token_chunks_equals_that_of_whole_logits()
    {
        using var model = TestSupport.Build(Config(tied: false), seed: 10);
        int[] ids = TestSupport.RandomIds(1, 41, 96, 11).data<long>().Select(i => (int)i).ToArray();
        var chunked = PerplexityEvaluator.Evaluate(model, ids, window: 20, chunkTokens: 3);

        using var noGrad = no_grad();
        double total = 0;
        for (int start = 0; start + 1 < ids.Length; start += 19)                       // windows overlap by one token
        {
            int n = Math.Min(20, ids.Length - start);
            var chunk = tensor(ids.Skip(start).Take(n).Select(i => (long)i).ToArray(), [1, n]);
            var logp = model.Forward(chunk.narrow(1, 0, n - 1)).log_softmax(-1).gather(-1, chunk.narrow(1, 1, n - 1).unsqueeze(-1));
            total -= logp.sum().item<float>();
        }
        Assert.Equal(40, chunked.Tokens);
        Assert.Equal(total / 40, chunked.MeanNll, 5);
    }

    [Fact]
    public void Token_chunk_keeps_a_chunk_of_logits_at_2_pow_24_values()
    {
        Assert.Equal(130, TokenChunks.DefaultTokens(128_256));                              // Llama-3 vocabulary: 130 tokens, 64 MiB in fp32
        Assert.Equal(341, TokenChunks.DefaultTokens(49_152));
        Assert.Equal(1, TokenChunks.DefaultTokens(1L << 30));
    }
}
