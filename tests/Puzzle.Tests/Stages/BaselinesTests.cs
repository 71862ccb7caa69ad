using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Config;
using Puzzle.Data;
using Puzzle.Stages;
using Puzzle.Stages.Assembly;
using Puzzle.Stages.Baselines;
using Puzzle.Stages.Benchmark;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Evaluation;
using Puzzle.Stages.Library;
using Puzzle.Stages.Report;
using Puzzle.Stages.Scoring;
using Puzzle.Stages.Search;
using Puzzle.Tests.Data;
using Puzzle.Training;
using static TorchSharp.torch;

namespace Puzzle.Tests.Stages;

/// <summary>A 4-layer tiny parent taken through library, composed scoring and costs (the baselines' inputs).</summary>
public sealed class BaselinesFixture
{
    public string ParentDir { get; }
    public string DataDir { get; }
    public string Run { get; }

    public BaselinesFixture()
    {
        string corpus = CorpusFixtures.TextFolder(50);
        DataDir = TestSupport.TempDir();
        DataPreparer.Prepare(new DataPrepareOptions
        {
            TokenizerDir = CorpusFixtures.Tokenizer(corpus, 320), Inputs = [corpus], OutDir = DataDir, SeqLen = 32, ValidationFraction = 0.15,
        }, log: _ => { });
        ParentDir = TestSupport.TempDir();
        Pretrainer.Run(new PretrainOptions
        {
            DataDir = DataDir, OutDir = ParentDir, Shape = new ModelShape(4, 64, 4, 2, 128), Tokens = 8 * 32 * 30, Batch = 8,
            LearningRate = 3e-3, CheckpointEvery = 1000, EvalEvery = 1000, Precision = "bf16",
        }, _ => { });
        Run = NewRun(1.3, "h100");
        var run = new RunDirectory(Run);
        BlockLibraryBuilder.Run(run, new LogProgress(), _ => { });
        BlockScorer.Run(run, new LogProgress(), _ => { });
        BlockCosts.Run(run, _ => { });
    }

    /// <summary>A run directory over the fixture's parent and data; <paramref name="shareWith"/>'s library, scores and costs are copied in.</summary>
    public string NewRun(double target, string searchTarget, string[]? baselines = null, double[]? fractions = null, string? shareWith = null)
    {
        string dir = TestSupport.TempDir();
        new RunConfig
        {
            Parent = new ParentSection { Path = ParentDir },
            Data = new DataSection { Path = DataDir },
            SearchSpace = new SearchSpaceSection { KvHeads = [1], FfnFractions = [1.0, 0.5], FfnLinear = false, AttentionLinear = false },
            Bld = new BldSection { TokensPerVariant = 8 * 32 * 6, Batch = 8, Lr = 3e-4, CalibrationTokens = 32 * 8, ValidationTokens = 32 * 8 },
            Scoring = new ScoringSection { ValidationTokens = 32 * 8, Batch = 8 },
            Scenario = new ScenarioSection { Batch = 2, PromptLength = 16, GenerationLength = 16, WarmupRuns = 1, Repeats = 3 },
            Search = new SearchSection { MinThroughputRatio = target, Target = searchTarget, Sweep = "" },
            Gkd = new GkdSection { Tokens = 8 * 32 * 2, Batch = 8, Lr = 1e-3, ValidationTokens = 32 * 8 },
            Evaluation = new EvaluationSection { MaxTokens = 32 * 4, BenchRepeats = 1 },
            Baselines = baselines ?? [],
            BaselinesGkdFractions = fractions ?? [],
        }.Save(Path.Combine(dir, RunConfig.FileName));
        if (shareWith is not null)
        {
            foreach (string sub in new[] { "library", "scores" })
                foreach (string file in Directory.GetFiles(Path.Combine(shareWith, sub), "*", SearchOption.AllDirectories))
                {
                    string target2 = Path.Combine(dir, Path.GetRelativePath(shareWith, file));
                    Directory.CreateDirectory(Path.GetDirectoryName(target2)!);
                    File.Copy(file, target2);
                }
            foreach (string file in new[] { "scores.json", "costs.json" }) File.Copy(Path.Combine(shareWith, file), Path.Combine(dir, file));
        }
        return dir;
    }
}

