using Puzzle.Config;
using Puzzle.Parents;
using Puzzle.Planning;
using Puzzle.Stages.Costs;
using Xunit;
using static TorchSharp.torch;

namespace Puzzle.Tests.Memory;

/// <summary>
/// The C heap's slack in the plan (docs/memory.md, "The C heap's slack"): on the CPU, BLD counts one more step's
/// activations and costs and the search's measured checks one more engine request's KV cache and prefill activations;
/// the search counts both models' fused copies. Hand-computed on the SmolLM2-135M shape (L 30, H 576, I 1536, 9 heads,
/// 3 KV heads of 64, tied 49,152 × 576 embedding) with R0 = 0.
/// </summary>
public class HeapSlackPlanTests
{
    static readonly Puzzle.Model.ModelConfig Smol = RandomParent.Preset("smollm2-135m") with { BosTokenId = 1, EosTokenIds = [2] };
    static readonly Calibration Cpu = new("fixed", 1e10, 2e10, ScalarType.BFloat16, 0, 0, null);

    static long Peak(RunConfig run, string stage, Calibration? cal = null) => Planner.Plan(Smol, run, cal ?? Cpu).Single(p => p.Stage == stage).PeakBytes;

    static RunConfig Run(int bldBatch = 16, int scenarioBatch = 16, string target = "measured") => new()
    {
        Data = new DataSection { SeqLen = 256 },
        Bld = new BldSection { Batch = bldBatch },
        Scenario = new ScenarioSection { Batch = scenarioBatch },
        Search = new SearchSection { Target = target },
    };

    [Fact]
    public void Bld_on_the_cpu_counts_one_step_of_activations_twice()
    {
        // One step's activations per 8 sequences of 256 tokens: B·T·(12H + 4I)·4 + 3·B·h·T²·4 (the fp32 scores).
        long perEight = 8L * 256 * (12 * 576 + 4 * 1536) * 4 + 3 * 8L * 9 * 256 * 256 * 4;
        Assert.Equal(163_577_856, perEight);
        // Live and the heap's slack: twice per batch on the CPU; once on GPUs (device memory: no glibc heap).
        Assert.Equal(2 * perEight, Peak(Run(bldBatch: 16), "3 library (BLD)") - Peak(Run(bldBatch: 8), "3 library (BLD)"));
        var gpu = Planner.Roofline(Accelerators.Get("h100"), 1);
        Assert.Equal(perEight, Peak(Run(bldBatch: 16), "3 library (BLD)", gpu) - Peak(Run(bldBatch: 8), "3 library (BLD)", gpu));
    }

    [Fact]
    public void Costs_count_one_more_request_and_the_search_both_fused_models_and_two_requests()
    {
        // One request per sequence at prompt 128 + generation 128 in bf16: KV 30 layers × (K, V) × 3 × 64 × 256 positions
        // × 2 bytes, prefill activations 128 × (4H + I) × 2.
        long requestPerSequence = 30L * 2 * 3 * 64 * 256 * 2 + 128L * (4 * 576 + 1536) * 2;
        Assert.Equal(6_881_280, requestPerSequence);
        Assert.Equal(2 * 8 * requestPerSequence, Peak(Run(scenarioBatch: 16), "5 costs") - Peak(Run(scenarioBatch: 8), "5 costs"));

        // Search with measured checks: parent and child (at most the parent) in bf16 with their fused q/k/v and gate/up
        // copies (30 × (576 × (576 + 2 × 192) + 2 × 576 × 1536) = 69,672,960 parameters), one request live and one of slack.
        long fused = 30L * (576 * (576 + 2 * 192) + 2 * 576 * 1536);
        Assert.Equal(69_672_960, fused);
        Assert.Equal(134_515_008, Smol.TotalParameters);
        Assert.Equal(2 * (134_515_008 + fused) * 2 + 2 * 16 * requestPerSequence, Peak(Run(), "6 search"));
        Assert.Equal(1_036_952_832, Peak(Run(), "6 search"));
        // Without measured checks the search holds no model: the runtime alone.
        Assert.Equal(0, Peak(Run(target: "h100"), "6 search"));
    }
}
