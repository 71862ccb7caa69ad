using System.Diagnostics;

namespace Puzzle;

/// <summary>Progress of long work: bars in a terminal (the CLI installs them), plain log lines elsewhere.</summary>
public interface IProgressReporter
{
    IProgressTask Start(string name, double total);
}

public interface IProgressTask : IDisposable
{
    void Report(double value, string status = "");
}

public static class Progress
{
    public static IProgressReporter Current { get; set; } = new LogProgress();
}

/// <summary>Plain lines: one at most every 15 s per task, and a final one.</summary>
public sealed class LogProgress : IProgressReporter
{
    public IProgressTask Start(string name, double total) => new Task(name, total);

    sealed class Task(string name, double total) : IProgressTask
    {
        readonly Stopwatch _clock = Stopwatch.StartNew();
        double _lastLog = -1, _value;
        string _status = "";

        public void Report(double value, string status = "")
        {
            (_value, _status) = (value, status);
            if (_clock.Elapsed.TotalSeconds - _lastLog < 15) return;
            _lastLog = _clock.Elapsed.TotalSeconds;
            Log.Info($"{name}: {100 * value / Math.Max(total, 1e-12):F0}% {status}".TrimEnd());
        }

        public void Dispose() => Log.Info($"{name}: done in {_clock.Elapsed.TotalSeconds:F1} s {(_value > 0 ? _status : "")}".TrimEnd());
    }
}
