using System.CommandLine;
using Puzzle.Tokenization;

namespace Puzzle.Cli.Commands;

internal static class TokenizerCommand
{
    public static Command Create()
    {
        var input = new Option<string[]>("--input") { Description = ".txt, .jsonl, .parquet files or folders of them", Required = true, AllowMultipleArgumentsPerToken = true };
        var vocab = new Option<int>("--vocab-size") { Description = "vocabulary size including 256 byte tokens and 2 special tokens", Required = true };
        var output = new Option<string>("--out") { Description = "directory for tokenizer.json and tokenizer_config.json", Required = true };
        var textField = new Option<string>("--text-field") { Description = "text field (jsonl) or column (parquet)", DefaultValueFactory = _ => "text" };
        var train = new Command("train", "Train a byte-level BPE tokenizer (Llama-3 style) and write a standard tokenizer.json.")
            { input, vocab, output, textField };
        train.SetAction(r => CliSupport.Run(() =>
        {
            var result = BpeTrainer.Train(r.GetValue(input)!, r.GetValue(vocab), r.GetValue(output)!, r.GetValue(textField)!);
            Console.WriteLine($"{r.GetValue(output)}: {result.VocabSize} tokens ({result.Merges} merges) from {result.Words:N0} words in {result.Seconds:F1} s");
            return 0;
        }));
        return new Command("tokenizer", "Tokenizer tools.") { train };
    }
}
