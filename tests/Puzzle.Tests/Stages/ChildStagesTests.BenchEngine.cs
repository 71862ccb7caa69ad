using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Config;
using Puzzle.Stages;
using Puzzle.Stages.Assembly;
using Puzzle.Stages.Benchmark;
using Puzzle.Stages.Evaluation;
using Puzzle.Stages.Report;
using Puzzle.Stages.Search;

namespace Puzzle.Tests.Stages;

/// <summary>evaluation.bench_engine: the bench stage in llama.cpp beside ours, its key and the report's side-by-side ratios.</summary>
public sealed partial class ChildStagesTests
{
    [Fact]
    public void BenchOptions_TakeAnExplicitEngine_OverTheRunsSetting()
    {
        var ours = new RunDirectory(fixture.Run, ["evaluation.bench_engine=puzzle"]);
        var fromConfig = ChildRecipe.BenchOptionsFor(ours, fixture.Child);
        Assert.Equal((BenchEngine.Puzzle, (string?)null), (fromConfig.Engine, fromConfig.GgufDir));
        // `puzzle bench --run RUN --engine llama.cpp`: that engine, its GGUFs kept in RUN/gguf, whatever the config says.
        var asked = ChildRecipe.BenchOptionsFor(ours, fixture.Child, BenchEngine.LlamaCpp);
        Assert.Equal((BenchEngine.LlamaCpp, ours.Artifact(ChildRecipe.GgufFolder)), (asked.Engine, asked.GgufDir));
        Assert.Contains("--engine 'gpu' is not an engine (expected puzzle, llama.cpp, both)",
            Assert.Throws<PuzzleException>(() => ChildRecipe.BenchOptionsFor(ours, fixture.Child, "gpu")).Message);
    }

    [SkippableFact]
    public void BenchEngineBoth_ReportCarriesBothRatios_AndTheBenchKeyFollowsTheEngine()
    {
        Skip.If(!BenchEngine.LlamaCppInstalled,
            $"llama.cpp is not installed (.tools/llama.cpp/bin/llama-batched-bench); {LlamaCppBench.InstallHint} to bench the child in both engines");
        RunDirectory Run(string engine) => new(fixture.Run, [$"evaluation.bench_engine={engine}", "evaluation.bench_repeats=1"]);
        var (both, ours, auto) = (Run("both"), Run("puzzle"), Run("auto"));
        var (name, child) = ChildWithKvCache(both);
        // The engine is in the bench key (auto is both here, llama.cpp being installed); the evaluation's key ignores it.
        Assert.NotEqual(ArtifactKeys.Bench(ours, child), ArtifactKeys.Bench(both, child));
        Assert.Equal(ArtifactKeys.Bench(both, child), ArtifactKeys.Bench(auto, child));
        Assert.Equal(ArtifactKeys.Evaluation(ours, child), ArtifactKeys.Evaluation(both, child));

        // The pipeline's cached bench: the same choice reuses bench.json, another benches again.
        string path = Path.Combine(TestSupport.TempDir(), "bench.json");
        int benched = 0;
        JsonNode Bench(RunDirectory run) => EvaluationStage.Cached(path, ArtifactKeys.Bench(run, child), () =>
        {
            benched++;
            return BenchStage.Run(ChildRecipe.BenchOptionsFor(run, child), _ => { });
        });
        var bench = Bench(both);
        Assert.Equal(bench.ToJsonString(), Bench(both).ToJsonString());
        Assert.Equal(1, benched);
        var ourBench = Bench(ours);
        Assert.Null(ourBench["llama_cpp"]);
        // The threads the rounds ran with (fewer than the process's where other processes held cores), in the device's words too.
        int threads = ourBench["threads"]!.GetValue<int>();
        Assert.InRange(threads, 1, TorchSharp.torch.get_num_threads());
        Assert.Contains($"{threads} torch threads", ourBench["scenario"]!["device"]!.GetValue<string>());
        Assert.InRange(ourBench["other_cpu_share_of_timing_cores"]!.GetValue<double>(), 0, 1);
        Assert.Equal(2, benched);
        bench = Bench(auto);
        Assert.Equal(3, benched);
        // One GGUF per model in RUN/gguf, exported by the first bench in both engines and reused by the second.
        string[] ggufs = Directory.GetFiles(both.Artifact(ChildRecipe.GgufFolder), "*.gguf");
        Assert.Equal(2, ggufs.Length);
        var llama = bench["llama_cpp"]!["models"]!.AsArray();
        Assert.Equal(ggufs.Order(), llama.Select(m => m!["gguf"]!.GetValue<string>()).Order());

        var eval = EvalStage.Run(new EvalOptions
        {
            ModelDir = child, ReferenceDir = fixture.Base.ParentDir, DataDir = fixture.Base.DataDir, MaxTokens = 32 * 8, Tasks = [WriteTask()], TaskLimit = 10,
        }, _ => { });
        var report = ReportStage.Write(both, name, child, eval, bench, null, _ => { });
        var rows = bench["models"]!.AsArray();
        double theirs = llama[1]!["end_to_end_tokens_per_s"]!.GetValue<double>() / llama[0]!["end_to_end_tokens_per_s"]!.GetValue<double>();
        double oursRatio = rows[1]!["end_to_end_ratio"]!.GetValue<double>();                     // the paired median, as the report's headline
        var check = Assert.IsType<ReportEngineCheck>(report.LlamaCpp);
        Assert.Equal(theirs, check.Ratio, tolerance: 1e-9);
        Assert.Equal(oursRatio, check.OursRatio, tolerance: 1e-9);
        Assert.Equal(report.MeasuredThroughputRatio, check.OursRatio);
        Assert.Equal(theirs, check.Min!.Value, tolerance: 1e-9);                                            // one round: its ratio is the median's
        Assert.Equal(theirs, check.Max!.Value, tolerance: 1e-9);
        bool agree = Math.Abs(theirs / oursRatio - 1) <= 0.10;
        Assert.Equal(agree, check.Agrees);

        // report.json carries both, read back; report.md puts them side by side and says whether they agree.
        var json = JsonNode.Parse(File.ReadAllText(both.Report))!;
        Assert.Equal(theirs, json["llama_cpp"]!["end_to_end_ratio"]!.GetValue<double>(), tolerance: 1e-9);
        Assert.Equal(oursRatio, json["measured_throughput_ratio"]!.GetValue<double>(), tolerance: 1e-9);
        Assert.Equal(agree, json["llama_cpp"]!["agrees"]!.GetValue<bool>());
        Assert.Equal(check, ReportFile.Read(both.Report).LlamaCpp);
        string md = File.ReadAllText(both.ReportMarkdown);
        Assert.Contains($"| end-to-end throughput in llama.cpp (tokens/s) | {llama[0]!["end_to_end_tokens_per_s"]!.GetValue<double>():N0} |", md);
        Assert.Contains($"measured the child at {theirs:0.00}x the parent", md);
        Assert.Contains($"against {oursRatio:0.00}x in our engine: the two {(agree ? "agree" : "do not agree")} within ±10%", md);

        // Benched in ours only: no llama.cpp field at all (report.json as before).
        ReportStage.Write(ours, name, child, eval, Bench(ours), null, _ => { });
        Assert.Null(JsonNode.Parse(File.ReadAllText(ours.Report))!["llama_cpp"]);
        Assert.DoesNotContain("llama.cpp", File.ReadAllText(ours.ReportMarkdown));

        // A child without any KV-cache layer (fixture.Child: every attention linear): llama.cpp cannot make a context
        // for it, so its side is left out with the reason, and ours stands.
        Assert.Equal(0, HfConfig.Read(fixture.Child).KvBytesPerToken(2));
        var options = ChildRecipe.BenchOptionsFor(both, fixture.Child);
        var noKv = BenchStage.Run(options, _ => { });
        Assert.Null(noKv["llama_cpp"]);
        Assert.Contains("has no layer with a KV cache", noKv["llama_cpp_error"]!.GetValue<string>());
        Assert.True(noKv["models"]![1]!["end_to_end_ratio"]!.GetValue<double>() > 0);
        var e = Assert.Throws<PuzzleException>(() => BenchStage.Run(options with { Engine = BenchEngine.LlamaCpp }, _ => { }));
        Assert.Contains($"{fixture.Child} has no layer with a KV cache", e.Message);                 // asked for llama.cpp alone: an error
        report = ReportStage.Write(both, "fast", fixture.Child, eval, noKv, null, _ => { });
        Assert.Null(report.LlamaCpp);
        Assert.Contains("llama.cpp's side of the benchmark is missing: bench (llama.cpp):", File.ReadAllText(both.ReportMarkdown));
    }

