using System.CommandLine;
using Puzzle.Checkpoints;
using Puzzle.Parents;

namespace Puzzle.Cli.Commands;

internal static class InitRandomCommand
{
    public static Command Create()
    {
        var like = new Option<string?>("--like") { Description = $"a known parent's shapes: {string.Join(", ", RandomParent.Presets.Keys)}" };
        var config = new Option<string?>("--config") { Description = "an HF config.json (Llama or DeciLM) to take the shapes from" };
        var output = new Option<string>("--out") { Description = "directory to write (config.json, safetensors, tokenizer.json)", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "stored dtype: bfloat16, float16 or float32", DefaultValueFactory = _ => "bfloat16" };
        var seed = new Option<long>("--seed") { Description = "random seed of the weights", DefaultValueFactory = _ => 0 };
        var shard = new Option<double>("--max-shard-gib") { Description = "split the weights into shards of at most this size", DefaultValueFactory = _ => 5.0 };
        var command = new Command("init-random",
            "Write a randomly initialised HF Llama parent of real shapes (weights streamed tensor by tensor) with a byte-level BPE tokenizer of its vocabulary size.")
            { like, config, output, dtype, seed, shard };
        command.SetAction(r => CliSupport.Run(() =>
        {
            string? name = r.GetValue(like), file = r.GetValue(config);
            if ((name is null) == (file is null)) throw new PuzzleException("init-random: give exactly one of --like NAME and --config FILE");
            double gib = r.GetValue(shard);
            if (!(gib > 0)) throw new PuzzleException($"init-random: --max-shard-gib must be positive, got {gib}");
            var shape = name is not null ? RandomParent.Preset(name) : RandomParent.FromConfigFile(file!);
            var result = RandomParent.Write(shape, r.GetValue(output)!, Checkpoint.ParseDtype(r.GetValue(dtype)!), r.GetValue(seed), (long)(gib * (1L << 30)));
            Console.WriteLine($"{result.OutDir}: {result.Parameters:N0} parameters, {result.Bytes / (double)(1L << 30):F2} GiB in {result.Files} file(s), vocab {result.Config.VocabSize}, {result.Seconds:F1} s");
            return 0;
        }));
        return command;
    }
}