public sealed class BaselinesTests(BaselinesFixture fixture) : IClassFixture<BaselinesFixture>
{
    BaselineContext Context(double target, string searchTarget = "h100", bool measure = false)
    {
        var run = new RunDirectory(fixture.NewRun(target, searchTarget, shareWith: fixture.Run));
        var ctx = BaselinesStage.Context(run, _ => { });
        return measure ? ctx : new BaselineContext
        {
            Problem = ctx.Problem, ParentChoice = ctx.ParentChoice, TargetRatio = ctx.TargetRatio, Parent = ctx.Parent, Variants = ctx.Variants, Bounds = ctx.Bounds,
        };
    }

    static string Suffix(string id) => id[(id.IndexOf('.', id.IndexOf('.') + 1) + 1)..];

    [Fact]
    public void Uniform_OneWidthInEveryLayer_TheWidestThatReachesTheTarget()
    {
        var ctx = Context(1.3);
        var result = BaselineRules.Uniform(ctx);
        Assert.Single(result.Layers.Select(l => Suffix(l.Attention)).Distinct());
        Assert.Single(result.Layers.Select(l => Suffix(l.Ffn)).Distinct());
        Assert.All(result.Layers, l => Assert.True(ctx.Variants[l.Attention].Attention!.IsGqa && ctx.Variants[l.Ffn].Ffn!.IsSwiGlu));
        Assert.True(result.EstimatedRatio >= 1.3, $"{result.EstimatedRatio}");
        // Every uniform width choice with more parameters misses the target (enumerated here, not by the rule).
        foreach (string a in new[] { "kv2", "kv1" })
            foreach (string f in new[] { "w1", "w0.5" })
            {
                var layers = Enumerable.Range(0, 4).Select(l => new LayerChoice($"L{l}.attn.{a}", $"L{l}.ffn.{f}")).ToArray();
                if (ctx.Totals(layers).Parameters > result.Estimated.Parameters) Assert.True(ctx.EstimatedRatio(layers) < 1.3, $"{a}+{f} reaches the target with more parameters");
            }
        Assert.NotEqual(ctx.Totals(ctx.LayersOf(ctx.ParentChoice)).Parameters, result.Estimated.Parameters);
    }

    [Fact]
    public void Depth_RemovesTheLowestInfluenceLayers_AndInfluenceIsOneMinusTheCosine()
    {
        var run = new RunDirectory(fixture.Run);
        var influence = BlockInfluence.ForRun(run, Path.Combine(TestSupport.TempDir(), "influence.json"), _ => { });

        // Direct computation: each layer's input and output from LayerInput, cosine per token in plain code.
        using (var parent = Checkpoint.Load(fixture.ParentDir))
        using (no_grad())
        {
            using var data = new TokenDataset(fixture.DataDir, "validation");
            var loader = new TokenBatchLoader(data, 32, 0, shuffle: false);
            using var windows = tensor(loader.Next(8), [8, 33]);
            using var ids = windows.narrow(1, 0, 32);
            for (int layer = 0; layer < 4; layer++)
            {
                float[] x = parent.LayerInput(ids, layer).reshape(-1, 64).data<float>().ToArray();
                float[] y = parent.LayerInput(ids, layer + 1).reshape(-1, 64).data<float>().ToArray();
                double sum = 0;
                int tokens = x.Length / 64;
                for (int t = 0; t < tokens; t++)
                {
                    double dot = 0, nx = 0, ny = 0;
                    for (int k = 0; k < 64; k++) (dot, nx, ny) = (dot + (double)x[t * 64 + k] * y[t * 64 + k], nx + (double)x[t * 64 + k] * x[t * 64 + k], ny + (double)y[t * 64 + k] * y[t * 64 + k]);
                    sum += dot / Math.Sqrt(nx * ny);
                }
                Assert.Equal(1 - sum / tokens, influence[layer], 5);
            }
        }

        var ctx = Context(1.3);
        var result = BaselineRules.Depth(ctx, influence);
        var removed = Enumerable.Range(0, 4).Where(l => ctx.Variants[result.Layers[l].Attention].IsNoOp && ctx.Variants[result.Layers[l].Ffn].IsNoOp).ToList();
        var order = Enumerable.Range(0, 4).OrderBy(l => influence[l]).ToList();
        Assert.NotEmpty(removed);
        Assert.Equal(order.Take(removed.Count).Order(), removed);
        Assert.All(Enumerable.Range(0, 4).Except(removed), l => Assert.Equal(ctx.LayersOf(ctx.ParentChoice)[l], result.Layers[l]));
        Assert.True(result.EstimatedRatio >= 1.3);
        // As few as reach the target: one layer fewer misses it.
        var fewer = ctx.LayersOf(ctx.ParentChoice).Select((p, l) => order.Take(removed.Count - 1).Contains(l) ? new LayerChoice($"L{l}.attn.noop", $"L{l}.ffn.noop") : p).ToArray();
        Assert.True(ctx.EstimatedRatio(fewer) < 1.3);
    }

