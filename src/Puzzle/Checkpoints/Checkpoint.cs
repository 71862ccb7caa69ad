using System.Text.Json;
using System.Text.Json.Nodes;
using Puzzle.IO;
using Puzzle.Model;
using static TorchSharp.torch;

namespace Puzzle.Checkpoints;

/// <summary>Reads HF Llama / DeciLM checkpoint directories into a <see cref="CausalLm"/> and writes them back.</summary>
public static class Checkpoint
{
    public const string SingleFile = "model.safetensors";
    public const string IndexFile = "model.safetensors.index.json";
    public static readonly string[] TokenizerFiles =
        ["tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"];

    /// <summary>Which file holds each tensor: from the shard index, or the single model.safetensors.</summary>
    public static Dictionary<string, string> WeightMap(string modelDir)
    {
        string index = Path.Combine(modelDir, IndexFile);
        if (File.Exists(index))
        {
            var map = JsonFile.Read(index)["weight_map"];
            var result = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var (name, file) in map.Properties())
            {
                string relative = file.String();
                string shard = Path.Combine(modelDir, relative);
                if (!File.Exists(shard)) throw new PuzzleException($"{index}: weight_map['{name}'] names {relative}, which does not exist");
                result[name] = shard;
            }
            return result;
        }
        string single = Path.Combine(modelDir, SingleFile);
        if (!File.Exists(single))
            throw new PuzzleException($"{modelDir}: no {SingleFile} and no {IndexFile}");
        using var singleFile = SafeTensorsFile.Open(single);
        return singleFile.Tensors.Keys.ToDictionary(k => k, _ => single, StringComparer.Ordinal);
    }

    /// <summary>Reads config.json and the weights, tensor by tensor from memory maps, strictly by name and shape.</summary>
    public static CausalLm Load(string modelDir, Device? device = null, ScalarType dtype = ScalarType.Float32)
    {
        var config = HfConfig.Read(modelDir);
        var model = new CausalLm(config, device ?? CPU, dtype);
        try
        {
            LoadWeights(model, modelDir);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        model.eval();
        return model;
    }

    public static void LoadWeights(CausalLm model, string modelDir)
    {
        var weightMap = CheckedWeightMap(model, modelDir);
        var files = new Dictionary<string, SafeTensorsFile>();
        try
        {
            using var noGrad = no_grad();
            foreach (var (name, parameter) in model.named_parameters())
            {
                string path = weightMap[name];
                if (!files.TryGetValue(path, out var file)) files[path] = file = SafeTensorsFile.Open(path);
                using var value = ReadWeight(file, name, parameter.shape);
                parameter.copy_(value);
            }
        }
        finally
        {
            foreach (var f in files.Values) f.Dispose();
        }
    }

    /// <summary>
    /// MODEL_DIR's weight map (<see cref="WeightMap"/>), checked against <paramref name="model"/>'s parameters by name:
    /// none missing, none unexpected (a tied LM head and rotary inv_freq buffers may be there). Shapes are checked as
    /// each tensor is read (<see cref="ReadWeight"/>). <paramref name="model"/> may live on the meta device.
    /// </summary>
    public static Dictionary<string, string> CheckedWeightMap(CausalLm model, string modelDir)
    {
        var weightMap = WeightMap(modelDir);
        var expected = model.named_parameters().Select(p => p.name).ToHashSet(StringComparer.Ordinal);
        bool Ignorable(string name) =>
            name.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal) ||
            (name == "lm_head.weight" && model.Config.TieWordEmbeddings);
        var missing = expected.Where(k => !weightMap.ContainsKey(k)).ToList();
        var unexpected = weightMap.Keys.Where(k => !expected.Contains(k) && !Ignorable(k)).ToList();
        if (missing.Count > 0 || unexpected.Count > 0)
        {
            string where = weightMap.Count > 0 && weightMap.Values.Distinct().Count() == 1
                ? weightMap.Values.First() : modelDir;
            var parts = new List<string>();
            if (missing.Count > 0) parts.Add($"missing tensors ({missing.Count}): {Sample(missing)}");
            if (unexpected.Count > 0) parts.Add($"unexpected tensors ({unexpected.Count}): {Sample(unexpected)}");
            throw new PuzzleException($"{where}: checkpoint does not match config.json: {string.Join("; ", parts)}");
        }
        return weightMap;
    }

    /// <summary>
    /// One weight read from <paramref name="file"/> in its stored dtype (a copy): a floating dtype, of the shape the
    /// config needs, finite; else an error naming the file and the tensor.
    /// </summary>
    public static Tensor ReadWeight(SafeTensorsFile file, string name, long[] shape)
    {
        string path = file.Path;
        if (!file.Tensors.TryGetValue(name, out var info))
            throw new PuzzleException($"{path}: has no tensor '{name}' (the index {IndexFile} says it is there)");
        if (info.Dtype is not ("F32" or "F16" or "BF16" or "F64"))
            throw new PuzzleException($"{path}: tensor '{name}' is stored as {info.Dtype}; model weights must be F32, F16, BF16 or F64");
        if (!info.Shape.SequenceEqual(shape))
            throw new PuzzleException(
                $"{path}: tensor '{name}' has shape [{string.Join(", ", info.Shape)}] but the config needs [{string.Join(", ", shape)}]");
        var value = file.Read(name);
        try
        {
            RequireFinite(value, path, name);
        }
        catch
        {
            value.Dispose();
            throw;
        }
        return value;
    }

    /// <summary>NaN or infinite weights make every result meaningless: an error naming the file, the tensor and the count.</summary>
    public static void RequireFinite(Tensor value, string path, string name)
    {
        if (!value.is_floating_point()) return;
        using var finite = value.isfinite();
        using var all = finite.all();
        if (all.item<bool>()) return;
        using var bad = finite.logical_not().sum();
        throw new PuzzleException($"{path}: tensor '{name}' holds {bad.item<long>()} non-finite values (NaN or infinity) of {value.NumberOfElements}");
    }

    static string Sample(IReadOnlyList<string> names) =>
        string.Join(", ", names.Take(6)) + (names.Count > 6 ? $", … ({names.Count - 6} more)" : "");

    /// <summary>Writes a DeciLM (nemotron-nas) directory: config, weights (no tensors for no-op sublayers), tokenizer.</summary>
    public static void SaveDeciLm(CausalLm model, string outDir, ScalarType dtype = ScalarType.Float32,
        string? tokenizerDir = null, long maxShardBytes = 5L << 30) =>
        Save(model, outDir, HfConfig.ToDeciLm(model.Config, TorchDtypeName(dtype)), dtype, tokenizerDir, maxShardBytes);

    /// <summary>Writes a plain LlamaForCausalLM directory (homogeneous models only).</summary>
    public static void SaveLlama(CausalLm model, string outDir, ScalarType dtype = ScalarType.Float32,
        string? tokenizerDir = null, long maxShardBytes = 5L << 30) =>
        Save(model, outDir, HfConfig.ToLlama(model.Config, TorchDtypeName(dtype)), dtype, tokenizerDir, maxShardBytes);

    static void Save(CausalLm model, string outDir, JsonObject config, ScalarType dtype, string? tokenizerDir, long maxShardBytes)
    {
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new PuzzleException($"checkpoints are written as float32, bfloat16 or float16, not {dtype}");
        // Tensor by tensor: each parameter is converted to the stored dtype just before it is written.
        var named = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var specs = model.named_parameters().Select(p => new TensorSpec(p.name, dtype, p.parameter.shape)).ToList();
        string configPath = Path.Combine(outDir, "config.json");
        if (File.Exists(configPath)) File.Delete(configPath);
        StreamingWeights.WriteWeights(outDir, specs, spec => Converted(named[spec.Name], dtype), maxShardBytes);

        var c = model.Config;
        var generation = new JsonObject { ["bos_token_id"] = c.BosTokenId, ["do_sample"] = false };
        generation["eos_token_id"] = config["eos_token_id"]?.DeepClone();
        AtomicFile.WriteJson(Path.Combine(outDir, "generation_config.json"), generation);
        if (tokenizerDir is not null && Path.GetFullPath(tokenizerDir) != Path.GetFullPath(outDir))
            foreach (string name in TokenizerFiles)
            {
                string source = Path.Combine(tokenizerDir, name);
                if (File.Exists(source)) AtomicFile.Copy(source, Path.Combine(outDir, name));
            }
        // config.json last: its presence marks a complete checkpoint.
        AtomicFile.WriteJson(configPath, config);
    }

    static IEnumerable<Tensor> Converted(Tensor parameter, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        yield return parameter.detach().to(dtype).MoveToOuterDisposeScope();
    }

    public static string TorchDtypeName(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float16 => "float16",
        _ => dtype.ToString().ToLowerInvariant(),
    };

    public static ScalarType ParseDtype(string name) => name.ToLowerInvariant() switch
    {
        "float32" or "fp32" or "f32" => ScalarType.Float32,
        "bfloat16" or "bf16" => ScalarType.BFloat16,
        "float16" or "fp16" or "f16" => ScalarType.Float16,
        _ => throw new PuzzleException($"unknown dtype '{name}' (expected float32, bfloat16 or float16)"),
    };
}
