using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Puzzle.Benchmarks;
using Puzzle.Runtime;

// The CLI's own process settings (allocator, huge pages, threads), so a benchmark measures what the CLI does.
ProcessSetup.RestartWithHugePages("Puzzle.Benchmarks");
Console.WriteLine($"process: {ProcessSetup.Apply().Describe()}");

// Scenario benchmarks print their own figures; the rest run under BenchmarkDotNet, in-process (TorchSharp loads
// native code; design.md 7).
switch (args.FirstOrDefault())
{
    case "bld-activations":
        BldActivations.Run(args[1], args.Length > 2 ? int.Parse(args[2]) : 16, args.Length > 3 ? int.Parse(args[3]) : 256);
        break;
    case "search":
        SearchScale.Run();
        break;
    case "engine-parity":
        EngineParity.Run(args.Length > 1 ? int.Parse(args[1]) : 3, args.Length > 2 ? args[2].Split(',').Select(int.Parse).ToArray() : [1, 16, 64], args.Length > 3 ? int.Parse(args[3]) : 128, args.Length > 4 ? int.Parse(args[4]) : 128,
            args.Length > 5 ? args[5].Split(',') : null);
        break;
    case "engine-ratio":
        {
            bool dirs = args.Length > 2 && Directory.Exists(args[1]);
            string[] rest = args.Skip(dirs ? 3 : 1).ToArray();
            EngineParity.RunRatio(dirs ? args[1] : null, dirs ? args[2] : null, rest.Length > 0 ? int.Parse(rest[0]) : 3, rest.Length > 1 ? int.Parse(rest[1]) : 16,
                rest.Length > 2 ? int.Parse(rest[2]) : 128, rest.Length > 3 ? int.Parse(rest[3]) : 128, rest.Length > 4 ? rest[4] : "bfloat16");
            break;
        }
    case "cost-model":
        CostModelAccuracy.Run(args[1], args.Length > 2 ? int.Parse(args[2]) : 9, args.Skip(3).ToArray());
        break;
    case "weights-speed":
        WeightsSpeed.Run(args[1], int.Parse(args[2]), args[3..]);
        break;
    case "side-by-side":
        SolutionsSideBySide.Run(double.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture), int.Parse(args[2]), args[3..]);
        break;
    case "control-check":
        ControlCheck.Run(double.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture), int.Parse(args[2]), args[3..]);
        break;
    case "ratio-drift":
        RatioDrift.Run(args[1], double.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture), int.Parse(args[3]), args[4..]);
        break;
    case "step-noise":
        StepNoise.Run(int.Parse(args[1]), args[2..]);
        break;
    case "ops-probe":
        OpsProbe.Run(args[1..]);
        break;
    case "linear-probe":
        LinearProbe.Run(args[1..]);
        break;
    case "decode-loop":
        DecodeLoop.Run(int.Parse(args[1]), args[2], double.Parse(args[3]));
        break;
    case "attention-probe":
        AttentionProbe.Run(args[1..]);
        break;
    case "prefill-probe":
        PrefillProbe.Run(args[1..]);
        break;
    case "engine-profile":
        EngineProfile.Run(args.Length > 1 ? int.Parse(args[1]) : 16, args.Length > 2 ? args[2] : "bfloat16", args.Length > 3 ? int.Parse(args[3]) : 128, args.Length > 4 ? int.Parse(args[4]) : 128);
        break;
    case "optimizer-step-memory":
        OptimizerStepMemory.Run(long.Parse(args[1]), args[2], args.Length > 3 ? int.Parse(args[3]) : 8192, args.Length > 4 ? int.Parse(args[4]) : 2048);
        break;
    case "gkd-step":
        GkdThroughput.Run(args[1], args[2], args[3], args.Length > 4 ? int.Parse(args[4]) : 8, args.Length > 5 ? int.Parse(args[5]) : 10);
        break;
    case "pretrain":
        PretrainThroughput.Run(args.Length > 1 ? args[1] : "demo", args.Length > 2 ? int.Parse(args[2]) : 40);
        break;
    default:
        var config = DefaultConfig.Instance.AddJob(Job.Default.WithToolchain(InProcessEmitToolchain.Instance).WithWarmupCount(1).WithIterationCount(5));
        BenchmarkSwitcher.FromAssembly(typeof(GenerationBenchmark).Assembly).Run(args, config);
        break;
}
