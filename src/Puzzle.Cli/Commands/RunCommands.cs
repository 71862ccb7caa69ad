using System.CommandLine;
using Puzzle.Config;
using Puzzle.Stages;
using Puzzle.Stages.Report;

namespace Puzzle.Cli.Commands;

internal static class RunCommands
{
    public static Command Run()
    {
        var config = new Argument<string>("CONFIG") { Description = "run config (JSON or YAML); see configs/" };
        var runDir = new Option<string?>("--run") { Description = "run directory (default runs/<config name>)" };
        var set = new Option<string[]>("--set") { Description = "override: section.key=value (repeatable)", AllowMultipleArgumentsPerToken = true };
        var command = new Command("run", "Run the whole pipeline from a config, skipping finished work.") { config, runDir, set };
        command.SetAction(r => CliSupport.Run(() => SpectreProgress.Run(() =>
        {
            string path = r.GetValue(config)!;
            string dir = r.GetValue(runDir) ?? Path.Combine("runs", Path.GetFileNameWithoutExtension(path));
            var resolved = Resolve(path, r.GetValue(set) ?? []);
            Directory.CreateDirectory(dir);
            resolved.Save(Path.Combine(dir, RunConfig.FileName));
            Puzzle.Log.Info($"run: resolved config saved to {Path.Combine(dir, RunConfig.FileName)}");
            Pipeline.Run(new RunDirectory(dir));
            PrintSummary(dir);
            return 0;
        })));
        return command;
    }

    /// <summary>Parses the config (errors name the key), resolving relative paths against the config's folder.</summary>
    public static RunConfig Resolve(string path, IEnumerable<string> overrides)
    {
        var tree = RunConfig.ReadTree(path);
        foreach (string o in overrides) RunConfig.ApplyOverride(tree, o);
        var config = RunConfig.Parse(tree, path);
        string baseDir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string Abs(string p) => string.IsNullOrWhiteSpace(p) ? p : Path.GetFullPath(Path.Combine(baseDir, p));
        return config with
        {
            Parent = config.Parent with { Path = Abs(config.Parent.Path) },
            Data = config.Data with { Path = Abs(config.Data.Path), Inputs = config.Data.Inputs.Select(Abs).ToArray() },
            Evaluation = config.Evaluation with { Tasks = config.Evaluation.Tasks.Select(Abs).ToArray() },
        };
    }

    public static Command Demo()
    {
        var runDir = new Option<string>("--run") { Description = "run directory", DefaultValueFactory = _ => Path.Combine("runs", "demo") };
        var corpus = new Option<string>("--corpus") { Description = "State of the Union corpus folder (scripts/fetch-sotu.sh)", DefaultValueFactory = _ => Path.Combine("data", "corpus", "sotu") };
        var seed = new Option<long>("--seed") { Description = "seed of the method's training (BLD, GKD); the parent and the evaluation protocol keep their own", DefaultValueFactory = _ => 0 };
        var parentTokens = new Option<long>("--parent-tokens") { Description = "tokens the demo's parent is pretrained on (the train split is ~2.1M)", DefaultValueFactory = _ => Puzzle.Demo.ParentTokens };
        var parentSeed = new Option<long>("--parent-seed") { Description = "seed of the parent's pretraining (the same parent for every --seed, as a user's parent is given)", DefaultValueFactory = _ => Puzzle.Demo.ParentSeed };
        var gkdTokens = new Option<long>("--gkd-tokens") { Description = "tokens of global distillation per child (the Puzzle child's and each baseline's); a parent pretrained on more tokens needs more (4M: 1.2M)", DefaultValueFactory = _ => Puzzle.Demo.GkdTokens };
        var command = new Command("demo", "Offline demo: train a small parent on the State of the Union addresses, then run the whole pipeline.") { runDir, corpus, seed, parentTokens, parentSeed, gkdTokens };
        command.SetAction(r => CliSupport.Run(() => SpectreProgress.Run(() =>
        {
            string dir = r.GetValue(runDir)!;
            Puzzle.Demo.Run(dir, r.GetValue(corpus)!, seed: r.GetValue(seed), parentTokens: r.GetValue(parentTokens), parentSeed: r.GetValue(parentSeed),
                gkdTokens: r.GetValue(gkdTokens));
            PrintSummary(dir);
            return 0;
        })));
        return command;
    }

    /// <summary>The report's parent-vs-child table and headline, then where the report and the exported child are.</summary>
    static void PrintSummary(string dir)
    {
        var report = ReportFile.Read(Path.Combine(dir, "report.json"));
        string markdown = File.ReadAllText(Path.Combine(dir, "report.md"));
        var lines = markdown.Split('\n').SkipWhile(l => !l.StartsWith("| |", StringComparison.Ordinal))
            .TakeWhile(l => !l.StartsWith("## ", StringComparison.Ordinal)).Where(l => l.Trim().Length > 0);
        Console.WriteLine();
        foreach (string line in lines) Console.WriteLine(line.Replace("**", ""));
        Console.WriteLine();
        Console.WriteLine($"report: {Path.GetFullPath(Path.Combine(dir, "report.md"))}");
        Console.WriteLine($"exported child: {Path.GetFullPath(Path.Combine(dir, "export"))} ({report.MeasuredThroughputRatio:F2}x the parent, measured)");
    }
}
