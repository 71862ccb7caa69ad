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

    [SkippableFact]
    public void OutputShim_IsWeakenedExactlyWhereTheSystemLacksTheVersion()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the shim fix applies to Linux only");
        string shim = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        Assert.True(File.Exists(shim), $"{shim} is missing");
        string? versions = ReadElfVersions(shim);
        Skip.If(versions is null, "readelf (binutils) is not installed");
        string line = versions!.Split('\n').Single(l => l.Contains("Name: GLIBCXX_3.4.32"));
        if (SystemLibStdCxxHasVersion()) Assert.Contains("Flags: none", line);
        else Assert.Contains("Flags: WEAK", line);
        // TorchSharp's fallback (copying natives into ./cpu after a failed load) never triggered.
        Assert.False(Directory.Exists(Path.Combine(AppContext.BaseDirectory, "cpu")));
    }
}
