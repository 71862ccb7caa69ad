using System.CommandLine;
using Puzzle.Checkpoints;
using Puzzle.Config;
using Puzzle.IO;
using Puzzle.Planning;
using Puzzle.Stages.Costs;

namespace Puzzle.Cli.Commands;

internal static class PlanCommand
{
    public static Command Create()
    {
        var parent = new Argument<string>("PARENT") { Description = "the parent's HF directory (only config.json is read)" };
        var config = new Option<string?>("--config") { Description = "run config (JSON or YAML); defaults when omitted" };
        var gpu = new Option<string?>("--gpu") { Description = $"plan for a named GPU from its roofline instead of this machine ({string.Join(", ", Accelerators.All.Select(a => a.Key))})" };
        var gpus = new Option<int>("--gpus") { Description = "number of GPUs (with --gpu)", DefaultValueFactory = _ => 1 };
        var sets = new Option<string[]>("--set") { Description = "section.key=value overrides of the config", AllowMultipleArgumentsPerToken = true };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var command = new Command("plan", "Estimate time, peak memory and disk of every stage for a parent and run config, before running anything (docs/memory.md).")
            { parent, config, gpu, gpus, sets, json };
        command.SetAction(r => CliSupport.Run(() =>
        {
            var model = HfConfig.Read(r.GetValue(parent)!);
            string? configPath = r.GetValue(config);
            // Relative paths (data.path: the prepared test split's size) against the config's folder, as `puzzle run` reads
            // them: a run's own RUN/config.json names its data "data".
            var run = configPath is null ? new RunConfig() : RunCommands.Resolve(configPath, r.GetValue(sets) ?? []);
            var calibration = r.GetValue(gpu) is { } name
                ? Planner.Roofline(Accelerators.Get(name), r.GetValue(gpus))
                : Planner.Calibrate(model, run.Data.SeqLen, Training.Precision.Resolve(run.Bld.Precision, TorchSharp.torch.CPU),
                    parentDir: r.GetValue(parent), startupSeconds: Planner.ProcessStartupSeconds(),
                    decodeBatch: run.Scenario.Batch, decodeContext: run.Scenario.PromptLength + run.Scenario.GenerationLength / 2);
            var plans = Planner.Plan(model, run, calibration);
            if (r.GetValue(json))
            {
                Console.WriteLine(Planner.ToJson(model, calibration, plans).ToJsonString(AtomicFile.Indented));
                return 0;
            }
            Console.WriteLine($"{r.GetValue(parent)}: {model.NumLayers} layers, hidden {model.HiddenSize}, vocab {model.VocabSize}, {model.TotalParameters:N0} parameters");
            Console.WriteLine($"rates: {calibration.Source}: fp32 {calibration.Fp32Rate / 1e9:F1} GFLOP/s, {calibration.Compute} {calibration.ComputeRate / 1e9:F1} GFLOP/s");
            string memory = calibration.OnGpu ? "peak GPU mem" : "peak RAM";
            Console.WriteLine($"{"stage",-20} {"time",10} {memory + " GiB",16} {"disk GiB",9}  note");
            foreach (var p in plans)
                Console.WriteLine($"{p.Stage,-20} {Duration(p.Seconds),10} {p.PeakBytes / (double)(1L << 30),16:F2} {p.DiskBytes / (double)(1L << 30),9:F2}  " +
                                  $"{p.Note}{(calibration.GpuMemoryBytes is { } m && !p.Host && p.PeakBytes > m ? "  (does not fit)" : "")}");
            Console.WriteLine($"{"total",-20} {Duration(plans.Sum(p => p.Seconds)),10} {plans.Max(p => p.PeakBytes) / (double)(1L << 30),16:F2} {plans.Sum(p => p.DiskBytes) / (double)(1L << 30),9:F2}");
            return 0;
        }));
        return command;
    }

    static string Duration(double seconds) => seconds < 120 ? $"{seconds:F0} s" : seconds < 7200 ? $"{seconds / 60:F1} min" : $"{seconds / 3600:F1} h";
}
