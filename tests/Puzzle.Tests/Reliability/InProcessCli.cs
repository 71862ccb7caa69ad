using System.Diagnostics;
using System.Reflection;
using System.Text;

namespace Puzzle.Tests.Reliability;

/// <summary>
/// Runs the `puzzle` program's real entry point inside the test process (no process start-up per case), with its
/// stdout and stderr captured per call: the console writers route to the calling test's buffers through an
/// AsyncLocal, so tests running in parallel never see each other's output.
/// </summary>
internal static class InProcessCli
{
    sealed class Routing(TextWriter fallback, Func<Capture?> current, bool error) : TextWriter
    {
        public override Encoding Encoding => Encoding.UTF8;
        TextWriter Target => current() is { } c ? (error ? c.Stderr : c.Stdout) : fallback;
        public override void Write(char value) { lock (this) Target.Write(value); }
        public override void Write(string? value) { lock (this) Target.Write(value); }
        public override void WriteLine(string? value) { lock (this) Target.WriteLine(value); }
        public override void Flush() => Target.Flush();
    }

    sealed class Capture
    {
        public StringWriter Stdout { get; } = new();
        public StringWriter Stderr { get; } = new();
    }

    static readonly AsyncLocal<Capture?> Current = new();
    static readonly MethodInfo EntryPoint;

    static InProcessCli()
    {
        Environment.SetEnvironmentVariable("CI", "true");                                    // plain log lines, no progress bars
        EntryPoint = Assembly.Load("Puzzle.Cli").EntryPoint ?? throw new InvalidOperationException("Puzzle.Cli has no entry point");
        Console.SetOut(new Routing(Console.Out, () => Current.Value, error: false));
        Console.SetError(new Routing(Console.Error, () => Current.Value, error: true));
    }

    public sealed record Result(int Code, string Stdout, string Stderr, TimeSpan Elapsed, bool TimedOut);

    /// <summary>Runs `puzzle ARGS` in this process; gives up waiting after <paramref name="limit"/>.</summary>
    public static Result Run(TimeSpan limit, params string[] args)
    {
        var capture = new Capture();
        var clock = Stopwatch.StartNew();
        var task = Task.Run(() =>
        {
            Current.Value = capture;
            return (int)EntryPoint.Invoke(null, [args])!;
        });
        bool finished = task.Wait(limit);
        return new Result(finished ? task.Result : -1, capture.Stdout.ToString(), capture.Stderr.ToString(), clock.Elapsed, !finished);
    }
}
