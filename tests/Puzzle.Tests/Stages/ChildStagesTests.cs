using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Data;
using Puzzle.Domain;
using Puzzle.Model;
using Puzzle.Runtime;
using Puzzle.Stages;
using Puzzle.Stages.Assembly;
using Puzzle.Stages.Benchmark;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Evaluation;
using Puzzle.Stages.Library;
using Puzzle.Stages.Report;
using Puzzle.Stages.Scoring;
using Puzzle.Stages.Search;
using Puzzle.Tokenization;
using Puzzle.Training;
using static TorchSharp.torch;

namespace Puzzle.Tests.Stages;

/// <summary>A run taken through library, scoring, costs and search once; the child stages are tested on it.</summary>
public sealed class SolvedRunFixture
{
    public RunFixture Base { get; } = new();
    public string Run { get; }
    public string Child { get; }

    public SolvedRunFixture()
    {
        Run = Base.NewRun(c =>
        {
            c["search_space"] = new JsonObject
            {
                ["kv_heads"] = new JsonArray(2, 1), ["ffn_fractions"] = new JsonArray(1.0, 0.5, 0.25), ["ffn_linear"] = false,
            };
            c["scoring"] = new JsonObject { ["validation_tokens"] = 32 * 8, ["batch"] = 8 };
            c["scenario"] = new JsonObject { ["batch"] = 4, ["prompt_length"] = 32, ["generation_length"] = 32, ["repeats"] = 3, ["warmup_runs"] = 1 };
        });
        var run = new RunDirectory(Run);
        BlockLibraryBuilder.Run(run, new LogProgress(), _ => { });
        BlockScorer.Run(run, new LogProgress(), _ => { });
        BlockCosts.Run(run, _ => { });
        SearchStage.Run(run, new SearchRequest { Target = "h100", MinThroughputRatio = 1.5, Name = "fast" }, _ => { });
        SearchStage.Run(run, new SearchRequest { Target = "h100", Sweep = "throughput-ratio=1.0:2.0:0.5" }, _ => { });
        Child = Path.Combine(Run, "child");
        ChildAssembler.Run(run, "fast", Child, _ => { });
    }
}

