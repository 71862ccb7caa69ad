using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Puzzle.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Checkpoints;

/// <summary>One tensor's entry in a safetensors header.</summary>
public sealed record SafeTensorInfo(string Name, string Dtype, long[] Shape, long Begin, long End)
{
    public long NumElements => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// A safetensors file opened for reading: the header is parsed and validated up front (sizes, offsets, overlaps),
/// the data is memory-mapped and read tensor by tensor, so a checkpoint larger than RAM can be loaded.
/// </summary>
public sealed class SafeTensorsFile : IDisposable
{
    public string Path { get; }
    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    readonly long _dataStart;
    readonly long _fileLength;
    MemoryMappedFile? _map;

    SafeTensorsFile(string path, Dictionary<string, SafeTensorInfo> tensors, Dictionary<string, string> metadata,
        long dataStart, long fileLength)
    {
        Path = path;
        Tensors = tensors;
        Metadata = metadata;
        _dataStart = dataStart;
        _fileLength = fileLength;
    }

    public static SafeTensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new PuzzleException($"{path}: safetensors file not found");
        long fileLength = new FileInfo(path).Length;
        if (fileLength < 8) throw new PuzzleException($"{path}: truncated safetensors file ({fileLength} bytes; the header length alone needs 8)");
        byte[] headerBytes;
        ulong headerLength;
        using (var stream = File.OpenRead(path))
        {
            Span<byte> lengthBytes = stackalloc byte[8];
            stream.ReadExactly(lengthBytes);
            headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
            if (headerLength > (ulong)(fileLength - 8))
                throw new PuzzleException(
                    $"{path}: corrupt safetensors: header length {headerLength} goes beyond the file ({fileLength} bytes)");
            if (headerLength > 100_000_000)
                throw new PuzzleException($"{path}: corrupt safetensors: header length {headerLength} is implausibly large");
            headerBytes = new byte[headerLength];
            stream.ReadExactly(headerBytes);
        }
        string headerText;
        try { headerText = JsonFile.StrictUtf8.GetString(headerBytes); }
        catch (DecoderFallbackException) { throw new PuzzleException($"{path}: corrupt safetensors: the header is not UTF-8 text"); }
        var header = JsonFile.Parse(headerText, $"{path}: safetensors header");

        long dataStart = 8 + (long)headerLength;
        long dataLength = fileLength - dataStart;
        var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>();
        foreach (var (name, entry) in header.Properties())
        {
            if (name == "__metadata__")
            {
                if (entry.Node is null) continue;
                foreach (var (k, v) in entry.Properties()) metadata[k] = v.Node is System.Text.Json.Nodes.JsonValue value && value.TryGetValue(out string? text) ? text : v.Node?.ToJsonString() ?? "";
                continue;
            }
            entry.Object();
            string dtype = entry["dtype"].String();
            int elementSize = ElementSize(dtype, path, name);
            long[] shape = entry["shape"].Items().Select(d => d.Long()).ToArray();
            var offsets = entry["data_offsets"].Items();
            if (offsets.Count != 2) throw entry["data_offsets"].Error("[begin, end]");
            long begin = offsets[0].Long(), end = offsets[1].Long();
            if (shape.Any(d => d < 0)) throw new PuzzleException($"{path}: tensor '{name}' has a negative dimension in shape [{string.Join(", ", shape)}]");
            if (begin < 0 || end < begin || end > dataLength)
                throw new PuzzleException(
                    $"{path}: tensor '{name}': data_offsets [{begin}, {end}] are out of range (the data section holds {dataLength} bytes)");
            long bytes;
            try { bytes = checked(shape.Aggregate(1L, (a, b) => a * b) * elementSize); }
            catch (OverflowException) { throw new PuzzleException($"{path}: tensor '{name}': shape [{string.Join(", ", shape)}] overflows a 64-bit size"); }
            var info = new SafeTensorInfo(name, dtype, shape, begin, end);
            if (bytes != end - begin)
                throw new PuzzleException(
                    $"{path}: tensor '{name}': shape [{string.Join(", ", shape)}] of {dtype} needs {bytes} bytes but data_offsets [{begin}, {end}] hold {end - begin}");
            tensors[name] = info;
        }
        var ordered = tensors.Values.Where(t => t.End > t.Begin).OrderBy(t => t.Begin).ToArray();
        for (int i = 1; i < ordered.Length; i++)
            if (ordered[i].Begin < ordered[i - 1].End)
                throw new PuzzleException(
                    $"{path}: corrupt safetensors: tensors '{ordered[i - 1].Name}' [{ordered[i - 1].Begin}, {ordered[i - 1].End}] and '{ordered[i].Name}' [{ordered[i].Begin}, {ordered[i].End}] overlap");
        return new SafeTensorsFile(path, tensors, metadata, dataStart, fileLength);
    }

