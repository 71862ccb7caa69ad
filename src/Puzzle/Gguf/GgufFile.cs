using System.Text;

namespace Puzzle.Gguf;

/// <summary>GGUF metadata value types (gguf.h <c>gguf_type</c>).</summary>
public enum GgufValueType : uint
{
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7, String = 8, Array = 9,
    UInt64 = 10, Int64 = 11, Float64 = 12,
}

/// <summary>The tensor element types this project writes (ggml.h <c>ggml_type</c>).</summary>
public enum GgmlType : uint
{
    F32 = 0, F16 = 1, Q8_0 = 8, BF16 = 30,
}

/// <summary>One metadata value: a scalar, a string, or a homogeneous array of either.</summary>
public sealed record GgufValue(GgufValueType Type, object Value, GgufValueType ElementType = GgufValueType.UInt8)
{
    public static GgufValue U32(long v) => new(GgufValueType.UInt32, checked((uint)v));
    public static GgufValue I32(int v) => new(GgufValueType.Int32, v);
    public static GgufValue F32(double v) => new(GgufValueType.Float32, (float)v);
    public static GgufValue Bool(bool v) => new(GgufValueType.Bool, v);
    public static GgufValue Str(string v) => new(GgufValueType.String, v);
    public static GgufValue I32s(IEnumerable<int> v) => new(GgufValueType.Array, v.ToArray(), GgufValueType.Int32);
    public static GgufValue F32s(IEnumerable<float> v) => new(GgufValueType.Array, v.ToArray(), GgufValueType.Float32);
    public static GgufValue Strs(IEnumerable<string> v) => new(GgufValueType.Array, v.ToArray(), GgufValueType.String);

    public override string ToString() => Value switch
    {
        Array a => $"[{a.Length} × {ElementType}]",
        _ => $"{Value}",
    };
}

/// <summary>
/// One tensor of a GGUF file: ggml dims (ne0 = the contiguous one, i.e. PyTorch's shape reversed), its byte count and
/// a writer of exactly that many bytes (called once, in file order, so only one tensor is converted at a time).
/// </summary>
public sealed record GgufTensor(string Name, long[] Dims, GgmlType Type, long ByteCount, Action<Stream> WriteData);

/// <summary>
/// GGUF v3 (ggml's documented container; docs/gguf.md in ggml): "GGUF", version, tensor and KV counts, the key/value
/// metadata, tensor infos (name, dims, type, offset) and the tensor data, each tensor aligned to general.alignment (32).
/// </summary>
public static class GgufFile
{
    public const uint Magic = 0x46554747;                                                    // "GGUF" little-endian
    public const uint Version = 3;
    public const int Alignment = 32;

    public static void Write(Stream stream, IReadOnlyList<(string Key, GgufValue Value)> metadata, IReadOnlyList<GgufTensor> tensors)
    {
        using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        w.Write(Magic);
        w.Write(Version);
        w.Write((ulong)tensors.Count);
        w.Write((ulong)metadata.Count);
        foreach (var (key, value) in metadata)
        {
            WriteString(w, key);
            w.Write((uint)value.Type);
            WriteValue(w, value);
        }
        ulong offset = 0;
        foreach (var t in tensors)
        {
            WriteString(w, t.Name);
            w.Write((uint)t.Dims.Length);
            foreach (long d in t.Dims) w.Write((ulong)d);
            w.Write((uint)t.Type);
            w.Write(offset);
            offset += Align((ulong)t.ByteCount);
        }
        Pad(w);
        w.Flush();
        foreach (var t in tensors)
        {
            long start = stream.Position;
            t.WriteData(stream);
            if (stream.Position - start != t.ByteCount)
                throw new InvalidOperationException($"GGUF tensor {t.Name}: wrote {stream.Position - start} bytes, declared {t.ByteCount}");
            Pad(w);
            w.Flush();
        }
    }

    static ulong Align(ulong n) => (n + Alignment - 1) / Alignment * Alignment;

    static void Pad(BinaryWriter w)
    {
        long position = w.BaseStream.Position;
        long padding = (long)Align((ulong)position) - position;
        for (long i = 0; i < padding; i++) w.Write((byte)0);
    }

