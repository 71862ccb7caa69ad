using Puzzle.Checkpoints;
using Puzzle.Config;
using Puzzle.Parents;
using Puzzle.Planning;
using Xunit;
using static TorchSharp.torch;

namespace Puzzle.Tests.Memory;

/// <summary>
/// The plan's time besides computation (docs/memory.md, Time): each stage's process start-up, loading its models (per
/// parameter, into fp32 or the compute dtype) and writing its checkpoints, as calibrated.
/// </summary>
// Planner.Calibrate sets the process's intra-op thread count to 1 while it times loads: not beside other tests.
[Collection(nameof(Puzzle.Tests.Runtime.ProcessThreadsCollection))]
public class PlanOverheadTests
{
    static readonly Puzzle.Model.ModelConfig Llama1B = RandomParent.Preset("llama-3.2-1b") with { BosTokenId = 1, EosTokenIds = [2], TorchDtype = "bfloat16" };

    [Fact]
    public void Start_up_loads_and_writes_are_added_per_stage_as_counted_by_hand()
    {
        var run = new RunConfig
        {
            Search = new SearchSection { MaxParams = 600_000_000 }, Gkd = new GkdSection { TrainEmbeddings = false }, Export = new ExportSection { Formats = ["hf", "gguf"] },
            Evaluation = new EvaluationSection { BenchEngine = "puzzle" },
        };
        var none = new Calibration("fixed", 1e11, 4e11, ScalarType.BFloat16, 0, 0, null)
            { LoadFp32SecondsPerParameter = 0, LoadComputeSecondsPerParameter = 0, WriteBytesPerSecond = double.PositiveInfinity };
        var cal = none with { StartupSeconds = 1.5, LoadFp32SecondsPerParameter = 8e-9, LoadComputeSecondsPerParameter = 5e-9, WriteBytesPerSecond = 4e8 };
        var plans = Planner.Plan(Llama1B, run, cal).ToDictionary(p => p.Stage);
        var bare = Planner.Plan(Llama1B, run, none).ToDictionary(p => p.Stage);
        long P = Llama1B.TotalParameters, child = 600_000_000;
        long embeddings = 128_256L * 2048, trainable = child - embeddings;
        long[] memory = plans.Values.Select(p => p.PeakBytes).ToArray();

        // The computation is the same; what is added is exactly the start-up, the loads and the writes.
        foreach (var (stage, p) in plans)
        {
            Assert.Equal(bare[stage].Seconds + p.StartupSeconds + p.LoadSeconds + p.WriteSeconds, p.Seconds, 6);
            Assert.Equal(bare[stage].PeakBytes, p.PeakBytes);
            Assert.Equal(stage == "9 evaluate + bench" ? 3.0 : 1.5, p.StartupSeconds);               // the bench is a second process
        }
        // BLD: the bf16-stored parent with bf16 units is held in bf16; written: the activation cache and the library.
        Assert.Equal(P * 5e-9, plans["3 library (BLD)"].LoadSeconds, 6);
        Assert.Equal(plans["3 library (BLD)"].DiskBytes / 4e8, plans["3 library (BLD)"].WriteSeconds, 6);
        // GKD: the teacher in bf16, the student's fp32 masters; the fp32 child at step 0, and the masters and moments of
        // the trained parameters at each checkpoint: the default 1M tokens are 244 steps of 16 × 256, checkpoints at
        // steps 100, 200 and 244.
        Assert.Equal(P * 5e-9 + child * 8e-9, plans["8 distill (GKD)"].LoadSeconds, 6);
        Assert.Equal((child * 4.0 + 3 * trainable * 12.0) / 4e8, plans["8 distill (GKD)"].WriteSeconds, 6);
        // Evaluation: parent and child in fp32; the bench: both in the measurement dtype (bf16).
        Assert.Equal((P + child) * (8e-9 + 5e-9), plans["9 evaluate + bench"].LoadSeconds, 6);
        // Export: GKD's fp32 child read and held in bf16 (6 bytes a parameter, as the fp32 load from bf16), written once
        // per format; without GKD the assembled bf16 child is read into bf16 (the compute load).
        Assert.Equal(child * 8e-9, plans["10 export"].LoadSeconds, 6);
        var noGkd = Planner.Plan(Llama1B, run with { Gkd = run.Gkd with { Tokens = 0 } }, cal).ToDictionary(p => p.Stage);
        Assert.Equal(child * 5e-9, noGkd["10 export"].LoadSeconds, 6);
        var fp32 = Planner.Plan(Llama1B, run with { Export = run.Export with { Dtype = "float32" } }, cal).ToDictionary(p => p.Stage);
        Assert.Equal(child * 8e-9 * 8 / 6, fp32["10 export"].LoadSeconds, 6);
        Assert.Equal(child * 2.0 * 2 / 4e8, plans["10 export"].WriteSeconds, 6);
        Assert.Equal(child * 2L * 2, plans["10 export"].DiskBytes);
        // Assembly: every child tensor read, converted to the parent's bf16 and written.
        Assert.Equal(child * 5e-9, plans["7 assemble"].LoadSeconds, 6);
        Assert.Equal(child * 2.0 / 4e8, plans["7 assemble"].WriteSeconds, 6);

        var json = Planner.ToJson(Llama1B, cal, plans.Values.ToList());
        var gkd = json["stages"]!.AsArray().Single(s => s!["stage"]!.GetValue<string>() == "8 distill (GKD)")!;
        Assert.Equal(Math.Round(plans["8 distill (GKD)"].LoadSeconds, 2), gkd["load_seconds"]!.GetValue<double>());
        Assert.Equal(1.5, json["calibration"]!["startup_seconds"]!.GetValue<double>());
    }

