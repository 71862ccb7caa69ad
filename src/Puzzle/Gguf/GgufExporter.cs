using System.Runtime.InteropServices;
using Puzzle.Checkpoints;
using Puzzle.IO;
using Puzzle.Model;
using static TorchSharp.torch;

namespace Puzzle.Gguf;

public sealed record GgufExportResult(string Path, string Architecture, int Layers, long Bytes, GgmlType Type);

/// <summary>
/// Writes a model as GGUF for llama.cpp: architecture <c>llama</c> for a plain Llama, <c>deci</c> (llama.cpp's
/// Nemotron-NAS loader, src/models/deci.cpp) for a heterogeneous child.
/// <para>
/// llama.cpp's deci layer is [attention slot][FFN slot]: the attention slot holds GQA (n_head_kv &gt; 0), a linear map
/// of the normed input (n_head_kv = 0, "linear attention") or nothing (n_head = 0); the FFN slot holds a SwiGLU.
/// Puzzle's sublayers are packed into that in order: a linear FFN is exactly a linear map of its normed input, so it
/// takes an attention slot of its own; when no SwiGLU follows a filled attention slot, the layer gets a width-1
/// all-zero SwiGLU (silu(0)·0 = 0), because llama.cpp drops the whole layer's output when n_ff = 0; when the first
/// layer has no attention but later ones do, it gets a zero linear attention, because llama.cpp derives the head size
/// from layer 0. All three are exact. Q and K rows are permuted to llama.cpp's interleaved RoPE pairs as
/// convert_hf_to_gguf.py does; a tied LM head is left out (llama.cpp reuses token_embd); llama3 RoPE scaling becomes
/// the rope_freqs tensor, linear scaling the rope.scaling keys.
/// </para>
/// </summary>
public static class GgufExporter
{
    public static GgmlType ParseType(string dtype) => dtype.ToLowerInvariant() switch
    {
        "f32" or "float32" => GgmlType.F32,
        "f16" or "float16" => GgmlType.F16,
        "bf16" or "bfloat16" => GgmlType.BF16,
        "q8_0" => GgmlType.Q8_0,
        _ => throw new PuzzleException($"--dtype '{dtype}' is not a GGUF type this exporter writes (expected f32, f16, bf16 or q8_0)"),
    };

    /// <summary>
    /// Writes MODEL_DIR (HF Llama or DeciLM) with its tokenizer to OUT_PATH without loading the model: its structure is
    /// built on the meta device (no memory), and each tensor is read from the safetensors in its stored dtype (checked
    /// as <see cref="Checkpoint.LoadWeights"/> checks it) when the file writer reaches it, converted in chunks of
    /// <see cref="ChunkElements"/> values and freed before the next. The same bytes as exporting the fp32-loaded model
    /// (every stored dtype converts to fp32 exactly, or as the fp32 load rounds an F64), in about the memory of the
    /// largest tensor: on a 1B-class parent 0.5 GB instead of the whole model in fp32 (5 GB).
    /// </summary>
    public static GgufExportResult Export(string modelDir, string outPath, GgmlType type, Action<string>? log = null)
    {
        using var meta = new CausalLm(HfConfig.Read(modelDir), META, ScalarType.Float32);
        var weightMap = Checkpoint.CheckedWeightMap(meta, modelDir);
        var names = new Dictionary<Tensor, string>(ReferenceEqualityComparer.Instance);
        foreach (var (parameterName, parameter) in meta.named_parameters()) names[parameter] = parameterName;
        var files = new Dictionary<string, SafeTensorsFile>();
        Tensor? Read(Tensor weight)
        {
            if (weight.device_type != TorchSharp.DeviceType.META) return null;                   // made by Pack (a zero filler)
            if (!names.TryGetValue(weight, out var parameterName))
                throw new InvalidOperationException($"GGUF export of {modelDir}: a tensor of shape [{string.Join(", ", weight.shape)}] is not a parameter of the model");
            string path = weightMap[parameterName];
            if (!files.TryGetValue(path, out var file)) files[path] = file = SafeTensorsFile.Open(path);
            return Checkpoint.ReadWeight(file, parameterName, weight.shape);
        }
        try
        {
            return Write(meta, modelDir, outPath, type, Path.GetFileName(Path.GetFullPath(modelDir).TrimEnd('/')), log, Read);
        }
        finally
        {
            foreach (var f in files.Values) f.Dispose();
        }
    }

    /// <summary>Writes a model held in memory (any device and dtype) with the tokenizer of TOKENIZER_DIR to OUT_PATH.</summary>
    public static GgufExportResult Export(CausalLm model, string tokenizerDir, string outPath, GgmlType type, string name, Action<string>? log = null) =>
        Write(model, tokenizerDir, outPath, type, name, log, _ => null);

