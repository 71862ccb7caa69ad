using static TorchSharp.torch;

namespace Puzzle.Model;

/// <summary>
/// Preallocated KV cache: per GQA layer, K and V of [batch, its own KV heads, capacity, head_dim]; nothing for
/// linear and no-op attention. New keys are written in place; nothing is re-allocated per token.
/// </summary>
public sealed class KvCache : IDisposable
{
    readonly Tensor?[] _keys;
    readonly Tensor?[] _values;

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

    /// <summary>Writes k, v [B, kv, T, hd] at the current length and returns views of all keys/values so far.</summary>
    internal (Tensor Keys, Tensor Values) Append(int layer, Tensor k, Tensor v)
    {
        var keys = _keys[layer] ?? throw new InvalidOperationException($"layer {layer} has no KV cache");
        var values = _values[layer]!;
        long t = k.shape[2];
        if (Length + t > Capacity)
            throw new PuzzleException($"KV cache capacity {Capacity} exceeded: {Length} cached + {t} new positions");
        using (var kSlot = keys.narrow(2, Length, t)) kSlot.copy_(k);
        using (var vSlot = values.narrow(2, Length, t)) vSlot.copy_(v);
        return (keys.narrow(2, 0, Length + t), values.narrow(2, 0, Length + t));
    }

    public void Dispose()
    {
        foreach (var t in _keys.Concat(_values)) t?.Dispose();
    }
}