    [Fact]
    public void Subblock_SplitsComposedScoresExactly_AndIsTheMipOptimumOfSummedSubblockKl()
    {
        var ctx = Context(1.6);
        var sub = BaselineRules.SubblockProblem(ctx.Problem, ctx.ParentChoice);
        Assert.Equal(2 * ctx.Problem.Groups.Count, sub.Groups.Count);
        for (int g = 0; g < ctx.Problem.Groups.Count; g++)
        {
            var parent = ctx.Problem.Groups[g].Options[ctx.ParentChoice[g]];
            foreach (var o in ctx.Problem.Groups[g].Options)
            {
                var a = sub.Groups[2 * g].Options.Single(x => x.AttentionId == o.AttentionId);
                var f = sub.Groups[2 * g + 1].Options.Single(x => x.FfnId == o.FfnId);
                Assert.Equal(o.TimeMs, a.TimeMs + f.TimeMs, tolerance: 1e-9);                                       // costs add up to the composed pair's
                Assert.Equal(o.Parameters, a.Parameters + f.Parameters);
                var alone = ctx.Problem.Groups[g].Options.Single(x => x.AttentionId == o.AttentionId && x.FfnId == parent.FfnId);
                Assert.Equal(alone.Kl, a.Kl);                                                          // the score of the attention variant alone
            }
        }
        var result = BaselineRules.Subblock(ctx);
        Assert.True(result.EstimatedRatio >= 1.6 * (1 - 1e-9));
        // Brute force over all 9^4 architectures: no feasible one has a lower summed subblock KL.
        double best = double.MaxValue, bound = ctx.ParentTotals.TimeMs / 1.6;
        var options = ctx.Problem.Groups.Select(g => g.Options).ToArray();
        double SubKl(IReadOnlyList<LayerChoice> layers) => sub.Totals(Enumerable.Range(0, sub.Groups.Count).Select(i =>
            sub.Groups[i].Options.ToList().FindIndex(o => i % 2 == 0 ? o.AttentionId == layers[i / 2].Attention : o.FfnId == layers[i / 2].Ffn)).ToArray()).Kl;
        foreach (int code in Enumerable.Range(0, (int)Math.Pow(9, 4)))
        {
            var choice = Enumerable.Range(0, 4).Select(l => code / (int)Math.Pow(9, l) % 9).ToArray();
            if (ctx.Problem.Totals(choice).TimeMs > bound) continue;
            best = Math.Min(best, SubKl(ctx.LayersOf(choice)));
        }
        Assert.Equal(best, SubKl(result.Layers), 6);
    }

    [Fact]
    public void Random_IsSeeded_AndJustMeetsTheTarget()
    {
        var ctx = Context(1.5);
        var a = BaselineRules.Random(ctx, 3);
        var b = BaselineRules.Random(Context(1.5), 3);
        Assert.Equal(a.Layers, b.Layers);
        Assert.True(a.EstimatedRatio >= 1.5 * (1 - 1e-9));
        Assert.NotEqual(ctx.LayersOf(ctx.ParentChoice), a.Layers);
    }

