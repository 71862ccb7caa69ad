using Puzzle.Data;
using Puzzle.Model;
using Puzzle.Runtime;
using Puzzle.Tests.Data;
using Xunit;
using static TorchSharp.torch;

namespace Puzzle.Tests.Runtime;

/// <summary>
/// The reference's final hidden states kept between evaluations (<see cref="ReferenceStates"/>): read back, the metrics
/// equal those of an evaluation that ran the reference, to the last bit, and the reference really does not run.
/// </summary>
public class ReferenceStatesTests
{
    const int T = 16, Rows = 7, Batch = 3;                                   // 3 batches, the last one short

    static ModelConfig Config(bool tied) => TestSupport.TinyParentConfig(tied: tied) with { VocabSize = 320 };

    static string DataDir()
    {
        string corpus = CorpusFixtures.TextFolder(30);
        string dataDir = TestSupport.TempDir();
        DataPreparer.Prepare(new DataPrepareOptions
        {
            TokenizerDir = CorpusFixtures.Tokenizer(corpus, 320), Inputs = [corpus], OutDir = dataDir, SeqLen = T, ValidationFraction = 0.2, TestFraction = 0.2,
        }, log: _ => { });
        return dataDir;
    }

    static TokenMetrics Eval(CausalLm model, CausalLm? reference, TokenDataset data, ReferenceStates? states = null) =>
        Evaluator.Tokens(model, reference, data, T, Rows * T, Batch, chunkTokens: 5, referenceStates: states);

    static void AssertSame(TokenMetrics expected, TokenMetrics actual)
    {
        Assert.Equal(expected.Windows, actual.Windows);                      // per-window sums, exactly (records compare by value)
        Assert.Equal(expected.MeanNll, actual.MeanNll);
        Assert.Equal(expected.KlToReference, actual.KlToReference);
        Assert.Equal(expected.Top1Agreement, actual.Top1Agreement);
    }

    /// <summary>Zeroes one layer's FFN output projection: the reference computes something else from now on (its head is unchanged).</summary>
    static void Alter(CausalLm reference)
    {
        using var noGrad = no_grad();
        var (name, p) = reference.named_parameters().First(x => x.name.Contains("layers.1.mlp.down_proj"));
        p.zero_();
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void InMemory_states_give_the_metrics_of_running_the_reference_and_the_reference_does_not_run_again(bool tied)
    {
        string dataDir = DataDir();
        using var data = new TokenDataset(dataDir, "validation");
        using var model = TestSupport.Build(Config(tied), seed: 21);
        using var reference = TestSupport.Build(Config(tied), seed: 22);
        var plain = Eval(model, reference, data);
        using var states = ReferenceStates.InMemory();
        Assert.False(states.Stored);
        var filling = Eval(model, reference, data, states);
        Assert.True(states.Stored);
        Assert.Equal(Rows * T * 64L * 4, states.Bytes);                       // every row's hidden state, fp32 (hidden 64)
        var reading = Eval(model, reference, data, states);
        AssertSame(plain, filling);
        AssertSame(plain, reading);
        Assert.True(plain.KlToReference > 0.01, $"the two models differ: KL {plain.KlToReference}");

        // Proof that the stored states are what is read: a changed reference gives other metrics when it runs, the stored ones when it does not.
        Alter(reference);
        var rerun = Eval(model, reference, data);
        Assert.NotEqual(plain.KlToReference, rerun.KlToReference);
        AssertSame(plain, Eval(model, reference, data, states));
    }

    [Fact]
    public void The_references_own_metrics_come_from_the_models_pass_exactly()
    {
        string dataDir = DataDir();
        using var data = new TokenDataset(dataDir, "validation");
        using var model = TestSupport.Build(Config(true), seed: 23);
        using var reference = TestSupport.Build(Config(false), seed: 24);
        var joint = Eval(model, reference, data);
        var alone = Eval(reference, null, data);
        Assert.NotNull(joint.Reference);
        Assert.Equal(alone.Windows, joint.Reference!.Windows);
        Assert.Equal(alone.MeanNll, joint.Reference.MeanNll);
        Assert.Equal(alone.NextTokenAccuracy, joint.Reference.NextTokenAccuracy);
        Assert.NotEqual(joint.MeanNll, joint.Reference.MeanNll);
        Assert.Null(alone.Reference);
    }

    [Fact]
    public void A_states_file_is_written_once_read_back_exactly_and_only_for_its_key()
    {
        string dataDir = DataDir();
        using var data = new TokenDataset(dataDir, "validation");
        using var model = TestSupport.Build(Config(true), seed: 25);
        using var reference = TestSupport.Build(Config(true), seed: 26);
        string dir = TestSupport.TempDir();
        string file = Path.Combine(dir, "eval", "reference-states.bin");
        var plain = Eval(model, reference, data);

        using (var writing = ReferenceStates.File(file, "key-a", Rows * T))
        {
            Assert.False(writing.Stored);
            AssertSame(plain, Eval(model, reference, data, writing));
        }
        Assert.True(File.Exists(file));
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(file)!, "*.tmp-*"));

