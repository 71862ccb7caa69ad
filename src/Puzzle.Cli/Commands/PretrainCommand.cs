using System.CommandLine;
using Puzzle.Training;

namespace Puzzle.Cli.Commands;

internal static class PretrainCommand
{
    public static Command Create()
    {
        var data = new Option<string>("--data") { Description = "prepared data directory", Required = true };
        var output = new Option<string>("--out") { Description = "model directory to write (HF Llama)", Required = true };
        var preset = new Option<string?>("--preset") { Description = $"model shape: {string.Join(", ", ModelShape.Presets.Keys)}" };
        var layers = new Option<int?>("--layers");
        var hidden = new Option<int?>("--hidden");
        var heads = new Option<int?>("--heads");
        var kvHeads = new Option<int?>("--kv-heads");
        var intermediate = new Option<int?>("--intermediate");
        var tokens = new Option<long>("--tokens") { Description = "training tokens", DefaultValueFactory = _ => 4_000_000 };
        var batch = new Option<int>("--batch") { Description = "sequences per step", DefaultValueFactory = _ => 16 };
        var lr = new Option<double>("--lr") { Description = "peak learning rate", DefaultValueFactory = _ => 3e-3 };
        var seed = new Option<long>("--seed") { DefaultValueFactory = _ => 0 };
        var checkpointEvery = new Option<int>("--checkpoint-every") { Description = "steps between checkpoints", DefaultValueFactory = _ => 100 };
        var precision = new Option<string>("--precision") { Description = "auto, bf16 or fp32", DefaultValueFactory = _ => "auto" };
        var device = CliSupport.DeviceOption();
        var command = new Command("pretrain", "Train a Llama from scratch on prepared data; resumes after an interruption.")
            { data, output, preset, layers, hidden, heads, kvHeads, intermediate, tokens, batch, lr, seed, checkpointEvery, precision, device };
        command.SetAction(r => CliSupport.Run(() =>
        {
            ModelShape shape;
            int?[] dims = [r.GetValue(layers), r.GetValue(hidden), r.GetValue(heads), r.GetValue(kvHeads), r.GetValue(intermediate)];
            if (r.GetValue(preset) is { } name)
            {
                if (dims.Any(d => d is not null)) throw new PuzzleException("give --preset or the dimensions (--layers --hidden --heads --kv-heads --intermediate), not both");
                shape = ModelShape.Presets.TryGetValue(name, out var p) ? p
                    : throw new PuzzleException($"unknown preset '{name}' (known: {string.Join(", ", ModelShape.Presets.Keys)})");
            }
            else
            {
                if (dims.Any(d => d is null)) throw new PuzzleException("give --preset NAME, or all of --layers --hidden --heads --kv-heads --intermediate");
                shape = new ModelShape(dims[0]!.Value, dims[1]!.Value, dims[2]!.Value, dims[3]!.Value, dims[4]!.Value);
            }
            var result = Pretrainer.Run(new PretrainOptions
            {
                DataDir = r.GetValue(data)!, OutDir = r.GetValue(output)!, Shape = shape, Tokens = r.GetValue(tokens),
                Batch = r.GetValue(batch), LearningRate = r.GetValue(lr), Seed = r.GetValue(seed),
                CheckpointEvery = r.GetValue(checkpointEvery), Precision = r.GetValue(precision)!, Device = r.GetValue(device)!,
            });
            Console.WriteLine($"{r.GetValue(output)}: {result.Steps} steps, {result.TokensSeen:N0} tokens, validation loss {result.ValidationLoss:F4} (perplexity {Math.Exp(result.ValidationLoss):F2})");
            return 0;
        }));
        return command;
    }
}
