using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Runtime;
using Puzzle.Stages.Report;
using Xunit;

namespace Puzzle.Tests.Runtime;

/// <summary>Runtime.CpuContention: the share of the machine other processes took while something was timed.</summary>
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
    }
}