    [Fact]
    public void Unreachable_Targets_FailClearly()
    {
        var ctx = Context(50);
        var e = Assert.Throws<PuzzleException>(() => BaselineRules.Uniform(ctx));
        Assert.Contains("uniform: no uniform width choice", e.Message);
        Assert.Contains("50.00x", e.Message);
        Assert.Contains("the fastest, kv1 + w0.5, is estimated at", e.Message);
        e = Assert.Throws<PuzzleException>(() => BaselineRules.Depth(ctx, [0.1, 0.2, 0.3, 0.4]));
        Assert.Contains("depth: removing layers by block influence does not reach 50.00x", e.Message);
        Assert.Contains("3 of 4 removed is estimated at", e.Message);
        e = Assert.Throws<PuzzleException>(() => BaselineRules.Subblock(ctx));
        Assert.Contains("subblock: no architecture meets the constraints: the highest feasible throughput is", e.Message);
        e = Assert.Throws<PuzzleException>(() => BaselineRules.Random(ctx, 1));
        Assert.Contains("random: no architecture in the search space reaches 50.00x", e.Message);
    }

    [Fact]
    public void MeasuredTarget_TimesTheArchitectureInTheEngine()
    {
        // The stage times in the engine on the measured target; here the timer is given to a roofline context so that
        // which architectures get timed does not hang on the fixture's CPU cost measurements.
        var run = new RunDirectory(fixture.NewRun(1.1, "measured", shareWith: fixture.Run));
        var measured = BaselinesStage.Context(run, _ => { });
        Assert.NotNull(measured.Measure);
        var estimated = Context(1.1);
        var estimates = new List<double>();
        var ctx = new BaselineContext
        {
            Problem = estimated.Problem, ParentChoice = estimated.ParentChoice, TargetRatio = 1.1, Parent = estimated.Parent, Variants = estimated.Variants,
            // The rule hands the timer its estimate, so the measured check's guard can re-time a pair far from it.
            Measure = (child, estimate) => { estimates.Add(estimate); return measured.Measure!(child, estimate); }, MeasureGate = 0,
        };
        var result = BaselineRules.Depth(ctx, [0.4, 0.1, 0.3, 0.2]);
        Assert.NotEmpty(estimates);
        Assert.Equal(result.Checks.Last()!["estimated_ratio"]!.GetValue<double>(), estimates[^1]);
        Assert.Equal(result.EstimatedRatio, estimates[^1], tolerance: 1e-9);
        Assert.NotNull(result.MeasuredRatio);
        Assert.True(result.MeasuredRatio >= 1.1 * 0.99, $"{result.MeasuredRatio}");
        Assert.Equal(result.MeasuredRatio, result.Checks.Last()!["measured_ratio"]!.GetValue<double>());
        Assert.Contains(1, Enumerable.Range(0, 4).Where(l => ctx.Variants[result.Layers[l].Attention].IsNoOp));   // the lowest influence goes first
    }

    [Fact]
    public void ThroughputRatio_IsTheBenchsPairedMedian_WithItsInterval_AndLlamaCppBesideIt()
    {
        // Rounds where the ratio of the median tokens/s (1000 / 400 = 2.5) differs from the median paired ratio (2.2).
        var bench = JsonNode.Parse("""
            { "models": [ { "end_to_end_tokens_per_s": 400 },
                          { "end_to_end_tokens_per_s": 1000, "end_to_end_ratio": 2.2, "end_to_end_ratio_min": 1.9, "end_to_end_ratio_max": 2.8,
                            "end_to_end_ratio_ci95": [2.0, 2.6], "llama_cpp_end_to_end_ratio": 1.7 } ] }
            """)!;
        Assert.Equal((2.2, 1.9, 2.8, 2.0, 2.6), BaselinesReport.ThroughputRatio(bench));
        Assert.Equal(1.7, BaselinesReport.LlamaCppRatio(bench));
        // A bench.json of before the paired ratio: the ratio of the two models' tokens/s, no interval, no llama.cpp.
        var old = JsonNode.Parse("""{ "models": [ { "end_to_end_tokens_per_s": 400 }, { "end_to_end_tokens_per_s": 1000, "end_to_end_ratio_min": 2.1, "end_to_end_ratio_max": 2.9 } ] }""")!;
        Assert.Equal((2.5, 2.1, 2.9, null, null), BaselinesReport.ThroughputRatio(old));
        Assert.Null(BaselinesReport.LlamaCppRatio(old));
        // llama.cpp's figures nested as `puzzle bench --engine both` writes them.
        var nested = JsonNode.Parse("""{ "models": [ {}, {} ], "llama_cpp": { "models": [ {}, { "end_to_end_ratio": 1.8 } ] } }""")!;
        Assert.Equal(1.8, BaselinesReport.LlamaCppRatio(nested));
    }

