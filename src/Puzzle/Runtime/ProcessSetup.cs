using System.Runtime.InteropServices;
using TorchSharp;

namespace Puzzle.Runtime;

/// <summary>
/// Every launch-dependent process setting, decided in one place and applied at start-up by each entry point (the CLI,
/// the benchmarks, the test host), so that the program runs the same way however it was started (`./puzzle`, the
/// built executable, `dotnet Puzzle.Cli.dll`, `dotnet run`, a `dotnet tool` install, `dotnet test`):
/// <list type="bullet">
/// <item>glibc malloc: a 32 MiB mmap threshold, a 2 GiB trim threshold and a 256 MiB top pad, set with <c>mallopt</c>
/// (fewer page faults on fresh large tensors: training runs about twice as fast; design.md 7). Linux/glibc only; a
/// parameter the user names in <c>GLIBC_TUNABLES</c> is left to the user, and <c>PUZZLE_MALLOC=default</c> leaves all of
/// them to glibc.</item>
/// <item>Threads: TorchSharp's intra-op threads from <c>PUZZLE_THREADS</c>, else <c>OMP_NUM_THREADS</c>, else
/// libtorch's default (its physical cores) capped at the CPUs this process may use (affinity, container limits).</item>
/// </list>
/// </summary>
public static class ProcessSetup
{
    /// <summary>One allocator parameter: its <c>mallopt</c> number, our value, the tunable that names it, glibc's default.</summary>
    public sealed record MallocParameter(string Name, int MalloptParam, int Value, string Tunable, long GlibcDefault);

    /// <summary>
    /// The values `./puzzle` used to export as GLIBC_TUNABLES, except the trim threshold: mallopt takes an int, so it
    /// is 2 GiB - 1 instead of 4 GiB (the heap is trimmed only once 2 GiB lie free at its top: never, in practice).
    /// </summary>
    public static readonly IReadOnlyList<MallocParameter> Malloc =
    [
        new("mmap_threshold", -3, 32 << 20, "glibc.malloc.mmap_threshold", 128 << 10),
        new("trim_threshold", -1, int.MaxValue, "glibc.malloc.trim_threshold", 128 << 10),
        new("top_pad", -2, 256 << 20, "glibc.malloc.top_pad", 128 << 10),
    ];

    /// <summary>GLIBC_TUNABLES that turn every setting above off again (glibc's documented defaults).</summary>
    public static string GlibcDefaultTunables => string.Join(':', Malloc.Select(p => $"{p.Tunable}={p.GlibcDefault}"));

    static readonly object Gate = new();
    static Settings? _applied;

    /// <summary>What <see cref="Apply"/> decided; null before it ran.</summary>
    public static Settings? Applied => _applied;

    public sealed record Settings(string Allocator, IReadOnlyList<string> AllocatorDetails, int Threads, string ThreadSource, string? OmpNumThreads)
    {
        /// <summary>One line for `puzzle --version`, benchmark headers and logs.</summary>
        public string Describe() =>
            $"allocator: {Allocator}; threads: {Threads} torch intra-op ({ThreadSource}), OMP_NUM_THREADS={OmpNumThreads ?? "unset"}, " +
            $"{Environment.ProcessorCount} CPUs available";
    }

    /// <summary>Applies the settings once per process (later calls return the first result). Call it first thing in Main.</summary>
    public static Settings Apply()
    {
        lock (Gate)
        {
            if (_applied is not null) return _applied;
            var (allocator, details) = ApplyAllocator(Environment.GetEnvironmentVariable("GLIBC_TUNABLES"), Environment.GetEnvironmentVariable("PUZZLE_MALLOC"));
            var (threads, source) = DecideThreads(Environment.GetEnvironmentVariable("PUZZLE_THREADS"), Environment.GetEnvironmentVariable("OMP_NUM_THREADS"),
                Environment.ProcessorCount, torch.get_num_threads());
            torch.set_num_threads(threads);
            _applied = new Settings(allocator, details, threads, source, Environment.GetEnvironmentVariable("OMP_NUM_THREADS"));
            Log.Debug($"process: {_applied.Describe()}; {string.Join(", ", details)}");
            return _applied;
        }
    }

