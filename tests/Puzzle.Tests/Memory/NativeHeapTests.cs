using Puzzle.Runtime;
using Puzzle.Stages.Costs;
using Xunit;
using static TorchSharp.torch;

namespace Puzzle.Tests.Memory;

/// <summary>
/// The C heap's accounting (glibc <c>mallinfo2</c>) that the stages' heap traces (PUZZLE_TRACE_HEAP=1) report: a tensor
/// under the mmap threshold is counted in use while it lives and free after it is disposed; a trim hands the free
/// pages back without changing what is in use. Alone (mallinfo2 counts every thread's arena).
/// </summary>
[Collection(nameof(Runtime.ProcessThreadsCollection))]
public class NativeHeapTests
{
    [System.Runtime.InteropServices.DllImport("libc.so.6")]
    static extern int malloc_trim(nuint pad);

    [Fact]
    public void A_tensor_under_the_mmap_threshold_is_counted_in_use_then_free()
    {
        if (!OperatingSystem.IsLinux() || NativeHeap.Stats() is null) return;                  // glibc 2.33+ only
        ProcessSetup.Apply();                                                                   // the 32 MiB mmap threshold
        const long bytes = 8L << 20;                                                            // 8 MiB: from the heap, not mmapped
        // Earlier tests' tensors are freed by the finalizer thread; let it finish first, or it frees them inside the window
        // measured below (one full-suite run here saw more than the 1 MiB margin freed meanwhile).
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        var before = NativeHeap.Stats()!.Value;
        var t = ones(bytes / 4, dtype: ScalarType.Float32);
        var during = NativeHeap.Stats()!.Value;
        Assert.InRange(during.InUse - before.InUse, bytes - (64 << 10), bytes + (1 << 20));   // ± what the finalizer thread frees meanwhile
        t.Dispose();
        var after = NativeHeap.Stats()!.Value;
        Assert.InRange(during.InUse - after.InUse, bytes - (64 << 10), bytes + (1 << 20));
        Assert.True(after.Free >= bytes, $"{after.Free} bytes free after disposing {bytes}");
        if (!NativeHeap.Enabled) return;
        Assert.True(NativeHeap.Trim());
        Assert.InRange(NativeHeap.Stats()!.Value.InUse, after.InUse - (1 << 20), after.InUse + (1 << 20));
    }

    [Fact]
    public void Resident_reads_the_process_status()
    {
        if (!OperatingSystem.IsLinux()) return;
        var r = NativeHeap.Resident()!.Value;
        Assert.True(r.Rss > 0 && r.Peak >= r.Rss, $"rss {r.Rss}, peak {r.Peak}");
        Assert.Contains("heap in use", NativeHeap.Describe());
    }

    [Fact]
    public void The_engine_timer_leaves_no_request_temporaries_resident()
    {
        if (!OperatingSystem.IsLinux() || !NativeHeap.Available) return;                      // PUZZLE_HEAP_TRIM=0 makes it fail, as it should
        ProcessSetup.Apply();
        // Per layer, attention scores and probabilities of [16, 2, 2 × 256, 256] fp32 and the FFN's gate, up projection and
        // product of [16, 256, 1536] fp32 (16.8 and 25.2 MB: under the 32 MiB mmap threshold, from the heap): ≈ 110 MB.
        var config = TestSupport.TinyParentConfig(2) with { MaxPositionEmbeddings = 512, Blocks = [.. Enumerable.Repeat(Puzzle.Model.BlockConfig.Llama(2, 1536), 2)] };
        using var model = TestSupport.Build(config);
        var random = new Random(3);
        var prompts = Enumerable.Range(0, 16).Select(_ => Enumerable.Range(0, 256).Select(_ => random.Next(3, config.VocabSize)).ToArray()).ToList();
        var options = new GenerationOptions { MaxNewTokens = 2, StopAtEos = false };
        EngineTimer.Interleaved([model], prompts, options, warmup: 0, rounds: 1);             // what stays (kernels, caches, fused copies) stays
        malloc_trim(0);                                                                         // the test's own, even with PUZZLE_HEAP_TRIM=0
        long before = NativeHeap.Resident()!.Value.Rss;
        var samples = EngineTimer.Interleaved([model], prompts, options, warmup: 1, rounds: 2);
        long after = NativeHeap.Resident()!.Value.Rss;
        Assert.Equal(2, samples[0].Count);
        // Untrimmed, the freed temporaries stay resident after the last round (≈ 110 MB); trimmed, what is left is the
        // managed heap's growth (≈ 20 MB).
        Assert.True(after - before < 48L << 20, $"resident grew by {(after - before) >> 20} MiB over the rounds");
    }
}
