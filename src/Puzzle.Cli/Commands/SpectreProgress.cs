using Spectre.Console;

namespace Puzzle.Cli.Commands;

/// <summary>Progress bars in a terminal; plain log lines (Puzzle.LogProgress) when output is redirected.</summary>
internal sealed class SpectreProgress(ProgressContext context) : IProgressReporter
{
    public IProgressTask Start(string name, double total) => new Task(context.AddTask(Markup.Escape(name), maxValue: Math.Max(total, 1e-9)));

    sealed class Task(ProgressTask task) : IProgressTask
    {
        public void Report(double value, string status = "")
        {
            task.Value = value;
            task.Description = $"{task.Description.Split(" | ")[0]} | {Markup.Escape(status)}";
        }

        public void Dispose() => task.Value = task.MaxValue;
    }

    /// <summary>Runs <paramref name="action"/> with bars when stdout is a terminal.</summary>
    public static int Run(Func<int> action)
    {
        if (Console.IsOutputRedirected || Environment.GetEnvironmentVariable("CI") is not null) return action();
        int result = 0;
        var previousLog = Log.Info;
        AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(context =>
            {
                Progress.Current = new SpectreProgress(context);
                Log.Info = message => AnsiConsole.MarkupLine(Markup.Escape(message));
                try { result = action(); }
                finally
                {
                    Progress.Current = new LogProgress();
                    Log.Info = previousLog;
                }
            });
        return result;
    }
}
