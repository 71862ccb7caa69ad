using System.CommandLine;
using Puzzle.Checkpoints;
using Puzzle.Runtime;
using Puzzle.Tokenization;

namespace Puzzle.Cli.Commands;

internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = CliSupport.ModelArgument();
        var prompt = new Option<string>("--prompt") { Description = "prompt text (BOS is added as the tokenizer config says)", DefaultValueFactory = _ => "" };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "tokens to generate", DefaultValueFactory = _ => 128 };
        var temperature = new Option<double>("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0.0 };
        var topP = new Option<double>("--top-p") { Description = "nucleus sampling mass", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<long>("--seed") { Description = "sampling seed", DefaultValueFactory = _ => 0 };
        var device = CliSupport.DeviceOption();
        var dtype = CliSupport.DtypeOption();
        var command = new Command("generate", "Generate text from a prompt, streaming it, then report tokens/s.")
            { model, prompt, maxNew, temperature, topP, seed, device, dtype };
        command.SetAction(r => CliSupport.Run(() => Run(r.GetValue(model)!, r.GetValue(prompt)!, new GenerationOptions
        {
            MaxNewTokens = r.GetValue(maxNew),
            Temperature = r.GetValue(temperature),
            TopP = r.GetValue(topP),
            Seed = r.GetValue(seed),
        }, r.GetValue(device)!, r.GetValue(dtype)!)));
        return command;
    }

    static int Run(string dir, string prompt, GenerationOptions options, string device, string dtype)
    {
        if (options.MaxNewTokens <= 0) throw new PuzzleException($"--max-new-tokens must be positive, got {options.MaxNewTokens}");
        if (!(options.TopP > 0 && options.TopP <= 1)) throw new PuzzleException($"--top-p must be in (0, 1], got {options.TopP}");
        if (!(options.Temperature >= 0) || double.IsInfinity(options.Temperature)) throw new PuzzleException($"--temperature must be a finite number >= 0, got {options.Temperature}");
        using var model = Checkpoint.Load(dir, CliSupport.Device(device), Checkpoint.ParseDtype(dtype));
        using var tokenizer = TextTokenizer.Load(dir);
        int[] ids = tokenizer.Encode(prompt);
        if (ids.Length == 0) ids = [tokenizer.BosId ?? throw new PuzzleException($"{dir}: empty prompt and the tokenizer has no BOS token")];
        if ((long)ids.Length + options.MaxNewTokens > model.Config.MaxPositionEmbeddings)
            throw new PuzzleException($"--prompt ({ids.Length} tokens) + --max-new-tokens ({options.MaxNewTokens}) = {(long)ids.Length + options.MaxNewTokens} positions is past {dir}'s context (max_position_embeddings {model.Config.MaxPositionEmbeddings})");
        // Decode prompt + continuation each step and print what is new: multi-byte characters and the
        // tokenizer's leading-space rules come out exactly as a one-shot decode would.
        var all = new List<int>(ids);
        string shown = tokenizer.Decode(all);
        Console.Write(shown);
        var result = TextGenerator.Generate(model, [ids], options, tokenizer.EosIds, step =>
        {
            if (step[0] < 0) return;
            all.Add(step[0]);
            string text = tokenizer.Decode(all);
            if (text.StartsWith(shown, StringComparison.Ordinal)) Console.Write(text[shown.Length..]);
            shown = text;
        });
        Console.WriteLine();
        double seconds = result.PrefillSeconds + result.DecodeSeconds;
        Console.Error.WriteLine(
            $"{result.GeneratedTokens} tokens in {seconds:F2} s: {result.GeneratedTokens / seconds:F1} tokens/s " +
            $"(prompt {ids.Length} tokens, prefill {result.PrefillSeconds * 1000:F1} ms, decode {(result.GeneratedTokens > 1 ? (result.GeneratedTokens - 1) / result.DecodeSeconds : 0):F1} tokens/s)");
        return 0;
    }
}
