using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Config;

namespace Puzzle.Tests.Stages;

/// <summary>`puzzle run` end to end on a tiny parent, as a process, including a kill mid-stage and a resume.</summary>
public sealed class PipelineTests(RunFixture fixture) : IClassFixture<RunFixture>
{
    string WriteConfig()
    {
        string path = Path.Combine(TestSupport.TempDir(), "tiny.json");
        var config = new RunConfig
        {
            Parent = new ParentSection { Path = fixture.ParentDir },
            Data = new DataSection { Path = fixture.DataDir },
            SearchSpace = new SearchSpaceSection { KvHeads = [2, 1], FfnFractions = [1.0, 0.5, 0.25], FfnLinear = false },
            Bld = new BldSection { TokensPerVariant = 8 * 32 * 10, Batch = 8, Lr = 3e-4, CalibrationTokens = 32 * 8, ValidationTokens = 32 * 8 },
            Scoring = new ScoringSection { ValidationTokens = 32 * 8, Batch = 8 },
            Scenario = new ScenarioSection { Batch = 4, PromptLength = 32, GenerationLength = 32, WarmupRuns = 1, Repeats = 3 },
            Search = new SearchSection { MinThroughputRatio = 1.5, Target = "h100", Sweep = "throughput-ratio=1.0:2.0:0.5" },
            Gkd = new GkdSection { Tokens = 8 * 32 * 8, Batch = 8, Lr = 1e-3, ValidationTokens = 32 * 8 },
            Evaluation = new EvaluationSection { MaxTokens = 32 * 8, BenchRepeats = 1 },
            Export = new ExportSection { Dtype = "float32" },
        };
        config.Save(path);
        return path;
    }

    static Process Start(params string[] args) => TestSupport.StartCli(args);

    static (int Code, string Output) RunCli(params string[] args) => RunCli(TestSupport.CliLaunch.DotnetHost, args);

    static (int Code, string Output) RunCli(TestSupport.CliLaunch launch, params string[] args)
    {
        var (code, stdout, stderr) = TestSupport.RunCli(launch, args);
        return (code, stdout + stderr);
    }

