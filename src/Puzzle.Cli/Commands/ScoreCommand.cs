using System.CommandLine;
using Puzzle.Stages;
using Puzzle.Stages.Scoring;

namespace Puzzle.Cli.Commands;

internal static class ScoreCommand
{
    public static Command Create()
    {
        var run = CliSupport.RunOption();
        var shard = CliSupport.ShardOption();
        var command = new Command("score", "Replace-1-block scoring: KL to the parent, LM loss and top-1 agreement of every candidate block.") { run, shard };
        command.SetAction(r => CliSupport.Run(() => SpectreProgress.Run(() =>
        {
            var result = BlockScorer.Run(new RunDirectory(r.GetValue(run)!) { Shard = Shard.Parse(r.GetValue(shard)) });
            Console.WriteLine($"{"layer",5} {"attention",-16} {"ffn",-16} {"KL",10} {"LM loss",9} {"top-1",7}");
            foreach (var s in result.Scores.OrderBy(s => s.Layer).ThenBy(s => s.Kl).Take(200))
                Console.WriteLine($"{s.Layer,5} {s.Attention,-16} {s.Ffn,-16} {s.Kl,10:F5} {s.LmLoss,9:F4} {s.Top1Agreement,7:P1}");
            Console.WriteLine($"score: {result.Scores.Count}/{result.Candidates} candidates ({result.Mode}), parent LM loss {result.ParentLmLoss:F4} on {result.Tokens:N0} tokens");
            return 0;
        })));
        return command;
    }
}
