using System.CommandLine;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.IO;
using Puzzle.Runtime;
using Puzzle.Tokenization;

namespace Puzzle.Cli.Commands;

internal static class PerplexityCommand
{
    public static Command Create()
    {
        var model = CliSupport.ModelArgument();
        var text = new Option<string>("--text") { Description = "UTF-8 text file", Required = true };
        var maxTokens = new Option<int?>("--max-tokens") { Description = "evaluate at most this many tokens" };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var device = CliSupport.DeviceOption();
        var dtype = CliSupport.DtypeOption();
        var command = new Command("perplexity", "Mean next-token NLL (nats/token) and perplexity of a model on a text file.")
            { model, text, maxTokens, json, device, dtype };
        command.SetAction(r => CliSupport.Run(() =>
            Run(r.GetValue(model)!, r.GetValue(text)!, r.GetValue(maxTokens), r.GetValue(json), r.GetValue(device)!, r.GetValue(dtype)!)));
        return command;
    }

    static int Run(string dir, string textFile, int? maxTokens, bool asJson, string device, string dtype)
    {
        if (!File.Exists(textFile)) throw new PuzzleException($"{textFile}: text file not found");
        if (maxTokens is <= 1) throw new PuzzleException($"--max-tokens must be at least 2, got {maxTokens}");
        using var model = Checkpoint.Load(dir, CliSupport.Device(device), Checkpoint.ParseDtype(dtype));
        using var tokenizer = TextTokenizer.Load(dir);
        int[] ids = tokenizer.Encode(JsonFile.ReadUtf8Text(textFile));
        if (maxTokens is { } m && ids.Length > m) ids = ids[..m];
        if (ids.Length < 2) throw new PuzzleException($"{textFile}: holds {ids.Length} tokens; perplexity needs at least 2");
        var result = PerplexityEvaluator.Evaluate(model, ids);
        if (!double.IsFinite(result.MeanNll))
            throw new PuzzleException($"{dir}: mean NLL on {textFile} is {result.MeanNll} over {result.Tokens} tokens: the model's outputs are not finite");
        if (asJson)
            Console.WriteLine(new JsonObject
            {
                ["model"] = dir, ["text"] = textFile, ["tokens"] = result.Tokens,
                ["mean_nll"] = result.MeanNll, ["perplexity"] = result.Perplexity,
            }.ToJsonString(AtomicFile.Indented));
        else
            Console.WriteLine($"mean NLL {result.MeanNll:F6} nats/token, perplexity {result.Perplexity:F4}, {result.Tokens} tokens");
        return 0;
    }
}
