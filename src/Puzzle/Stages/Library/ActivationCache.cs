using System.Text.Json.Nodes;
using Puzzle.Data;
using Puzzle.IO;
using Puzzle.Model;
using static TorchSharp.torch;

namespace Puzzle.Stages.Library;

/// <summary>
/// The parent's hidden states at the needed layer boundaries for every BLD batch, computed in one parent forward per
/// batch and stored in bf16 (RUN/library/activations/h{l}.bin, or the coupled BLD's RUN/coupled-bld/activations; h{l}
/// is layer l's input and layer l−1's output).
/// Measured on the demo parent: reading a batch back takes 0.2 ms where recomputing the deepest layer's input takes
/// 251 ms (`benchmarks … bld-activations`).
/// </summary>
public sealed class ActivationCache : IDisposable
{
    readonly string _dir;
    readonly int _batch, _seqLen, _hidden;
    readonly Dictionary<int, FileStream> _readers = new();

    ActivationCache(string dir, int batch, int seqLen, int hidden) => (_dir, _batch, _seqLen, _hidden) = (dir, batch, seqLen, hidden);

    long BatchBytes => (long)_batch * _seqLen * _hidden * 2;

    public static long Bytes(int steps, int batch, int seqLen, int hidden, int boundaries) => (long)steps * batch * seqLen * hidden * 2 * boundaries;

    /// <summary>
    /// Disk the cache may use: the budget (GiB) if given, never more than the free space less a reserve of 1 GiB, or
    /// of half the free space where less than 2 GiB is free (a megabyte-sized cache still fits on a nearly full disk;
    /// a large one is refused before it fills it).
    /// </summary>
    public static (long Bytes, string What) DiskRoom(string dir, double? budgetGib)
    {
        Directory.CreateDirectory(dir);
        return DiskRoom(new DriveInfo(Path.GetFullPath(dir)).AvailableFreeSpace, $"{dir}'s disk", budgetGib);
    }

    /// <summary><see cref="DiskRoom(string, double?)"/> for <paramref name="available"/> free bytes on <paramref name="disk"/>.</summary>
    public static (long Bytes, string What) DiskRoom(long available, string disk, double? budgetGib)
    {
        available = Math.Max(0, available);
        long reserve = Math.Min(1L << 30, available / 2);
        long free = available - reserve;
        string what = $"the free space on {disk} ({Size(available)}) less a reserve of {Size(reserve)}";
        if (budgetGib is { } gib)
        {
            if (!(gib >= 0)) throw new PuzzleException($"bld.disk_budget_gib must be at least 0, got {gib}");
            long budget = (long)(gib * (1L << 30));
            return budget <= free ? (budget, "bld.disk_budget_gib") : (free, what);
        }
        return (free, what);
    }

    /// <summary>A size for a message: GiB with two decimals from 1 GiB, else MiB with one.</summary>
    public static string Size(long bytes) => bytes >= 1L << 30
        ? (bytes / (double)(1L << 30)).ToString("F2", System.Globalization.CultureInfo.InvariantCulture) + " GiB"
        : (bytes / (double)(1L << 20)).ToString("F1", System.Globalization.CultureInfo.InvariantCulture) + " MiB";

    /// <summary>The library's cache: RUN/library/activations.</summary>
    public static string LibraryDir(string runDir) => Path.Combine(runDir, BlockLibrary.Folder, "activations");

    /// <summary>Whether a complete cache with this fingerprint, these steps and boundaries is already in <paramref name="dir"/>.</summary>
    public static bool Reusable(string dir, string fingerprint, int steps, IReadOnlyCollection<int> boundaries)
    {
        string metaPath = Path.Combine(dir, "activations.json");
        // A torn or mistyped activations.json is discarded loudly (the cache is rebuilt), never a crash.
        if (JsonFile.ReadDerived(metaPath, m => m["steps"].Int() >= 0 && m["batch"].Int() > 0 && m["seq_len"].Int() > 0 && m["hidden"].Int() > 0 &&
                m["boundaries"].Items().All(x => x.Int() >= 0)) is not { } meta)
            return false;
        if (meta["fingerprint"].OptionalString() != fingerprint || meta["steps"].Int() != steps) return false;
        long batchBytes = (long)meta["batch"].Int() * meta["seq_len"].Int() * meta["hidden"].Int() * 2;
        return boundaries.All(b => meta["boundaries"].Items().Any(x => x.Int() == b)) &&
               boundaries.All(b => File.Exists(Path.Combine(dir, $"h{b}.bin")) && new FileInfo(Path.Combine(dir, $"h{b}.bin")).Length == steps * batchBytes);
    }

