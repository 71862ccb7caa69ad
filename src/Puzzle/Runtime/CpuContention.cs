using System.Diagnostics;
using System.Globalization;
using TorchSharp;

namespace Puzzle.Runtime;

/// <summary>The machine's CPU time (all cores, from /proc/stat) and this process's, at one instant.</summary>
public readonly record struct CpuSnapshot(double MachineBusySeconds, double ProcessSeconds, double WallSeconds, int Cores);

/// <summary>
/// What a timing ran under: the share of the cores this process may run on that other processes used meanwhile (null
/// off Linux), that share on the cores our threads had (others' use beyond the cores the timing left them), the torch
/// intra-op threads it ran with and the process's threads outside timings.
/// </summary>
public readonly record struct TimingConditions(double? OthersShare, double? OnTimingCores, int Threads, int DefaultThreads);

/// <summary>
/// How much of the machine other processes took while we timed something. A timing on a machine where another
/// process competes for the cores is not the machine's speed: with one core of two taken by a spinning process, our two
/// intra-op threads wait for each other at every barrier, a request took 3x as long and the paired ratios of one
/// architecture spread 1.5–3.9x (benchmarks/results/fresh-demos-2026-12-04b.md). The share is
/// (busy time of the cores this process may run on − this process's CPU time) / (wall time × those cores) between two
/// snapshots: other processes and the hypervisor's steal. Linux only (/proc/stat); null elsewhere.
/// </summary>
public static class CpuContention
{
    /// <summary>
    /// Above this share of the machine taken by others, timings are reported as measured on a busy machine. Measured on
    /// this 2-core VM (benchmarks/results/fresh-demos-2026-12-04b.md): idle 0.5%; a spinning process at a lower priority
    /// than ours took 2.6% and still made the parent's requests 37% slower (each slice it gets stalls one of our threads
    /// at a barrier, and the other waits); one at our priority took 36% and made them 4.5x slower.
    /// </summary>
    public const double BusyShare = 0.02;

    /// <summary>/proc/stat counts in USER_HZ, 100 on every mainstream Linux build (the kernel's ABI, not CONFIG_HZ).</summary>
    const double UserHz = 100;

    /// <summary>
    /// The machine's busy time and ours now. Without <paramref name="countNiced"/>, time the kernel charges to niced
    /// processes (nice &gt; 0, /proc/stat's "nice" column) is left out: they yield their slices to ours.
    /// </summary>
    public static CpuSnapshot? Now(string statPath = "/proc/stat", bool countNiced = true)
    {
        using var process = Process.GetCurrentProcess();
        var cpus = AllowedCpus(process);
        var machine = MachineBusySeconds(statPath, cpus, countNiced);
        if (machine is not { } m) return null;
        return new CpuSnapshot(m.BusySeconds, process.TotalProcessorTime.TotalSeconds, Stopwatch.GetTimestamp() / (double)Stopwatch.Frequency, m.Cores);
    }