    /// <summary>
    /// With llama.cpp in the bench (evaluation.bench_engine both or llama.cpp), the evaluation's plan adds the GGUF export
    /// of parent and child (read per parameter as a load into the compute dtype, written in the measurement dtype) and
    /// llama-batched-bench's rounds; llama.cpp alone drops our bench's loads and rounds.
    /// </summary>
    [Fact]
    public void A_llama_cpp_bench_adds_the_gguf_export_and_its_rounds()
    {
        var cal = new Calibration("fixed", 1e11, 4e11, ScalarType.BFloat16, 600L << 20, 0, null)
        {
            StartupSeconds = 1.5, LoadFp32SecondsPerParameter = 8e-9, LoadComputeSecondsPerParameter = 5e-9, WriteBytesPerSecond = 4e8,
            DecodeLayerSeconds = 2e-3, MatVecSecondsPerWeight = 1e-10,
        };
        RunConfig Run(string engine) => new()
        {
            Search = new SearchSection { MaxParams = 600_000_000 }, Gkd = new GkdSection { TrainEmbeddings = false },
            Scenario = new ScenarioSection { Batch = 2, PromptLength = 32, GenerationLength = 16 },
            Evaluation = new EvaluationSection { BenchEngine = engine, BenchRepeats = 1, MaxTokens = 256 },
        };
        StagePlan Evaluate(string engine) => Planner.Plan(Llama1B, Run(engine), cal).Single(p => p.Stage == "9 evaluate + bench");
        var (ours, both, theirs) = (Evaluate("puzzle"), Evaluate("both"), Evaluate("llama.cpp"));
        long P = Llama1B.TotalParameters, child = 600_000_000;

        Assert.Equal(ours.LoadSeconds + (P + child) * 5e-9, both.LoadSeconds, 6);                // every tensor read once more
        long states = 256L * Llama1B.HiddenSize * 4;                                            // the parent's final hidden states, fp32 (ReferenceStates)
        Assert.Equal((P + child) * 2.0 / 4e8 + states / 4e8, both.WriteSeconds, 6);             // the GGUFs in bf16
        Assert.Equal(states / 4e8, ours.WriteSeconds, 9);
        Assert.Equal((1 << 20) + states, ours.DiskBytes);
        // llama.cpp's rounds: warm-up + 1, parent and child, each the scenario's prefill (64 tokens) and 15 decode steps.
        long V = Llama1B.VocabSize, H = Llama1B.HiddenSize, blocks = P - V * H - H;
        double Generate(long b) => 2.0 * (b + V * H) * 64 / 4e11 + 15 * (16.0 * b / blocks * 2e-3 + V * H * 1e-10);
        double llamaCpp = 2 * (Generate(blocks) + Generate(child - V * H - H));
        Assert.Equal(ours.Seconds + (P + child) * 5e-9 + (P + child) * 2.0 / 4e8 + llamaCpp, both.Seconds, 6);
        // llama.cpp alone: neither our bench's loads (bf16) nor its rounds.
        Assert.Equal(both.LoadSeconds - (P + child) * 5e-9, theirs.LoadSeconds, 6);
        Assert.True(theirs.Seconds < both.Seconds);
        // The export streams: its peak (runtime + the embedding mapped and copied in fp32 at most) stays under our bench's
        // models and the evaluation's, so the stage's peak does not move.
        Assert.Equal(ours.PeakBytes, both.PeakBytes);
        Assert.Contains("GGUF export", both.Note);
        Assert.DoesNotContain("GGUF export", ours.Note);
        // On GPUs the bench is ours only (llama.cpp is timed on the CPU).
        var roofline = Planner.Roofline(Puzzle.Stages.Costs.Accelerators.Get("h100"), 1);
        Assert.DoesNotContain("GGUF export", Planner.Plan(Llama1B, Run("both"), roofline).Single(p => p.Stage == "9 evaluate + bench").Note);
    }