    /// <summary>Reuses a complete cache in <paramref name="dir"/> with the same fingerprint, else computes it there.</summary>
    /// <param name="stage">the stage's name in the log lines.</param>
    public static ActivationCache Build(string dir, CausalLm parent, TokenBatchLoader loader, int steps, int batch, int seqLen,
        IReadOnlyCollection<int> boundaries, string fingerprint, string stage, Action<string> log)
    {
        string metaPath = Path.Combine(dir, "activations.json");
        var cache = new ActivationCache(dir, batch, seqLen, parent.Config.HiddenSize);
        // Shards of one run (task-array jobs started together) share this folder: one builds the cache while the others
        // wait, then find it complete. Without the lock a later shard deleted the files an earlier one was reading.
        Directory.CreateDirectory(dir);
        using var gate = Lock(dir, stage, log);
        if (Reusable(dir, fingerprint, steps, boundaries))
        {
            log($"{stage}: reusing the parent activations in {dir}");
            return cache;
        }
        // A stale cache of another fingerprint goes before the new one is written (so the disk never holds both).
        TempFiles.Clean(dir);                                                                   // left by a killed build
        foreach (int b in boundaries) File.Delete(cache.PathOf(b));
        var writers = boundaries.ToDictionary(b => b, b => new FileStream(cache.PathOf(b) + $".tmp-{Environment.ProcessId}", FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20));
        try
        {
            using var noGrad = no_grad();
            var inputs = parent.PrefillInputs(seqLen, 0, parent.DType);
            for (int step = 0; step < steps; step++)
            {
                using var scope = NewDisposeScope();
                var ids = tensor(loader.Next(batch), [batch, seqLen + 1], device: parent.Device).narrow(1, 0, seqLen);
                var h = parent.Model.EmbedTokens.call(ids);
                for (int l = 0; l <= parent.Config.NumLayers; l++)
                {
                    if (writers.TryGetValue(l, out var writer)) writer.Write(h.to(ScalarType.BFloat16).contiguous().cpu().bytes);
                    if (l < parent.Config.NumLayers) h = parent.Layer(l).Forward(h, inputs with { Layer = l });
                }
            }
        }
        finally
        {
            foreach (var w in writers.Values) w.Dispose();
        }
        foreach (int b in boundaries) File.Move(cache.PathOf(b) + $".tmp-{Environment.ProcessId}", cache.PathOf(b), overwrite: true);
        AtomicFile.WriteJson(metaPath, new JsonObject
        {
            ["format_version"] = 1, ["fingerprint"] = fingerprint, ["steps"] = steps, ["batch"] = batch, ["seq_len"] = seqLen,
            ["hidden"] = parent.Config.HiddenSize, ["dtype"] = "bfloat16",
            ["boundaries"] = new JsonArray(boundaries.Order().Select(b => (JsonNode)b).ToArray()),
        });
        log($"{stage}: cached the parent's activations at {boundaries.Count} layer boundaries for {steps} batches " +
            $"({Bytes(steps, batch, seqLen, parent.Config.HiddenSize, boundaries.Count) / (1 << 20)} MiB, bf16) in {dir}");
        return cache;
    }

    string PathOf(int boundary) => Path.Combine(_dir, $"h{boundary}.bin");

    /// <summary>
    /// An exclusive lock on DIR/activations.lock (an advisory file lock, released by the kernel if the process dies, so a
    /// killed shard never leaves the others waiting); waits for it, saying so every minute.
    /// </summary>
    static FileStream Lock(string dir, string stage, Action<string> log)
    {
        string path = Path.Combine(dir, "activations.lock");
        var waited = System.Diagnostics.Stopwatch.StartNew();
        var said = TimeSpan.Zero;
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (File.Exists(path))
            {
                if (waited.Elapsed - said >= TimeSpan.FromMinutes(1))
                {
                    said = waited.Elapsed;
                    log($"{stage}: waiting {waited.Elapsed.TotalMinutes:F0} min for another process building the activations in {dir}");
                }
                Thread.Sleep(200);
            }
        }
    }

    /// <summary>Batch <paramref name="step"/> at boundary <paramref name="boundary"/>: [B, T, H] bf16 on the CPU.</summary>
    public Tensor Read(int boundary, int step)
    {
        if (!_readers.TryGetValue(boundary, out var stream))
            _readers[boundary] = stream = new FileStream(PathOf(boundary), FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        stream.Seek(step * BatchBytes, SeekOrigin.Begin);
        var result = empty([_batch, _seqLen, _hidden], dtype: ScalarType.BFloat16);
        stream.ReadExactly(result.bytes);
        return result;
    }

    public void Dispose()
    {
        foreach (var s in _readers.Values) s.Dispose();
    }
}
