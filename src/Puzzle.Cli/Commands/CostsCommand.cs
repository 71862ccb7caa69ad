using System.CommandLine;
using Puzzle.Stages;
using Puzzle.Stages.Costs;

namespace Puzzle.Cli.Commands;

internal static class CostsCommand
{
    public static Command Create()
    {
        var run = CliSupport.RunOption();
        var roofline = new Option<bool>("--roofline-only") { Description = "no measurement: costs from the accelerators' rooflines and config.json alone (any parent size)" };
        var command = new Command("costs", "Measure and estimate per-block costs for the run's scenario (params, KV cache, prefill/decode time, rooflines).") { run, roofline };
        command.SetAction(r => CliSupport.Run(() =>
        {
            var costs = BlockCosts.Run(new RunDirectory(r.GetValue(run)!), rooflineOnly: r.GetValue(roofline)).ToJson();
            if (costs["roofline_only"]?.GetValue<bool>() == true)
            {
                Console.WriteLine($"{costs["entries"]!.AsArray().Count} entries from the rooflines of {string.Join(", ", costs["accelerators"]!.AsArray().Select(a => a!["key"]))}");
                return 0;
            }
            Console.WriteLine($"{"variant",-18} {"params",10} {"KV B/tok",9} {"prefill ms",11} {"decode ms",10} {"H100 dec ms",12}");
            foreach (var e in costs["entries"]!.AsArray())
                Console.WriteLine($"{e!["variant"]!.GetValue<string>(),-18} {e["parameters"]!.GetValue<long>(),10:N0} {e["kv_bytes_per_token"]!.GetValue<long>(),9} " +
                                  $"{e["prefill"]!["measured"]!["median_ms"]!.GetValue<double>(),11:F3} {e["decode"]!["measured"]!["median_ms"]!.GetValue<double>(),10:F4} " +
                                  $"{e["roofline"]!["h100"]!["decode_ms"]!.GetValue<double>(),12:F6}");
            var w = costs["whole_parent"]!;
            Console.WriteLine($"additivity (sum of parts / whole): prefill {w["additivity_ratio_prefill"]}, decode {w["additivity_ratio_decode"]}");
            return 0;
        }));
        return command;
    }
}
