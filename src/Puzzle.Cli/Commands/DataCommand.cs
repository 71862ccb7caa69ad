using System.CommandLine;
using Puzzle.Data;

namespace Puzzle.Cli.Commands;

internal static class DataCommand
{
    public static Command Create()
    {
        var tokenizer = new Option<string>("--tokenizer") { Description = "model or tokenizer directory (tokenizer.json or tokenizer.model)", Required = true };
        var input = new Option<string[]>("--input") { Description = ".txt, .jsonl, .parquet files or folders of them", Required = true, AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--out") { Description = "data directory to write", Required = true };
        var seqLen = new Option<int>("--seq-len") { Description = "training window length", DefaultValueFactory = _ => 256 };
        var validation = new Option<double>("--validation-fraction") { Description = "share of documents held out for selection (checkpoints, scoring, search)", DefaultValueFactory = _ => 0.05 };
        var test = new Option<double>("--test-fraction") { Description = "share of documents held out for `puzzle eval` only", DefaultValueFactory = _ => 0.05 };
        var textField = new Option<string>("--text-field") { Description = "text field (jsonl) or column (parquet)", DefaultValueFactory = _ => "text" };
        var txtDocuments = new Option<string>("--txt-documents") { Description = ".txt inputs: file (one document each) or paragraphs (blank-line separated)", DefaultValueFactory = _ => "file" };
        var seed = new Option<long>("--seed") { Description = "seed of the document split", DefaultValueFactory = _ => 0 };
        var prepare = new Command("prepare", "Tokenize a corpus into memory-mapped token shards with train/validation/test splits by document and a manifest.")
            { tokenizer, input, output, seqLen, validation, test, textField, txtDocuments, seed };
        prepare.SetAction(r => CliSupport.Run(() =>
        {
            var result = DataPreparer.Prepare(new DataPrepareOptions
            {
                TokenizerDir = r.GetValue(tokenizer)!,
                Inputs = r.GetValue(input)!,
                OutDir = r.GetValue(output)!,
                SeqLen = r.GetValue(seqLen),
                ValidationFraction = r.GetValue(validation),
                TestFraction = r.GetValue(test),
                TextField = r.GetValue(textField)!,
                TxtDocuments = r.GetValue(txtDocuments)!,
                Seed = r.GetValue(seed),
            });
            var splits = result.Manifest.Splits;
            Console.WriteLine($"{r.GetValue(output)}: {splits["train"].Tokens:N0} train tokens ({splits["train"].Documents} documents), " +
                              $"{splits["validation"].Tokens:N0} validation tokens ({splits["validation"].Documents} documents), " +
                              $"{splits["test"].Tokens:N0} test tokens ({splits["test"].Documents} documents), {result.Manifest.TokenDtype}" +
                              (result.Skips.Total > 0 ? $", {result.Skips.Total} documents skipped (see manifest.json)" : ""));
            return 0;
        }));
        return new Command("data", "Prepare training data.") { prepare };
    }
}
