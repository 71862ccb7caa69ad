using System.Diagnostics;
using System.Text;

namespace Puzzle.Tests.Build;

/// <summary>The build's fix of TorchSharp's native shim (build/TorchSharpShim.targets), checked with binutils' readelf.</summary>
public sealed class TorchSharpShimTests
{
    static string? ReadElfVersions(string path)
    {
        try
        {
            var info = new ProcessStartInfo("readelf", ["-V", path]) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var process = Process.Start(info)!;
            string output = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return process.ExitCode == 0 ? output : null;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }

    static bool SystemLibStdCxxHasVersion()
    {
        foreach (string candidate in new[] { "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6" })
            if (File.Exists(candidate))
                return File.ReadAllBytes(candidate).AsSpan().IndexOf(Encoding.ASCII.GetBytes("GLIBCXX_3.4.32\0")) >= 0;
        return true;
    }

    /// <summary>The shim in an output folder: at its root in a RID-specific build (linux-x64), under runtimes/ otherwise.</summary>
    static string ShimIn(string folder)
    {
        string flat = Path.Combine(folder, "libLibTorchSharp.so");
        string nested = Path.Combine(folder, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        Assert.True(File.Exists(flat) || File.Exists(nested), $"no libLibTorchSharp.so in {folder}");
        return File.Exists(flat) ? flat : nested;
    }

    static void AssertShimFixed(string folder)
    {
        string? versions = ReadElfVersions(ShimIn(folder));
        Skip.If(versions is null, "readelf (binutils) is not installed");
        string line = versions!.Split('\n').Single(l => l.Contains("Name: GLIBCXX_3.4.32"));
        if (SystemLibStdCxxHasVersion()) Assert.Contains("Flags: none", line);
        else Assert.Contains("Flags: WEAK", line);
        // TorchSharp's fallback (copying natives into ./cpu after a failed load) never triggered.
        Assert.False(Directory.Exists(Path.Combine(folder, "cpu")));
    }

    static (int Code, string Output) Run(string file, params string[] args)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) info.ArgumentList.Add(a);
        info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        info.Environment["DOTNET_NOLOGO"] = "1";
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout + stderr.Result);
    }

    static string Root()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Puzzle.slnx"))) return dir.FullName;
        throw new InvalidOperationException("project root not found");
    }

    static string Configuration => AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Debug{Path.DirectorySeparatorChar}") ? "Debug" : "Release";

    /// <summary>`puzzle --version` from a folder loads TorchSharp's natives (it sets torch's threads) and names the runtime identifier.</summary>
    static void AssertRunsFrom(string executable)
    {
        var (code, output) = Run(executable, "--version");
        Assert.True(code == 0, output);
        Assert.Contains("libtorch 2.10", output);
        Assert.Contains("torch intra-op", output);
        Assert.Contains("linux-x64", output);
    }

    [SkippableFact]
    public void OutputShim_IsWeakenedExactlyWhereTheSystemLacksTheVersion()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the shim fix applies to Linux only");
        AssertShimFixed(AppContext.BaseDirectory);
    }

    /// <summary>The build is for this runtime identifier: its dependency manifest names linux-x64 natives only (no win-x64, osx, ...).</summary>
    [SkippableFact]
    public void Output_IsBuiltForThisRuntimeOnly()
    {
        Skip.IfNot(OperatingSystem.IsLinux() && System.Runtime.InteropServices.RuntimeInformation.OSArchitecture == System.Runtime.InteropServices.Architecture.X64,
            "the build targets linux-x64");
        string deps = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Puzzle.Cli.deps.json"));
        Assert.Contains("\"name\": \".NETCoreApp,Version=v10.0/linux-x64\"", deps);
        var platforms = System.Text.RegularExpressions.Regex.Matches(deps, "\"runtimes/([^/]+)/").Select(m => m.Groups[1].Value).ToHashSet();
        Assert.Equal(["linux-x64"], platforms);
        Assert.True(File.Exists(Path.Combine(AppContext.BaseDirectory, "libtorch_cpu.so")), "libtorch_cpu.so is not at the output's root (RID-specific build)");
    }

    /// <summary>`dotnet publish` (no build: the CLI was built with the tests) fixes the published shim, and the published executable runs.</summary>
    [SkippableFact]
    public void PublishedShim_IsFixed_AndThePublishedExecutableRuns()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the shim fix applies to Linux only");
        string publish = Path.Combine(TestSupport.TempDir(), "publish");
        try
        {
            var (code, output) = Run("dotnet", "publish", Path.Combine(Root(), "src", "Puzzle.Cli"), "-c", Configuration, "--no-build", "-o", publish, "-v", "quiet", "-clp:NoSummary");
            Assert.True(code == 0, output);
            AssertShimFixed(publish);
            AssertRunsFrom(Path.Combine(publish, "Puzzle.Cli"));
        }
        finally
        {
            if (Directory.Exists(publish)) Directory.Delete(publish, recursive: true);
        }
    }

    /// <summary>
    /// `dotnet pack` makes the `puzzle` tool package; `dotnet tool install` from that folder gives a fixed shim and a
    /// working `puzzle`. Packing compresses ~570 MB (minutes on 2 cores), so it runs where PUZZLE_PACK_TEST=1
    /// (scripts/check-tool-install.sh).
    /// </summary>
    [SkippableFact]
    public void ToolPackage_InstallsWithAFixedShim_AndRuns()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the shim fix applies to Linux only");
        Skip.IfNot(Environment.GetEnvironmentVariable("PUZZLE_PACK_TEST") == "1",
            "packing the tool takes minutes; run scripts/check-tool-install.sh (or set PUZZLE_PACK_TEST=1) to check the tool install");
        string temp = TestSupport.TempDir();
        try
        {
            string nupkg = Path.Combine(temp, "nupkg"), tools = Path.Combine(temp, "tools");
            var (code, output) = Run("dotnet", "pack", Path.Combine(Root(), "src", "Puzzle.Cli"), "-c", Configuration, "--no-build", "-o", nupkg, "-v", "quiet", "-clp:NoSummary");
            Assert.True(code == 0, output);
            Assert.Single(Directory.GetFiles(nupkg, "puzzle.*.nupkg"));
            (code, output) = Run("dotnet", "tool", "install", "--add-source", nupkg, "--tool-path", tools, "puzzle");
            Assert.True(code == 0, output);
            string installed = Directory.GetFiles(Path.Combine(tools, ".store"), "Puzzle.Cli", SearchOption.AllDirectories).Single();
            AssertShimFixed(Path.GetDirectoryName(installed)!);
            AssertRunsFrom(Path.Combine(tools, "puzzle"));
            (code, output) = Run(Path.Combine(tools, "puzzle"), "--version");
            Assert.Contains($"started as {installed} (executable)", output);
        }
        finally
        {
            Directory.Delete(temp, recursive: true);
        }
    }
}
