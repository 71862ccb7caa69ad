using Puzzle.Model;
using Puzzle.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Benchmarks;

/// <summary>
/// Peak resident memory of <see cref="MixedPrecisionOptimizer"/>'s step alone, as GKD uses it (fp32 masters, bf16
/// working copy, bf16 gradients moved to fp32): a stack of [rows, cols] matrices (a Llama-3.2-1B FFN matrix by
/// default) of about MILLIONS trained parameters, two steps. Prints VmRSS before the first step and VmHWM after
/// each; run once per chunk size, one process each (VmHWM is per process):
/// Puzzle.Benchmarks optimizer-step-memory 340 default|oneshot [rows] [cols]
/// </summary>
public static class OptimizerStepMemory
{
    public static void Run(long millions, string chunk, int rows, int cols)
    {
        int count = (int)Math.Max(1, millions * 1_000_000 / ((long)rows * cols));
        long chunkElements = chunk == "oneshot" ? long.MaxValue : chunk == "default" ? MixedPrecisionOptimizer.DefaultChunkElements : long.Parse(chunk);
        using var master = new Stack(count, rows, cols, ScalarType.Float32);
        using var work = new Stack(count, rows, cols, ScalarType.BFloat16);
        using (no_grad())
            foreach (var p in master.parameters()) p.normal_(0, 0.02);
        long parameters = master.parameters().Sum(p => p.numel());
        using var optimizer = new MixedPrecisionOptimizer(master, work, new AdamWSettings(), chunkElements);
        Console.WriteLine($"{parameters / 1e6:F1} M trained parameters in {count} matrices [{rows}, {cols}]; {optimizer.Chunks} AdamW chunk(s) ({chunk}); " +
                          $"step temporaries bound {MixedPrecisionOptimizer.StepTemporaryBytes(master.parameters().Select(p => p.numel()), chunkElements) / (double)(1L << 30):F2} GiB");
        Console.WriteLine($"before the first step: VmRSS {Status("VmRSS")}, VmHWM {Status("VmHWM")}");
        for (int step = 1; step <= 2; step++)
        {
            using (no_grad())
                foreach (var p in work.parameters()) p.grad = randn_like(p).mul_(1e-3);
            optimizer.Step(1e-4);
            Console.WriteLine($"after step {step}: VmRSS {Status("VmRSS")}, VmHWM {Status("VmHWM")}");
        }
    }

    sealed class Stack : nn.Module
    {
        [TorchSharp.Utils.ComponentName(Name = "layers")] readonly TorchSharp.Modules.ModuleList<Projection> _layers;

        public Stack(int count, int rows, int cols, ScalarType dtype) : base(nameof(Stack))
        {
            _layers = new TorchSharp.Modules.ModuleList<Projection>(Enumerable.Range(0, count).Select(_ => new Projection(cols, rows, CPU, dtype)).ToArray());
            RegisterComponents();
        }
    }

    static string Status(string field)
    {
        string line = File.ReadLines("/proc/self/status").First(l => l.StartsWith(field + ":", StringComparison.Ordinal));
        long kib = long.Parse(line.Split(':')[1].Trim().Split(' ')[0]);
        return $"{kib / (double)(1 << 20):F2} GiB";
    }
}
