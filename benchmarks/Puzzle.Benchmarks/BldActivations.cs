using System.Diagnostics;
using Puzzle.Checkpoints;
using static TorchSharp.torch;

namespace Puzzle.Benchmarks;

/// <summary>
/// BLD needs the parent's input to layer L for every batch. Two ways: recompute the parent's first L layers per batch
/// (what the library stage does), or cache the activations to disk in bf16 once and read them back. This times both
/// per batch on a real parent, for the deepest layer (the most expensive recompute).
/// Run: dotnet run -c Release --project benchmarks/Puzzle.Benchmarks -- bld-activations PARENT_DIR [batch] [seq]
/// </summary>
public static class BldActivations
{
    public static void Run(string parentDir, int batch, int seqLen)
    {
        using var parent = Checkpoint.Load(parentDir);
        using var noGrad = no_grad();
        int layer = parent.Config.NumLayers - 1;
        var ids = randint(parent.Config.VocabSize, [batch, seqLen], dtype: ScalarType.Int64, generator: new Generator(1));
        double Time(Action action, int repeats = 10)
        {
            action();
            var samples = new List<double>();
            for (int i = 0; i < repeats; i++)
            {
                var clock = Stopwatch.StartNew();
                action();
                samples.Add(clock.Elapsed.TotalMilliseconds);
            }
            return samples.Order().ElementAt(repeats / 2);
        }
        double recompute = Time(() => { using var s = NewDisposeScope(); parent.LayerInput(ids, layer); });

        // Cache: 64 batches' activations in bf16 on disk (beyond the page cache's reach would be slower still).
        string file = Path.Combine(Path.GetTempPath(), $"bld-cache-{Guid.NewGuid():N}.bin");
        using var activations = parent.LayerInput(ids, layer).to(ScalarType.BFloat16).contiguous();
        byte[] bytes = activations.bytes.ToArray();
        using (var stream = File.Create(file)) for (int i = 0; i < 64; i++) stream.Write(bytes);
        int index = 0;
        double read = Time(() =>
        {
            using var s = NewDisposeScope();
            using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan);
            stream.Seek((long)(index++ % 64) * bytes.Length, SeekOrigin.Begin);
            var target = empty([batch, seqLen, parent.Config.HiddenSize], dtype: ScalarType.BFloat16);
            stream.ReadExactly(target.bytes);
            target.to(ScalarType.Float32);
        });
        File.Delete(file);
        Console.WriteLine($"layer {layer} input for a batch of {batch}×{seqLen} ({bytes.Length / (1 << 20):F1} MiB in bf16): " +
                          $"recompute {recompute:F1} ms, read from a bf16 disk cache {read:F1} ms (page cache warm) -> " +
                          $"{(recompute < read ? "recompute is faster" : $"the cache is faster by {recompute - read:F1} ms per batch, i.e. {100 * (recompute - read) / recompute:F0}% of the recompute")}");
    }
}
