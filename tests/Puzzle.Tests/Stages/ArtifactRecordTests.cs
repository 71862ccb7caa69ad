using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Config;
using Puzzle.Domain;
using Puzzle.Stages;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Report;
using Puzzle.Stages.Scoring;
using Puzzle.Stages.Search;
using Xunit;

namespace Puzzle.Tests.Stages;

/// <summary>
/// The typed run artifacts of issue 14: report.json through <see cref="ReportFile"/>, scores.json read by the search
/// only through <see cref="ScoresFile"/>, and the run config's numeric rules as one table.
/// </summary>
public sealed class ArtifactRecordTests
{
    static readonly string Golden = Path.Combine(AppContext.BaseDirectory, "Golden", "report-v1.json");

    [Fact]
    public void ReportFile_ReadsADemoRunsReport_AndWritesTheSameJsonBack()
    {
        // report.json of a finished demo run (format 1, with baselines): every field survives Read -> Write.
        var original = JsonNode.Parse(File.ReadAllText(Golden))!;
        var report = ReportFile.Read(Golden);
        Assert.Equal("child", report.Solution);
        Assert.Equal(original["measured_throughput_ratio"]!.GetValue<double>(), report.MeasuredThroughputRatio);
        Assert.Equal(original["parent"]!["parameters"]!.GetValue<long>(), report.Parent.Parameters);
        Assert.Equal(original["layers"]!.AsArray().Count, report.Layers.Count);
        Assert.Equal("ABBA", report.Rounds.Order);
        Assert.NotNull(report.Baselines);

        string path = Path.Combine(TestSupport.TempDir(), "report.json");
        report.Write(path);
        var written = JsonNode.Parse(File.ReadAllText(path))!;
        Assert.True(JsonNode.DeepEquals(original, written), "report.json changed on a round trip through ReportFile");
        Assert.Equal(report.ToJson().ToJsonString(), ReportFile.Read(path).ToJson().ToJsonString());
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(path)!, "*.tmp*"));
    }

    [Fact]
    public void ReportFile_OldOrMalformedReports_GetOneLineNamingFileAndField()
    {
        string dir = TestSupport.TempDir();
        string Write(Action<JsonObject> change)
        {
            var json = JsonNode.Parse(File.ReadAllText(Golden))!.AsObject();
            change(json);
            string path = Path.Combine(dir, $"report-{Guid.NewGuid():N}.json");
            File.WriteAllText(path, json.ToJsonString());
            return path;
        }
        string old = Write(j => j.Remove("format_version"));
        Assert.Equal($"{old}: no format_version (written by an older version of Puzzle); rerun `puzzle report`",
            Assert.Throws<PuzzleException>(() => ReportFile.Read(old)).Message);
        string newer = Write(j => j["format_version"] = 2);
        Assert.Equal($"{newer}: format_version 2 is not 1 (written by another version of Puzzle); rerun `puzzle report`",
            Assert.Throws<PuzzleException>(() => ReportFile.Read(newer)).Message);
        string badSide = Write(j => j["child"]!["perplexity"] = "low");
        Assert.Equal($"{badSide}: child.perplexity must be a finite number, got \"low\"", Assert.Throws<PuzzleException>(() => ReportFile.Read(badSide)).Message);
        string noLayers = Write(j => j.Remove("layers"));
        Assert.Equal($"{noLayers}: layers is missing (expected an array)", Assert.Throws<PuzzleException>(() => ReportFile.Read(noLayers)).Message);
        string missing = Path.Combine(dir, "absent.json");
        Assert.Equal($"{missing}: not found; run `puzzle report` first", Assert.Throws<PuzzleException>(() => ReportFile.Read(missing)).Message);
    }

    /// <summary>A run of the tiny config with proxy scores written through ScoresFile and roofline costs.</summary>
    static (RunDirectory Run, ScoresFile Scores) SearchFixture()
    {
        string parent = TestSupport.TempDir(), runDir = TestSupport.TempDir();
        var config = TestSupport.TinyParentConfig(layers: 3);
        File.WriteAllText(Path.Combine(parent, "config.json"), HfConfig.ToLlama(config, "float32").ToJsonString());
        var runConfig = new RunConfig { Parent = new ParentSection { Path = parent } };
        runConfig.Save(Path.Combine(runDir, RunConfig.FileName));
        var run = new RunDirectory(runDir);
        var candidates = BlockScorer.Candidates(config, SearchSpace.Expand(config, runConfig.SearchSpace), "composed");
        var entries = candidates.Select((c, i) =>
        {
            long kept = (c.Attention.Attention!.NoOp ? 0 : config.AttentionParameters(c.Attention.Attention!)) + (c.Ffn.Ffn!.NoOp ? 0 : config.FfnParameters(c.Ffn.Ffn!));
            return new BlockScore(c.Layer, c.Attention.Id, c.Ffn.Id, (1 - kept / (double)config.BlockParameters(c.Layer)) * (1 + c.Layer) * 1e-2 + i * 1e-7, 2.0, 0.9, 64);
        }).ToList();
        var scores = new ScoresFile("proxy", "composed", 64, 2.0, candidates.Count, entries);
        scores.Write(run.Scores);
        BlockCosts.Run(run, _ => { }, rooflineOnly: true);
        return (run, scores);
    }

    [Fact]
    public void Search_ReadsScoresThroughScoresFile_AndItsChecks()
    {
        var (run, scores) = SearchFixture();
        var result = SearchStage.Run(run, new SearchRequest { Target = "h100", MinThroughputRatio = 1.3, Name = "fast" }, _ => { }).Single();
        var solution = SolutionFile.Read(run.Solution("fast"));
        // The chosen blocks' KL is the scores file's, layer by layer.
        foreach (var layer in solution.Layers)
            Assert.Equal(scores.Entries.Single(e => e.Layer == layer.Layer && e.Attention == layer.Attention && e.Ffn == layer.Ffn).Kl, layer.Kl, tolerance: 1e-12);
        Assert.Equal(solution.Layers.Sum(l => l.Kl), result.Solution.Totals.Kl, tolerance: 1e-9);

        // What ScoresFile rejects, the search rejects: a complete flag that lies, another format.
        var json = JsonNode.Parse(File.ReadAllText(run.Scores))!;
        json["entries"]!.AsArray().RemoveAt(0);
        File.WriteAllText(run.Scores, json.ToJsonString());
        Assert.Equal($"{run.Scores}: complete is true but it holds {scores.Entries.Count - 1} of {scores.CandidatesTotal} candidates",
            Assert.Throws<PuzzleException>(() => SearchStage.BuildProblem(run, "h100")).Message);
        scores.Write(run.Scores);
        json = JsonNode.Parse(File.ReadAllText(run.Scores))!;
        json["format_version"] = 2;
        File.WriteAllText(run.Scores, json.ToJsonString());
        Assert.Contains("format_version 2 is not 1", Assert.Throws<PuzzleException>(() => SearchStage.BuildProblem(run, "h100")).Message);
        // Incomplete scores (a shard still running) are named as such.
        (scores with { Entries = scores.Entries.Skip(1).ToList() }).Write(run.Scores);
        Assert.Equal($"{run.Scores}: scoring is incomplete ({scores.Entries.Count - 1}/{scores.CandidatesTotal} candidates); finish `puzzle score` (all shards)",
            Assert.Throws<PuzzleException>(() => SearchStage.BuildProblem(run, "h100")).Message);
    }

    [Fact]
    public void RunConfig_EveryNumericRule_RejectsANegativeValue_NamingFileKeyAndNumber()
    {
        RunConfig.Defaults.Validate("defaults");
        string path = Path.Combine(TestSupport.TempDir(), "run.json");
        Assert.Equal(RunConfig.NumberRules.Count, RunConfig.NumberRules.Select(r => r.Key).Distinct().Count());
        foreach (var (key, bound, _) in RunConfig.NumberRules)
        {
            var tree = RunConfig.Defaults.ToJson();
            RunConfig.ApplyOverride(tree, $"{key}=-1");
            var e = Assert.Throws<PuzzleException>(() => RunConfig.Parse(tree, path));
            Assert.StartsWith($"{path}: {key} must be ", e.Message);
            Assert.EndsWith(", got -1", e.Message);
            // The bound's edge: 0 passes only where it is allowed, 1 only where one is.
            tree = RunConfig.Defaults.ToJson();
            RunConfig.ApplyOverride(tree, $"{key}=0");
            if (bound != RunConfig.Bound.Positive)
            {
                // Zero passes this rule (another rule, such as the GKD loss weights' sum, may still refuse it).
                try { RunConfig.Parse(tree, path); }
                catch (PuzzleException other) { Assert.DoesNotContain($": {key} must be", other.Message); }
            }
            else Assert.EndsWith($"{key} must be a positive number, got 0", Assert.Throws<PuzzleException>(() => RunConfig.Parse(tree, path)).Message);
            if (bound == RunConfig.Bound.BelowOne)
            {
                tree = RunConfig.Defaults.ToJson();
                RunConfig.ApplyOverride(tree, $"{key}=1");
                Assert.EndsWith($"{key} must be in [0, 1), got 1", Assert.Throws<PuzzleException>(() => RunConfig.Parse(tree, path)).Message);
            }
        }
    }
}
