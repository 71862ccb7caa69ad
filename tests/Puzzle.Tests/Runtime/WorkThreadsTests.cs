using System.Diagnostics;
using Puzzle.Runtime;
using Xunit;
using static TorchSharp.torch;

namespace Puzzle.Tests.Runtime;

/// <summary>Runtime.WorkThreads: long work follows the cores other processes leave free as it runs.</summary>
[Collection(nameof(ProcessThreadsCollection))]
public class WorkThreadsTests
{
    [Fact]
    public void Neighbour_threads_are_read_from_the_cores_they_used_beside_ours()
    {
        // One spinner beside our 2 threads on 2 cores: the three shared the cores evenly, it had 2/3 of one.
        Assert.Equal(1.0, WorkThreads.NeighbourThreads(2.0 / 3, ourThreads: 2, cores: 2), 9);
        // The same spinner beside our 1 thread: a core of its own.
        Assert.Equal(1.0, WorkThreads.NeighbourThreads(1.0, ourThreads: 1, cores: 2), 9);
        // Two spinners beside 1 thread: the three shared; each had 2/3.
        Assert.Equal(2.0, WorkThreads.NeighbourThreads(4.0 / 3, ourThreads: 1, cores: 2), 9);
        // A process at a fifth of a core: a fifth, whatever we run.
        Assert.Equal(0.2, WorkThreads.NeighbourThreads(0.2, ourThreads: 2, cores: 2), 9);
        Assert.Equal(0.0, WorkThreads.NeighbourThreads(0, ourThreads: 2, cores: 2));
        // 8 cores, 8 of ours, 3 neighbours: each had 8/11 of a core.
        Assert.Equal(3.0, WorkThreads.NeighbourThreads(3 * 8.0 / 11, ourThreads: 8, cores: 8), 9);
    }

    [Fact]
    public void Niced_processes_are_left_out_where_asked()
    {
        string stat = Path.Combine(TestSupport.TempDir(), "stat");
        File.WriteAllLines(stat, ["cpu  0 0 0 0 0 0 0 0 0 0", "cpu0 100 70 50 1000 20 3 2 10 0 0", "cpu1 40 30 10 900 30 0 0 0 0 0"]);
        Assert.Equal((100 + 70 + 50 + 3 + 2 + 10 + 40 + 30 + 10) / 100.0, CpuContention.MachineBusySeconds(stat)!.Value.BusySeconds, 9);
        Assert.Equal((100 + 50 + 3 + 2 + 10 + 40 + 10) / 100.0, CpuContention.MachineBusySeconds(stat, countNiced: false)!.Value.BusySeconds, 9);
    }

    [Fact]
    public void Threads_drop_while_a_neighbour_spins_and_come_back_when_it_stops()
    {
        int before = get_num_threads();
        set_num_threads(2);
        try
        {
            // The machine as read at each check (2 cores, 10 s apart): busy core-seconds, then ours.
            var readings = new Queue<CpuSnapshot?>([
                new CpuSnapshot(0, 0, 0, 2),
                new CpuSnapshot(20, 13.33, 10, 2),       // our 2 threads and one spinner shared the cores: 2/3 each
                new CpuSnapshot(40, 23.33, 20, 2),       // our 1 thread, the spinner on the other core
                new CpuSnapshot(50.2, 33.33, 30, 2),     // the spinner stopped: ours alone (and 0.1 of a core's noise)
                new CpuSnapshot(70.2, 53.33, 40, 2),
            ]);
            var log = new List<string>();
            using (var work = WorkThreads.Enter("test work", log.Add, adapt: true, everySeconds: 0, machine: () => readings.Dequeue()))
            {
                Assert.True(work.Adapts);
                work.Step();
                Assert.Equal((1, 1), (work.Threads, get_num_threads()));
                // A loop inside the work (a layer's steps) is the same work: its steps read the machine for it.
                using (var inner = WorkThreads.Enter("inner loop", log.Add))
                {
                    inner.Step();
                    Assert.Equal(1, inner.Threads);
                }
                Assert.Equal(1, get_num_threads());
                work.Step();
                Assert.Equal((2, 2, 2), (work.Threads, get_num_threads(), work.Changes));
                work.Step();
                Assert.Equal(2, work.Threads);
            }
            Assert.Equal("test work: other processes used 0.67 of the 2 cores beside our 2 threads in the last 10 s (about 1.0 busy threads of theirs); " +
                         "running on 1 torch thread, the cores they leave free", log[0]);
            Assert.Equal("test work: other processes used 0.02 of the 2 cores beside our 1; back to 2 torch threads", log[1]);
            Assert.Equal(2, log.Count);
        }
        finally
        {
            set_num_threads(before);
        }
    }

    [SkippableFact]
    public void Work_beside_a_spinning_process_runs_on_fewer_threads_and_restores_them()
    {
        Skip.If(!File.Exists("/proc/stat"), "no /proc/stat (not Linux): the machine's CPU time is not read");
        int before = get_num_threads();
        Skip.If(before < 2 || Environment.ProcessorCount != 2, $"{Environment.ProcessorCount} CPUs, {before} torch threads: the test's spinner takes one of 2");
        Skip.If(ProcessSetup.Applied?.ThreadSource is "PUZZLE_THREADS" or "OMP_NUM_THREADS", "the thread count is the user's (PUZZLE_THREADS / OMP_NUM_THREADS) and is kept");
        using var spin = Process.Start(new ProcessStartInfo("sh", ["-c", "end=$(( $(date +%s) + 4 )); while [ $(date +%s) -lt $end ]; do :; done"]))!;
        var log = new List<string>();
        int during;
        using (var work = WorkThreads.Enter("spin test", log.Add, adapt: true, everySeconds: 1.0))
        {
            using var a = randn(256, 256);
            var clock = Stopwatch.StartNew();
            while (clock.Elapsed.TotalSeconds < 2.5 && work.Changes == 0)
            {
                using (NewDisposeScope()) a.matmul(a).sum().item<float>();
                work.Step();
            }
            during = work.Threads;
        }
        spin.Kill();
        Assert.True(during < before, $"threads stayed {during} beside a spinner: {string.Join(" / ", log)}");
        Assert.Contains(log, l => l.StartsWith("spin test: other processes used", StringComparison.Ordinal));
        Assert.Equal(before, get_num_threads());
        // The test host's PUZZLE_WORK_THREADS=all: every thread; a value that is neither is named.
        using (var all = WorkThreads.Enter("fixed")) Assert.False(all.Adapts);
        Assert.Equal("PUZZLE_WORK_THREADS: 'some' is not 'free' (run on the cores other processes leave free, the default) or 'all' (every thread)",
            Assert.Throws<PuzzleException>(() => CpuContention.Adapts("some", WorkThreads.Variable, "run")).Message);
    }
}