    /// <summary>
    /// The export proper; <paramref name="read"/> gives a model tensor's values as a fresh tensor (disposed after it is
    /// written), or null where the tensor holds them itself.
    /// </summary>
    static GgufExportResult Write(CausalLm model, string tokenizerDir, string outPath, GgmlType type, string name, Action<string>? log, Func<Tensor, Tensor?> read)
    {
        log ??= Log.Info;
        var c = model.Config;
        var layers = Pack(model);
        bool llama = c.IsHomogeneousLlama;
        string arch = llama ? "llama" : "deci";
        var meta = new List<(string, GgufValue)>
        {
            ("general.architecture", GgufValue.Str(arch)),
            ("general.name", GgufValue.Str(name)),
            ("general.file_type", GgufValue.U32(FileType(type))),
            ("general.quantization_version", GgufValue.U32(2)),
            ($"{arch}.vocab_size", GgufValue.U32(c.VocabSize)),
            ($"{arch}.context_length", GgufValue.U32(c.MaxPositionEmbeddings)),
            ($"{arch}.embedding_length", GgufValue.U32(c.HiddenSize)),
            ($"{arch}.block_count", GgufValue.U32(layers.Count)),
            ($"{arch}.attention.layer_norm_rms_epsilon", GgufValue.F32(c.RmsNormEps)),
            ($"{arch}.attention.key_length", GgufValue.U32(c.HeadDim)),
            ($"{arch}.attention.value_length", GgufValue.U32(c.HeadDim)),
            ($"{arch}.rope.dimension_count", GgufValue.U32(c.HeadDim)),
            ($"{arch}.rope.freq_base", GgufValue.F32(c.RopeTheta)),
        };
        if (llama)
        {
            meta.Add(($"{arch}.feed_forward_length", GgufValue.U32(layers[0].FfnWidth)));
            meta.Add(($"{arch}.attention.head_count", GgufValue.U32(layers[0].Heads)));
            meta.Add(($"{arch}.attention.head_count_kv", GgufValue.U32(layers[0].KvHeads)));
        }
        else
        {
            meta.Add(($"{arch}.feed_forward_length", GgufValue.I32s(layers.Select(l => l.FfnWidth))));
            meta.Add(($"{arch}.attention.head_count", GgufValue.I32s(layers.Select(l => l.Heads))));
            meta.Add(($"{arch}.attention.head_count_kv", GgufValue.I32s(layers.Select(l => l.KvHeads))));
        }
        if (c.RopeScaling is { Type: "linear" } linear)
        {
            meta.Add(($"{arch}.rope.scaling.type", GgufValue.Str("linear")));
            meta.Add(($"{arch}.rope.scaling.factor", GgufValue.F32(linear.Factor)));
        }
        meta.AddRange(GgufVocabulary.Read(tokenizerDir, c));

        using var ropeFactors = c.RopeScaling is { Type: "llama3" } s ? Llama3RopeFactors(c, s) : null;
        try
        {
            var tensors = new List<GgufTensor> { Convert("token_embd.weight", model.Model.EmbedTokens.Weight, type, read) };
            if (ropeFactors is not null) tensors.Add(Convert("rope_freqs.weight", ropeFactors, GgmlType.F32, read));
            for (int i = 0; i < layers.Count; i++)
                foreach (var (suffix, weight, heads) in layers[i].Tensors)
                    tensors.Add(Convert($"blk.{i}.{suffix}", weight, layers[i].Dummy.Contains(suffix) ? GgmlType.F32 : type, read, heads));
            tensors.Add(Convert("output_norm.weight", model.Model.Norm.Weight, type, read));
            if (!c.TieWordEmbeddings) tensors.Add(Convert("output.weight", model.LmHeadWeight, type, read));

            AtomicFile.Write(outPath, stream => GgufFile.Write(stream, meta, tensors));
        }
        finally
        {
            foreach (var l in layers) l.Dispose();
        }
        long bytes = new FileInfo(outPath).Length;
        log($"gguf: {outPath}: {arch}, {layers.Count} layers ({string.Join(" ", layers.Select(l => l.Describe()))}), {type}, {bytes / 1e6:F1} MB");
        return new GgufExportResult(outPath, arch, layers.Count, bytes, type);
    }