    /// <summary>A child of the fixture's run that keeps some attention with a KV cache, searched at the lowest target that changes the parent.</summary>
    (string Name, string Dir) ChildWithKvCache(RunDirectory run)
    {
        long parentKv = HfConfig.Read(fixture.Base.ParentDir).KvBytesPerToken(2);
        foreach (double target in new[] { 1.1, 1.2, 1.3, 1.4 })
        {
            string name = $"kv-{target:0.0}", dir = run.Artifact($"child-{name}");
            SearchStage.Run(run, new SearchRequest { Target = "h100", MinThroughputRatio = target, Name = name }, _ => { });
            ChildAssembler.Run(run, name, dir, _ => { });
            long kv = HfConfig.Read(dir).KvBytesPerToken(2);
            if (kv > 0 && kv < parentKv || kv > 0 && HfConfig.Read(dir).TotalParameters < HfConfig.Read(fixture.Base.ParentDir).TotalParameters) return (name, dir);
        }
        Assert.Fail("no searched child between 1.1x and 1.4x keeps a KV cache");
        return default;
    }

    [Fact]
    public void BenchEngine_BadValue_OneLineNamingFileKeyAndValue()
    {
        string path = Path.Combine(TestSupport.TempDir(), "run.json");
        File.WriteAllText(path, """{ "parent": { "path": "p" }, "evaluation": { "bench_engine": "tensorrt" } }""");
        var e = Assert.Throws<PuzzleException>(() => RunConfig.Read(path));
        Assert.Equal($"{path}: evaluation.bench_engine must be one of auto, puzzle, llama.cpp, both, got tensorrt", e.Message);
        foreach (string engine in EvaluationSection.BenchEngines)
            Assert.Equal(engine, RunConfig.Read(path, [$"evaluation.bench_engine={engine}"]).Evaluation.BenchEngine);
        Assert.Equal("auto", RunConfig.Defaults.Evaluation.BenchEngine);
        // The same names as `puzzle bench --engine`, plus auto.
        Assert.Equal(["auto", .. BenchEngine.Engines], EvaluationSection.BenchEngines);
    }
}