    /// <summary>
    /// The straight run goes through `dotnet Puzzle.Cli.dll`; the resumed run (library onwards, benchmark included)
    /// through the built executable, as a published app or a dotnet tool starts it. Both benchmark in a fresh
    /// process started the same way as the parent process.
    /// </summary>
    [Fact]
    public void Run_EndToEnd_WritesConsistentArtifacts_AndResumesAfterAKill()
    {
        string config = WriteConfig();
        string straight = Path.Combine(TestSupport.TempDir(), "run");
        var (code, output) = RunCli("run", config, "--run", straight);
        Assert.True(code == 0, output);
        Assert.Contains("pipeline: all stages done", output);
        Assert.Contains("measured throughput", output);
        Assert.Contains("bench: running in a fresh process (dotnet Puzzle.Cli.dll bench", output);
        Assert.Equal("fresh", JsonNode.Parse(File.ReadAllText(Path.Combine(straight, "eval", "bench.json")))!["process"]!.GetValue<string>());

        foreach (string artifact in new[] { "config.json", "parent.json", "library/library.json", "scores.json", "costs.json", "solutions/child.json",
                     "solutions/pareto.json", "child/config.json", "child-gkd/config.json", "eval/eval.json", "eval/bench.json", "report.md", "report.json",
                     "report-architecture.png", "report-pareto.png", "export/config.json", "export/README.md", "export/tokenizer.json", "pipeline.json" })
            Assert.True(File.Exists(Path.Combine(straight, artifact)), artifact);
        var solution = JsonNode.Parse(File.ReadAllText(Path.Combine(straight, "solutions", "child.json")))!;
        var exported = HfConfig.Read(Path.Combine(straight, "child-gkd"));
        Assert.Equal(solution["verified"]!["parameters"]!.GetValue<long>(), exported.TotalParameters);
        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(straight, "report.json")))!;
        var bench = report["bench"]!["models"]!.AsArray();
        Assert.Equal(bench[1]!["end_to_end_tokens_per_s"]!.GetValue<double>() / bench[0]!["end_to_end_tokens_per_s"]!.GetValue<double>(),
            report["measured_throughput_ratio"]!.GetValue<double>(), 9);
        using (var child = Checkpoint.Load(Path.Combine(straight, "export"))) Assert.Equal(2, child.Config.NumLayers);

        // A second run reuses everything.
        (code, output) = RunCli("run", config, "--run", straight);
        Assert.True(code == 0, output);
        Assert.Contains("reusing", output);
        Assert.DoesNotContain("trained now, 0 reused", output.Replace("(0 trained now", ""));

        // Kill a run in the middle of the library stage, then rerun it to the end.
        string killed = Path.Combine(TestSupport.TempDir(), "run");
        using (var process = Start("run", config, "--run", killed))
        {
            var clock = Stopwatch.StartNew();
            while (clock.Elapsed.TotalSeconds < 120 && (!Directory.Exists(Path.Combine(killed, "library")) ||
                   Directory.GetFiles(Path.Combine(killed, "library"), "L0.*.json").Length < 4))
                Thread.Sleep(20);
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }
        Assert.False(File.Exists(Path.Combine(killed, "scores.json")));
        (code, output) = RunCli(TestSupport.CliLaunch.Executable, "run", config, "--run", killed);
        Assert.True(code == 0, output);
        Assert.Contains("already done", output);
        Assert.Contains("bench: running in a fresh process (Puzzle.Cli bench", output);
        Assert.Equal("fresh", JsonNode.Parse(File.ReadAllText(Path.Combine(killed, "eval", "bench.json")))!["process"]!.GetValue<string>());
        Assert.Equal(File.ReadAllText(Path.Combine(straight, "solutions", "child.json")).Split("\"solver\"")[0],
            File.ReadAllText(Path.Combine(killed, "solutions", "child.json")).Split("\"solver\"")[0]);
        foreach (string record in Directory.GetFiles(Path.Combine(straight, "library"), "L*.json"))
        {
            var a = JsonNode.Parse(File.ReadAllText(record))!;
            var b = JsonNode.Parse(File.ReadAllText(Path.Combine(killed, "library", Path.GetFileName(record))))!;
            Assert.Equal(a["nmse_final"]!.GetValue<double>(), b["nmse_final"]!.GetValue<double>());
        }
    }

    [Fact]
    public void Run_BadConfig_NamesTheKey()
    {
        string path = Path.Combine(TestSupport.TempDir(), "bad.yaml");
        File.WriteAllText(path, "parent:\n  path: somewhere\nbld:\n  tokens_per_variant: 100\n  lr_typo: 0.1\n");
        var (code, output) = RunCli("run", path, "--run", TestSupport.TempDir());
        Assert.NotEqual(0, code);
        Assert.Contains("unknown key 'bld.lr_typo'", output);
        (code, output) = RunCli("run", path, "--run", TestSupport.TempDir(), "--set", "bld.lr_typo=");
        Assert.NotEqual(0, code);
    }

    [Fact]
    public void ShippedConfigs_Parse_AndTheDemoConfigMatchesTheBuiltIn()
    {
        string root = FindRoot();
        var demo = RunConfig.Read(Path.Combine(root, "configs", "demo.json"));
        Assert.Equal(Puzzle.Demo.Config.ToJson().ToJsonString(), demo.ToJson().ToJsonString());
        var example = RunConfig.Read(Path.Combine(root, "configs", "example.yaml"));
        Assert.Equal(1.5, example.Search.MinThroughputRatio);
        Assert.Equal(["../../shared/data/tinystories-val.txt"], example.Data.Inputs);
        Assert.Equal(65536, example.Bld.TokensPerVariant);
        Assert.True(example.Export.PadFfn);
    }

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Puzzle.slnx"))) return dir.FullName;
        throw new InvalidOperationException("project root not found");
    }
}
