using System.Text.Json.Nodes;
using Puzzle.Config;
using Puzzle.Stages;
using Puzzle.Stages.Benchmark;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Evaluation;
using Puzzle.Stages.Library;
using Puzzle.Stages.Scoring;
using Puzzle.Stages.Search;
using Puzzle.Tests.Reliability;

namespace Puzzle.Tests.Stages;

/// <summary>One source of defaults (the config sections), and CLI stage commands that read the run's config with flags as overrides.</summary>
public sealed class DefaultsTests(RunFixture fixture) : IClassFixture<RunFixture>
{
    [Fact]
    public void OptionsRecords_DefaultToTheConfigSections()
    {
        var d = new RunConfig();
        var eval = new EvalOptions { ModelDir = "m", DataDir = "d" };
        Assert.Equal(d.Evaluation.TaskLimit, eval.TaskLimit);                                       // was 500 against the config's 300
        Assert.Equal(d.Evaluation.BootstrapResamples, eval.BootstrapResamples);
        var bench = new BenchOptions { Models = ["m"] };
        Assert.Equal(d.Evaluation.BenchRepeats, bench.Repeats);                                     // was 5 against 3
        Assert.Equal(d.Scenario.MeasureDtype, bench.Dtype);                                         // was float32 against bfloat16
        Assert.Equal((d.Scenario.Batch, d.Scenario.PromptLength, d.Scenario.GenerationLength), (bench.Batch, bench.PromptLength, bench.GenerationLength));
    }

    [Fact]
    public void SearchCommand_SolvesTheRunsConfigSearch_AsChild_AndFlagsOverrideIt()
    {
        string run = fixture.NewRun(c =>
        {
            c["search_space"] = new JsonObject
            {
                ["kv_heads"] = new JsonArray(2), ["attention_linear"] = false, ["attention_no_op"] = true,
                ["ffn_fractions"] = new JsonArray(1.0), ["ffn_linear"] = false, ["ffn_no_op"] = true,
            };
            c["scoring"] = new JsonObject { ["validation_tokens"] = 32 * 4, ["batch"] = 4 };
            c["search"] = new JsonObject { ["target"] = "h100", ["min_throughput_ratio"] = null, ["max_params"] = 1_000_000, ["solutions"] = 2, ["sweep"] = "", ["probe_tokens"] = 0 };
            // probe_tokens 0: the MIP's solutions as they are (the probed path: CandidateProbeTests).
        });
        BlockLibraryBuilder.Run(new RunDirectory(run), new LogProgress(), _ => { });
        BlockScorer.Run(new RunDirectory(run), new LogProgress(), _ => { });
        BlockCosts.Run(new RunDirectory(run), _ => { }, rooflineOnly: true);

        var result = InProcessCli.Run(TimeSpan.FromSeconds(120), "search", "--run", run);
        Assert.True(result.Code == 0, result.Stderr);
        string child = Path.Combine(run, "solutions", "child.json"), second = Path.Combine(run, "solutions", "child-2.json");
        Assert.True(File.Exists(child), $"no {child}: {result.Stdout}");                             // the pipeline's name, not "solution"
        Assert.True(File.Exists(second), "search.solutions = 2 must give a second solution");       // no longer forced to 1
        var stored = JsonNode.Parse(File.ReadAllText(child))!;
        Assert.Equal("h100", stored["target"]!.GetValue<string>());                                 // config.search.target, not the flag's "measured"
        Assert.Equal(1_000_000, stored["request"]!["max_params"]!.GetValue<long>());
        Assert.Equal(2, stored["request"]!["solutions"]!.GetValue<int>());

        Assert.Equal(4, stored["request"]!["measured_checks"]!.GetValue<int>());

        result = InProcessCli.Run(TimeSpan.FromSeconds(120), "search", "--run", run, "--max-params", "900000", "--solutions", "1", "--measured-checks", "0", "--max-overshoot", "0.06", "--drift-control", "true", "--name", "tight");
        Assert.True(result.Code == 0, result.Stderr);
        stored = JsonNode.Parse(File.ReadAllText(Path.Combine(run, "solutions", "tight.json")))!;
        Assert.Equal(900_000, stored["request"]!["max_params"]!.GetValue<long>());
        Assert.Equal(0, stored["request"]!["measured_checks"]!.GetValue<int>());
        Assert.Equal(0.06, stored["request"]!["max_overshoot"]!.GetValue<double>());
        Assert.True(stored["request"]!["drift_control"]!.GetValue<bool>());
        Assert.True(SolutionFile.Read(Path.Combine(run, "solutions", "tight.json")).Request.DriftControl);                 // read back
        Assert.Null(JsonNode.Parse(File.ReadAllText(child))!["request"]!["drift_control"]);          // off unless set
        Assert.Equal(0, SolutionFile.Read(Path.Combine(run, "solutions", "tight.json")).Request.MeasuredChecks);
        Assert.Equal("h100", stored["target"]!.GetValue<string>());
        Assert.Equal(1_000_000, new RunDirectory(run).Config.Search.MaxParams);                      // flags never rewrite RUN/config.json
    }
}
