using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Config;
using Puzzle.Stages.Report;

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
        var report = ReportFile.Read(Path.Combine(straight, "report.json"));
        var bench = report.Bench["models"]!.AsArray();
        Assert.Equal(bench[1]!["end_to_end_ratio"]!.GetValue<double>(), report.MeasuredThroughputRatio, tolerance: 1e-9);
        using (var child = Checkpoint.Load(Path.Combine(straight, "export"))) Assert.Equal(2, child.Config.NumLayers);

        // (A rerun reusing everything is checked at the end, on a run directory moved elsewhere.)

        // Kill a run inside every stage in turn (each restart resumes the last), then let it finish.
        string killed = Path.Combine(TestSupport.TempDir(), "run");
        var delays = new Dictionary<string, int>
        {
            ["1 parent"] = 0, ["2 data"] = 20, ["3 library"] = 1500, ["4 score"] = 600, ["5 costs"] = 300, ["6 search"] = 300,
            ["7 assemble"] = 150, ["8 distill"] = 700, ["9 evaluate"] = 500, ["10 export"] = 100,
        };
        var killedIn = new List<string>();
        foreach (var (stage, delay) in delays)
            if (RunAndKill(config, killed, stage, delay)) killedIn.Add(stage);
        Assert.True(killedIn.Count >= 8, $"killed only in: {string.Join(", ", killedIn)}");
        Assert.Contains("3 library", killedIn);
        // The resume goes through the built executable; its benchmark, redone, starts that executable again.
        if (File.Exists(Path.Combine(killed, "eval", "bench.json"))) File.Delete(Path.Combine(killed, "eval", "bench.json"));
        (code, output) = RunCli(TestSupport.CliLaunch.Executable, "run", config, "--run", killed);
        Assert.True(code == 0, output);
        Assert.Contains("already done", output);
        Assert.Contains("bench: running in a fresh process (Puzzle.Cli bench", output);
        Assert.Equal("fresh", JsonNode.Parse(File.ReadAllText(Path.Combine(killed, "eval", "bench.json")))!["process"]!.GetValue<string>());
        AssertSameResult(straight, killed);

        // Torn derived artifacts of every kind are discarded loudly and redone; stale temp files are removed.
        var chosen = SolutionVariants(killed);
        string spare = Directory.GetFiles(Path.Combine(killed, "library"), "*.safetensors")
            .Select(f => Path.GetFileNameWithoutExtension(f)).First(id => !chosen.Contains(id));
        string[] torn = ["costs.json", "scores.json", "scores/parent.json", "solutions/child.json", "solutions/pareto.json", "eval/eval.json",
            "eval/bench.json", "child-gkd/checkpoint/state.json", "pipeline.json", "library/library.json", "parent.json", $"library/{spare}.json",
            "library/activations/activations.json", "report.json"];
        foreach (string artifact in torn) Truncate(Path.Combine(killed, artifact));
        string[] planted = [Path.Combine(killed, $"pipeline.json.tmp-{DeadPid()}-{Guid.NewGuid():N}-{Puzzle.IO.TempFiles.HostTag}"),
            Path.Combine(killed, "library", "activations", $"h0.bin.tmp-{DeadPid()}"),
            Path.Combine(killed, "export", $"tokenizer.json.tmp-{DeadPid()}-{Guid.NewGuid():N}-{Puzzle.IO.TempFiles.HostTag}")];
        foreach (string file in planted) File.WriteAllText(file, "half");
        (code, output) = RunCli("run", config, "--run", killed);
        Assert.True(code == 0, output);
        foreach (string artifact in new[] { "costs.json", "scores/parent.json", "solutions/child.json", "eval/eval.json", "eval/bench.json", "state.json", $"{spare}.json", "activations.json" })
            Assert.Matches($"warning: [^\\n]*{System.Text.RegularExpressions.Regex.Escape(artifact)}[^\\n]*discarding it", output);
        Assert.Contains("(1 trained now,", output);                                          // only the torn record's variant is trained again
        AssertSameResult(straight, killed);
        AssertNoTempFiles(killed);

        // The chosen child's record torn and a chosen variant's weights deleted: noticed, retrained, the child reassembled.
        string used = chosen.First(id => File.Exists(Path.Combine(killed, "library", id + ".safetensors")));
        File.Delete(Path.Combine(killed, "library", used + ".safetensors"));
        Truncate(Path.Combine(killed, "child", "puzzle_solution.json"));
        (code, output) = RunCli("run", config, "--run", killed);
        Assert.True(code == 0, output);
        Assert.Contains($"the weights of library variant {used} is missing", output);
        Assert.Matches("warning: [^\\n]*puzzle_solution.json[^\\n]*discarding it", output);
        Assert.DoesNotContain("assemble: RUN/child already holds this solution", output);
        AssertSameResult(straight, killed);
        AssertNoTempFiles(killed);

        // A run directory moved elsewhere resumes without redoing finished work.
        string moved = Path.Combine(TestSupport.TempDir(), "moved");
        Directory.Move(killed, moved);
        (code, output) = RunCli("run", config, "--run", moved);
        Assert.True(code == 0, output);
        Assert.Contains("(0 trained now,", output);
        foreach (string reused in new[] { "0 to train", "already scored", "costs: ", "is up to date for this scenario; reusing it", "already solved", "already holds this solution; reusing it", "is already distilled; reusing it" })
            Assert.Contains(reused, output);
        Assert.DoesNotContain("bench: running", output);
        Assert.DoesNotContain("discarding it", output);
        AssertNoTempFiles(moved);
    }

    /// <summary>Starts `puzzle run`, kills it <paramref name="delayMs"/> after <paramref name="stage"/> starts; false when it ended first.</summary>
    static bool RunAndKill(string config, string run, string stage, int delayMs)
    {
        using var process = Start("run", config, "--run", run);
        using var started = new ManualResetEventSlim();
        process.ErrorDataReceived += (_, e) => { if (e.Data?.Contains($"| {stage} RUNNING", StringComparison.Ordinal) == true || e.Data?.Contains($": {stage} RUNNING", StringComparison.Ordinal) == true) started.Set(); };
        process.OutputDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        bool seen = started.Wait(TimeSpan.FromSeconds(180));
        if (seen && delayMs > 0) Thread.Sleep(delayMs);
        bool killed = !process.HasExited;
        if (killed) process.Kill(entireProcessTree: true);
        process.WaitForExit();
        return seen && killed;
    }

    static void Truncate(string path)
    {
        Assert.True(File.Exists(path), path);
        byte[] bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
    }

    static int DeadPid()
    {
        for (int pid = 4_000_000; ; pid--)
            try { using var p = Process.GetProcessById(pid); }
            catch (ArgumentException) { return pid; }
    }

    static HashSet<string> SolutionVariants(string run) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(run, "solutions", "child.json")))!["layers"]!.AsArray()
            .SelectMany(l => new[] { l!["attention"]!.GetValue<string>(), l["ffn"]!.GetValue<string>() }).ToHashSet();

    static void AssertNoTempFiles(string run)
    {
        var left = Directory.GetFiles(run, "*.tmp*", SearchOption.AllDirectories);
        Assert.True(left.Length == 0, $"temp files left: {string.Join(", ", left)}");
    }

    static void AssertSameResult(string straight, string other)
    {
        Assert.Equal(File.ReadAllText(Path.Combine(straight, "solutions", "child.json")).Split("\"solver\"")[0],
            File.ReadAllText(Path.Combine(other, "solutions", "child.json")).Split("\"solver\"")[0]);
        foreach (string record in Directory.GetFiles(Path.Combine(straight, "library"), "L*.json"))
        {
            var a = JsonNode.Parse(File.ReadAllText(record))!;
            var b = JsonNode.Parse(File.ReadAllText(Path.Combine(other, "library", Path.GetFileName(record))))!;
            Assert.Equal(a["nmse_final"]!.GetValue<double>(), b["nmse_final"]!.GetValue<double>());
        }
        Assert.True(File.Exists(Path.Combine(other, "export", "config.json")));
        Assert.Equal(JsonNode.Parse(File.ReadAllText(Path.Combine(straight, "export", "config.json")))!.ToJsonString(),
            JsonNode.Parse(File.ReadAllText(Path.Combine(other, "export", "config.json")))!.ToJsonString());
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
