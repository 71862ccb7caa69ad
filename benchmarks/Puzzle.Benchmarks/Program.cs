using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

// TorchSharp loads native code: run benchmarks in-process (design.md 7).
var config = DefaultConfig.Instance.AddJob(Job.Default.WithToolchain(InProcessEmitToolchain.Instance).WithWarmupCount(1).WithIterationCount(5));
BenchmarkSwitcher.FromAssembly(typeof(Puzzle.Benchmarks.GenerationBenchmark).Assembly).Run(args, config);
