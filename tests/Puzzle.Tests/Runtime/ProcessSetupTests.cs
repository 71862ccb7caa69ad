using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using Puzzle.Runtime;

namespace Puzzle.Tests.Runtime;

/// <summary>Process start-up settings (allocator, threads), self-launch, and what `puzzle --version` reports.</summary>
public sealed class ProcessSetupTests
{
    static (int Code, string Stdout, string Stderr) Cli(TestSupport.CliLaunch launch, IDictionary<string, string?> environment, params string[] args)
    {
        var info = launch == TestSupport.CliLaunch.Executable
            ? new ProcessStartInfo(Path.Combine(AppContext.BaseDirectory, "Puzzle.Cli"))
            : new ProcessStartInfo("dotnet") { ArgumentList = { Path.Combine(AppContext.BaseDirectory, "Puzzle.Cli.dll") } };
        info.RedirectStandardOutput = info.RedirectStandardError = true;
        foreach (string a in args) info.ArgumentList.Add(a);
        foreach (string name in new[] { "GLIBC_TUNABLES", "PUZZLE_MALLOC", "PUZZLE_THREADS", "OMP_NUM_THREADS", "PUZZLE_LOG" }) info.Environment.Remove(name);
        foreach (var (name, value) in environment) info.Environment[name] = value;
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout, stderr.Result);
    }

    static bool OnGlibc() => OperatingSystem.IsLinux() && NativeLibrary.TryLoad("libc.so.6", out var libc) && NativeLibrary.TryGetExport(libc, "gnu_get_libc_version", out _);

    [Fact]
    public void SelfLaunch_StartsTheExecutableItself_OrTheDllThroughTheDotnetHost()
    {
        Assert.Equal(["/opt/puzzle/Puzzle.Cli"], SelfLaunch.Resolve("/opt/puzzle/Puzzle.Cli", "Puzzle.Cli", "/opt/puzzle/Puzzle.Cli.dll"));
        Assert.Equal(["/root/.dotnet/tools/puzzle"], SelfLaunch.Resolve("/root/.dotnet/tools/puzzle", "Puzzle.Cli", "/root/.dotnet/tools/.store/puzzle/x/Puzzle.Cli.dll"));
        Assert.Equal(["/usr/share/dotnet/dotnet", "/opt/puzzle/Puzzle.Cli.dll"], SelfLaunch.Resolve("/usr/share/dotnet/dotnet", "Puzzle.Cli", "/opt/puzzle/Puzzle.Cli.dll"));
        Assert.Equal(["/opt/puzzle/Puzzle.Cli"], SelfLaunch.Resolve("/opt/puzzle/Puzzle.Cli", "Puzzle.Cli", ""));   // single-file app
        Assert.Null(SelfLaunch.Resolve("/usr/share/dotnet/dotnet", "Puzzle.Cli", ""));
        Assert.Null(SelfLaunch.Resolve("/usr/share/dotnet/dotnet", "testhost", "/x/testhost.dll"));
        Assert.Null(SelfLaunch.Command); // this process is the test host, not the CLI
        Assert.Null(SelfLaunch.StartInfo(["bench"]));
    }

    [Fact]
    public void Threads_PuzzleThreads_ThenOmpNumThreads_ThenTheCpusAvailable()
    {
        Assert.Equal((3, "PUZZLE_THREADS"), ProcessSetup.DecideThreads("3", "8", 16, 8));
        Assert.Equal((8, "OMP_NUM_THREADS"), ProcessSetup.DecideThreads(null, "8,2", 16, 8));
        Assert.Equal((8, "libtorch default"), ProcessSetup.DecideThreads("", "junk", 16, 8));
        Assert.Equal((2, "CPUs available"), ProcessSetup.DecideThreads(null, null, 2, 8));   // a container limited to 2 CPUs on a big host
        var error = Assert.Throws<PuzzleException>(() => ProcessSetup.DecideThreads("0", null, 16, 8));
        Assert.Equal("PUZZLE_THREADS: '0' is not a positive whole number of threads", error.Message);
        Assert.Equal(new HashSet<string> { "glibc.malloc.top_pad", "glibc.cpu.hwcaps" },
            ProcessSetup.NamedTunables("glibc.malloc.top_pad=1: glibc.cpu.hwcaps=-AVX512F"));
        Assert.Equal("glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072:glibc.malloc.top_pad=131072", ProcessSetup.GlibcDefaultTunables);
    }

    /// <summary>
    /// The test host applied the settings at load (TestHostSetup): a 16 MiB malloc comes from the heap (glibc's
    /// default, a 128 KiB threshold, would mmap it), a block above the 32 MiB threshold is still mmapped. That block is
    /// larger than all the heap space the process holds (mallinfo2's arena), since malloc serves a request from a free
    /// chunk of the heap, whatever the threshold, where one fits: after the suite's earlier tests a 64 MiB one did.
    /// </summary>
    [SkippableFact]
    public void TestHost_HasTheAllocatorSettings_LargeBlocksComeFromTheHeap()
    {
        Skip.IfNot(OnGlibc(), "the allocator settings apply to Linux/glibc only");
        Skip.If(ProcessSetup.NamedTunables(Environment.GetEnvironmentVariable("GLIBC_TUNABLES")).Overlaps(ProcessSetup.Malloc.Select(p => p.Tunable)),
            "GLIBC_TUNABLES sets malloc parameters for this test host; the user's setting wins");
        Skip.If(Environment.GetEnvironmentVariable("PUZZLE_MALLOC") == "default", "PUZZLE_MALLOC=default leaves malloc to glibc");
        var settings = ProcessSetup.Applied;
        Assert.NotNull(settings);
        Assert.Contains("malloc tuned", settings.Allocator);
        Assert.Equal(settings.Threads, TorchSharp.torch.get_num_threads());
        Assert.InRange(settings.Threads, 1, Environment.ProcessorCount);
        static bool Mmapped(long bytes)
        {
            IntPtr p = Marshal.AllocHGlobal((nint)bytes); // malloc
            try { return (Marshal.ReadInt64(p, -8) & 2) != 0; } // IS_MMAPPED in the chunk header's size field
            finally { Marshal.FreeHGlobal(p); }
        }
        Assert.False(Mmapped(16 << 20));
        long aboveHeap = Math.Max(64L << 20, (long)MallInfo2().Arena + (64L << 20));
        Assert.True(Mmapped(aboveHeap), $"a {aboveHeap >> 20} MiB malloc came from the heap");
    }

    [StructLayout(LayoutKind.Sequential)]
    readonly struct MallInfo
    {
        public readonly nuint Arena, Ordblks, Smblks, Hblks, Hblkhd, Usmblks, Fsmblks, Uordblks, Fordblks, Keepcost;
    }

    [DllImport("libc", EntryPoint = "mallinfo2")]
    static extern MallInfo MallInfo2();

    [SkippableFact]
    public void Version_PrintsVersions_Devices_AndTheSettings_HoweverItIsStarted()
    {
        string expected = typeof(SelfLaunch).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion;
        var (code, stdout, stderr) = Cli(TestSupport.CliLaunch.Executable, new Dictionary<string, string?>(), "--version");
        Assert.True(code == 0, stderr);
        string[] lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal($"puzzle {expected}", lines[0]);
        Assert.StartsWith("TorchSharp 0.107.", lines[1]);
        Assert.Contains(", libtorch 2.10.", lines[1]);
        Assert.StartsWith($"devices: cpu ({Environment.ProcessorCount} CPUs)", lines[2]);
        Assert.Matches(@"threads: \d+ torch intra-op \((libtorch default|CPUs available)\)", lines[3]);
        Assert.EndsWith("Puzzle.Cli (executable)", lines[4]);
        Assert.Equal("", stderr);

        (code, stdout, stderr) = Cli(TestSupport.CliLaunch.DotnetHost,
            new Dictionary<string, string?> { ["PUZZLE_THREADS"] = "1", ["GLIBC_TUNABLES"] = ProcessSetup.GlibcDefaultTunables, ["PUZZLE_LOG"] = "debug" }, "--version");
        Assert.True(code == 0, stderr);
        Assert.Contains("threads: 1 torch intra-op (PUZZLE_THREADS)", stdout);
        Assert.EndsWith("Puzzle.Cli.dll (dotnet host)", stdout.Trim());
        if (!OnGlibc()) return;
        Assert.Contains("allocator: glibc 2.", stdout);
        Assert.Contains("malloc from GLIBC_TUNABLES", stdout);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith("debug: process: allocator:", StringComparison.Ordinal));

        (_, stdout, _) = Cli(TestSupport.CliLaunch.Executable, new Dictionary<string, string?> { ["GLIBC_TUNABLES"] = "glibc.malloc.top_pad=1" }, "--version");
        Assert.Contains("mmap_threshold=33554432, trim_threshold=2147483647, top_pad from GLIBC_TUNABLES", stdout);
        (_, stdout, _) = Cli(TestSupport.CliLaunch.Executable, new Dictionary<string, string?> { ["PUZZLE_MALLOC"] = "default" }, "--version");
        Assert.Contains("allocator: glibc defaults (PUZZLE_MALLOC=default)", stdout);
        (code, stdout, stderr) = Cli(TestSupport.CliLaunch.Executable, new Dictionary<string, string?> { ["PUZZLE_THREADS"] = "two" }, "--version");
        Assert.Equal(1, code);
        Assert.Equal("error: PUZZLE_THREADS: 'two' is not a positive whole number of threads", stderr.Trim());
        // The exit code and the error come through the restart with huge pages (the same process, execve).
        (code, stdout, stderr) = Cli(TestSupport.CliLaunch.DotnetHost, new Dictionary<string, string?> { ["PUZZLE_THREADS"] = "two" }, "--version");
        Assert.Equal(1, code);
        Assert.Equal("error: PUZZLE_THREADS: 'two' is not a positive whole number of threads", stderr.Trim());
    }

    [Fact]
    public void HugePages_RestartOnlyWhereTheKernelGivesThemOnRequest_AndNobodyChoseOtherwise()
    {
        Assert.True(ProcessSetup.WantsHugePagesRestart(true, "madvise", null, null, null));
        Assert.True(ProcessSetup.WantsHugePagesRestart(true, "madvise", "glibc.malloc.top_pad=1", "", null));
        Assert.False(ProcessSetup.WantsHugePagesRestart(false, "madvise", null, null, null));              // not Linux
        Assert.False(ProcessSetup.WantsHugePagesRestart(true, "always", null, null, null));                // every page may be huge already
        Assert.False(ProcessSetup.WantsHugePagesRestart(true, "never", null, null, null));
        Assert.False(ProcessSetup.WantsHugePagesRestart(true, null, null, null, null));                    // no THP in this kernel
        Assert.False(ProcessSetup.WantsHugePagesRestart(true, "madvise", "glibc.malloc.hugetlb=0", null, null));   // the user's choice
        Assert.False(ProcessSetup.WantsHugePagesRestart(true, "madvise", null, "default", null));
        Assert.False(ProcessSetup.WantsHugePagesRestart(true, "madvise", null, null, "1"));                // restarted once already
    }

    /// <summary>The CLI restarts itself once with glibc.malloc.hugetlb=1 where THP is "madvise"; PUZZLE_MALLOC=default does not.</summary>
    [SkippableFact]
    public void Version_ReportsHugePages_AfterTheRestart()
    {
        Skip.IfNot(OnGlibc() && ProcessSetup.ThpMode() == "madvise", "transparent huge pages are not in madvise mode on this machine");
        foreach (var launch in new[] { TestSupport.CliLaunch.Executable, TestSupport.CliLaunch.DotnetHost })
        {
            var (code, stdout, stderr) = Cli(launch, new Dictionary<string, string?>(), "--version");
            Assert.True(code == 0, stderr);
            Assert.Contains("huge pages glibc.malloc.hugetlb=1", stdout);
            Assert.Equal("", stderr);
        }
        var (_, plain, _) = Cli(TestSupport.CliLaunch.Executable, new Dictionary<string, string?> { ["PUZZLE_MALLOC"] = "default" }, "--version");
        Assert.DoesNotContain("hugetlb", plain);
        var (_, user, _) = Cli(TestSupport.CliLaunch.Executable, new Dictionary<string, string?> { ["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=0" }, "--version");
        Assert.Contains("huge pages glibc.malloc.hugetlb=0", user);                                  // the user's setting, reported as is
    }
}