    /// <summary>The CPUs this process may run on (its affinity mask), or null where the mask cannot be read.</summary>
    static HashSet<int>? AllowedCpus(Process process)
    {
        if (!OperatingSystem.IsLinux()) return null;                                        // /proc/stat is Linux's
        try
        {
            long mask = (long)process.ProcessorAffinity;
            var cpus = Enumerable.Range(0, 64).Where(i => (mask >> i & 1) != 0).ToHashSet();
            return cpus.Count > 0 ? cpus : null;
        }
        catch (Exception e) when (e is PlatformNotSupportedException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }

    /// <summary>
    /// Busy seconds of the given CPUs (the per-CPU "cpuN" lines of /proc/stat: "cpuN user nice system idle iowait irq
    /// softirq steal guest guest_nice"): everything but idle and iowait; guest time is already counted in user and nice.
    /// Only the CPUs this process may run on count: in a container or under taskset, the host's other cores are someone
    /// else's and do not slow our threads. Without <paramref name="cpus"/>, every CPU the file lists. Without
    /// <paramref name="countNiced"/>, the nice column (user time of processes at nice &gt; 0) is left out too.
    /// </summary>
    public static (double BusySeconds, int Cores)? MachineBusySeconds(string statPath = "/proc/stat", IReadOnlySet<int>? cpus = null, bool countNiced = true)
    {
        if (!File.Exists(statPath)) return null;
        double busy = 0;
        int cores = 0;
        foreach (string line in File.ReadLines(statPath))
        {
            if (!line.StartsWith("cpu", StringComparison.Ordinal) || line.Length < 4 || !char.IsDigit(line[3])) continue;
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (!int.TryParse(fields[0].AsSpan(3), NumberStyles.None, CultureInfo.InvariantCulture, out int cpu) || cpus is not null && !cpus.Contains(cpu)) continue;
            var f = fields.Skip(1).Select(x => double.Parse(x, CultureInfo.InvariantCulture)).ToArray();
            if (f.Length < 4) continue;
            for (int i = 0; i < Math.Min(f.Length, 8); i++)
                if (i is not 3 and not 4 && (countNiced || i != 1)) busy += f[i];            // 1 nice, 3 idle, 4 iowait
            cores++;
        }
        return cores == 0 ? null : (busy / UserHz, cores);
    }

    /// <summary>The share of the machine's cores that others used between two snapshots, in [0, 1]; null without both.</summary>
    public static double? OthersShare(CpuSnapshot? start, CpuSnapshot? end)
    {
        if (start is not { } a || end is not { } b) return null;
        double wall = b.WallSeconds - a.WallSeconds;
        if (wall <= 0) return null;
        double others = (b.MachineBusySeconds - a.MachineBusySeconds) - (b.ProcessSeconds - a.ProcessSeconds);
        return Math.Clamp(others / (wall * b.Cores), 0, 1);
    }

    /// <summary>How long <see cref="EnterTiming"/> watches the machine, idle itself, before it times: 25 ticks of /proc/stat per core.</summary>
    public const double ProbeSeconds = 0.25;

    /// <summary>The shortest timing whose share is worth a warning: 100 ticks of /proc/stat per core.</summary>
    const double MinWarnSeconds = 1.0;

    static readonly object TimingGate = new();
    [ThreadStatic] static TimingScope? _active;

    /// <summary>
    /// Starts a timing: takes the process's timing lock (two timings in one process would share its cores and its thread
    /// setting), watches the machine for <see cref="ProbeSeconds"/> and sets libtorch's intra-op threads to the cores
    /// other processes leave free (<see cref="ThreadsFor"/>) until the scope is disposed. On 2 cores with a process
    /// spinning on one, 2 threads made requests 1.4–4.5x slower and one architecture's paired ratios spread ±15–35%
    /// (each slice the spinner takes stalls one of our threads at a barrier, and the other waits); 1 thread ran as fast
    /// as on the idle machine and the cost model held as it does there (benchmarks/results/timing-threads-2026-12-05.md).
    /// A thread count the user chose (PUZZLE_THREADS, OMP_NUM_THREADS) is kept, and so is every thread where
    /// <see cref="TimingThreadsVariable"/> is "all" (<paramref name="adapt"/> overrides it). Inside a scope, a nested one
    /// on the same thread is the same timing: no new probe, the same threads.
    /// </summary>
    public static TimingScope EnterTiming(string what, Action<string>? log = null, bool? adapt = null)
    {
        if (_active is { } outer) return new TimingScope(what, outer.Threads, outer.Threads, outer.ProbeShare, nested: true);
        Monitor.Enter(TimingGate);
        try
        {
            int threads = torch.get_num_threads();
            double? probe = null;
            int use = threads, cores = 0;
            if (threads > 1 && (adapt ?? AdaptsByDefault()) && !ThreadsAreTheUsers && Now() is { } start)
            {
                Thread.Sleep(TimeSpan.FromSeconds(ProbeSeconds));
                probe = OthersShare(start, Now());
                cores = start.Cores;
                use = ThreadsFor(probe, cores, threads);
            }
            if (use != threads)
            {
                (log ?? Log.Info)($"{what}: other processes held {100 * probe!.Value:F0}% of the {cores} cores this process runs on just before it; " +
                                  $"timing with {use} torch thread{(use == 1 ? "" : "s")} instead of {threads}, on the cores they leave free");
                torch.set_num_threads(use);
            }
            return _active = new TimingScope(what, use, threads, probe, nested: false);
        }
        catch
        {
            Monitor.Exit(TimingGate);
            throw;
        }
    }

    /// <summary>
    /// PUZZLE_TIMING_THREADS: "free" (the default) times on the cores other processes leave free; "all" always with
    /// every thread of the process (the test suite's setting: its own parallel test processes would otherwise change a
    /// check's thread count, and so its cache key, from one call to the next).
    /// </summary>
    public const string TimingThreadsVariable = "PUZZLE_TIMING_THREADS";

    static bool AdaptsByDefault() => Adapts(Environment.GetEnvironmentVariable(TimingThreadsVariable));

    /// <summary>Whether a PUZZLE_TIMING_THREADS value (or <paramref name="variable"/>'s, for <paramref name="work"/>) asks for the free cores.</summary>
    public static bool Adapts(string? value, string variable = TimingThreadsVariable, string work = "time") => value?.Trim() switch
    {
        null or "" or "free" => true,
        "all" => false,
        var other => throw new PuzzleException($"{variable}: '{other}' is not 'free' ({work} on the cores other processes leave free, the default) or 'all' (every thread)"),
    };

    /// <summary>Whether this process's own thread count is the user's (PUZZLE_THREADS, OMP_NUM_THREADS): then it is kept.</summary>
    internal static bool ThreadsAreTheUsers => ProcessSetup.Applied?.ThreadSource is "PUZZLE_THREADS" or "OMP_NUM_THREADS";

    /// <summary>
    /// The intra-op threads for a timing: <paramref name="threads"/>, less one for each core other processes held in the
    /// probe (their share × <paramref name="cores"/>, rounded), and at least 1. Without a probe, <paramref name="threads"/>.
    /// </summary>
    public static int ThreadsFor(double? othersShare, int cores, int threads)
    {
        if (othersShare is not { } share || cores < 1) return threads;
        int held = (int)Math.Floor(share * cores + 0.5);
        return Math.Clamp(Math.Min(threads, cores - held), 1, Math.Max(1, threads));
    }

    /// <summary>
    /// Others' share of the cores <paramref name="threads"/> threads ran on, from their share of all
    /// <paramref name="cores"/>: their core-seconds beyond the cores the timing left them, over the cores it used.
    /// </summary>
    public static double? OnTimingCores(double? othersShare, int cores, int threads)
    {
        if (othersShare is not { } share || cores < 1) return othersShare;
        int used = Math.Clamp(threads, 1, cores), ceded = cores - used;
        return Math.Clamp((share * cores - ceded) / used, 0, 1);
    }

    /// <summary>A timing in progress (<see cref="EnterTiming"/>): the threads it runs with; disposing restores them and releases the lock.</summary>
    public sealed class TimingScope : IDisposable
    {
        readonly bool _nested;
        bool _disposed;

        internal TimingScope(string what, int threads, int defaultThreads, double? probeShare, bool nested) =>
            (What, Threads, DefaultThreads, ProbeShare, _nested) = (what, threads, defaultThreads, probeShare, nested);

        public string What { get; }
        /// <summary>The torch intra-op threads the timing runs with.</summary>
        public int Threads { get; }
        /// <summary>The process's threads outside timings.</summary>
        public int DefaultThreads { get; }
        /// <summary>The share of the cores others held in the probe before the timing; null without one.</summary>
        public double? ProbeShare { get; }


        public void Dispose()
        {
            if (_disposed || _nested) { _disposed = true; return; }
            _disposed = true;
            try
            {
                if (Threads != DefaultThreads) torch.set_num_threads(DefaultThreads);
            }
            finally
            {
                _active = null;
                Monitor.Exit(TimingGate);
            }
        }
    }

    /// <summary>
    /// Runs <paramref name="timing"/> in a timing scope (<see cref="EnterTiming"/>: on the cores others leave free) between
    /// two snapshots and warns (<see cref="Log.Warning"/>) where others took more than <see cref="BusyShare"/> of the
    /// cores our threads ran on meanwhile.
    /// </summary>
    public static T Measure<T>(string what, Func<T> timing, out TimingConditions conditions)
    {
        using var scope = EnterTiming(what);
        var start = Now();
        T result = timing();
        var end = Now();
        double? share = OthersShare(start, end);
        conditions = new TimingConditions(share, OnTimingCores(share, end?.Cores ?? 0, scope.Threads), scope.Threads, scope.DefaultThreads);
        // Under a second, the share is a few ticks of /proc/stat per core (a 0.3 s timing on an idle core read 58%): no warning.
        if (end?.WallSeconds - start?.WallSeconds >= MinWarnSeconds && Warning(conditions.OnTimingCores, what) is { } busy) Log.Warning(busy);
        return result;
    }

    /// <summary>A warning for a timing taken while others used more than <see cref="BusyShare"/> of the machine; null otherwise.</summary>
    public static string? Warning(double? share, string what) => share is { } s && s > BusyShare
        ? $"{what}: other processes used {100 * s:F0}% of the cores this process timed on: measured on a busy " +
          "machine, its speeds are not this machine's and its ratios spread more (on 2 cores, one spinning process made requests 1.4–4.5x slower and their ratios spread ±15–35%)"
        : null;
}