    /// <summary>The tunables a GLIBC_TUNABLES value sets (names only), e.g. "glibc.malloc.top_pad".</summary>
    public static IReadOnlySet<string> NamedTunables(string? glibcTunables) =>
        (glibcTunables ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(t => t.Split('=')[0]).ToHashSet(StringComparer.Ordinal);

    /// <summary>Intra-op threads: PUZZLE_THREADS, else OMP_NUM_THREADS (its first level), else libtorch's default capped at the CPUs available.</summary>
    public static (int Threads, string Source) DecideThreads(string? puzzleThreads, string? ompNumThreads, int processorCount, int torchDefault)
    {
        if (!string.IsNullOrWhiteSpace(puzzleThreads))
            return int.TryParse(puzzleThreads.Trim(), out int n) && n > 0
                ? (n, "PUZZLE_THREADS")
                : throw new PuzzleException($"PUZZLE_THREADS: '{puzzleThreads}' is not a positive whole number of threads");
        if (!string.IsNullOrWhiteSpace(ompNumThreads) && int.TryParse(ompNumThreads.Split(',')[0].Trim(), out int omp) && omp > 0)
            return (omp, "OMP_NUM_THREADS");
        return torchDefault > processorCount ? (Math.Max(1, processorCount), "CPUs available") : (Math.Max(1, torchDefault), "libtorch default");
    }

    static (string Summary, IReadOnlyList<string> Details) ApplyAllocator(string? glibcTunables, string? puzzleMalloc)
    {
        if (!OperatingSystem.IsLinux()) return ("platform default (not Linux)", []);
        if (string.Equals(puzzleMalloc?.Trim(), "default", StringComparison.OrdinalIgnoreCase))
            return ("glibc defaults (PUZZLE_MALLOC=default)", []);
        if (!Glibc.TryLoad(out var glibc)) return ("platform default (not glibc)", []);
        var named = NamedTunables(glibcTunables);
        var details = new List<string>();
        int set = 0, user = 0;
        foreach (var p in Malloc)
        {
            if (named.Contains(p.Tunable))
            {
                details.Add($"{p.Name} from GLIBC_TUNABLES");
                user++;
            }
            else if (glibc.Mallopt(p.MalloptParam, p.Value))
            {
                details.Add($"{p.Name}={p.Value}");
                set++;
            }
            else
            {
                details.Add($"{p.Name}: mallopt refused {p.Value}");
                Log.Warning($"allocator: glibc {glibc.Version} refused mallopt {p.Name}={p.Value}; training runs slower");
            }
        }
        string summary = set == Malloc.Count ? $"glibc {glibc.Version} malloc tuned (mmap_threshold 32 MiB, trim_threshold 2 GiB, top_pad 256 MiB)"
            : user == Malloc.Count ? $"glibc {glibc.Version} malloc from GLIBC_TUNABLES"
            : $"glibc {glibc.Version} malloc: {string.Join(", ", details)}";
        return (summary, details);
    }

    /// <summary>glibc's mallopt and version, looked up at run time (absent on musl and other C libraries).</summary>
    sealed unsafe class Glibc
    {
        readonly delegate* unmanaged<int, int, int> _mallopt;
        public string Version { get; }

        Glibc(delegate* unmanaged<int, int, int> mallopt, string version)
        {
            _mallopt = mallopt;
            Version = version;
        }

        public bool Mallopt(int param, int value) => _mallopt(param, value) == 1;

        public static bool TryLoad([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Glibc? glibc)
        {
            glibc = null;
            if (!NativeLibrary.TryLoad("libc.so.6", out var libc)) return false;
            if (!NativeLibrary.TryGetExport(libc, "gnu_get_libc_version", out var versionExport) ||
                !NativeLibrary.TryGetExport(libc, "mallopt", out var malloptExport))
                return false;
            string version = Marshal.PtrToStringAnsi(((delegate* unmanaged<IntPtr>)versionExport)()) ?? "?";
            glibc = new Glibc((delegate* unmanaged<int, int, int>)malloptExport, version);
            return true;
        }
    }
}
