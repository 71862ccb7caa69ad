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
/// <item>Transparent huge pages: where the kernel gives them only on request (THP "madvise"), the CLI and the benchmarks
/// restart themselves in place once with <c>glibc.malloc.hugetlb=1</c> added to <c>GLIBC_TUNABLES</c>
/// (<see cref="RestartWithHugePages"/>), so malloc advises huge pages for its heap and its mmapped blocks: on this VM a
/// fresh 4 KiB page faults at ~8 µs, and BLD of a 1B-shaped parent spent 40 % of its time faulting (61–68 s → 37–40 s).</item>
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

    /// <summary>The glibc tunable (2.35+) that makes malloc madvise(MADV_HUGEPAGE) its heap growth and mmapped blocks.</summary>
    public const string HugePagesTunable = "glibc.malloc.hugetlb";

    /// <summary>Set in the environment of the restarted process: it never restarts twice.</summary>
    public const string RestartMarker = "PUZZLE_HUGEPAGES_RESTARTED";

    /// <summary>
    /// Restarts this process in place (execve of /proc/self/exe with /proc/self/cmdline: the same pid, arguments and
    /// streams) with <see cref="HugePagesTunable"/>=1 added to GLIBC_TUNABLES, which glibc reads only when a process starts.
    /// Returns without restarting where it would not help or is not wanted (<see cref="WantsHugePagesRestart"/>) or where
    /// execve fails. Measured (A B A B, BLD stage of the Llama-3.2-1B-shaped parent, idle machine): 67.6 / 60.9 s wall
    /// without, 40.0 / 37.2 s with; minor page faults 2.48 / 2.16 M against 0.08 / 0.10 M; peak RSS 4.79 / 4.70 against
    /// 4.65 / 4.91 GB. Call it first thing in Main of an entry point, before any work that a restart would repeat.
    /// </summary>
    /// <param name="entryAssembly">the caller's program: nothing restarts unless it is this process's entry assembly
    /// (a test host that runs the CLI's Main in-process is not replaced).</param>
    public static void RestartWithHugePages(string entryAssembly)
    {
        if (System.Reflection.Assembly.GetEntryAssembly()?.GetName().Name != entryAssembly) return;
        string? tunables = Environment.GetEnvironmentVariable("GLIBC_TUNABLES");
        if (!WantsHugePagesRestart(OperatingSystem.IsLinux(), ThpMode(), tunables, Environment.GetEnvironmentVariable("PUZZLE_MALLOC"),
                Environment.GetEnvironmentVariable(RestartMarker)) || !Glibc.TryLoad(out _)) return;
        try
        {
            var argv = System.Text.Encoding.UTF8.GetString(File.ReadAllBytes("/proc/self/cmdline")).Split('\0').SkipLast(1).ToList();
            if (argv.Count == 0) return;
            var environment = new List<string?>();
            foreach (System.Collections.DictionaryEntry e in Environment.GetEnvironmentVariables())
                if ((string)e.Key is not ("GLIBC_TUNABLES" or RestartMarker)) environment.Add($"{e.Key}={e.Value}");
            environment.Add($"GLIBC_TUNABLES={(string.IsNullOrEmpty(tunables) ? "" : tunables + ":")}{HugePagesTunable}=1");
            environment.Add($"{RestartMarker}=1");
            environment.Add(null);
            argv.Add(null!);
            Console.Out.Flush();
            Console.Error.Flush();
            execve("/proc/self/exe", [.. argv], [.. environment]);
            Log.Debug($"process: restart with {HugePagesTunable}=1 failed (execve errno {Marshal.GetLastPInvokeError()}); going on without huge pages");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or DllNotFoundException or EntryPointNotFoundException)
        {
            Log.Debug($"process: no restart with {HugePagesTunable}=1 ({e.Message})");
        }
    }

    /// <summary>
    /// Whether <see cref="RestartWithHugePages"/> restarts: on Linux, with THP in "madvise" mode ("always" gives them
    /// already, "never" refuses them), unless PUZZLE_MALLOC=default, GLIBC_TUNABLES names the tunable itself (the user's
    /// choice), or this process is the restarted one.
    /// </summary>
    public static bool WantsHugePagesRestart(bool linux, string? thpMode, string? glibcTunables, string? puzzleMalloc, string? restartMarker) =>
        linux && thpMode == "madvise" && string.IsNullOrEmpty(restartMarker)
        && !string.Equals(puzzleMalloc?.Trim(), "default", StringComparison.OrdinalIgnoreCase)
        && !NamedTunables(glibcTunables).Contains(HugePagesTunable);

    /// <summary>The kernel's THP mode (always, madvise or never); null where it cannot be read.</summary>
    public static string? ThpMode()
    {
        try
        {
            var match = System.Text.RegularExpressions.Regex.Match(File.ReadAllText("/sys/kernel/mm/transparent_hugepage/enabled"), @"\[(\w+)\]");
            return match.Success ? match.Groups[1].Value : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    [DllImport("libc", SetLastError = true)]
    static extern int execve(string path, string?[] argv, string?[] envp);

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
        Tunables(glibcTunables).Select(t => t.Split('=')[0]).ToHashSet(StringComparer.Ordinal);

    /// <summary>The "name=value" entries of a GLIBC_TUNABLES value.</summary>
    static string[] Tunables(string? glibcTunables) =>
        (glibcTunables ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

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
        string? huge = Tunables(glibcTunables).LastOrDefault(t => t.StartsWith(HugePagesTunable + "=", StringComparison.Ordinal));
        if (huge is not null) details.Add($"transparent huge pages: {huge}");
        string summary = set == Malloc.Count ? $"glibc {glibc.Version} malloc tuned (mmap_threshold 32 MiB, trim_threshold 2 GiB, top_pad 256 MiB" +
                                               $"{(huge is not null ? $"; huge pages {huge}" : "")})"
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
