using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;

namespace Puzzle.IO;

/// <summary>
/// Temporary files a killed process left behind: <c>NAME.tmp-PID-GUID-HOST</c> (<see cref="AtomicFile"/>),
/// <c>NAME.tmp-PID</c> (activation caches). One is stale when it was written on this machine by a process that no
/// longer runs; files of live processes and of other machines (shards sharing a run directory) are left alone.
/// </summary>
public static partial class TempFiles
{
    /// <summary>8 hex digits naming this machine, so shards on other machines never have their temp files removed.</summary>
    public static readonly string HostTag = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(Environment.MachineName)))[..8];

    [GeneratedRegex(@"\.tmp-(\d+)(?:-[0-9a-f]{32}(?:-([0-9a-f]{8}))?)?$")]
    private static partial Regex Pattern();

    public static bool IsStale(string path)
    {
        var match = Pattern().Match(Path.GetFileName(path));
        if (!match.Success) return false;
        if (match.Groups[2].Success && match.Groups[2].Value != HostTag) return false;             // another machine's
        if (!int.TryParse(match.Groups[1].Value, out int pid)) return false;
        if (pid == Environment.ProcessId) return false;
        try
        {
            using var process = Process.GetProcessById(pid);
            // A live process with that id that started after the file was written is not its writer.
            return process.HasExited || process.StartTime.ToUniversalTime() > File.GetLastWriteTimeUtc(path);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return true;                                                                               // no such process
        }
    }

    /// <summary>Deletes the stale temp files under <paramref name="dir"/>; returns how many.</summary>
    public static int Clean(string dir)
    {
        if (!Directory.Exists(dir)) return 0;
        int removed = 0;
        foreach (string file in Directory.EnumerateFiles(dir, "*.tmp*", SearchOption.AllDirectories).ToList())
        {
            if (!IsStale(file)) continue;
            try
            {
                File.Delete(file);
                removed++;
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        if (removed > 0) Log.Info($"run: removed {removed} temporary files left by interrupted processes in {dir}");
        return removed;
    }
}