    static uint FileType(GgmlType type) => type switch
    {
        GgmlType.F32 => 0, GgmlType.F16 => 1, GgmlType.Q8_0 => 7, GgmlType.BF16 => 32,
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    /// <summary>One llama.cpp deci layer: its head counts, FFN width and named tensors (suffix after blk.N.).</summary>
    sealed class GgufLayer : IDisposable
    {
        public int Heads, KvHeads, FfnWidth;
        /// <summary>Each tensor, with the heads its rows are permuted over for llama.cpp's RoPE (<see cref="PermuteRope"/>; 0: as is) when written.</summary>
        public readonly List<(string Suffix, Tensor Weight, int PermuteHeads)> Tensors = [];
        public readonly HashSet<string> Dummy = [];
        readonly List<Tensor> _owned = [];
        public bool HasAttention => Heads > 0;
        public bool HasFfn => FfnWidth > 0;

        public void Add(string suffix, Tensor weight, bool owned = false, bool dummy = false, int permuteHeads = 0)
        {
            Tensors.Add((suffix, weight, permuteHeads));
            if (owned) _owned.Add(weight);
            if (dummy) Dummy.Add(suffix);
        }

        public string Describe() =>
            (KvHeads > 0 ? $"gqa{KvHeads}" : Heads > 0 ? "lin" : "-") + "/" + (Dummy.Contains("ffn_gate.weight") ? "0" : FfnWidth > 0 ? $"{FfnWidth}" : "-");

        public void Dispose()
        {
            foreach (var t in _owned) t.Dispose();
        }
    }

    static List<GgufLayer> Pack(CausalLm model)
    {
        var c = model.Config;
        var layers = new List<GgufLayer>();
        GgufLayer? current = null;
        using var noGrad = no_grad();

        void CloseWithZeroFfn()
        {
            if (current is { HasAttention: true, HasFfn: false })
            {
                current.FfnWidth = 1;
                current.Add("ffn_norm.weight", ones(c.HiddenSize), owned: true, dummy: true);
                current.Add("ffn_gate.weight", zeros(1, c.HiddenSize), owned: true, dummy: true);
                current.Add("ffn_up.weight", zeros(1, c.HiddenSize), owned: true, dummy: true);
                current.Add("ffn_down.weight", zeros(c.HiddenSize, 1), owned: true, dummy: true);
            }
            current = null;
        }
        GgufLayer StartAttention()
        {
            CloseWithZeroFfn();
            current = new GgufLayer();
            layers.Add(current);
            return current;
        }
        void AddLinear(Tensor norm, Tensor weight)
        {
            var l = StartAttention();
            (l.Heads, l.KvHeads) = (c.NumAttentionHeads, 0);
            l.Add("attn_norm.weight", norm);
            l.Add("attn_output.weight", weight);
        }

        for (int i = 0; i < c.NumLayers; i++)
        {
            var layer = model.Layer(i);
            switch (layer.SelfAttn)
            {
                case GqaAttention a:
                {
                    var l = StartAttention();
                    (l.Heads, l.KvHeads) = (c.NumAttentionHeads, a.KeyValueHeads);
                    l.Add("attn_norm.weight", layer.InputLayernorm!.Weight);
                    l.Add("attn_q.weight", a.QProj.Weight, permuteHeads: c.NumAttentionHeads);
                    l.Add("attn_k.weight", a.KProj.Weight, permuteHeads: a.KeyValueHeads);
                    l.Add("attn_v.weight", a.VProj.Weight);
                    l.Add("attn_output.weight", a.OProj.Weight);
                    break;
                }
                case LinearAttention a:
                    AddLinear(layer.InputLayernorm!.Weight, a.Linear.Weight);
                    break;
            }
            switch (layer.Mlp)
            {
                case LinearFfn f:
                    AddLinear(layer.PostAttentionLayernorm!.Weight, f.Linear.Weight);
                    break;
                case SwiGluFfn f:
                {
                    if (current is null)
                    {
                        current = new GgufLayer();
                        layers.Add(current);
                    }
                    current.FfnWidth = (int)f.GateProj.Weight.shape[0];
                    current.Add("ffn_norm.weight", layer.PostAttentionLayernorm!.Weight);
                    current.Add("ffn_gate.weight", f.GateProj.Weight);
                    current.Add("ffn_up.weight", f.UpProj.Weight);
                    current.Add("ffn_down.weight", f.DownProj.Weight);
                    current = null;
                    break;
                }
            }
        }
        CloseWithZeroFfn();
        if (layers.Count == 0)
            throw new PuzzleException($"every sublayer of the model is a no-op ({c.NumLayers} layers); there is nothing to export to GGUF");
        if (!layers[0].HasAttention && layers.Any(l => l.KvHeads > 0))
        {
            // llama.cpp reads the head size (and RoPE size) only when layer 0 has heads: give it a zero linear attention.
            var first = layers[0];
            (first.Heads, first.KvHeads) = (c.NumAttentionHeads, 0);
            first.Add("attn_norm.weight", ones(c.HiddenSize), owned: true, dummy: true);
            first.Add("attn_output.weight", zeros(c.HiddenSize, c.HiddenSize), owned: true, dummy: true);
        }
        return layers;
    }

    /// <summary>HF rotate-half Q/K rows to llama.cpp's interleaved pairs (convert_hf_to_gguf.py LlamaModel.permute).</summary>
    public static Tensor PermuteRope(Tensor weight, int heads)                                 // [heads·hd, H]
    {
        long rows = weight.shape[0], cols = weight.shape[1];
        return weight.reshape(heads, 2, rows / heads / 2, cols).transpose(1, 2).reshape(rows, cols).contiguous();
    }

    /// <summary>llama.cpp's rope_freqs for llama3 scaling: the divisor of each frequency (convert_hf_to_gguf.py).</summary>
    public static Tensor Llama3RopeFactors(ModelConfig c, RopeScaling s)
    {
        var factors = new float[c.HeadDim / 2];
        double lowWavelen = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
        double highWavelen = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
        for (int i = 0; i < factors.Length; i++)
        {
            double freq = 1.0 / Math.Pow(c.RopeTheta, 2.0 * i / c.HeadDim);
            double wavelen = 2 * Math.PI / freq;
            if (wavelen < highWavelen) factors[i] = 1;
            else if (wavelen > lowWavelen) factors[i] = (float)s.Factor;
            else
            {
                double smooth = (s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                factors[i] = (float)(1 / ((1 - smooth) / s.Factor + smooth));
            }
        }
        return tensor(factors);
    }

    /// <summary>Values converted at a time: 16 MiB in fp32, a whole number of Q8_0 blocks.</summary>
    public const long ChunkElements = 1L << 22;

    /// <summary>
    /// A tensor in the requested type: 1-D tensors stay F32 (llama.cpp does the same), Q8_0 needs rows of whole
    /// 32-element blocks and falls back to F16 otherwise. The conversion runs when the file writer reaches it: the
    /// values (from <paramref name="read"/>, else the tensor's own), Q/K rows permuted for RoPE, then
    /// <see cref="ChunkElements"/> values at a time to fp32 and to the type, each chunk written before the next.
    /// </summary>
    static GgufTensor Convert(string name, Tensor weight, GgmlType type, Func<Tensor, Tensor?> read, int permuteHeads = 0)
    {
        long[] dims = weight.shape.Reverse().ToArray();
        if (dims.Length == 1) type = GgmlType.F32;
        if (type == GgmlType.Q8_0 && dims[0] % Q8Block != 0) type = GgmlType.F16;
        long n = weight.numel();
        long bytes = type switch
        {
            GgmlType.F32 => 4 * n,
            GgmlType.F16 or GgmlType.BF16 => 2 * n,
            GgmlType.Q8_0 => n / Q8Block * Q8BlockBytes,
            _ => throw new ArgumentOutOfRangeException(nameof(type)),
        };
        return new GgufTensor(name, dims, type, bytes, stream =>
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var values = read(weight) ?? weight.detach();
            if (permuteHeads > 0) values = PermuteRope(values, permuteHeads);
            var flat = values.cpu().contiguous().reshape(-1);
            long count = flat.shape[0];
            for (long first = 0; first < count; first += ChunkElements)
            {
                using var chunkScope = NewDisposeScope();
                var source = flat.narrow(0, first, Math.Min(ChunkElements, count - first)).to(ScalarType.Float32).contiguous();
                switch (type)
                {
                    case GgmlType.F32: stream.Write(source.bytes); break;
                    case GgmlType.F16: stream.Write(source.to(ScalarType.Float16).bytes); break;
                    case GgmlType.BF16: stream.Write(source.to(ScalarType.BFloat16).bytes); break;
                    case GgmlType.Q8_0: stream.Write(QuantizeQ8_0(MemoryMarshal.Cast<byte, float>(source.bytes))); break;
                }
            }
        });
    }

    public const int Q8Block = 32, Q8BlockBytes = 2 + Q8Block;

    /// <summary>ggml's quantize_row_q8_0_ref: per 32 values, d = max|x| / 127 (as fp16) and q = round(x / d).</summary>
    public static byte[] QuantizeQ8_0(ReadOnlySpan<float> values)
    {
        if (values.Length % Q8Block != 0) throw new ArgumentException($"Q8_0 needs a multiple of {Q8Block} values, got {values.Length}");
        var result = new byte[values.Length / Q8Block * Q8BlockBytes];
        for (int b = 0; b < values.Length / Q8Block; b++)
        {
            var block = values.Slice(b * Q8Block, Q8Block);
            float amax = 0;
            foreach (float v in block) amax = Math.Max(amax, Math.Abs(v));
            float d = amax / 127f, id = d != 0 ? 1f / d : 0f;
            var o = result.AsSpan(b * Q8BlockBytes, Q8BlockBytes);
            BitConverter.TryWriteBytes(o, (Half)d);
            for (int j = 0; j < Q8Block; j++) o[2 + j] = (byte)(sbyte)MathF.Round(block[j] * id, MidpointRounding.AwayFromZero);
        }
        return result;
    }
}