    [Fact]
    public void Stage_BuildsDistilsEvaluatesBenchesAndReports_ThenSkipsWhatIsDone()
    {
        string dir = fixture.NewRun(1.3, "h100", ["depth"], [0, 0.5], shareWith: fixture.Run);
        var run = new RunDirectory(dir);
        var logs = new List<string>();
        // The Puzzle child, as the pipeline leaves it, for the first row and the sweep.
        SearchStage.Run(run, new SearchRequest { Target = "h100", MinThroughputRatio = 1.3, Name = Pipeline.Solution }, _ => { });
        ChildAssembler.Run(run, Pipeline.Solution, run.Artifact("child"), _ => { });
        Distiller.Run(ChildRecipe.DistillOptionsFor(run, run.Artifact("child"), run.Artifact("child-gkd"), 8 * 32), _ => { });

        var outcome = BaselinesStage.Run(run, log: logs.Add);
        Assert.Null(outcome["depth"]);
        string depth = run.Artifact("baselines", "depth");
        foreach (string artifact in new[] { "solution.json", "influence.json", "child/config.json", "child-gkd/config.json", "eval.json", "bench.json", "gkd-0/eval.json", "gkd-0.5/eval.json", "gkd-0.5/child-gkd/config.json" })
            Assert.True(File.Exists(Path.Combine(depth, artifact)), artifact);
        Assert.True(File.Exists(run.Artifact("baselines", "puzzle", "gkd-0.5", "eval.json")));
        var solution = JsonNode.Parse(File.ReadAllText(Path.Combine(depth, "solution.json")))!;
        var child = HfConfig.Read(Path.Combine(depth, "child-gkd"));
        for (int l = 0; l < 4; l++)
            Assert.Equal(solution["layers"]![l]!["attention"]!.GetValue<string>().EndsWith(".noop"), child.Blocks[l].Attention.NoOp);
        Assert.Equal(solution["verified"]!["parameters"]!.GetValue<long>(), child.TotalParameters);
        Assert.Equal(run.Config.Gkd.Tokens / 2, JsonNode.Parse(File.ReadAllText(Path.Combine(depth, "gkd-0.5", "child-gkd", "distillation.json")))!["tokens"]!.GetValue<long>());

        // The report: the Puzzle child first, then the baselines, and the plots.
        var eval = EvalStage.Run(ChildRecipe.EvalOptionsFor(run, run.Artifact("child-gkd")), _ => { });
        var bench = BenchStage.Run(new BenchOptions { Models = [fixture.ParentDir, run.Artifact("child-gkd")], Batch = 2, PromptLength = 16, GenerationLength = 16, Repeats = 1 }, _ => { });
        Directory.CreateDirectory(run.Artifact("eval"));
        File.WriteAllText(run.Artifact("eval", "eval.json"), eval.ToJsonString());
        File.WriteAllText(run.Artifact("eval", "bench.json"), bench.ToJsonString());
        var report = ReportStage.Write(run, Pipeline.Solution, run.Artifact("child-gkd"), eval, bench, null, _ => { });
        var rows = report.Baselines!["rows"]!.AsArray();
        Assert.Equal(["puzzle", "depth"], rows.Select(r => r!["method"]!.GetValue<string>()));
        var depthRow = rows[1]!;
        var depthEval = JsonNode.Parse(File.ReadAllText(Path.Combine(depth, "eval.json")))!;
        var depthBenchFile = JsonNode.Parse(File.ReadAllText(Path.Combine(depth, "bench.json")))!;
        var depthBench = depthBenchFile["models"]!.AsArray();
        Assert.Equal(depthEval["retention"]!["value"]!.GetValue<double>(), depthRow["accuracy_retention"]!.GetValue<double>(), tolerance: 1e-12);
        Assert.Equal(depthEval["retention"]!["ci95"]![0]!.GetValue<double>(), depthRow["retention_low"]!.GetValue<double>(), tolerance: 1e-12);
        // The bench's paired ratio (median of per-round ratios), as the report's headline, not the ratio of medians.
        Assert.Equal(depthBench[1]!["end_to_end_ratio"]!.GetValue<double>(), depthRow["measured_throughput_ratio"]!.GetValue<double>(), tolerance: 1e-12);
        Assert.Equal(depthBench[1]!["end_to_end_ratio_ci95"]?[0]?.GetValue<double>(), depthRow["throughput_ratio_low"]?.GetValue<double>());
        Assert.Equal(depthBench[1]!["end_to_end_ratio_ci95"]?[1]?.GetValue<double>(), depthRow["throughput_ratio_high"]?.GetValue<double>());
        Assert.Equal(depthBenchFile["llama_cpp"]?["models"]?[1]?["end_to_end_ratio"]?.GetValue<double>(), depthRow["llama_cpp_throughput_ratio"]?.GetValue<double>());
        Assert.Equal(child.TotalParameters, depthRow["parameters"]!.GetValue<long>());
        Assert.Equal([0.0, 0.5, 1.0], depthRow["gkd_sweep"]!.AsArray().Select(p => p!["gkd_fraction"]!.GetValue<double>()));
        string md = File.ReadAllText(run.Artifact("report.md"));
        Assert.Contains("## Baselines at equal measured throughput", md);
        Assert.Contains("| depth |", md);
        Assert.Contains("- Puzzle vs depth: retention", md);

        // Paired differences, Puzzle child minus depth, at each GKD budget both were evaluated at.
        var paired = report.Baselines!["paired"]!.AsArray();
        Assert.Equal([0.0, 0.5, 1.0], paired.Select(p => p!["gkd_fraction"]!.GetValue<double>()));
        foreach (var p in paired)
        {
            Assert.Equal(("puzzle", "depth", false), (p!["a"]!.GetValue<string>(), p["b"]!.GetValue<string>(), p["equal_speed"]!.GetValue<bool>()));
            double diff = p["difference"]!.GetValue<double>(), low = p["difference_low"]!.GetValue<double>(), high = p["difference_high"]!.GetValue<double>();
            Assert.Equal(p["retention_a"]!.GetValue<double>() - p["retention_b"]!.GetValue<double>(), diff, 15);
            Assert.InRange(diff, low - 1e-12, high + 1e-12);
            Assert.Equal(low > 0 ? "Puzzle better" : high < 0 ? "baseline better" : "no significant difference", p["verdict"]!.GetValue<string>());
            string expectedRow = $"| puzzle | depth | no | {p["gkd_tokens"]!.GetValue<long>():N0} | {100 * p["retention_a"]!.GetValue<double>():0.0}% ";
            Assert.Contains(expectedRow, md);
        }
        var full = paired[2]!;
        Assert.Equal(eval["retention"]!["value"]!.GetValue<double>(), full["retention_a"]!.GetValue<double>(), tolerance: 1e-12);
        Assert.Equal(depthEval["retention"]!["value"]!.GetValue<double>(), full["retention_b"]!.GetValue<double>(), tolerance: 1e-12);
        var depthSweep0 = JsonNode.Parse(File.ReadAllText(Path.Combine(depth, "gkd-0", "eval.json")))!;
        Assert.Equal(depthSweep0["retention"]!["value"]!.GetValue<double>(), paired[0]!["retention_b"]!.GetValue<double>(), tolerance: 1e-12);
        Assert.Contains($"**{full["verdict"]}**", md);
        Assert.True(PlotTests.HasText(run.Artifact("report-baselines.png")));
        Assert.True(PlotTests.HasText(run.Artifact("report-baselines-gkd.png")));
        BaselinesReport.Write(run, log: _ => { });                                                    // rewriting keeps one section
        Assert.Single(File.ReadAllText(run.Artifact("report.md")).Split("## Baselines at equal measured throughput").Skip(1));

        // A rerun redoes nothing.
        var stamps = Directory.GetFiles(run.Artifact("baselines"), "*.*", SearchOption.AllDirectories).ToDictionary(f => f, File.GetLastWriteTimeUtc);
        logs.Clear();
        BaselinesStage.Run(run, log: logs.Add);
        Assert.Contains(logs, l => l.Contains("depth: solution already chosen"));
        foreach (var (file, stamp) in stamps) Assert.Equal(stamp, File.GetLastWriteTimeUtc(file));

        // An unreachable target is recorded with its reason and shown in the report; the other baselines still build.
        string far = fixture.NewRun(50, "h100", ["uniform"], shareWith: fixture.Run);
        var (code, stdout, stderr) = TestSupport.RunCli("baselines", "--run", far);
        Assert.Equal(1, code);
        Assert.Contains("error: uniform: no uniform width choice", stderr);
        Assert.Contains("does not exist yet", stdout);
        Assert.Equal("unreachable", JsonNode.Parse(File.ReadAllText(Path.Combine(far, "baselines", "uniform", "solution.json")))!["status"]!.GetValue<string>());

        // An eval.json from before the per-document sums: that comparison says why it has no verdict; the others stand.
        depthSweep0.AsObject().Remove("per_unit");
        File.WriteAllText(Path.Combine(depth, "gkd-0", "eval.json"), depthSweep0.ToJsonString());
        var rewritten = BaselinesReport.Write(run, log: _ => { })!.Baselines!["paired"]!.AsArray();
        Assert.Null(rewritten[0]!["verdict"]);
        Assert.Contains("without per-document results", rewritten[0]!["reason"]!.GetValue<string>());
        Assert.NotNull(rewritten[2]!["verdict"]);
        Assert.Contains("| puzzle | depth | no | 0 | | | | not compared: an eval.json without per-document results", File.ReadAllText(run.Artifact("report.md")));
    }

