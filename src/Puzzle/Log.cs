namespace Puzzle;

/// <summary>Process-wide sink for user-facing messages; the CLI and tests may redirect it.</summary>
public static class Log
{
    public static Action<string> Info { get; set; } = message => Console.Error.WriteLine(message);
    public static Action<string> Warning { get; set; } = message => Console.Error.WriteLine($"warning: {message}");
}