    [Fact]
    public void A_roofline_plan_counts_no_host_start_up_or_loads()
    {
        var plans = Planner.Plan(Llama1B, new RunConfig(), Planner.Roofline(Puzzle.Stages.Costs.Accelerators.Get("h100"), 1));
        Assert.All(plans, p => Assert.Equal(0, p.StartupSeconds + p.LoadSeconds + p.WriteSeconds));
    }

    [Fact]
    public void Calibration_reads_layer_0_from_the_parents_own_safetensors()
    {
        var config = TestSupport.TinyParentConfig();
        string dir = TestSupport.TempDir();
        using (var model = TestSupport.Build(config)) Checkpoint.SaveLlama(model, dir, ScalarType.BFloat16);
        var cal = Planner.Calibrate(config, 32, ScalarType.BFloat16, seconds: 0.1, parentDir: dir, startupSeconds: 1.25);
        Assert.Equal(1.25, cal.StartupSeconds);
        Assert.True(cal.LoadFp32SecondsPerParameter > 0 && cal.LoadComputeSecondsPerParameter > 0 && cal.WriteBytesPerSecond > 0);

        // The same parent with a NaN in layer 0: the calibration read and checked that tensor, as a stage's load does.
        string bad = TestSupport.TempDir();
        using (var model = TestSupport.Build(config))
        {
            using (no_grad()) ((Puzzle.Model.GqaAttention)model.Layer(0).SelfAttn!).QProj.Weight[0, 0] = float.NaN;
            Checkpoint.SaveLlama(model, bad, ScalarType.BFloat16);
        }
        var e = Assert.Throws<PuzzleException>(() => Planner.Calibrate(config, 32, ScalarType.BFloat16, seconds: 0.1, parentDir: bad));
        Assert.Contains("model.layers.0.self_attn.q_proj.weight", e.Message);
        // Without a parent's weights (a config alone) it loads a bf16 copy of layer 0 written for the purpose.
        Assert.True(Planner.Calibrate(config, 32, ScalarType.BFloat16, seconds: 0.1, parentDir: TestSupport.TempDir()).LoadFp32SecondsPerParameter > 0);
    }
}
