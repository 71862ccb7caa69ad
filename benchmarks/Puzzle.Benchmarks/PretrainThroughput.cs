using System.Diagnostics;
using Puzzle.Data;
using Puzzle.Model;
using Puzzle.Training;
using static TorchSharp.torch;

namespace Puzzle.Benchmarks;

/// <summary>
/// Training tokens/s of a preset and its MFU: achieved FLOP/s (6 · params · tokens/s) over the matmul FLOP/s this
/// CPU reaches in the same process, in fp32 and bf16 (the physical limit of the machine for this work).
/// Run: dotnet run -c Release --project benchmarks/Puzzle.Benchmarks -- pretrain [preset] [steps]
/// </summary>
public static class PretrainThroughput
{
    public static void Run(string preset, int steps)
    {
        var shape = ModelShape.Presets[preset];
        const int batch = 16, seqLen = 256, vocab = 4096;
        Console.WriteLine($"matmul peak on {Environment.ProcessorCount} cores ({get_num_threads()} torch threads):");
        double fp32 = MatmulPeak(ScalarType.Float32), bf16 = MatmulPeak(ScalarType.BFloat16);
        Console.WriteLine($"  fp32 {fp32 / 1e9:F0} GFLOP/s, bf16 {bf16 / 1e9:F0} GFLOP/s");
        foreach (var compute in new[] { ScalarType.BFloat16, ScalarType.Float32 })
        {
            var manifest = new DataManifest(seqLen, "uint16", vocab, 0, [1], new Dictionary<string, SplitInfo>(), "");
            var config = shape.ToConfig(manifest, 2048);
            using var master = new CausalLm(config, CPU, ScalarType.Float32).InitializeRandom(0);
            using var work = compute == ScalarType.Float32 ? null : new CausalLm(config, CPU, compute);
            var model = work ?? master;
            model.train();
            using var optimizer = new MixedPrecisionOptimizer(master, work, new AdamWSettings());
            var generator = new Generator(1);
            long rssAt10 = 0;
            var clock = new Stopwatch();
            for (int step = 0; step < steps; step++)
            {
                if (step == 3) clock.Start();                                               // warm-up excluded
                using (var scope = NewDisposeScope())
                {
                    var tokens = randint(vocab, [batch, seqLen + 1], dtype: ScalarType.Int64, generator: generator);
                    var logits = model.Forward(tokens.narrow(1, 0, seqLen));
                    var loss = nn.functional.cross_entropy(logits.to(ScalarType.Float32).view(-1, vocab), tokens.narrow(1, 1, seqLen).reshape(-1));
                    loss.backward();
                }
                optimizer.Step(1e-3);
                if (step == 10) rssAt10 = Process.GetCurrentProcess().WorkingSet64;
            }
            double tokensPerSecond = (steps - 3) * (double)batch * seqLen / clock.Elapsed.TotalSeconds;
            double flops = 6.0 * config.TotalParameters * tokensPerSecond;
            double peak = compute == ScalarType.Float32 ? fp32 : bf16;
            long rssEnd = Process.GetCurrentProcess().WorkingSet64;
            Console.WriteLine($"{preset} ({config.TotalParameters:N0} params), {compute} compute, batch {batch}×{seqLen}: {tokensPerSecond:N0} tokens/s, " +
                              $"{flops / 1e9:F1} GFLOP/s = MFU {100 * flops / peak:F1}% of the {compute} matmul peak; " +
                              $"RSS {rssAt10 >> 20} MiB at step 10, {rssEnd >> 20} MiB at step {steps}");
        }
    }

    /// <summary>Best of a few GEMM shapes: the model's own (tokens × hidden × FFN) and a large square one.</summary>
    static double MatmulPeak(ScalarType dtype)
    {
        double best = 0;
        foreach (var (m, k, n) in new[] { (4096, 256, 768), (4096, 768, 256), (2048, 2048, 2048) })
        {
            using var scope = NewDisposeScope();
            var a = randn(m, k).to(dtype);
            var b = randn(k, n).to(dtype);
            for (int i = 0; i < 3; i++) a.matmul(b).Dispose();
            var clock = Stopwatch.StartNew();
            int reps = 0;
            while (clock.Elapsed.TotalSeconds < 1.5) { a.matmul(b).Dispose(); reps++; }
            best = Math.Max(best, 2.0 * m * k * n * reps / clock.Elapsed.TotalSeconds);
        }
        return best;
    }
}
