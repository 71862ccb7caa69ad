namespace Puzzle;

/// <summary>Process-wide sink for user-facing messages; the CLI and tests may redirect it.</summary>
public static class Log
{
    public static Action<string> Info { get; set; } = message => Console.Error.WriteLine(message);
    public static Action<string> Warning { get; set; } = message => Console.Error.WriteLine($"warning: {message}");

    /// <summary>Diagnostics, printed only when PUZZLE_LOG=debug.</summary>
    public static Action<string> Debug { get; set; } = string.Equals(Environment.GetEnvironmentVariable("PUZZLE_LOG"), "debug", StringComparison.OrdinalIgnoreCase)
        ? message => Console.Error.WriteLine($"debug: {message}")
        : _ => { };
}
