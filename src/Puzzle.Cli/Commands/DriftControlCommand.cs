using System.CommandLine;
using Puzzle.Stages;
using Puzzle.Stages.Search;

namespace Puzzle.Cli.Commands;

/// <summary>
/// `puzzle drift-control --run RUN`: readings of the control child that search.drift_control times beside every measured
/// check, spaced in time and stored for this machine, so that a search's reference rests on many moments.
/// </summary>
internal static class DriftControlCommand
{
    public static Command Create()
    {
        var run = CliSupport.RunOption();
        var readings = new Option<int>("--readings")
        {
            Description = $"how many readings (default {DriftControl.SettledReadings}, the number a reference should rest on)",
            DefaultValueFactory = _ => DriftControl.SettledReadings,
        };
        var every = new Option<double>("--every") { Description = "seconds between readings (default 30)", DefaultValueFactory = _ => 30 };
        var command = new Command("drift-control",
            "Time the run's drift control (a child with attention in every third layer and FFNs at a quarter width) against the parent " +
            "several times, spaced apart, and store the readings: the reference search.drift_control scales its checks to is their median.")
        { run, readings, every };
        command.SetAction(r => CliSupport.Run(() =>
        {
            var taken = DriftControl.Calibrate(new RunDirectory(r.GetValue(run)!), r.GetValue(readings), TimeSpan.FromSeconds(r.GetValue(every)), Console.WriteLine);
            Console.WriteLine($"{taken.Count} readings: {string.Join(" ", taken.Select(t => t.ToString("F2", System.Globalization.CultureInfo.InvariantCulture)))}");
            return 0;
        }));
        return command;
    }
}
