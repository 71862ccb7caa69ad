using System.CommandLine;
using System.Globalization;
using Puzzle.Stages;
using Puzzle.Stages.Baselines;
using Puzzle.Stages.Report;

namespace Puzzle.Cli.Commands;

internal static class BaselinesCommand
{
    public static Command Create()
    {
        var run = CliSupport.RunOption();
        var only = new Option<string[]>("--only") { Description = $"build only these baselines ({string.Join(", ", BaselineRules.Names)}); default: the config's `baselines`, else all", AllowMultipleArgumentsPerToken = true };
        var sweep = new Option<bool>("--gkd-sweep") { Description = "also distil every method (the Puzzle child too) with shares of gkd.tokens: the config's baselines_gkd_fractions, else 0, 0.1, 0.3, 1" };
        var fractions = new Option<string?>("--gkd-fractions") { Description = "the GKD shares for the sweep, e.g. 0,0.1,0.3,1 (implies --gkd-sweep)" };
        var command = new Command("baselines", "Build the built-in baselines (uniform, depth, subblock, random) of a finished run at its throughput target, " +
                                               "take them through GKD, eval and bench, and add the baselines table to the report.") { run, only, sweep, fractions };
        command.SetAction(r => CliSupport.Run(() => SpectreProgress.Run(() =>
        {
            var dir = new RunDirectory(r.GetValue(run)!);
            string[] names = r.GetValue(only) is { Length: > 0 } o ? o : dir.Config.Baselines.Length > 0 ? dir.Config.Baselines : BaselineRules.Names;
            double[]? shares = null;
            if (r.GetValue(fractions) is { } text)
                shares = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(s =>
                    double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double f) ? f
                        : throw new PuzzleException($"--gkd-fractions '{text}': '{s}' is not a number")).ToArray();
            else if (r.GetValue(sweep)) shares = dir.Config.BaselinesGkdFractions.Length > 0 ? dir.Config.BaselinesGkdFractions : [0, 0.1, 0.3, 1];
            var outcome = BaselinesStage.Run(dir, names, shares);
            if (File.Exists(dir.Report)) BaselinesReport.Write(dir);
            else Console.WriteLine($"{dir.Report} does not exist yet: the baselines table is added when the pipeline writes its report");
            foreach (var (name, failure) in outcome)
                if (failure is null) Console.WriteLine($"{name}: done -> {dir.Artifact(BaselinesStage.Folder, name)}");
                else Console.Error.WriteLine($"error: {failure}");
            Console.WriteLine($"report: {dir.ReportMarkdown}");
            return outcome.Values.Any(f => f is not null) ? 1 : 0;
        })));
        return command;
    }
}
