using System.CommandLine;
using System.Text.Json.Nodes;
using Puzzle.Config;
using Puzzle.Stages;

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
            var report = Pipeline.Run(new RunDirectory(dir));
            PrintSummary(report, dir);
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
        var command = new Command("demo", "Offline demo: train a small parent on the State of the Union addresses, then run the whole pipeline.") { runDir, corpus };
        command.SetAction(r => CliSupport.Run(() => SpectreProgress.Run(() =>
        {
            string dir = r.GetValue(runDir)!;
            var report = Puzzle.Demo.Run(dir, r.GetValue(corpus)!);
            PrintSummary(report, dir);
            return 0;
        })));
        return command;
    }

    static void PrintSummary(JsonObject built, string dir)
    {
        var report = JsonNode.Parse(built.ToJsonString())!;                                    // parsed numbers convert freely
        var p = report["parent"]!;
        var c = report["child"]!;
        Console.WriteLine();
        Console.WriteLine($"{"",-34} {"parent",14} {"child",14} {"ratio",8}");
        void Row(string name, string key, string format)
        {
            double a = p[key]!.GetValue<double>(), b = c[key]!.GetValue<double>();
            Console.WriteLine($"{name,-34} {a.ToString(format),14} {b.ToString(format),14} {(a != 0 ? b / a : 0),8:F3}");
        }
        Row("parameters", "parameters", "N0");
        Row("memory at scenario (bytes)", "memory_at_scenario_bytes", "N0");
        Row("KV cache per token (bytes)", "kv_bytes_per_token", "N0");
        Row("end-to-end throughput (tokens/s)", "end_to_end_tokens_per_s", "N0");
        Row("perplexity", "perplexity", "F3");
        Row("next-token accuracy", "next_token_accuracy", "P2");
        Row("top-1 agreement with parent", "top1_agreement", "P2");
        Console.WriteLine($"{"KL(parent || child) per token",-34} {0,14:F4} {c["kl_to_parent"]!.GetValue<double>(),14:F4}");
        Console.WriteLine();
        Console.WriteLine($"measured throughput {report["measured_throughput_ratio"]!.GetValue<double>():F2}x the parent, quality retention {report["quality_retention"]!.GetValue<double>():P1}");
        Console.WriteLine($"report: {Path.GetFullPath(Path.Combine(dir, "report.md"))}");
        Console.WriteLine($"exported child: {Path.GetFullPath(Path.Combine(dir, "export"))}");
    }
}
