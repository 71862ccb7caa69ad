using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using Puzzle.IO;
using Puzzle.Model;
using static TorchSharp.torch;

namespace Puzzle.Checkpoints;

/// <summary>A tensor to be written: name, stored dtype and shape, known before its values exist.</summary>
public sealed record TensorSpec(string Name, ScalarType Dtype, long[] Shape)
{
    public long Elements => Shape.Aggregate(1L, (a, b) => a * b);
    public long Bytes => Elements * ElementSize(Dtype);

    public static int ElementSize(ScalarType dtype) => dtype switch
    {
        ScalarType.Float64 or ScalarType.Int64 => 8,
        ScalarType.Float32 or ScalarType.Int32 => 4,
        ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Int16 => 2,
        _ => 1,
    };
}

/// <summary>
/// Writes safetensors weights one tensor at a time: the header is built from the specs, then each tensor's values
/// are asked for (in chunks of whole rows when the producer wants) and written before the next is made, so a
/// checkpoint larger than RAM can be written. Above <c>maxShardBytes</c> the weights are split into HF shards
/// with <c>model.safetensors.index.json</c>. Every file is written atomically.
/// </summary>
public static class StreamingWeights
{
    /// <summary>
    /// Produces the values of one tensor as a sequence of contiguous chunks (flattened order, the spec's dtype);
    /// the writer disposes each chunk once written.
    /// </summary>
    public delegate IEnumerable<Tensor> Producer(TensorSpec spec);

    /// <summary>The specs of a model's parameters in state-dict order (built on the meta device: no memory).</summary>
    public static List<TensorSpec> Specs(ModelConfig config, ScalarType dtype)
    {
        using var meta = new CausalLm(config, META, dtype);
        return meta.named_parameters().Select(p => new TensorSpec(p.name, dtype, p.parameter.shape)).ToList();
    }

    /// <summary>Writes model.safetensors, or shards of at most <paramref name="maxShardBytes"/> each plus the index.</summary>
    public static IReadOnlyList<string> WriteWeights(string dir, IReadOnlyList<TensorSpec> specs, Producer produce,
        long maxShardBytes = 5L << 30, IReadOnlyDictionary<string, string>? metadata = null)
    {
        if (maxShardBytes <= 0) throw new PuzzleException($"{dir}: shard size must be positive, got {maxShardBytes} bytes");
        Directory.CreateDirectory(dir);
        var shards = new List<List<TensorSpec>> { new() };
        long shardBytes = 0;
        foreach (var spec in specs)
        {
            if (shards[^1].Count > 0 && shardBytes + spec.Bytes > maxShardBytes)
            {
                shards.Add([]);
                shardBytes = 0;
            }
            shards[^1].Add(spec);
            shardBytes += spec.Bytes;
        }
        // Weights of an earlier save go first, so that a reader never mixes shards of two saves.
        foreach (var stale in Directory.GetFiles(dir, "model*.safetensors*")) File.Delete(stale);
        if (shards.Count == 1)
        {
            string single = Path.Combine(dir, Checkpoint.SingleFile);
            Write(single, shards[0], produce, metadata);
            return [single];
        }
        var files = new List<string>();
        var weightMap = new JsonObject();
        for (int i = 0; i < shards.Count; i++)
        {
            string file = $"model-{i + 1:00000}-of-{shards.Count:00000}.safetensors";
            Write(Path.Combine(dir, file), shards[i], produce, metadata);
            files.Add(Path.Combine(dir, file));
            foreach (var spec in shards[i]) weightMap[spec.Name] = file;
        }
        AtomicFile.WriteJson(Path.Combine(dir, Checkpoint.IndexFile), new JsonObject
        {
            ["metadata"] = new JsonObject { ["total_size"] = specs.Sum(s => s.Bytes) },
            ["weight_map"] = weightMap,
        });
        return files;
    }

    /// <summary>One safetensors file whose tensors are produced one after another.</summary>
    public static void Write(string path, IReadOnlyList<TensorSpec> specs, Producer produce, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var header = new JsonObject();
        var meta = new JsonObject { ["format"] = "pt" };
        if (metadata is not null)
            foreach (var (k, v) in metadata) meta[k] = v;
        header["__metadata__"] = meta;
        long offset = 0;
        foreach (var spec in specs)
        {
            header[spec.Name] = new JsonObject
            {
                ["dtype"] = SafeTensorsFile.DtypeName(spec.Dtype),
                ["shape"] = new JsonArray(spec.Shape.Select(d => (JsonNode)JsonValue.Create(d)).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + spec.Bytes),
            };
            offset += spec.Bytes;
        }
        byte[] headerBytes = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (headerBytes.Length + 7) / 8 * 8;
        AtomicFile.Write(path, stream =>
        {
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)padded);
            stream.Write(length);
            stream.Write(headerBytes);
            for (int i = headerBytes.Length; i < padded; i++) stream.WriteByte((byte)' ');
            foreach (var spec in specs)
            {
                long written = 0;
                foreach (var chunk in produce(spec))
                {
                    using (chunk)
                    {
                        if (chunk.dtype != spec.Dtype)
                            throw new PuzzleException($"{path}: tensor '{spec.Name}' was produced as {chunk.dtype} but is declared {spec.Dtype}");
                        using var scope = NewDisposeScope();
                        var flat = chunk.detach().cpu().contiguous().view(-1);
                        long step = (1L << 30) / TensorSpec.ElementSize(spec.Dtype);
                        for (long first = 0; first < flat.shape[0]; first += step)
                            stream.Write(flat.narrow(0, first, Math.Min(step, flat.shape[0] - first)).bytes);
                        written += flat.shape[0];
                    }
                }
                if (written != spec.Elements)
                    throw new PuzzleException($"{path}: tensor '{spec.Name}' [{string.Join(", ", spec.Shape)}] needs {spec.Elements} values but {written} were produced");
            }
        });
    }

    /// <summary>Splits a tensor of <paramref name="spec"/>'s shape into row chunks of at most <paramref name="maxElements"/> values.</summary>
    public static IEnumerable<(long FirstRow, long Rows)> RowChunks(TensorSpec spec, long maxElements = 1L << 26)
    {
        long rows = spec.Shape.Length == 0 ? 1 : spec.Shape[0];
        long rowElements = rows == 0 ? 0 : spec.Elements / rows;
        long perChunk = Math.Max(1, rowElements == 0 ? rows : maxElements / rowElements);
        for (long first = 0; first < rows; first += perChunk) yield return (first, Math.Min(perChunk, rows - first));
    }
}
