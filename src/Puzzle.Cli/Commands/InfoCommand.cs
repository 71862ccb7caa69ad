using System.CommandLine;
using Puzzle.Checkpoints;
using Puzzle.IO;
using Puzzle.Model;

namespace Puzzle.Cli.Commands;

internal static class InfoCommand
{
    public static Command Create()
    {
        var model = CliSupport.ModelArgument();
        var json = new Option<bool>("--json") { Description = "print JSON instead of a table" };
        var command = new Command("info", "Describe a checkpoint: architecture, per-layer variants, parameters, bytes, KV cache per token.") { model, json };
        command.SetAction(result => CliSupport.Run(() => Run(result.GetValue(model)!, result.GetValue(json))));
        return command;
    }

    static int Run(string dir, bool asJson)
    {
        var config = HfConfig.Read(dir);
        string modelType = config.IsHomogeneousLlama && !File.ReadAllText(Path.Combine(dir, "config.json")).Contains("block_configs")
            ? "llama" : HfConfig.DeciModelType;
        // Count what the checkpoint really holds (headers only) and compare with the config's arithmetic.
        long checkpointParameters = 0;
        foreach (var file in Checkpoint.WeightMap(dir).Values.Distinct())
        {
            using var st = SafeTensorsFile.Open(file);
            checkpointParameters += st.Tensors.Values.Sum(t => t.NumElements);
        }
        int bytes = ModelSummary.BytesPerElement(config.TorchDtype);
        var summary = ModelSummary.ToJson(config, modelType, bytes, checkpointParameters);
        if (asJson)
        {
            Console.WriteLine(summary.ToJsonString(AtomicFile.Indented));
            return 0;
        }
        Console.WriteLine($"{dir}: {modelType}, {config.NumLayers} layers, hidden {config.HiddenSize}, {config.NumAttentionHeads} heads × {config.HeadDim}, vocab {config.VocabSize}, {config.TorchDtype}");
        Console.WriteLine($"rope_theta {config.RopeTheta}{(config.RopeScaling is { } s ? $", rope_scaling {s.Type} ×{s.Factor}" : "")}, max positions {config.MaxPositionEmbeddings}, tied embeddings: {config.TieWordEmbeddings}");
        Console.WriteLine();
        Console.WriteLine($"{"layer",5}  {"attention",-9} {"kv",4}  {"ffn",-7} {"width",7}  {"params",12}  {"KV B/token",10}");
        for (int i = 0; i < config.NumLayers; i++)
        {
            var b = config.Blocks[i];
            Console.WriteLine($"{i,5}  {ModelSummary.AttentionLabel(b.Attention),-9} {b.Attention.NumKeyValueHeads?.ToString() ?? "-",4}  " +
                              $"{ModelSummary.FfnLabel(b.Ffn),-7} {b.Ffn.IntermediateSize?.ToString() ?? "-",7}  {config.BlockParameters(i),12:N0}  {config.KvBytesPerToken(b.Attention, bytes),10:N0}");
        }
        Console.WriteLine();
        Console.WriteLine($"parameters: {config.TotalParameters:N0} ({config.NonBlockParameters:N0} outside blocks); checkpoint holds {checkpointParameters:N0}");
        Console.WriteLine($"bytes at {config.TorchDtype}: {config.TotalParameters * bytes:N0}");
        Console.WriteLine($"KV cache per token (all layers, {config.TorchDtype}): {config.KvBytesPerToken(bytes):N0} bytes");
        return 0;
    }
}
