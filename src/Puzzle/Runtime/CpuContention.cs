using System.Diagnostics;
using System.Globalization;

namespace Puzzle.Runtime;

/// <summary>The machine's CPU time (all cores, from /proc/stat) and this process's, at one instant.</summary>
public readonly record struct CpuSnapshot(double MachineBusySeconds, double ProcessSeconds, double WallSeconds, int Cores);

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

    public static CpuSnapshot? Now(string statPath = "/proc/stat")
    {
        using var process = Process.GetCurrentProcess();
        var cpus = AllowedCpus(process);
        var machine = MachineBusySeconds(statPath, cpus);
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
    /// else's and do not slow our threads. Without <paramref name="cpus"/>, every CPU the file lists.
    /// </summary>
    public static (double BusySeconds, int Cores)? MachineBusySeconds(string statPath = "/proc/stat", IReadOnlySet<int>? cpus = null)
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
                if (i is not 3 and not 4) busy += f[i];                                      // 3 idle, 4 iowait
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

    /// <summary>
    /// Runs <paramref name="timing"/> between two snapshots and warns (<see cref="Log.Warning"/>) where others took more
    /// than <see cref="BusyShare"/> of the cores meanwhile; <paramref name="share"/> is that share (null off Linux).
    /// </summary>
    public static T Measure<T>(string what, Func<T> timing, out double? share)
    {
        var start = Now();
        T result = timing();
        share = OthersShare(start, Now());
        if (Warning(share, what) is { } busy) Log.Warning(busy);
        return result;
    }

    /// <summary>A warning for a timing taken while others used more than <see cref="BusyShare"/> of the machine; null otherwise.</summary>
    public static string? Warning(double? share, string what) => share is { } s && s > BusyShare
        ? $"{what}: other processes used {100 * s:F0}% of the cores this process runs on while it was timed: measured on a busy " +
          "machine, its speeds are not this machine's and its ratios spread more (on 2 cores, one spinning process made requests 1.4–4.5x slower and their ratios spread ±15–35%)"
        : null;
}
