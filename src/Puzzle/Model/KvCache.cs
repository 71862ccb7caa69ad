using static TorchSharp.torch;

namespace Puzzle.Model;

/// <summary>
/// Preallocated KV cache: per GQA layer, K and V of [batch, its own KV heads, capacity, head_dim]; nothing for
/// linear and no-op attention. New keys are written in place; nothing is re-allocated per token.
/// A decode step (one new position, no padding mask) attends over the whole capacity once at least half of it is
/// written: the whole per-layer tensors are contiguous, so the attention matmuls read them in place, where a view of the
/// first positions would be copied (oneDNN takes a batch of matrices only when they are packed back to back); the
/// positions not yet written are masked out (<see cref="Append"/>'s tail mask), so the result is the same.
/// </summary>
public sealed class KvCache : IDisposable
{
    readonly Tensor?[] _keys;
    readonly Tensor?[] _values;
    Tensor? _tail;                                                                        // additive mask [capacity]
    int _tailValid = -1;
    ScalarType _tailType;

    public int Capacity { get; }
    public int BatchSize { get; }
    /// <summary>Positions already written (the same for every layer between forwards).</summary>
    public int Length { get; set; }

    public KvCache(ModelConfig config, int batchSize, int capacity, Device device, ScalarType dtype)
    {
        Capacity = capacity;
        BatchSize = batchSize;
        _keys = new Tensor?[config.NumLayers];
        _values = new Tensor?[config.NumLayers];
        for (int i = 0; i < config.NumLayers; i++)
        {
            if (!config.Blocks[i].Attention.IsGqa) continue;
            int kv = config.Blocks[i].Attention.NumKeyValueHeads!.Value;
            _keys[i] = zeros(batchSize, kv, capacity, config.HeadDim, dtype, device);
            _values[i] = zeros(batchSize, kv, capacity, config.HeadDim, dtype, device);
        }
    }

    public bool HasLayer(int layer) => _keys[layer] is not null;

    /// <summary>Bytes held by the cache (all layers, K and V).</summary>
    public long Bytes => _keys.Concat(_values).Where(t => t is not null).Sum(t => t!.NumberOfElements * t.ElementSize);

    /// <summary>
    /// Writes k, v [B, kv, T, hd] at the current length and returns the keys/values to attend over: views of all
    /// positions so far, or, with <paramref name="wholeCapacity"/> allowed and at least half the capacity written, the
    /// whole tensors and an additive mask [capacity] (0 for written positions, the dtype's lowest value after them;
    /// null when all are written) that the caller adds to the scores.
    /// </summary>
    internal (Tensor Keys, Tensor Values, Tensor? Tail) Append(int layer, Tensor k, Tensor v, bool wholeCapacity = false)
    {
        var keys = _keys[layer] ?? throw new InvalidOperationException($"layer {layer} has no KV cache");
        var values = _values[layer]!;
        long t = k.shape[2];
        if (Length + t > Capacity)
            throw new PuzzleException($"KV cache capacity {Capacity} exceeded: {Length} cached + {t} new positions");
        using (var kSlot = keys.narrow(2, Length, t)) kSlot.copy_(k);
        using (var vSlot = values.narrow(2, Length, t)) vSlot.copy_(v);
        int valid = Length + (int)t;
        if (!wholeCapacity || 2 * valid < Capacity) return (keys.narrow(2, 0, valid), values.narrow(2, 0, valid), null);
        return (keys.alias(), values.alias(), valid == Capacity ? null : TailMask(valid, keys.dtype));
    }

    /// <summary>The additive mask of the unwritten positions, made once per step (all layers share it).</summary>
    Tensor TailMask(int valid, ScalarType dtype)
    {
        if (_tail is null || _tailValid != valid || _tailType != dtype)
        {
            _tail?.Dispose();
            using var scope = NewDisposeScope();
            var device = _keys.First(x => x is not null)!.device;
            var visible = arange(Capacity, dtype: ScalarType.Int64, device: device).lt(valid);
            _tail = CausalLm.AdditiveMask(visible, dtype).DetachFromDisposeScope();
            (_tailValid, _tailType) = (valid, dtype);
        }
        return _tail;
    }

    public void Dispose()
    {
        foreach (var t in _keys.Concat(_values)) t?.Dispose();
        _tail?.Dispose();
    }
}
