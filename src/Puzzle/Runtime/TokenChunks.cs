using System.Runtime.InteropServices;
using Puzzle.Model;
using static TorchSharp.torch;

namespace Puzzle.Runtime;

/// <summary>Per-token metrics of one model (and a reference) over N tokens, each [N]: NLL, argmax, KL(reference ‖ model), reference argmax.</summary>
public sealed record TokenStatTensors(Tensor Nll, Tensor Predicted, Tensor? Kl, Tensor? ReferencePredicted)
{
    /// <summary>The reference's own NLL of the targets [N] (with a reference): its metrics come from the same pass.</summary>
    public Tensor? ReferenceNll { get; init; }
}

/// <summary>
/// Log-softmax work over the vocabulary done a few tokens at a time, so that no [tokens, V] tensor exists: peak memory
/// is the final hidden states ([tokens, H]) plus one chunk's logits ([chunk, V], with chunk × V ≤ 2^24 values, 64 MiB
/// in fp32), whatever the vocabulary and the number of tokens. Each row is computed exactly as the full tensor would
/// compute it (logits in the model's dtype, then fp32 log-softmax), so results equal the unchunked computation.
/// </summary>
public static class TokenChunks
{
    /// <summary>Values of one chunk's logits; a chunk is this over the vocabulary size, at least one token.</summary>
    public const long ChunkValues = 1L << 24;

    public static long DefaultTokens(long vocab) => Math.Max(1, ChunkValues / Math.Max(1, vocab));

    /// <summary>The model's final normed hidden states [B, T, H] (the input of the LM head); <paramref name="states"/> gets each layer's output.</summary>
    public static Tensor FinalHidden(CausalLm model, Tensor ids, List<Tensor>? states = null)
    {
        using var scope = NewDisposeScope();
        var normed = model.Model.Norm.call(model.ForwardTrunk(ids, hiddenStates: states));
        if (states is not null) foreach (var s in states) s.MoveToOuterDisposeScope();
        return normed.MoveToOuterDisposeScope();
    }

    /// <summary>fp32 log-probabilities of one chunk of normed hidden rows [c, H] under an LM head [V, H].</summary>
    public static Tensor LogProbs(Tensor hidden, Tensor head, double temperature = 1.0)
    {
        var logits = nn.functional.linear(hidden, head).to(ScalarType.Float32);
        return (temperature == 1.0 ? logits : logits / temperature).log_softmax(-1);
    }

    /// <summary>
    /// Per-token NLL of <paramref name="targets"/> [N] and argmax under (<paramref name="hidden"/> [N, H], <paramref name="head"/>), and, with a
    /// reference (its hidden rows on its own device and head), KL(reference ‖ model) and the reference's argmax. Results are on the model's device.
    /// </summary>
    public static TokenStatTensors Stats(Tensor hidden, Tensor head, Tensor targets, Tensor? referenceHidden = null, Tensor? referenceHead = null, long? chunkTokens = null)
    {
        long n = hidden.shape[0];
        long chunk = Math.Max(1, chunkTokens ?? DefaultTokens(head.shape[0]));
        var device = hidden.device;
        var nll = empty([n], dtype: ScalarType.Float32, device: device);
        var predicted = empty([n], dtype: ScalarType.Int64, device: device);
        bool reference = referenceHidden is not null;
        var kl = reference ? empty([n], dtype: ScalarType.Float32, device: device) : null;
        var referencePredicted = reference ? empty([n], dtype: ScalarType.Int64, device: device) : null;
        var referenceNll = reference ? empty([n], dtype: ScalarType.Float32, device: device) : null;
        using var noGrad = no_grad();
        for (long start = 0; start < n; start += chunk)
        {
            using var scope = NewDisposeScope();
            long c = Math.Min(chunk, n - start);
            var logq = LogProbs(hidden.narrow(0, start, c), head);
            nll.narrow(0, start, c).copy_(logq.gather(-1, targets.narrow(0, start, c).unsqueeze(-1)).squeeze(-1).neg());
            predicted.narrow(0, start, c).copy_(logq.argmax(-1));
            if (reference)
            {
                var logp = LogProbs(referenceHidden!.narrow(0, start, c), referenceHead!).to(device);
                kl!.narrow(0, start, c).copy_((logp.exp() * (logp - logq)).sum(-1));
                referencePredicted!.narrow(0, start, c).copy_(logp.argmax(-1));
                referenceNll!.narrow(0, start, c).copy_(logp.gather(-1, targets.narrow(0, start, c).unsqueeze(-1)).squeeze(-1).neg());
            }
        }
        return new TokenStatTensors(nll, predicted, kl, referencePredicted) { ReferenceNll = referenceNll };
    }
}