    /// <summary>Reads one tensor (a copy, in its stored dtype, on the CPU) from the memory map.</summary>
    public Tensor Read(string name)
    {
        if (!Tensors.TryGetValue(name, out var info)) throw new PuzzleException($"{Path}: no tensor named '{name}'");
        var tensor = empty(info.Shape, dtype: ScalarTypeOf(info.Dtype));
        long length = info.End - info.Begin;
        if (length == 0) return tensor;
        _map ??= MemoryMappedFile.CreateFromFile(Path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        using var view = _map.CreateViewAccessor(_dataStart + info.Begin, length, MemoryMappedFileAccess.Read);
        unsafe
        {
            byte* pointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            try
            {
                // Copy in chunks of whole elements: a Span holds at most 2^31 bytes and a tensor may be larger.
                byte* source = pointer + view.PointerOffset;
                using var flat = tensor.view(-1);
                long elementSize = tensor.ElementSize, total = info.NumElements;
                long chunk = (1L << 30) / elementSize;
                for (long first = 0; first < total; first += chunk)
                {
                    long count = Math.Min(chunk, total - first);
                    using var part = flat.narrow(0, first, count);
                    new ReadOnlySpan<byte>(source + first * elementSize, (int)(count * elementSize)).CopyTo(part.bytes);
                }
            }
            finally
            {
                view.SafeMemoryMappedViewHandle.ReleasePointer();
            }
        }
        return tensor;
    }

    public void Dispose()
    {
        _map?.Dispose();
        _map = null;
    }

    public static ScalarType ScalarTypeOf(string dtype) => dtype switch
    {
        "F32" => ScalarType.Float32,
        "F16" => ScalarType.Float16,
        "BF16" => ScalarType.BFloat16,
        "F64" => ScalarType.Float64,
        "I64" => ScalarType.Int64,
        "I32" => ScalarType.Int32,
        "I16" => ScalarType.Int16,
        "I8" => ScalarType.Int8,
        "U8" => ScalarType.Byte,
        "BOOL" => ScalarType.Bool,
        _ => throw new PuzzleException($"safetensors dtype '{dtype}' is not supported"),
    };

    public static string DtypeName(ScalarType type) => type switch
    {
        ScalarType.Float32 => "F32",
        ScalarType.Float16 => "F16",
        ScalarType.BFloat16 => "BF16",
        ScalarType.Float64 => "F64",
        ScalarType.Int64 => "I64",
        ScalarType.Int32 => "I32",
        ScalarType.Int16 => "I16",
        ScalarType.Int8 => "I8",
        ScalarType.Byte => "U8",
        ScalarType.Bool => "BOOL",
        _ => throw new PuzzleException($"tensor dtype {type} cannot be written to safetensors"),
    };

    static int ElementSize(string dtype, string path, string name) => dtype switch
    {
        "F64" or "I64" => 8,
        "F32" or "I32" => 4,
        "F16" or "BF16" or "I16" => 2,
        "I8" or "U8" or "BOOL" => 1,
        _ => throw new PuzzleException($"{path}: tensor '{name}' has unsupported dtype '{dtype}' (F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL)"),
    };
}

/// <summary>Writes safetensors files: 8-byte aligned header, metadata {"format": "pt"}, atomic rename.</summary>
public static class SafeTensorsWriter
{
    public static void Write(string path, IReadOnlyList<(string Name, Tensor Tensor)> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        // One writer for the format: tensors in memory are the streaming writer's case of one chunk each (a detached
        // handle, which the writer disposes without touching the caller's tensor).
        var byName = tensors.ToDictionary(t => t.Name, t => t.Tensor);
        StreamingWeights.Write(path, tensors.Select(t => new TensorSpec(t.Name, t.Tensor.dtype, t.Tensor.shape)).ToList(),
            spec => [byName[spec.Name].detach()], metadata);
    }
}
