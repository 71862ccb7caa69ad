using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Runtime;
using Puzzle.Stages.Report;
using Xunit;

namespace Puzzle.Tests.Runtime;

/// <summary>Runtime.CpuContention: the share of the machine other processes took while something was timed.</summary>
[Collection(nameof(ProcessThreadsCollection))]
public class CpuContentionTests
{
    [Fact]
    public void Machine_busy_time_is_every_column_but_idle_and_iowait_in_user_hz_over_the_cpus_we_may_run_on()
    {
        string stat = Path.Combine(TestSupport.TempDir(), "stat");
        // user nice system idle iowait irq softirq steal guest guest_nice; guest is already inside user. The aggregate
        // "cpu" line is not read: the per-CPU lines are, for the CPUs asked for.
        File.WriteAllLines(stat, ["cpu  999 0 0 0 0 0 0 0 0 0", "cpu0 100 5 50 1000 20 3 2 10 7 0", "cpu1 40 0 10 900 30 0 0 0 0 0", "cpu12 7 0 0 0 0 0 0 0 0 0", "intr 12345"]);
        var all = CpuContention.MachineBusySeconds(stat)!.Value;
        Assert.Equal(((100 + 5 + 50 + 3 + 2 + 10) + (40 + 10) + 7) / 100.0, all.BusySeconds, 9);
        Assert.Equal(3, all.Cores);
        var ours = CpuContention.MachineBusySeconds(stat, new HashSet<int> { 1, 12 })!.Value;
        Assert.Equal((40 + 10 + 7) / 100.0, ours.BusySeconds, 9);
        Assert.Equal(2, ours.Cores);
        Assert.Null(CpuContention.MachineBusySeconds(stat, new HashSet<int> { 5 }));
        Assert.Null(CpuContention.MachineBusySeconds(Path.Combine(TestSupport.TempDir(), "absent")));
    }

    [Fact]
    public void Others_share_is_the_machines_busy_time_less_ours_over_wall_time_and_cores()
    {
        var a = new CpuSnapshot(MachineBusySeconds: 10, ProcessSeconds: 2, WallSeconds: 100, Cores: 2);
        // In 2 s of wall time the machine was busy 3 core-seconds, 1 of them ours: others took 2 of 4.
        Assert.Equal(0.5, CpuContention.OthersShare(a, new CpuSnapshot(13, 3, 102, 2))!.Value, 9);
        // Our own threads alone: nothing for the others (clamped at 0, never negative from rounding).
        Assert.Equal(0, CpuContention.OthersShare(a, new CpuSnapshot(13.9, 6, 102, 2))!.Value);
        Assert.Null(CpuContention.OthersShare(null, a));
        Assert.Null(CpuContention.OthersShare(a, a));
        Assert.Null(CpuContention.Warning(0.01, "bench"));
        Assert.Contains("other processes used 50% of the cores", CpuContention.Warning(0.5, "bench"));
    }

    [SkippableFact]
    public void A_spinning_process_beside_us_is_seen()
    {
        Skip.If(!File.Exists("/proc/stat"), "no /proc/stat (not Linux): the machine's CPU time is not read");
        var start = CpuContention.Now();
        using var spin = Process.Start(new ProcessStartInfo("sh", ["-c", "end=$(( $(date +%s) + 2 )); while [ $(date +%s) -lt $end ]; do :; done"]))!;
        spin.WaitForExit();
        double share = CpuContention.OthersShare(start, CpuContention.Now())!.Value;
        // One core of the machine's, less what the scheduler gave our own threads: at least a fifth of 2 cores.
        Assert.InRange(share, 0.2 * 2 / Environment.ProcessorCount, 1);
    }

    [Fact]
    public void The_report_warns_about_a_bench_on_a_busy_machine_only()
    {
        Assert.Contains("busy machine: other processes used 40%", ReportStage.BusyBench(new JsonObject { ["other_cpu_share"] = 0.4 }));
        Assert.Null(ReportStage.BusyBench(new JsonObject { ["other_cpu_share"] = 0.01 }));
        Assert.Null(ReportStage.BusyBench(new JsonObject()));
        // Rounds on the one core a spinning process left free: not a busy timing, but said, with the thread count.
        string? freed = ReportStage.BusyBench(new JsonObject { ["other_cpu_share"] = 0.48, ["other_cpu_share_of_timing_cores"] = 0.0, ["threads"] = 1 });
        Assert.Contains("Other processes held 48% of the machine's cores during the benchmark; its rounds ran with 1 torch thread on the cores they left free", freed);
        Assert.DoesNotContain("busy machine", freed);
        Assert.Contains("busy machine: other processes used 30% of the cores its rounds ran on",
            ReportStage.BusyBench(new JsonObject { ["other_cpu_share"] = 0.65, ["other_cpu_share_of_timing_cores"] = 0.3, ["threads"] = 1 }));
    }

