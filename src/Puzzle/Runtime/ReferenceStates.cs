using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using Puzzle.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Runtime;

/// <summary>
/// The reference's final normed hidden states of an evaluation's window batches ([rows × T, H] per batch), kept so that
/// a later evaluation against the same reference on the same windows skips the reference's forward. Its
/// log-probabilities are then recomputed from the same rows through the same head, so every metric is bit-identical to
/// an evaluation that ran the reference. Two homes:
/// <list type="bullet">
/// <item>memory (<see cref="InMemory"/>): GKD's validation, where the teacher is fixed for the whole distillation and
/// the same windows are evaluated every <c>gkd.eval_every</c> steps;</item>
/// <item>a file (<see cref="File"/>): a run's test split, against which the child, every baseline and every sweep point
/// are evaluated with the same parent. The file is written once, beside the run's reference metrics, atomically (a
/// temp file renamed when the last batch is in), and read batch by batch, so memory stays at one batch.</item>
/// </list>
/// On the demo (hidden 256, fp32 parent, 195k test tokens: a 200 MB file) its three evaluations took 153 / 132 s
/// against 241 / 222 s (benchmarks/results/eval-reference-states-2026-12-04.md).
/// </summary>
public sealed class ReferenceStates : IDisposable
{
    const string Magic = "PZRS";
    readonly Dictionary<long, Tensor>? memory;
    readonly string? path;
    readonly string key = "";
    readonly long expectedRows;
    FileStream? reader;
    long dataOffset;
    long rowBytes;
    long hidden;
    ScalarType dtype;
    FileStream? writer;
    string? tempPath;
    long nextWriteRow;

    ReferenceStates(Dictionary<long, Tensor>? memory, string? path, string key, long expectedRows)
    {
        this.memory = memory;
        this.path = path;
        this.key = key;
        this.expectedRows = expectedRows;
    }

    /// <summary>States kept in this process's memory (the caller bounds their size: tokens × hidden × element size).</summary>
    public static ReferenceStates InMemory() => new([], null, "", 0);

    /// <summary>
    /// States in <paramref name="file"/>: read from it when it holds <paramref name="key"/> (the reference's weights, the
    /// split, the windows, the batch, the device) and all <paramref name="rows"/> rows (windows × T), else written there by
    /// the evaluation that runs the reference (a damaged or short file is measured again and replaced).
    /// </summary>
    public static ReferenceStates File(string file, string key, long rows)
    {
        var states = new ReferenceStates(null, Path.GetFullPath(file), key, rows);
        states.OpenForReading();
        return states;
    }

    /// <summary>Whether every batch asked for will be read rather than computed (a complete file with this key, or memory filled before).</summary>
    public bool Stored => reader is not null || memory is { Count: > 0 };

    /// <summary>Bytes of the states file, or of the tensors held in memory.</summary>
    public long Bytes => reader?.Length ?? memory?.Values.Sum(t => t.NumberOfElements * t.ElementSize) ?? 0;

    /// <summary>The stored states of the batch of <paramref name="rows"/> rows (window × position) starting at row <paramref name="firstRow"/>; null when not stored.</summary>
    public Tensor? Read(long firstRow, long rows, Device device)
    {
        if (memory is not null)
        {
            if (!memory.TryGetValue(firstRow, out var stored)) return null;
            if (stored.shape[0] != rows)
                throw new InvalidOperationException($"reference states: batch at row {firstRow} holds {stored.shape[0]} rows, {rows} asked for");
            bool here = stored.device_type == device.type && stored.device_index == device.index;
            return here ? stored : stored.to(device);                                    // owned by this store: the caller never disposes it
        }
        if (reader is null) return null;
        if ((firstRow + rows) * rowBytes > reader.Length - dataOffset)
            throw new PuzzleException($"{path}: reference states hold {(reader.Length - dataOffset) / rowBytes} rows; rows {firstRow}..{firstRow + rows - 1} asked for (delete the file to measure them again)");
        var t = empty([rows, hidden], dtype: dtype);
        reader.Position = dataOffset + firstRow * rowBytes;
        reader.ReadExactly(t.bytes);
        return device.type == DeviceType.CPU ? t : t.to(device);
    }

