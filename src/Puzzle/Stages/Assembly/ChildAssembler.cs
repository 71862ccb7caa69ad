using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Domain;
using Puzzle.IO;
using Puzzle.Model;
using Puzzle.Stages.Library;
using static TorchSharp.torch;

namespace Puzzle.Stages.Assembly;

public sealed record AssemblyResult(string OutDir, ModelConfig Config, long Parameters, long EstimatedParameters);

/// <summary>
/// Stage 7: the child from the parent's non-block weights and, per layer, the solution's attention and FFN variants
/// from the library (the parent's own where chosen), written as a DeciLM checkpoint with the tokenizer. Streamed:
/// every child tensor is read from the parent's (or the library's) safetensors, converted to the parent's stored
/// dtype and written before the next is read, so neither model is ever whole in memory. A layer given in
/// <c>layerWeights</c> (coupled BLD's blocks) comes whole from that file instead.
/// </summary>
public static class ChildAssembler
{
    /// <param name="layerWeights">layers whose every tensor comes from this safetensors file (named as in the block: "self_attn.q_proj.weight").</param>
    public static AssemblyResult Run(RunDirectory run, string solutionName, string outDir, Action<string>? log = null,
        IReadOnlyDictionary<int, string>? layerWeights = null)
    {
        log ??= Log.Info;
        string solutionPath = run.Solution(solutionName);
        if (!File.Exists(solutionPath))
            throw new PuzzleException($"{solutionPath}: no such solution (run `puzzle search --run {run.Path} --name {solutionName}`)");
        var solutionField = JsonFile.Read(solutionPath);
        var solution = solutionField.Node!;
        var parentConfig = HfConfig.Read(run.ParentDir);
        var layers = solutionField["layers"].Items();
        if (layers.Count != parentConfig.NumLayers)
            throw new PuzzleException($"{solutionPath}: {layers.Count} layers but the parent has {parentConfig.NumLayers}");
        var choices = Choices(run, solutionPath, layers);
        var childConfig = parentConfig.WithBlocks(choices.Select(c => new BlockConfig(c.Attention.Attention!, c.Ffn.Ffn!)));
        LibraryBlocks.Records(run, choices.SelectMany(c => new[] { c.Attention, c.Ffn }).Distinct());

        var parentFiles = Checkpoint.WeightMap(run.ParentDir);
        var dtype = StoredDtype(parentFiles);
        var specs = StreamingWeights.Specs(childConfig, dtype);
        var open = new Dictionary<string, SafeTensorsFile>();
        try
        {
            // Where each child tensor comes from: (file, tensor name in it).
            (string File, string Name) Source(string name)
            {
                if (!name.StartsWith("model.layers.", StringComparison.Ordinal))
                    return (parentFiles.TryGetValue(name, out var f) ? f : throw new PuzzleException($"{run.ParentDir}: tensor '{name}' is missing"), name);
                string rest = name["model.layers.".Length..];
                int dot = rest.IndexOf('.');
                int layer = int.Parse(rest[..dot], System.Globalization.CultureInfo.InvariantCulture);
                string local = rest[(dot + 1)..];
                if (layerWeights is not null && layerWeights.TryGetValue(layer, out var block)) return (block, local);
                var variant = BlockLibraryBuilder.OwnsParameter(choices[layer].Attention, local) ? choices[layer].Attention : choices[layer].Ffn;
                if (variant.IsParent)
                    return (parentFiles.TryGetValue(name, out var f) ? f : throw new PuzzleException($"{run.ParentDir}: tensor '{name}' is missing"), name);
                return (run.LibraryWeights(variant.Id), local);
            }
            IEnumerable<Tensor> Produce(TensorSpec spec)
            {
                var (path, name) = Source(spec.Name);
                if (!open.TryGetValue(path, out var file)) open[path] = file = SafeTensorsFile.Open(path);
                if (!file.Tensors.TryGetValue(name, out var info)) throw new PuzzleException($"{path}: tensor '{name}' is missing");
                if (!info.Shape.SequenceEqual(spec.Shape))
                    throw new PuzzleException($"{path}: tensor '{name}' has shape [{string.Join(", ", info.Shape)}] but the child's {spec.Name} needs [{string.Join(", ", spec.Shape)}]");
                using var value = file.Read(name);
                if (!isfinite(value).all().item<bool>())
                    throw new PuzzleException($"{path}: tensor '{name}' holds NaN or infinite values; retrain that variant (delete it and rerun `puzzle library`)");
                yield return value.to(dtype);
            }
            Directory.CreateDirectory(outDir);
            string configPath = Path.Combine(outDir, "config.json");
            if (File.Exists(configPath)) File.Delete(configPath);
            StreamingWeights.WriteWeights(outDir, specs, Produce);
        }
        finally
        {
            foreach (var f in open.Values) f.Dispose();
        }
        string dtypeName = Checkpoint.TorchDtypeName(dtype);
        var configJson = HfConfig.ToDeciLm(childConfig, dtypeName);
        AtomicFile.WriteJson(Path.Combine(outDir, "generation_config.json"), new JsonObject
        {
            ["bos_token_id"] = childConfig.BosTokenId, ["do_sample"] = false, ["eos_token_id"] = configJson["eos_token_id"]?.DeepClone(),
        });
        foreach (string name in Checkpoint.TokenizerFiles)
        {
            string source = Path.Combine(run.ParentDir, name);
            if (File.Exists(source)) AtomicFile.Copy(source, Path.Combine(outDir, name));
        }
        AtomicFile.WriteJson(Path.Combine(outDir, "puzzle_solution.json"), solution.DeepClone());
        // config.json last: its presence marks a complete checkpoint.
        AtomicFile.WriteJson(Path.Combine(outDir, "config.json"), configJson);
        long parameters = specs.Sum(s => s.Elements);
        long estimated = solutionField["verified"]["parameters"].Long();
        if (parameters != estimated)
            throw new PuzzleException($"{outDir}: the assembled child has {parameters:N0} parameters but the solution estimated {estimated:N0}");
        log($"assemble: {solutionName} -> {outDir}: {parameters:N0} parameters (parent {parentConfig.TotalParameters:N0}), {dtypeName}, " +
            $"KV cache {childConfig.KvBytesPerToken(2):N0} B/token in bf16 (parent {parentConfig.KvBytesPerToken(2):N0})");
        return new AssemblyResult(outDir, childConfig, parameters, estimated);
    }

    /// <summary>Each layer's (attention, FFN) variants of a solution's layers.</summary>
    public static List<(SubblockVariant Attention, SubblockVariant Ffn)> Choices(RunDirectory run, string solutionPath, IReadOnlyList<JsonField> layers) =>
        layers.Select((l, i) => (Attention: run.Variants.Get(l["attention"].String(), $"{solutionPath}: layers[{i}].attention"),
            Ffn: run.Variants.Get(l["ffn"].String(), $"{solutionPath}: layers[{i}].ffn"))).ToList();

    /// <summary>The dtype the parent's weights are stored in (of its embedding matrix); F32, BF16 or F16.</summary>
    public static ScalarType StoredDtype(IReadOnlyDictionary<string, string> weightMap)
    {
        const string embedding = "model.embed_tokens.weight";
        if (!weightMap.TryGetValue(embedding, out var path)) throw new PuzzleException($"the parent has no {embedding}");
        using var file = SafeTensorsFile.Open(path);
        var dtype = SafeTensorsFile.ScalarTypeOf(file.Tensors[embedding].Dtype);
        return dtype is ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16 ? dtype
            : throw new PuzzleException($"{path}: {embedding} is stored as {dtype}; expected F32, BF16 or F16");
    }
}