        Alter(reference);
        using (var reading = ReferenceStates.File(file, "key-a", Rows * T))
        {
            Assert.True(reading.Stored);
            Assert.Equal(new FileInfo(file).Length, reading.Bytes);
            AssertSame(plain, Eval(model, reference, data, reading));           // the altered reference did not run
        }
        // Another key (another parent, split or windows): not read; measured and the file rewritten for it.
        using (var other = ReferenceStates.File(file, "key-b", Rows * T))
        {
            Assert.False(other.Stored);
            var measured = Eval(model, reference, data, other);
            Assert.NotEqual(plain.KlToReference, measured.KlToReference);
        }
        using (var rewritten = ReferenceStates.File(file, "key-b", Rows * T)) Assert.True(rewritten.Stored);
        using (var old = ReferenceStates.File(file, "key-a", Rows * T)) Assert.False(old.Stored);
    }

    [Fact]
    public void An_interrupted_pass_leaves_no_states_file_and_a_damaged_or_short_one_is_measured_again()
    {
        string dir = TestSupport.TempDir();
        string file = Path.Combine(dir, "reference-states.bin");
        using (var states = ReferenceStates.File(file, "k", Rows * T))
        {
            using var rows = randn(T * Batch, 32);
            states.Write(0, rows);                                               // the first batch, then the evaluation fails
        }
        Assert.False(File.Exists(file));
        Assert.Empty(Directory.GetFiles(dir));                                   // the temp file is gone too

        File.WriteAllBytes(file, [1, 2, 3, 4, 5]);
        using (var damaged = ReferenceStates.File(file, "k", Rows * T)) Assert.False(damaged.Stored);

        string dataDir = DataDir();
        using var data = new TokenDataset(dataDir, "validation");
        using var model = TestSupport.Build(Config(true), seed: 27);
        using var reference = TestSupport.Build(Config(true), seed: 28);
        var plain = Eval(model, reference, data);
        using (var states = ReferenceStates.File(file, "k", Rows * T)) AssertSame(plain, Eval(model, reference, data, states));
        using (var complete = ReferenceStates.File(file, "k", Rows * T)) Assert.True(complete.Stored);
        // A file cut short, or one for fewer rows, is not read: measured again and replaced.
        using (var fewer = ReferenceStates.File(file, "k", Rows * T + 1)) Assert.False(fewer.Stored);
        using (var stream = new FileStream(file, FileMode.Open)) stream.SetLength(stream.Length - 100);
        using (var truncated = ReferenceStates.File(file, "k", Rows * T))
        {
            Assert.False(truncated.Stored);
            AssertSame(plain, Eval(model, reference, data, truncated));
        }
        using (var replaced = ReferenceStates.File(file, "k", Rows * T)) Assert.True(replaced.Stored);
    }
}