public sealed partial class ChildStagesTests(SolvedRunFixture fixture) : IClassFixture<SolvedRunFixture>
{
    [Fact]
    public void Assemble_MatchesTheSolution_AndItsParameterEstimate()
    {
        var solution = JsonNode.Parse(File.ReadAllText(Path.Combine(fixture.Run, "solutions", "fast.json")))!;
        var config = HfConfig.Read(fixture.Child);
        var space = SearchSpace.Expand(HfConfig.Read(fixture.Base.ParentDir), new RunDirectory(fixture.Run).Config.SearchSpace).ToDictionary(v => v.Id);
        for (int i = 0; i < config.NumLayers; i++)
        {
            var layer = solution["layers"]![i]!;
            Assert.Equal(space[layer["attention"]!.GetValue<string>()].Attention, config.Blocks[i].Attention);
            Assert.Equal(space[layer["ffn"]!.GetValue<string>()].Ffn, config.Blocks[i].Ffn);
        }
        Assert.Equal(solution["verified"]!["parameters"]!.GetValue<long>(), config.TotalParameters);
        using var child = Checkpoint.Load(fixture.Child);
        Assert.Equal(config.TotalParameters, child.parameters().Sum(p => p.NumberOfElements));
        Assert.False(config.IsHomogeneousLlama);

        // The streamed assembly equals the in-memory one it replaced (parent loaded whole, blocks composed, in the parent's dtype).
        using var parent = Checkpoint.Load(fixture.Base.ParentDir);
        var dtype = ChildAssembler.StoredDtype(Checkpoint.WeightMap(fixture.Base.ParentDir));
        Assert.Equal(Checkpoint.TorchDtypeName(dtype), config.TorchDtype);
        var childParameters = child.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in parent.named_parameters().Where(p => !p.name.StartsWith("model.layers.", StringComparison.Ordinal)))
            Assert.True(childParameters[name].eq(p).all().item<bool>(), name);
        for (int i = 0; i < config.NumLayers; i++)
        {
            var layer = solution["layers"]![i]!;
            using var block = LibraryBlocks.Compose(parent, fixture.Run, i, space[layer["attention"]!.GetValue<string>()], space[layer["ffn"]!.GetValue<string>()]);
            foreach (var (name, p) in block.named_parameters())
                Assert.True(childParameters[$"model.layers.{i}.{name}"].eq(p.to(dtype).to(ScalarType.Float32)).all().item<bool>(), $"layer {i} {name}");
        }
    }

    [Fact]
    public void Distill_LowersValidationKl_AndResumesToTheSameResult()
    {
        DistillOptions Options(string outDir, int? stop = null) => new()
        {
            TeacherDir = fixture.Base.ParentDir, StudentDir = fixture.Child, DataDir = fixture.Base.DataDir, OutDir = outDir,
            Tokens = 8 * 32 * 16, Batch = 8, LearningRate = 2e-3, EvalEvery = 4, CheckpointEvery = 3, ValidationTokens = 32 * 16,
            Precision = "fp32", StopAfterSteps = stop,
        };
        string straight = TestSupport.TempDir(), interrupted = TestSupport.TempDir();
        var result = Distiller.Run(Options(straight), _ => { });
        Assert.True(result.BestValidationKl < result.InitialValidationKl, $"KL {result.InitialValidationKl} -> {result.BestValidationKl}");
        Assert.True(File.Exists(Path.Combine(straight, "distillation.json")));
        using (var teacher = Checkpoint.Load(fixture.Base.ParentDir))
        using (var best = Checkpoint.Load(straight))
        using (var data = new TokenDataset(fixture.Base.DataDir, "validation"))
            Assert.Equal(result.BestValidationKl, Distiller.ValidationKl(best, teacher, data, 32, 32 * 16, 8), 4);   // OUT holds the best student

        Assert.False(Distiller.Run(Options(interrupted, stop: 7), _ => { }).Finished);
        var resumed = Distiller.Run(Options(interrupted), _ => { });
        Assert.Equal(result.BestValidationKl, resumed.BestValidationKl, 6);
        Assert.True(Distiller.Run(Options(interrupted), _ => { }).Reused);
    }

    [Fact]
    public void Distill_Loss_IsZeroForTheTeacherItself_AndTemperatureScaled()
    {
        using var model = TestSupport.Build(TestSupport.TinyParentConfig());
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = TestSupport.RandomIds(2, 6, 96, 3);
        var states = new List<Tensor>();
        var logits = model.Forward(ids, hiddenStates: states);
        var options = new DistillOptions { TeacherDir = "", StudentDir = "", DataDir = "", OutDir = "", LmWeight = 0 };
        Assert.InRange(Distiller.Loss(options, logits, logits, states, states, ids).item<float>(), -1e-5, 1e-5);
        var other = TestSupport.Build(TestSupport.TinyParentConfig(), seed: 9);
        var otherStates = new List<Tensor>();
        var otherLogits = other.Forward(ids, hiddenStates: otherStates);
        double withCosine = Distiller.Loss(options, otherLogits, logits, otherStates, states, ids).item<float>();
        double klOnly = Distiller.Loss(options with { CosineWeight = 0 }, otherLogits, logits, otherStates, states, ids).item<float>();
        var logp = logits.log_softmax(-1);
        double kl = (logp.exp() * (logp - otherLogits.log_softmax(-1))).sum(-1).mean().item<float>();
        Assert.Equal(kl, klOnly, 4);
        double cosine = Enumerable.Range(0, 2).Sum(i => (1 - nn.functional.cosine_similarity(otherStates[i], states[i], 2)).mean().item<float>());
        Assert.Equal(kl + cosine, withCosine, 4);
        other.Dispose();
    }

    [Fact]
    public void Eval_TaskScoring_MatchesOneSequenceAtATime_AndRetentionIsARatio()
    {
        using var model = Checkpoint.Load(fixture.Base.ParentDir);
        using var tokenizer = TextTokenizer.Load(fixture.Base.ParentDir);
        var items = new List<ChoiceItem>
        {
            new("Story number 3. the cat", [" sees the ball.", " sees the red house.", " the the the"], 0),
            new("a dog likes", [" a tree.", " some bread and a very long continuation of words.", " xyzzy"], 1),
            new("", ["the bird helps a green hat.", "hat green a helps bird the."], 0),
            new("my friend", [" watches the river.", " river the watches."], 0),
        };
        var metrics = Evaluator.Task(model, tokenizer, "toy", items);
        // Oracle: each choice alone, summed log-probabilities of the continuation tokens.
        int acc = 0, accNorm = 0;
        using (no_grad())
            foreach (var item in items)
            {
                int[] context = tokenizer.Encode(item.Context);
                var scores = item.Choices.Select(choice =>
                {
                    int[] all = tokenizer.Encode(item.Context + choice);
                    using var scope = NewDisposeScope();
                    var logp = model.Forward(tensor(all.Select(t => (long)t).ToArray(), [1, all.Length])).log_softmax(-1);
                    double sum = 0;
                    for (int i = context.Length; i < all.Length; i++) sum += logp[0, i - 1, all[i]].item<float>();
                    return sum;
                }).ToArray();
                if (Array.IndexOf(scores, scores.Max()) == item.Label) acc++;
                var norm = scores.Select((s, i) => s / item.Choices[i].Length).ToArray();
                if (Array.IndexOf(norm, norm.Max()) == item.Label) accNorm++;
            }
        Assert.Equal(acc / 4.0, metrics.Acc);
        Assert.Equal(accNorm / 4.0, metrics.AccNorm);

    }

    [Fact]
    public void EvalBenchReportExport_EndToEnd()
    {
        var eval = EvalStage.Run(new EvalOptions
        {
            ModelDir = fixture.Child, ReferenceDir = fixture.Base.ParentDir, DataDir = fixture.Base.DataDir, MaxTokens = 32 * 8,
            Tasks = [WriteTask()], TaskLimit = 10,
        }, _ => { });
        Assert.True(eval["metrics"]!["kl_to_reference"]!.GetValue<double>() > 0);
        Assert.Equal(0, eval["reference_metrics"]!["kl_to_reference"]?.GetValue<double>() ?? 0);
        Assert.InRange(eval["retention"]!["value"]!.GetValue<double>(), 0.1, 2);
        Assert.Equal("test", eval["protocol"]!["split"]!.GetValue<string>());

        var bench = BenchStage.Run(new BenchOptions { Models = [fixture.Base.ParentDir, fixture.Child], Batch = 2, PromptLength = 8, GenerationLength = 6, Repeats = 2 }, _ => { });
        var rows = bench["models"]!.AsArray();
        Assert.Equal(1.0, rows[0]!["end_to_end_ratio"]!.GetValue<double>());
        Assert.True(rows[1]!["end_to_end_tokens_per_s"]!.GetValue<double>() > 0);
        Assert.True(rows[1]!["memory_bytes"]!.GetValue<long>() < rows[0]!["memory_bytes"]!.GetValue<long>());

        var report = ReportStage.Write(new RunDirectory(fixture.Run), "fast", fixture.Child, eval, bench, null, _ => { });
        // The report's ratio is the bench's paired one (the median of per-round ratios), not the ratio of the two medians.
        Assert.Equal(rows[1]!["end_to_end_ratio"]!.GetValue<double>(), report.MeasuredThroughputRatio, tolerance: 1e-9);
        var perRound = rows[1]!["end_to_end_ratio_rounds"]!.AsArray().Select(v => v!.GetValue<double>()).Order().ToArray();
        Assert.Equal(perRound.Length % 2 == 1 ? perRound[perRound.Length / 2] : (perRound[perRound.Length / 2 - 1] + perRound[perRound.Length / 2]) / 2,
            report.MeasuredThroughputRatio, 9);
        string md = File.ReadAllText(Path.Combine(fixture.Run, "report.md"));
        Assert.Contains("| end-to-end throughput (tokens/s) |", md);
        // The metric is named and defined, the figures carry intervals, and the split sizes are shown.
        Assert.Contains("Accuracy retention", md);
        Assert.Contains(EvalStage.RetentionDefinition, md);
        Assert.Contains($"| test | {eval["protocol"]!["splits"]!["test"]!["documents"]!.GetValue<long>():N0} |", md);
        Assert.Contains("| next-token accuracy (accuracy) |", md);
        Assert.Contains(EvalStage.FormatInterval(eval["retention"]!["ci95"], percent: true), md);
        Assert.Contains(EvalStage.FormatInterval(eval["fidelity"]!["perplexity_ratio"]!["ci95"]), md);
        Assert.Contains("(rounds ", md);
        Assert.Equal(EvalStage.RetentionDefinition, report.AccuracyRetention.Definition);
        Assert.Equal(eval["retention"]!["value"]!.GetValue<double>(), report.AccuracyRetention.Value);
        Assert.Contains("report-architecture.png", md);
        Assert.True(PlotTests.HasText(Path.Combine(fixture.Run, "report-architecture.png")));
        Assert.True(PlotTests.HasText(Path.Combine(fixture.Run, "report-pareto.png")));

        string export = TestSupport.TempDir();
        ExportStage.Run(fixture.Child, export, "float32", Path.Combine(fixture.Run, "report.json"), log: _ => { });
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(export, "config.json")))!;
        foreach (var block in config["block_configs"]!.AsArray().Where(b => b!["ffn"]!["ffn_mult"] is not null))
        {
            int width = block!["ffn"]!["intermediate_size"]!.GetValue<int>();
            Assert.Equal(width, HfConfig.FfnMultToIntermediateSize(block["ffn"]!["ffn_mult"]!.GetValue<double>(), 64));   // engines rebuild it
        }
        using (var original = Checkpoint.Load(fixture.Child))
        using (var exported = Checkpoint.Load(export))
        using (no_grad())
        {
            var ids = TestSupport.RandomIds(2, 10, original.Config.VocabSize, 5);
            Assert.True(TestSupport.MaxAbsDiff(original.Forward(ids), exported.Forward(ids)) < 1e-5);
        }
        string card = File.ReadAllText(Path.Combine(export, "README.md"));
        Assert.Contains("Measured throughput", card);
        Assert.Contains("Accuracy retention", card);
        Assert.Contains(EvalStage.RetentionDefinition, card);
        Assert.Contains("padded with zero channels", card);
        Assert.True(File.Exists(Path.Combine(export, "tokenizer.json")));

        // A parent that predicts nothing (random weights: accuracy 0) leaves retention undefined (null in eval.json):
        // the report says so instead of failing, and an eval.json without the retention block still asks for a rerun.
        var undefined = eval.DeepClone().AsObject();
        undefined["retention"]!["value"] = null;
        undefined["retention"]!["ci95"] = null;
        foreach (var (_, component) in undefined["retention"]!["components"]!.AsObject()) component!["ratio"] = null;
        var run = new RunDirectory(fixture.Run);
        var zero = ReportStage.Write(run, "fast", fixture.Child, undefined, bench, null, _ => { });
        Assert.False(zero.AccuracyRetention.Defined);
        Assert.Contains("Accuracy retention: undefined (the parent's accuracy is 0", File.ReadAllText(Path.Combine(fixture.Run, "report.md")));
        Assert.Null(JsonNode.Parse(File.ReadAllText(Path.Combine(fixture.Run, "report.json")))!["accuracy_retention"]!["value"]);
        var old = eval.DeepClone().AsObject();
        old["retention"] = new JsonObject { ["value"] = 0.9 };
        Assert.Contains("predates accuracy retention", Assert.Throws<PuzzleException>(() => ReportStage.Write(run, "fast", fixture.Child, old, bench, null, _ => { })).Message);
        ReportStage.Write(run, "fast", fixture.Child, eval, bench, null, _ => { });              // the fixture's report as it was
    }

    static string WriteTask()
    {
        string path = Path.Combine(TestSupport.TempDir(), "toy.jsonl");
        File.WriteAllLines(path, Enumerable.Range(0, 10).Select(i =>
            new JsonObject { ["context"] = $"Story number {i}. the cat", ["choices"] = new JsonArray(" sees the ball.", " ball the sees."), ["label"] = 0 }.ToJsonString()));
        return path;
    }
}
