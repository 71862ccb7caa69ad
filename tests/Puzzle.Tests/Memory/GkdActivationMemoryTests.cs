using Puzzle.Config;
using Puzzle.Model;
using Puzzle.Parents;
using Puzzle.Planning;
using Puzzle.Runtime;
using Puzzle.Training;
using Xunit;
using static TorchSharp.torch;

namespace Puzzle.Tests.Memory;

/// <summary>
/// GKD's activation memory (3 Dec, later): the cosine term keeps one compute-dtype gradient per layer instead of fp32
/// copies of both models' states, the plan counts what the graph holds, and evaluation gives the C heap's free pages back.
/// </summary>
public class GkdActivationMemoryTests
{
    static ModelConfig Tiny(int layers = 3) => TestSupport.TinyParentConfig(layers, tied: true);

    [Theory]
    [InlineData(ScalarType.Float32, 1e-5)]
    [InlineData(ScalarType.BFloat16, 1e-2)]      // bf16 states: the gradients reach the blocks in bf16 either way
    public void Cosine_term_taken_layer_by_layer_gives_the_loss_and_gradients_of_the_whole_graph(ScalarType dtype, double rtol)
    {
        using var scope = NewDisposeScope();
        using var teacher = TestSupport.Build(Tiny(), seed: 3, dtype: dtype);
        using var student = TestSupport.Build(Tiny(), seed: 4, dtype: dtype);
        foreach (var p in teacher.parameters()) p.requires_grad = false;
        var ids = TestSupport.RandomIds(2, 10, 96, 5);
        var o = new DistillOptions { TeacherDir = "", StudentDir = "", DataDir = "", OutDir = "", CosineWeight = 0.7, KlWeight = 0, LmWeight = 0 };

        double stepped = Distiller.StepLoss(o, student, teacher, ids, ids);
        var steppedGrads = student.named_parameters().Where(p => p.parameter.grad is not null)
            .ToDictionary(p => p.name, p => p.parameter.grad!.to(ScalarType.Float32).clone());     // the final norm gets none (no head term)
        student.zero_grad();

        var teacherStates = new List<Tensor>();
        Tensor teacherLogits;
        using (no_grad()) teacherLogits = teacher.Forward(ids, hiddenStates: teacherStates);
        var studentStates = new List<Tensor>();
        var whole = Distiller.Loss(o, student.Forward(ids, hiddenStates: studentStates), teacherLogits, studentStates, teacherStates, ids);
        whole.backward();

        Assert.True(whole.item<float>() > 0.05, $"the loss is not trivial: {whole.item<float>()}");
        Assert.Equal(whole.item<float>(), stepped, 1e-3 * Math.Max(1, Math.Abs(stepped)));
        int compared = 0;
        foreach (var (name, p) in student.named_parameters())
        {
            if (p.grad is null) continue;
            var expected = p.grad.to(ScalarType.Float32);
            if (expected.abs().max().item<float>() == 0) continue;
            Assert.True(steppedGrads.ContainsKey(name), $"{name} gets a gradient from the layer-by-layer cosine term too");
            compared++;
            float scale = expected.abs().max().item<float>();
            float diff = (steppedGrads[name] - expected).abs().max().item<float>();
            Assert.True(diff <= rtol * scale, $"{name} ({dtype}): max difference {diff} of {scale}");
        }
        Assert.True(compared >= 3 * 7, $"gradients compared in every block: {compared}");
    }

    [Fact]
    public void Gkd_plan_counts_the_graph_per_token_and_layer_and_the_scores_twice_in_bf16()
    {
        var smol = RandomParent.Preset("smollm2-135m") with { BosTokenId = 1, EosTokenIds = [2] };
        // Per token and layer in bf16: two RMSNorms (fp32 input + bf16 normalised row and output), attention (q, its grouped
        // copy, the context; k, v), SwiGLU (4 × I), the layer's output and the teacher's state / the cosine gradient.
        long expected = 2 * (4 * 576 + 2 * 2 * 576) + 2 * (3 * 576 + 2 * 3 * 64) + 4 * 2 * 1536 + 2 * 2 * 576;
        Assert.Equal(28_032, expected);
        Assert.Equal(expected, Planner.GkdActivationBytesPerToken(smol, 2));
        Assert.Equal(2 * (4 * 576 + 2 * 4 * 576) + 4 * (3 * 576 + 2 * 3 * 64) + 4 * 4 * 1536 + 2 * 4 * 576, Planner.GkdActivationBytesPerToken(smol, 4));
        Assert.Equal(6, Planner.GkdScoreBytes(2));
        Assert.Equal(4, Planner.GkdScoreBytes(4));

        // Doubling the batch adds one batch of activations and scores (the activation side of the max holds at batch 8+).
        var cal = new Calibration("fixed", 1e10, 2e10, ScalarType.BFloat16, 0, 0, null);
        long Gkd(int batch, int seqLen) => Planner.Plan(smol, new RunConfig { Data = new DataSection { SeqLen = seqLen }, Gkd = new GkdSection { Batch = batch } }, cal)
            .Single(p => p.Stage == "8 distill (GKD)").PeakBytes;
        Assert.Equal(8L * 256 * 30 * expected + 8L * 30 * 9 * 256 * 256 * 6, Gkd(16, 256) - Gkd(8, 256));
        // The scores grow with T², the rest with T.
        Assert.Equal(8L * 128 * 30 * expected + 8L * 30 * 9 * 128 * 128 * 6, Gkd(16, 128) - Gkd(8, 128));
    }

    [Fact]
    public void Evaluation_plan_counts_one_retained_score_tensor_per_layer_on_the_cpu()
    {
        var smol = RandomParent.Preset("smollm2-135m") with { BosTokenId = 1, EosTokenIds = [2] };
        var cal = new Calibration("fixed", 1e10, 2e10, ScalarType.BFloat16, 0, 0, null);
        var run = new RunConfig { Data = new DataSection { SeqLen = 256 } };
        long p = smol.TotalParameters, tokens = 8 * 256, chunk = TokenChunks.DefaultTokens(49_152);
        long expected = 4 * (p + p) + tokens * (8 * 576 + 3 * 1536) * 4 + 8L * 9 * 256 * 256 * 4 * 2 + chunk * 49_152 * 4 * 6
                        + 30 * 8L * 9 * 256 * 256 * 4;                                             // 30 layers' [8, 9, 256, 256] fp32 scores: 0.53 GiB
        Assert.Equal(expected, Planner.Plan(smol, run, cal).Single(s => s.Stage == "9 evaluate + bench").PeakBytes);
    }

    [Fact]
    public void The_c_heap_can_be_trimmed_on_linux()
    {
        if (!OperatingSystem.IsLinux()) return;
        Assert.True(NativeHeap.Available, "glibc's malloc_trim was not found");
        Assert.True(NativeHeap.Trim());
    }
}
