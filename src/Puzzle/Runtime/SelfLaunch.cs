using System.Diagnostics;
using System.Reflection;

namespace Puzzle.Runtime;

/// <summary>
/// Starts this program's own subcommands in a new process, whichever way this process was started: the executable
/// itself when this process is the apphost (the built or published executable, `dotnet run`, a `dotnet tool`
/// install), `dotnet Puzzle.Cli.dll` when it runs under the dotnet host. Settings the new process needs are applied
/// by its own start-up (<see cref="ProcessSetup"/>), not inherited from the launcher.
/// </summary>
public static class SelfLaunch
{
    public const string CliAssemblyName = "Puzzle.Cli";

    /// <summary>The command that starts the CLI again, before its arguments; null when this process is not the CLI (a test host, a benchmark).</summary>
    public static IReadOnlyList<string>? Command =>
        Resolve(Environment.ProcessPath, Assembly.GetEntryAssembly()?.GetName().Name, Assembly.GetEntryAssembly()?.Location);

    /// <summary>
    /// [processPath] for an apphost or a single-file app; [processPath, entryAssemblyPath] when the process is the
    /// dotnet host; null when the entry assembly is not the CLI.
    /// </summary>
    public static IReadOnlyList<string>? Resolve(string? processPath, string? entryAssemblyName, string? entryAssemblyPath)
    {
        if (string.IsNullOrEmpty(processPath) || entryAssemblyName != CliAssemblyName) return null;
        bool dotnetHost = Path.GetFileNameWithoutExtension(processPath).Equals("dotnet", StringComparison.OrdinalIgnoreCase);
        if (!dotnetHost) return [processPath];
        return string.IsNullOrEmpty(entryAssemblyPath) ? null : [processPath, entryAssemblyPath];
    }

    /// <summary>A start description for `puzzle ARGS...` with stdout and stderr redirected; null when this process is not the CLI.</summary>
    public static ProcessStartInfo? StartInfo(IEnumerable<string> arguments)
    {
        if (Command is not { } command) return null;
        var info = new ProcessStartInfo(command[0]) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in command.Skip(1).Concat(arguments)) info.ArgumentList.Add(a);
        return info;
    }
}