    [Fact]
    public void A_timing_takes_the_cores_others_leave_free()
    {
        // Others' share of the cores over the probe, rounded to whole cores, comes off the threads; never below 1.
        Assert.Equal(2, CpuContention.ThreadsFor(0.005, cores: 2, threads: 2));   // idle (this VM: 0.5%)
        Assert.Equal(2, CpuContention.ThreadsFor(0.2, cores: 2, threads: 2));     // 0.4 of a core: ours
        Assert.Equal(1, CpuContention.ThreadsFor(0.474, cores: 2, threads: 2));   // a spinning process on one of two
        Assert.Equal(1, CpuContention.ThreadsFor(1.0, cores: 2, threads: 2));
        Assert.Equal(6, CpuContention.ThreadsFor(0.3, cores: 8, threads: 8));     // 2.4 cores held
        Assert.Equal(4, CpuContention.ThreadsFor(0.3, cores: 8, threads: 4));     // fewer threads than free cores: kept
        Assert.Equal(1, CpuContention.ThreadsFor(0.0, cores: 2, threads: 1));
        Assert.Equal(2, CpuContention.ThreadsFor(null, cores: 2, threads: 2));    // no /proc/stat
        // Others' share of the cores the timing ran on: their core-seconds beyond the cores left to them.
        Assert.Equal(0.0, CpuContention.OnTimingCores(0.48, cores: 2, threads: 1)!.Value, 9);   // the spinner kept to its own core
        Assert.Equal(0.3, CpuContention.OnTimingCores(0.65, cores: 2, threads: 1)!.Value, 9);
        Assert.Equal(0.4, CpuContention.OnTimingCores(0.4, cores: 2, threads: 2)!.Value, 9);    // all cores ours: the share itself
        Assert.Null(CpuContention.OnTimingCores(null, cores: 2, threads: 1));
    }

    [SkippableFact]
    public void A_timing_beside_a_spinning_process_runs_on_fewer_threads_and_restores_them()
    {
        Skip.If(!File.Exists("/proc/stat"), "no /proc/stat (not Linux): the machine's CPU time is not read");
        int before = TorchSharp.torch.get_num_threads();
        Skip.If(before < 2 || Environment.ProcessorCount < 2, $"{Environment.ProcessorCount} CPUs, {before} torch threads: nothing to take away");
        Skip.If(ProcessSetup.Applied?.ThreadSource is "PUZZLE_THREADS" or "OMP_NUM_THREADS", "the thread count is the user's (PUZZLE_THREADS / OMP_NUM_THREADS) and is kept");
        using var spin = Process.Start(new ProcessStartInfo("sh", ["-c", "end=$(( $(date +%s) + 3 )); while [ $(date +%s) -lt $end ]; do :; done"]))!;
        Thread.Sleep(300);
        var log = new List<string>();
        int inside;
        using (var scope = CpuContention.EnterTiming("test timing", log.Add, adapt: true))
        {
            inside = TorchSharp.torch.get_num_threads();
            Assert.Equal(scope.Threads, inside);
            Assert.Equal(before, scope.DefaultThreads);
            // A nested timing on the same thread is the same one: no second probe, the same threads.
            using (var nested = CpuContention.EnterTiming("nested", adapt: true)) Assert.Equal(inside, nested.Threads);
            Assert.Equal(inside, TorchSharp.torch.get_num_threads());
        }
        spin.Kill();
        Assert.InRange(inside, 1, before - 1);
        Assert.Contains(log, l => l.StartsWith("test timing: other processes held", StringComparison.Ordinal) && l.Contains($"timing with {inside} torch thread"));
        Assert.Equal(before, TorchSharp.torch.get_num_threads());
        // The test host's PUZZLE_TIMING_THREADS=all: every thread, no probe; a value that is neither is named.
        using (var all = CpuContention.EnterTiming("fixed")) Assert.Equal((before, (double?)null), (all.Threads, all.ProbeShare));
        Assert.True(CpuContention.Adapts(null) && CpuContention.Adapts("") && CpuContention.Adapts(" free "));
        Assert.False(CpuContention.Adapts("all"));
        Assert.Equal("PUZZLE_TIMING_THREADS: 'some' is not 'free' (time on the cores other processes leave free, the default) or 'all' (every thread)",
            Assert.Throws<PuzzleException>(() => CpuContention.Adapts("some")).Message);
    }
}
