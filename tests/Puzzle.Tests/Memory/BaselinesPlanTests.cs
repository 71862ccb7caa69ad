using Puzzle.Config;
using Puzzle.Parents;
using Puzzle.Planning;
using Xunit;
using static TorchSharp.torch;

namespace Puzzle.Tests.Memory;

/// <summary>
/// The plan's baselines stage (8b): each rule baseline costs what the Puzzle child's recipe costs (assembly, GKD,
/// evaluation, bench), each matched child a search as stage 6's too; the first evaluation against the parent (a
/// baseline's, before stage 9) runs the parent and keeps its states, so stage 9 then runs the child and the head only.
/// Checked against the plan's other stages and by hand, at a fixed calibration (compute rates and start-up only).
/// </summary>
public class BaselinesPlanTests
{
    static readonly Puzzle.Model.ModelConfig Smol = RandomParent.Preset("smollm2-135m") with { BosTokenId = 1, EosTokenIds = [2], TorchDtype = "bfloat16" };
    const double Startup = 1.5;
    static readonly Calibration Cal = new("fixed", 1e11, 4e11, ScalarType.BFloat16, 0, 0, null)
        { LoadFp32SecondsPerParameter = 0, LoadComputeSecondsPerParameter = 0, WriteBytesPerSecond = double.PositiveInfinity, StartupSeconds = Startup };

    // A roofline target: no measured checks, so a baseline's cost is its recipe alone.
    static RunConfig Run(string[] baselines, double[]? fractions = null, int benchRepeats = 3) => new()
    {
        Search = new SearchSection { Target = "h100", MinThroughputRatio = 2 },
        Evaluation = new EvaluationSection { BenchEngine = "puzzle", MaxTokens = 8192, BenchRepeats = benchRepeats },
        Baselines = baselines, BaselinesGkdFractions = fractions ?? [],
    };

    static Dictionary<string, StagePlan> Plan(RunConfig run) => Planner.Plan(Smol, run, Cal).ToDictionary(p => p.Stage);

    [Fact]
    public void No_baselines_plan_no_stage_and_the_evaluation_runs_the_parent()
    {
        var none = Plan(Run([]));
        Assert.DoesNotContain("8b baselines", none.Keys);
        var order = Planner.Plan(Smol, Run(["depth"]), Cal).Select(p => p.Stage).ToArray();
        Assert.Equal(["3 library (BLD)", "4 score", "5 costs", "6 search", "7 assemble", "8 distill (GKD)", "8b baselines", "9 evaluate + bench", "10 export"], order);
    }

    [Fact]
    public void A_rule_baseline_costs_a_gkd_and_the_first_evaluation_and_moves_the_parents_pass_out_of_stage_9()
    {
        var none = Plan(Run([]));
        var depth = Plan(Run(["depth"]));
        var b = depth["8b baselines"];
        // Its GKD as stage 8's, its evaluation and bench as stage 9's without baselines (it is the first evaluation), one
        // more process for its bench.
        Assert.Equal(depth["8 distill (GKD)"].Seconds - Startup + none["9 evaluate + bench"].Seconds, b.Seconds, 6);
        Assert.Equal(2 * Startup, b.StartupSeconds);
        // Stage 9 then skips the parent's pass but its head: (P - H·V) parameters × 2 FLOPs a token, in fp32.
        long P = Smol.TotalParameters, HV = (long)Smol.HiddenSize * Smol.VocabSize;
        Assert.Equal(8192 * 2.0 * (P - HV) / 1e11, none["9 evaluate + bench"].Seconds - depth["9 evaluate + bench"].Seconds, 6);
        // The stages before it do not change.
        foreach (string stage in new[] { "3 library (BLD)", "4 score", "5 costs", "6 search", "7 assemble", "8 distill (GKD)", "10 export" })
            Assert.Equal(none[stage].Seconds, depth[stage].Seconds, 9);
        // Disk: the assembled child (stage 7's), the distilled one (stage 8's) and the parent's fp32 states, which stage 9 no longer writes.
        long states = 8192L * Smol.HiddenSize * 4;
        Assert.Equal(depth["7 assemble"].DiskBytes + depth["8 distill (GKD)"].DiskBytes + states, b.DiskBytes);
        Assert.Equal(none["9 evaluate + bench"].DiskBytes - states, depth["9 evaluate + bench"].DiskBytes);
        Assert.Equal(Math.Max(depth["8 distill (GKD)"].PeakBytes, depth["9 evaluate + bench"].PeakBytes), b.PeakBytes);
    }

    [Fact]
    public void Each_more_child_costs_the_later_recipe_and_a_matched_child_a_search_too()
    {
        var depth = Plan(Run(["depth"]));
        var two = Plan(Run(["uniform", "depth"]));
        var matched = Plan(Run(["uniform", "depth", "matched"]));
        // A second rule baseline: GKD, the later evaluation and bench (stage 9's with baselines) and one process for its bench.
        double later = depth["8 distill (GKD)"].Seconds - Startup + depth["9 evaluate + bench"].Seconds - Startup;
        Assert.Equal(later, two["8b baselines"].Seconds - depth["8b baselines"].Seconds, 6);
        // `matched` after two rules: two searches as stage 6 and two more children.
        Assert.Equal(2 * (depth["6 search"].Seconds - Startup + later), matched["8b baselines"].Seconds - two["8b baselines"].Seconds, 6);
        Assert.Contains("up to 4 children", matched["8b baselines"].Note);
    }

    [Fact]
    public void A_gkd_sweep_adds_each_points_gkd_and_evaluation_for_every_child_and_the_puzzle_child()
    {
        // The bench's share of stage 9, from two plans one bench round apart: (repeats + 1) rounds.
        double round = Plan(Run(["depth"], benchRepeats: 4))["9 evaluate + bench"].Seconds - Plan(Run(["depth"], benchRepeats: 3))["9 evaluate + bench"].Seconds;
        var depth = Plan(Run(["depth"]));
        double laterEval = depth["9 evaluate + bench"].Seconds - 2 * Startup - 4 * round;
        Assert.True(laterEval > 0);
        // F = 0: the assembled children evaluated (the depth child's and the Puzzle child's).
        Assert.Equal(2 * laterEval, Plan(Run(["depth"], [0]))["8b baselines"].Seconds - depth["8b baselines"].Seconds, 6);
        // F = 0.5: half the GKD (stage 8 of a run at half the tokens) and the evaluation, for both; F = 1 is the main row.
        var half = Plan(Run(["depth"]) with { Gkd = new GkdSection { Tokens = new GkdSection().Tokens / 2 } });
        Assert.Equal(2 * (laterEval + half["8 distill (GKD)"].Seconds - Startup), Plan(Run(["depth"], [0.5, 1]))["8b baselines"].Seconds - depth["8b baselines"].Seconds, 6);
        // A sweep without baselines still sweeps the Puzzle child, and its evaluation is the first: it runs the parent too.
        var none = Plan(Run([]));
        var sweepOnly = Plan(Run([], [0]));
        double parentPass = none["9 evaluate + bench"].Seconds - depth["9 evaluate + bench"].Seconds;
        Assert.Equal(laterEval + parentPass, sweepOnly["8b baselines"].Seconds - Startup, 6);
        Assert.Equal(depth["9 evaluate + bench"].Seconds, sweepOnly["9 evaluate + bench"].Seconds, 9);
    }
}