    static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    static void WriteValue(BinaryWriter w, GgufValue value)
    {
        switch (value.Type)
        {
            case GgufValueType.UInt32: w.Write((uint)value.Value); break;
            case GgufValueType.Int32: w.Write((int)value.Value); break;
            case GgufValueType.Float32: w.Write((float)value.Value); break;
            case GgufValueType.Bool: w.Write((bool)value.Value ? (byte)1 : (byte)0); break;
            case GgufValueType.String: WriteString(w, (string)value.Value); break;
            case GgufValueType.Array:
                var array = (Array)value.Value;
                w.Write((uint)value.ElementType);
                w.Write((ulong)array.Length);
                foreach (var element in array)
                    WriteValue(w, new GgufValue(value.ElementType, element));
                break;
            default: throw new ArgumentException($"GGUF value type {value.Type} is not written by this project");
        }
    }

    /// <summary>Reads a GGUF file's metadata and tensor infos (not the data); for checks and tests.</summary>
    public static (Dictionary<string, GgufValue> Metadata, List<(string Name, long[] Dims, GgmlType Type, ulong Offset)> Tensors) ReadHeader(string path)
    {
        using var stream = File.OpenRead(path);
        using var r = new BinaryReader(stream, Encoding.UTF8);
        try
        {
            uint magic = r.ReadUInt32();
            if (magic != Magic) throw new PuzzleException($"{path}: not a GGUF file (magic 0x{magic:X8}, expected 0x{Magic:X8})");
            uint version = r.ReadUInt32();
            if (version != Version) throw new PuzzleException($"{path}: GGUF version {version}, this reader handles {Version}");
            ulong tensorCount = r.ReadUInt64(), kvCount = r.ReadUInt64();
            var metadata = new Dictionary<string, GgufValue>(StringComparer.Ordinal);
            for (ulong i = 0; i < kvCount; i++)
            {
                string key = ReadString(r);
                var type = (GgufValueType)r.ReadUInt32();
                metadata[key] = ReadValue(r, type, path, key);
            }
            var tensors = new List<(string, long[], GgmlType, ulong)>();
            for (ulong i = 0; i < tensorCount; i++)
            {
                string name = ReadString(r);
                uint nDims = r.ReadUInt32();
                var dims = new long[nDims];
                for (int d = 0; d < nDims; d++) dims[d] = (long)r.ReadUInt64();
                tensors.Add((name, dims, (GgmlType)r.ReadUInt32(), r.ReadUInt64()));
            }
            return (metadata, tensors);
        }
        catch (EndOfStreamException)
        {
            throw new PuzzleException($"{path}: truncated GGUF header ({stream.Length} bytes)");
        }
    }

    static string ReadString(BinaryReader r) => Encoding.UTF8.GetString(r.ReadBytes(checked((int)r.ReadUInt64())));

    static GgufValue ReadValue(BinaryReader r, GgufValueType type, string path, string key) => type switch
    {
        GgufValueType.UInt8 => new(type, r.ReadByte()),
        GgufValueType.Int8 => new(type, r.ReadSByte()),
        GgufValueType.UInt16 => new(type, r.ReadUInt16()),
        GgufValueType.Int16 => new(type, r.ReadInt16()),
        GgufValueType.UInt32 => new(type, r.ReadUInt32()),
        GgufValueType.Int32 => new(type, r.ReadInt32()),
        GgufValueType.Float32 => new(type, r.ReadSingle()),
        GgufValueType.Bool => new(type, r.ReadByte() != 0),
        GgufValueType.String => new(type, ReadString(r)),
        GgufValueType.UInt64 => new(type, r.ReadUInt64()),
        GgufValueType.Int64 => new(type, r.ReadInt64()),
        GgufValueType.Float64 => new(type, r.ReadDouble()),
        GgufValueType.Array => ReadArray(r, path, key),
        _ => throw new PuzzleException($"{path}: metadata '{key}' has unknown value type {(uint)type}"),
    };

    static GgufValue ReadArray(BinaryReader r, string path, string key)
    {
        var elementType = (GgufValueType)r.ReadUInt32();
        long count = (long)r.ReadUInt64();
        var values = new object[count];
        for (long i = 0; i < count; i++) values[i] = ReadValue(r, elementType, path, key).Value;
        return new GgufValue(GgufValueType.Array, values, elementType);
    }
}
