using System.CommandLine;
using Puzzle.Stages;
using Puzzle.Stages.Library;

namespace Puzzle.Cli.Commands;

internal static class LibraryCommand
{
    public static Command Create()
    {
        var run = CliSupport.RunOption();
        var shard = CliSupport.ShardOption();
        var command = new Command("library", "Build the block library: initialise every variant from the parent and train it by blockwise local distillation.")
            { run, shard };
        command.SetAction(r => CliSupport.Run(() => SpectreProgress.Run(() =>
        {
            var result = BlockLibraryBuilder.Run(new RunDirectory(r.GetValue(run)!) { Shard = Shard.Parse(r.GetValue(shard)) });
            Console.WriteLine($"{"variant",-18} {"params",9} {"steps",6} {"NMSE init",10} {"NMSE BLD",10}");
            foreach (var v in result.Records.Where(x => x.Trained))
                Console.WriteLine($"{v.Id,-18} {v.Parameters,9:N0} {v.Steps,6} {v.NmseInit,10:F5} {v.NmseFinal,10:F5}");
            Console.WriteLine($"library: {result.Done}/{result.Variants} variants done ({result.Trained} trained now, {result.Skipped} reused)");
            return 0;
        })));
        return command;
    }
}
