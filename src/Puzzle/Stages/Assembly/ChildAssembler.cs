using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.IO;
using Puzzle.Model;
using Puzzle.Stages.Library;
using Puzzle.Stages.Search;
using static TorchSharp.torch;

namespace Puzzle.Stages.Assembly;

public sealed record AssemblyResult(string OutDir, ModelConfig Config, long Parameters, long EstimatedParameters);

/// <summary>
/// Stage 7: the child from the parent's non-block weights and, per layer, the solution's attention and FFN variants
/// from the library (the parent's own where chosen), written as a DeciLM checkpoint with the tokenizer.
/// </summary>
public static class ChildAssembler
{
    public static AssemblyResult Run(RunDirectory run, string solutionName, string outDir, Action<string>? log = null)
    {
        log ??= Log.Info;
        string solutionPath = run.Artifact(SearchStage.Folder, solutionName + ".json");
        if (!File.Exists(solutionPath))
            throw new PuzzleException($"{solutionPath}: no such solution (run `puzzle search --run {run.Path} --name {solutionName}`)");
        var solutionField = JsonFile.Read(solutionPath);
        var solution = solutionField.Node!;
        using var parent = Checkpoint.Load(run.ParentDir);
        var variants = SearchSpace.Expand(parent.Config, run.Config.SearchSpace).ToDictionary(v => v.Id);
        var layers = solutionField["layers"].Items();
        if (layers.Count != parent.Config.NumLayers)
            throw new PuzzleException($"{solutionPath}: {layers.Count} layers but the parent has {parent.Config.NumLayers}");
        SubblockVariant Variant(string id) => variants.TryGetValue(id, out var v) ? v
            : throw new PuzzleException($"{solutionPath}: variant {id} is not in the run's search space");
        var choices = layers.Select(l => (Attention: Variant(l["attention"].String()), Ffn: Variant(l["ffn"].String()))).ToList();
        var childConfig = parent.Config.WithBlocks(choices.Select(c => new BlockConfig(c.Attention.Attention!, c.Ffn.Ffn!)));
        LibraryBlocks.Records(run.Path, choices.SelectMany(c => new[] { c.Attention, c.Ffn }).Distinct());

        using var child = new CausalLm(childConfig, CPU, ScalarType.Float32);
        using (no_grad())
        {
            var target = child.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            foreach (var (name, p) in parent.named_parameters().Where(p => !p.name.StartsWith("model.layers.", StringComparison.Ordinal)))
                target[name].copy_(p);
            for (int i = 0; i < choices.Count; i++)
            {
                using var block = LibraryBlocks.Compose(parent, run.Path, i, choices[i].Attention, choices[i].Ffn);
                foreach (var (name, p) in block.named_parameters()) target[$"model.layers.{i}.{name}"].copy_(p);
            }
        }
        Checkpoint.SaveDeciLm(child, outDir, ScalarType.Float32, run.ParentDir);
        long parameters = child.parameters().Sum(p => p.NumberOfElements);
        long estimated = solutionField["verified"]["parameters"].Long();
        if (parameters != estimated)
            throw new PuzzleException($"{outDir}: the assembled child has {parameters:N0} parameters but the solution estimated {estimated:N0}");
        AtomicFile.WriteJson(Path.Combine(outDir, "puzzle_solution.json"), solution.DeepClone());
        log($"assemble: {solutionName} -> {outDir}: {parameters:N0} parameters (parent {parent.Config.TotalParameters:N0}), " +
            $"KV cache {childConfig.KvBytesPerToken(2):N0} B/token in bf16 (parent {parent.Config.KvBytesPerToken(2):N0})");
        return new AssemblyResult(outDir, childConfig, parameters, estimated);
    }
}
