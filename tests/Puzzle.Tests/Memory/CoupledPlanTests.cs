using Puzzle.Config;
using Puzzle.Parents;
using Puzzle.Planning;
using Puzzle.Stages.Library;
using Xunit;
using static TorchSharp.torch;

namespace Puzzle.Tests.Memory;

/// <summary>`puzzle plan` with assembly.coupled_bld_tokens: stage 7 gains coupled BLD's time, memory and disk.</summary>
public class CoupledPlanTests
{
    [Fact]
    public void Assemble_plan_counts_coupled_bld_of_every_layer_with_blds_terms_when_on()
    {
        var config = RandomParent.Preset("smollm2-135m") with { BosTokenId = 1, EosTokenIds = [2] };
        var cal = new Calibration("fixed", 1e10, 2e10, ScalarType.BFloat16, 0, 0, null) { StepSecondsPerParameter = 1e-9, BlockBuildSeconds = 0.01 };
        List<StagePlan> Plan(long tokens) => Planner.Plan(config, new RunConfig { Assembly = new AssemblySection { CoupledBldTokens = tokens } }, cal);
        StagePlan Assemble(long tokens) => Plan(tokens).Single(p => p.Stage == "7 assemble");
        var off = Assemble(0);
        Assert.Equal(0, off.Seconds - off.StartupSeconds - off.LoadSeconds - off.WriteSeconds, tolerance: 1e-9);   // a streamed copy: no compute
        Assert.DoesNotContain("coupled", off.Note);

        int L = config.NumLayers, H = config.HiddenSize, T = 256, batch = 16;
        long blocks = Enumerable.Range(0, L).Sum(config.BlockParameters);
        var on = Assemble(65_536);                                                               // 16 steps; the library's are 64
        // Second computation of the terms that grow with the tokens: forward + backward (3 forwards) of every block at the
        // training rate, the optimizer step per parameter and step, and the cache's parent pass per step (the parent held
        // in bf16 where BLD holds it so: at the compute rate).
        double Training(int steps) => 3 * 2.0 * blocks * batch * T * steps / cal.Training + steps * (double)blocks * cal.StepSecondsPerParameter;
        double parentRate = BlockLibraryBuilder.ParentDtype(config, ScalarType.BFloat16) == ScalarType.BFloat16 ? cal.ComputeRate : cal.Fp32Rate;
        double CachePass(int steps) => Enumerable.Range(0, L).Sum(l => Planner.LayerForwardFlops(config, l, T, batch)) * steps / parentRate;
        Assert.True(on.Seconds - off.Seconds > Training(16) + CachePass(16));                     // + each layer's validation inputs and NMSE
        Assert.Contains($"coupled BLD: up to {L} layers × 65,536 tokens", on.Note);
        // Disk: its own activation cache at every boundary and each block in fp32.
        Assert.Equal(off.DiskBytes + ActivationCache.Bytes(16, batch, T, H, L + 1) + 4 * blocks, on.DiskBytes);
        // At the library's tokens the library's cache serves: only the blocks are written.
        Assert.Equal(off.DiskBytes + 4 * blocks, Assemble(new RunConfig().Bld.TokensPerVariant).DiskBytes);
        // Twice the tokens: those terms again, and the larger cache written.
        var twice = Assemble(131_072);
        double cacheWrite = (ActivationCache.Bytes(32, batch, T, H, L + 1) - ActivationCache.Bytes(16, batch, T, H, L + 1)) / cal.WriteBytesPerSecond;
        Assert.Equal(Training(16) + CachePass(16) + cacheWrite, twice.Seconds - on.Seconds, 1e-6 * twice.Seconds);
        // Memory: the parent and one whole block training at a time, above the streamed copy, below BLD's layer of units.
        Assert.True(on.PeakBytes > off.PeakBytes);
        Assert.True(on.PeakBytes < Plan(65_536).Single(p => p.Stage.StartsWith("3 library", StringComparison.Ordinal)).PeakBytes);
        // The other stages do not change.
        Assert.Equal(Plan(0).Where(p => p.Stage != "7 assemble").Select(p => (p.Seconds, p.PeakBytes, p.DiskBytes)),
            Plan(65_536).Where(p => p.Stage != "7 assemble").Select(p => (p.Seconds, p.PeakBytes, p.DiskBytes)));
    }
}
