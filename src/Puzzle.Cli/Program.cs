using System.CommandLine;
using Puzzle.Cli.Commands;

var root = new RootCommand("Puzzle for .NET: distillation-based NAS that makes Llama-family LLMs cheaper to serve.");
root.Subcommands.Add(InfoCommand.Create());
root.Subcommands.Add(GenerateCommand.Create());
root.Subcommands.Add(PerplexityCommand.Create());
root.Subcommands.Add(DataCommand.Create());
root.Subcommands.Add(TokenizerCommand.Create());
root.Subcommands.Add(PretrainCommand.Create());
root.Subcommands.Add(LibraryCommand.Create());
root.Subcommands.Add(ScoreCommand.Create());
root.Subcommands.Add(CostsCommand.Create());
root.Subcommands.Add(SearchCommand.Create());
return root.Parse(args).Invoke();