    [Fact]
    public void Matched_speed_is_the_baselines_bench_where_the_target_is_measured_else_its_solutions()
    {
        var solution = JsonNode.Parse("""{"measured_check": {"measured_ratio": 3.01}, "verified": {"throughput_ratio": 2.40}}""")!;
        var bench = JsonNode.Parse("""
            {"models": [{"end_to_end_tokens_per_s": 100, "end_to_end_ratio": 1},
                        {"end_to_end_tokens_per_s": 270, "end_to_end_ratio": 2.65, "end_to_end_ratio_ci95": [2.55, 2.78]}]}
            """)!;
        Assert.Equal(2.65, BaselinesStage.MatchRatio(solution, "measured", bench));          // the bench, as the report pairs them
        Assert.Equal(3.01, BaselinesStage.MatchRatio(solution, "measured", null));           // not benched yet: its check
        Assert.Equal(3.01, BaselinesStage.MatchRatio(solution, "h100", bench));              // a GPU target: never this machine's bench
        var estimateOnly = JsonNode.Parse("""{"verified": {"throughput_ratio": 2.40}}""")!;
        Assert.Equal(2.40, BaselinesStage.MatchRatio(estimateOnly, "h100", bench));
    }

    [Fact]
    public void Matched_SearchesAgainAtTheBaselinesSpeed_WhereTheRuleLandsAboveThePuzzleChild()
    {
        string dir = fixture.NewRun(1.3, "h100", ["depth", BaselinesStage.MatchedName], shareWith: fixture.Run);
        var run = new RunDirectory(dir);
        // A Puzzle child slower than the baselines' target, so depth (at >= 1.3x) lands above it.
        SearchStage.Run(run, new SearchRequest { Target = "h100", MinThroughputRatio = 1.1, Name = Pipeline.Solution }, _ => { });
        double puzzle = BaselinesStage.ReachedRatio(JsonNode.Parse(File.ReadAllText(run.Artifact("solutions", "child.json")))!)!.Value;
        var logs = new List<string>();
        var outcome = BaselinesStage.Run(run, log: logs.Add);
        Assert.Null(outcome["depth"]);
        Assert.Null(outcome["puzzle-at-depth"]);
        double depth = BaselinesStage.ReachedRatio(JsonNode.Parse(File.ReadAllText(run.Artifact("baselines", "depth", "solution.json")))!)!.Value;
        Assert.True(depth > puzzle * (1 + BaselinesStage.MatchTolerance), $"depth {depth} vs puzzle {puzzle}");

        // The search ran again with depth's ratio as its target, and that child took the baselines' path.
        var matched = SolutionFile.Read(run.Artifact("solutions", "puzzle-at-depth.json"));
        Assert.Equal(depth, matched.Request.MinThroughputRatio!.Value, tolerance: 1e-12);
        Assert.True(matched.Verified.ThroughputRatio >= depth * (1 - 1e-9), $"{matched.Verified.ThroughputRatio} < {depth}");
        string folder = run.Artifact("baselines", "puzzle-at-depth");
        foreach (string artifact in new[] { "child/config.json", "child-gkd/config.json", "eval.json", "bench.json" })
            Assert.True(File.Exists(Path.Combine(folder, artifact)), artifact);
        var child = HfConfig.Read(Path.Combine(folder, "child-gkd"));
        Assert.Equal(matched.Verified.Parameters, child.TotalParameters);

        // The report pairs it with depth.
        ChildAssembler.Run(run, Pipeline.Solution, run.Artifact("child"), _ => { });
        ReportStage.Write(run, Pipeline.Solution, run.Artifact("child"), JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "eval.json")))!,
            JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "bench.json")))!, null, _ => { });
        var rows = JsonNode.Parse(File.ReadAllText(run.Artifact("report.json")))!["baselines"]!["rows"]!.AsArray();
        var row = rows.Single(r => r!["method"]!.GetValue<string>() == "puzzle-at-depth")!;
        Assert.Equal("depth", row["matched_to"]!.GetValue<string>());
        Assert.Equal(JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "eval.json")))!["retention"]!["value"]!.GetValue<double>(), row["accuracy_retention"]!.GetValue<double>(), tolerance: 1e-12);
        Assert.Contains("- Puzzle searched at depth's speed vs depth (equal speed): retention", File.ReadAllText(run.Artifact("report.md")));
        var pair = JsonNode.Parse(File.ReadAllText(run.Artifact("report.json")))!["baselines"]!["paired"]!.AsArray()
            .Single(p => p!["a"]!.GetValue<string>() == "puzzle-at-depth");
        Assert.Equal(("depth", true, 1.0), (pair!["b"]!.GetValue<string>(), pair["equal_speed"]!.GetValue<bool>(), pair["gkd_fraction"]!.GetValue<double>()));
        Assert.Equal(row["accuracy_retention"]!.GetValue<double>(), pair["retention_a"]!.GetValue<double>(), tolerance: 1e-12);
        Assert.Contains(pair["verdict"]!.GetValue<string>(), new[] { "Puzzle better", "baseline better", "no significant difference" });

        // A rerun reuses the search and the child.
        logs.Clear();
        BaselinesStage.Run(run, log: logs.Add);
        Assert.Contains(logs, l => l.Contains("puzzle-at-depth already solved"));
        Assert.Contains(logs, l => l.Contains("puzzle-at-depth: ") && l.Contains("already holds this solution"));

        // A Puzzle child already at depth's speed needs no matched child, and a stale one is removed.
        SearchStage.Run(run, new SearchRequest { Target = "h100", MinThroughputRatio = depth, Name = Pipeline.Solution }, _ => { });
        logs.Clear();
        BaselinesStage.Run(run, log: logs.Add);
        Assert.Contains(logs, l => l.Contains("no matched child needed"));
        Assert.False(Directory.Exists(folder));
    }
}
