using System.CommandLine;
using System.CommandLine.Invocation;
using Puzzle.Cli.Commands;
using Puzzle.Runtime;

// Allocator and thread settings, the same whichever way the program was started (Runtime/ProcessSetup.cs).
try
{
    ProcessSetup.RestartWithHugePages(SelfLaunch.CliAssemblyName);
    ProcessSetup.Apply();
}
catch (Puzzle.PuzzleException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}
var root = new RootCommand("Puzzle for .NET: distillation-based NAS that makes Llama-family LLMs cheaper to serve.");
root.Subcommands.Add(RunCommands.Run());
root.Subcommands.Add(RunCommands.Demo());
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
root.Subcommands.Add(DriftControlCommand.Create());
root.Subcommands.Add(ChildCommands.Assemble());
root.Subcommands.Add(ChildCommands.Distill());
root.Subcommands.Add(ChildCommands.Eval());
root.Subcommands.Add(ChildCommands.Bench());
root.Subcommands.Add(ChildCommands.Export());
root.Subcommands.Add(ChildCommands.Report());
root.Subcommands.Add(SlurmCommand.Create()); root.Subcommands.Add(SlurmCommand.Stage());
foreach (var version in root.Options.OfType<VersionOption>()) version.Action = new PrintVersion();
root.Subcommands.Add(InitRandomCommand.Create());
root.Subcommands.Add(PlanCommand.Create());
root.Subcommands.Add(BaselinesCommand.Create());
return root.Parse(args).Invoke();

/// <summary>`puzzle --version`: versions, devices and the process settings (Runtime/VersionInfo.cs).</summary>
sealed class PrintVersion : SynchronousCommandLineAction
{
    public override bool ClearsParseErrors => true;

    public override int Invoke(ParseResult parseResult)
    {
        foreach (string line in VersionInfo.Lines()) parseResult.InvocationConfiguration.Output.WriteLine(line);
        return 0;
    }
}