/// <summary>
/// Hands the C heap's free pages back to the system (glibc <c>malloc_trim(0)</c>; nothing elsewhere). Tensors under the
/// mmap threshold (32 MiB: <see cref="ProcessSetup"/>) come from the heap, which the 2 GiB trim threshold never
/// shrinks, and a forward's temporaries were not reused from one window batch to the next: evaluating the
/// SmolLM2-135M-shaped parent and child at batch 8 × 256 grew the process by ≈ 36 MiB per layer forward (each layer's
/// attention scores, 18.9 MB, twice), from 2.4 to 8.2 GiB over 16 batches, with the live tensors constant
/// (benchmarks/real-parents/RESULTS.md, 3 Dec, later). Called after each batch, the process stays at one batch's peak.
/// </summary>
public static unsafe class NativeHeap
{
    static readonly delegate* unmanaged<nuint, int> MallocTrim = Load();

    static delegate* unmanaged<nuint, int> Load() =>
        OperatingSystem.IsLinux() && NativeLibrary.TryLoad("libc.so.6", out var libc) && NativeLibrary.TryGetExport(libc, "malloc_trim", out var trim)
            ? (delegate* unmanaged<nuint, int>)trim
            : null;

    /// <summary>Whether this process can trim its heap (Linux with glibc).</summary>
    public static bool Available => MallocTrim != null;

    /// <summary>PUZZLE_TRACE_HEAP=1: stages log <see cref="Describe"/> at their phases (BLD's layers and steps, the engine timer's rounds).</summary>
    public static readonly bool Tracing = Environment.GetEnvironmentVariable("PUZZLE_TRACE_HEAP") == "1";

    /// <summary>PUZZLE_HEAP_TRIM=0 turns every trim off (to measure what the trims save).</summary>
    public static readonly bool Enabled = Environment.GetEnvironmentVariable("PUZZLE_HEAP_TRIM") != "0";

    /// <summary>Returns the heap's free pages to the system; false where there is no glibc (or PUZZLE_HEAP_TRIM=0).</summary>
    public static bool Trim() => Enabled && MallocTrim != null && MallocTrim(0) >= 0;

    [StructLayout(LayoutKind.Sequential)]
    struct MallInfo2
    {
        public nuint Arena, Ordblks, Smblks, Hblks, Hblkhd, Usmblks, Fsmblks, Uordblks, Fordblks, Keepcost;
    }

    static readonly delegate* unmanaged<MallInfo2> MallInfo = LoadMallInfo();

    static delegate* unmanaged<MallInfo2> LoadMallInfo() =>
        OperatingSystem.IsLinux() && NativeLibrary.TryLoad("libc.so.6", out var libc) && NativeLibrary.TryGetExport(libc, "mallinfo2", out var info)
            ? (delegate* unmanaged<MallInfo2>)info
            : null;

    /// <summary>
    /// The C heap's bytes in use (allocated chunks, the mmapped ones included) and free (in the arenas' free lists and
    /// their tops, resident or not) (glibc <c>mallinfo2</c>, every arena); null where there is no glibc 2.33+.
    /// </summary>
    public static (long InUse, long Free, long Mapped)? Stats()
    {
        if (MallInfo == null) return null;
        var i = MallInfo();
        return ((long)(i.Uordblks + i.Hblkhd), (long)i.Fordblks, (long)i.Hblkhd);
    }

    /// <summary>This process's resident set (VmRSS) and its peak (VmHWM), bytes; null off Linux.</summary>
    public static (long Rss, long Peak)? Resident()
    {
        if (!OperatingSystem.IsLinux()) return null;
        long rss = 0, peak = 0;
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = Kib(line);
            else if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) peak = Kib(line);
        }
        return (rss, peak);

        static long Kib(string line) => long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
    }

    /// <summary>A one-line summary for traces: resident, peak, heap in use and free, MiB.</summary>
    public static string Describe()
    {
        var r = Resident();
        var s = Stats();
        static string M(long b) => (b / (double)(1 << 20)).ToString("F0", System.Globalization.CultureInfo.InvariantCulture);
        return $"rss {(r is { } x ? M(x.Rss) : "?")} MiB (peak {(r is { } y ? M(y.Peak) : "?")}), heap in use {(s is { } a ? M(a.InUse) : "?")} MiB, free {(s is { } b ? M(b.Free) : "?")} MiB";
    }
}