    /// <summary>Keeps the computed states of the batch starting at row <paramref name="firstRow"/> (batches in order, for a file).</summary>
    public void Write(long firstRow, Tensor states)
    {
        if (memory is not null)
        {
            memory[firstRow] = states.detach().clone().DetachFromDisposeScope();
            return;
        }
        if (reader is not null) return;                                                  // read, not written
        if (writer is null)
        {
            if (firstRow != 0) return;                                                   // a partial pass never makes a file
            hidden = states.shape[1];
            dtype = states.dtype;
            rowBytes = hidden * states.ElementSize;
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            tempPath = $"{path}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}-{TempFiles.HostTag}";   // TempFiles.IsStale reads this
            writer = new FileStream(tempPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
            byte[] header = Encoding.UTF8.GetBytes(new JsonObject
            {
                ["key"] = key, ["hidden"] = hidden, ["dtype"] = dtype.ToString(),
            }.ToJsonString());
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteInt64LittleEndian(length, header.Length);
            writer.Write(Encoding.ASCII.GetBytes(Magic));
            writer.Write(length);
            writer.Write(header);
            nextWriteRow = 0;
        }
        if (firstRow != nextWriteRow || states.shape[1] != hidden || states.dtype != dtype)
        {
            Abandon();                                                                   // out of order: nothing half-right is kept
            return;
        }
        using var cpu = states.device.type == DeviceType.CPU ? states.contiguous() : states.cpu().contiguous();
        writer.Write(cpu.bytes);
        nextWriteRow += states.shape[0];
    }

    /// <summary>The evaluation saw every batch: a file being written is made visible (renamed into place).</summary>
    public void Complete()
    {
        if (writer is null) return;
        writer.Flush(flushToDisk: true);
        writer.Dispose();
        writer = null;
        System.IO.File.Move(tempPath!, path!, overwrite: true);
        tempPath = null;
        OpenForReading();
    }

    void OpenForReading()
    {
        reader?.Dispose();
        reader = null;
        if (!System.IO.File.Exists(path)) return;
        var stream = new FileStream(path!, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        try
        {
            Span<byte> head = stackalloc byte[12];
            if (stream.Read(head) != 12 || Encoding.ASCII.GetString(head[..4]) != Magic) { stream.Dispose(); return; }
            long length = BinaryPrimitives.ReadInt64LittleEndian(head[4..]);
            if (length <= 0 || length > 1 << 20) { stream.Dispose(); return; }
            byte[] header = new byte[length];
            stream.ReadExactly(header);
            var j = JsonNode.Parse(header) as JsonObject;
            if (j?["key"]?.GetValue<string>() != key) { stream.Dispose(); return; }                   // another reference, split or windows
            hidden = j["hidden"]!.GetValue<long>();
            dtype = Enum.Parse<ScalarType>(j["dtype"]!.GetValue<string>());
            rowBytes = hidden * Checkpoints.TensorSpec.ElementSize(dtype);
            dataOffset = 12 + length;
            if (stream.Length != dataOffset + expectedRows * rowBytes) { stream.Dispose(); return; }    // cut short or too long
            reader = stream;
        }
        catch (Exception e) when (e is IOException or System.Text.Json.JsonException or ArgumentException or InvalidOperationException)
        {
            stream.Dispose();                                                            // unreadable: measured again and rewritten
        }
    }

    void Abandon()
    {
        writer?.Dispose();
        writer = null;
        if (tempPath is not null && System.IO.File.Exists(tempPath)) System.IO.File.Delete(tempPath);
        tempPath = null;
    }

    public void Dispose()
    {
        Abandon();
        reader?.Dispose();
        reader = null;
        if (memory is not null)
        {
            foreach (var t in memory.Values) t.Dispose();
            memory.Clear();
        }
    }
}
