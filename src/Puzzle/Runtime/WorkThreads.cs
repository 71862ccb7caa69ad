using System.Diagnostics;
using System.Globalization;
using TorchSharp;

namespace Puzzle.Runtime;

/// <summary>
/// Long work (pretraining, block distillation, scoring, global distillation, evaluation) on the cores other processes
/// leave free, re-read as it runs. On this 2-core VM beside one process spinning at our priority, the demo's pretraining
/// ran at 2,742 tokens/s with 2 intra-op threads (each slice the spinner takes from one of them stalls the other at the
/// next barrier) and at 5,171 with 1, against 8,607 with 2 on the idle machine (benchmarks/results/timing-threads-2026-12-05.md §8).
/// Following the free cores, it trained 2.2–2.3x faster there, and 2.1–2.6x on a 30-layer SmolLM2-sized body
/// (benchmarks/results/busy-work-2026-12-05.md §3).
/// <para>
/// Every <see cref="CheckSeconds"/> of work, <see cref="Step"/> reads how many cores other processes used meanwhile,
/// estimates how many threads of theirs were runnable (<see cref="NeighbourThreads"/>) and sets libtorch's intra-op
/// threads to the cores those leave, at least 1 and at most the process's own count, restored on Dispose. Processes at
/// nice &gt; 0 are not counted (unless this one is niced too): the kernel gives their slices to ours, so all our threads
/// still run. Unlike a timing (<see cref="CpuContention.EnterTiming"/>), nothing waits for a probe: the reading is the
/// work's own last interval.
/// </para>
/// A thread count the user chose (PUZZLE_THREADS, OMP_NUM_THREADS) is kept, and every thread where
/// <see cref="Variable"/> is "all" (the test suite's setting: a run killed and resumed must compute what an uninterrupted
/// one does, and a thread count changed in between would change the order of its sums).
/// </summary>
public sealed class WorkThreads : IDisposable
{
    /// <summary>PUZZLE_WORK_THREADS: "free" (the default) runs long work on the cores other processes leave free; "all" on every thread.</summary>
    public const string Variable = "PUZZLE_WORK_THREADS";

    /// <summary>How often the threads are re-read: 1,000 ticks of /proc/stat per core, and a few of a stage's log lines.</summary>
    public const double CheckSeconds = 10;

    // A work nested in another on the same thread holds only its outer work (_outer), which does everything.
    readonly WorkThreads? _outer;
    readonly string _what = "";
    readonly Action<string> _log = _ => { };
    readonly double _everySeconds;
    readonly Func<CpuSnapshot?>? _machine;
    readonly Stopwatch _clock = Stopwatch.StartNew();
    [ThreadStatic] static WorkThreads? _current;
    CpuSnapshot? _last;
    double _lastCheck;
    int _threads, _changes;
    bool _disposed;

    WorkThreads(string what, Action<string> log, int threads, double everySeconds, Func<CpuSnapshot?>? machine)
    {
        (_what, _log, DefaultThreads, _threads, _everySeconds, _machine) = (what, log, threads, threads, everySeconds, machine);
        _last = machine?.Invoke();
    }

    WorkThreads(WorkThreads outer) => (_outer, DefaultThreads) = (outer, outer.DefaultThreads);

    /// <summary>The process's intra-op threads outside this work.</summary>
    public int DefaultThreads { get; }

    /// <summary>The intra-op threads the work runs with now.</summary>
    public int Threads => _outer?._threads ?? _threads;

    /// <summary>How many times the work changed its threads.</summary>
    public int Changes => _outer?._changes ?? _changes;

    /// <summary>Whether the threads follow the machine (false: the user's count, "all", one thread, or no /proc/stat).</summary>
    public bool Adapts => (_outer ?? this)._last is not null;

    /// <summary>
    /// Starts <paramref name="what"/>: its threads follow the cores others leave free from the first <see cref="Step"/>
    /// after <paramref name="everySeconds"/>. Inside another work on the same thread (a stage around its layers' loops),
    /// it is that work: its steps are the outer one's, and disposing it changes nothing. <paramref name="machine"/> reads
    /// the machine's and this process's CPU time (by default /proc/stat, without niced processes unless we are niced).
    /// </summary>
    public static WorkThreads Enter(string what, Action<string>? log = null, bool? adapt = null, double everySeconds = CheckSeconds, Func<CpuSnapshot?>? machine = null)
    {
        if (_current is { } outer) return new WorkThreads(outer);
        int threads = torch.get_num_threads();
        bool on = threads > 1 && (adapt ?? CpuContention.Adapts(Environment.GetEnvironmentVariable(Variable), Variable, "run")) && !CpuContention.ThreadsAreTheUsers;
        if (on && machine is null)
        {
            bool countNiced = OwnNice() > 0;
            machine = () => CpuContention.Now(countNiced: countNiced);
        }
        return _current = new WorkThreads(what, log ?? Log.Info, threads, everySeconds, on ? machine : null);
    }

    /// <summary>Between two steps of the work: every <see cref="CheckSeconds"/>, the threads for the cores others left free in the last interval.</summary>
    public void Step()
    {
        if (_outer is not null) { _outer.Step(); return; }
        if (_last is not { } last || _disposed) return;
        double now = _clock.Elapsed.TotalSeconds;
        if (now - _lastCheck < _everySeconds) return;
        _lastCheck = now;
        var current = _machine!();
        if (current is not { } end) return;
        _last = end;
        if (CpuContention.OthersShare(last, end) is not { } share) return;
        double othersCores = share * end.Cores;
        double neighbours = NeighbourThreads(othersCores, Threads, end.Cores);
        int use = Math.Clamp(end.Cores - (int)Math.Floor(neighbours + 0.5), 1, DefaultThreads);
        if (use == Threads) return;
        _log(use < Threads
            ? $"{_what}: other processes used {othersCores:F2} of the {end.Cores} cores beside our {Threads} threads in the last {end.WallSeconds - last.WallSeconds:F0} s " +
              $"(about {neighbours:F1} busy threads of theirs); running on {use} torch thread{(use == 1 ? "" : "s")}, the cores they leave free"
            : $"{_what}: other processes used {othersCores:F2} of the {end.Cores} cores beside our {Threads}; back to {use} torch threads");
        torch.set_num_threads(use);
        _threads = use;
        _changes++;
    }

    /// <summary>
    /// How many CPU-bound threads of other processes were runnable, from the cores they used (<paramref name="othersCores"/>)
    /// beside our <paramref name="ourThreads"/> on <paramref name="cores"/> cores, all at one priority: where all fit, each
    /// had a core, so they used one each; where they did not, the kernel shared the cores evenly, k of them got
    /// cores × k / (ours + k), so k = ours × used / (cores − used).
    /// </summary>
    public static double NeighbourThreads(double othersCores, int ourThreads, int cores)
    {
        if (othersCores <= 0) return 0;
        if (othersCores < cores - ourThreads + 0.25) return othersCores;                   // a free core each
        return ourThreads * othersCores / Math.Max(cores - othersCores, 0.05);
    }

    /// <summary>This process's nice value (/proc/self/stat's 19th field), 0 where it cannot be read.</summary>
    static int OwnNice()
    {
        try
        {
            string stat = File.ReadAllText("/proc/self/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');                    // from the 3rd field (state) on
            return int.Parse(fields[16], CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException or ArgumentOutOfRangeException)
        {
            return 0;
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_outer is not null) return;
        _current = null;
        if (Threads != DefaultThreads) torch.set_num_threads(DefaultThreads);
    }
}
