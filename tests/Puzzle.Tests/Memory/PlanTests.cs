using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Config;
using Puzzle.Domain;
using Puzzle.Parents;
using Puzzle.Planning;
using Puzzle.Stages;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Library;
using Puzzle.Stages.Scoring;
using Puzzle.Stages.Search;
using Xunit;
using static TorchSharp.torch;

namespace Puzzle.Tests.Memory;

// Planner.Calibrate sets the process's intra-op thread count to 1 while it times loads: not beside other tests.
[Collection(nameof(Puzzle.Tests.Runtime.ProcessThreadsCollection))]
public class PlanTests
{
    static readonly ModelConfig70 Llama70 = new(RandomParent.Preset("llama-3.1-70b") with { BosTokenId = 1, EosTokenIds = [2] });

    sealed record ModelConfig70(Puzzle.Model.ModelConfig Config);

    [Fact]
    public void Plan_covers_every_stage_of_a_70b_on_h100s_with_the_memory_model()
    {
        var config = Llama70.Config;
        var run = new RunConfig();
        var plans = Planner.Plan(config, run, Planner.Roofline(Accelerators.Get("h100"), 8));
        Assert.Equal(["3 library (BLD)", "4 score", "5 costs", "6 search", "7 assemble", "8 distill (GKD)", "9 evaluate + bench", "10 export"], plans.Select(p => p.Stage));
        Assert.All(plans, p => Assert.True(p.Seconds >= 0 && p.PeakBytes >= 0 && p.DiskBytes >= 0, p.Stage));

        // Scoring: bf16 weights over 8 GPUs + the cache of 80 bf16 layer inputs and the fp32 final hidden state.
        var score = plans.Single(p => p.Stage == "4 score");
        long weightsPerGpu = config.TotalParameters * 2 / 8;
        long cachePerGpu = ParentCache.Bytes(80, 8192, 8192, 2) / 8;
        Assert.InRange(score.PeakBytes, weightsPerGpu + cachePerGpu, weightsPerGpu + cachePerGpu + (4L << 30));
        // BLD disk: the bf16 activation cache at all 81 boundaries + the fp32 library.
        var variants = SearchSpace.Expand(config, run.SearchSpace);
        int steps = (int)(run.Bld.TokensPerVariant / (run.Bld.Batch * 256L));
        long library = variants.Where(v => v.NeedsTraining).Sum(v => 4 * (v.Kind == SubblockKind.Attention ? config.AttentionParameters(v.Attention!) : config.FfnParameters(v.Ffn!)));
        Assert.Equal(ActivationCache.Bytes(steps, 16, 256, 8192, 81) + library, plans[0].DiskBytes);
        // Time from the roofline: the scoring FLOPs at 40 % of 8 × 989 TFLOP/s.
        Assert.InRange(score.Seconds, 60, 3600);
        var json = Planner.ToJson(config, Planner.Roofline(Accelerators.Get("h100"), 8), plans);
        Assert.Equal(8, json["calibration"]!["gpus"]!.GetValue<int>());
        Assert.True(json["stages"]![1]!["fits"]!.GetValue<bool>());
    }

    /// <summary>
    /// With evaluation.max_tokens null the evaluation reads the whole test split: where data.path is prepared the plan
    /// reads its size from the manifest (whole windows, as the evaluation takes them), else it assumes 200,000 tokens.
    /// </summary>
    [Fact]
    public void Evaluation_plan_reads_the_prepared_test_split_size()
    {
        string corpus = Puzzle.Tests.Data.CorpusFixtures.TextFolder(60);
        string dataDir = TestSupport.TempDir();
        Puzzle.Data.DataPreparer.Prepare(new Puzzle.Data.DataPrepareOptions
        {
            TokenizerDir = Puzzle.Tests.Data.CorpusFixtures.Tokenizer(corpus, 320), Inputs = [corpus], OutDir = dataDir, SeqLen = 32, ValidationFraction = 0.15, TestFraction = 0.1,
        }, log: _ => { });
        long testTokens = Puzzle.Data.DataManifest.Read(dataDir).Split("test").Tokens;
        long windows = (testTokens - 1) / 32;
        Assert.True(windows > 0);
        Assert.Equal(windows * 32, Planner.PreparedTestTokens(new DataSection { Path = dataDir, SeqLen = 32 }));
        Assert.Null(Planner.PreparedTestTokens(new DataSection { Path = Path.Combine(dataDir, "absent") }));

        var config = RandomParent.Preset("smollm2-135m") with { BosTokenId = 1, EosTokenIds = [2] };
        var cal = new Calibration("fixed", 1e10, 2e10, ScalarType.BFloat16, 0, 0, null);
        var evalOptions = new EvaluationSection { BenchEngine = "puzzle", BenchRepeats = 0 };
        StagePlan Eval(DataSection data, long? maxTokens = null) =>
            Planner.Plan(config, new RunConfig { Data = data, Evaluation = evalOptions with { MaxTokens = maxTokens } }, cal).Single(p => p.Stage == "9 evaluate + bench");
        var prepared = Eval(new DataSection { Path = dataDir, SeqLen = 32 });
        var assumed = Eval(new DataSection { SeqLen = 32 });
        Assert.Contains($"{windows * 32:N0} tokens of KL/perplexity (whole test split)", prepared.Note);
        Assert.Contains("200,000 tokens of KL/perplexity (whole test split; assumed)", assumed.Note);
        // The same plan as asking for exactly those tokens (second computation).
        Assert.Equal(Eval(new DataSection { Path = dataDir, SeqLen = 32 }, windows * 32).Seconds, prepared.Seconds, 9);
        Assert.True(prepared.Seconds < assumed.Seconds);
    }

    [Fact]
    public void Search_plan_counts_one_short_gkd_per_probed_candidate_at_gkds_own_rates()
    {
        var config = RandomParent.Preset("smollm2-135m") with { BosTokenId = 1, EosTokenIds = [2] };
        var cal = new Calibration("fixed", 1e10, 2e10, ScalarType.BFloat16, 0, 0, null);
        StagePlan Stage(RunConfig run, string name) => Planner.Plan(config, run, cal).Single(p => p.Stage == name);
        var search = new SearchSection { Solutions = 3, ProbeTokens = 32_768 };
        var probed = Stage(new RunConfig { Search = search }, "6 search");
        var unprobed = Stage(new RunConfig { Search = search with { ProbeTokens = 0 } }, "6 search");
        // Second computation: the GKD stage of a run whose gkd.tokens is the probe's, once per candidate.
        var shortGkd = Stage(new RunConfig { Search = search, Gkd = new GkdSection { Tokens = 32_768 } }, "8 distill (GKD)");
        // Each probe also writes its assembled child (bf16 parameters; stage 7's disk) and starts no process of its own.
        var assemble = Stage(new RunConfig { Search = search }, "7 assemble");
        Assert.Equal(unprobed.Seconds + 3 * (shortGkd.Seconds - shortGkd.StartupSeconds + assemble.WriteSeconds), probed.Seconds, 6);
        Assert.Equal(Math.Max(unprobed.PeakBytes, shortGkd.PeakBytes), probed.PeakBytes);
        Assert.Contains("3 candidates probed", probed.Note);
        // One solution: nothing to choose among, no probe.
        Assert.Equal(Stage(new RunConfig { Search = search with { Solutions = 1, ProbeTokens = 0 } }, "6 search").Seconds,
            Stage(new RunConfig { Search = search with { Solutions = 1 } }, "6 search").Seconds);
    }

    [Fact]
    public void Gkd_plan_drops_the_frozen_embeddings_optimizer_state_and_is_bounded_by_max_params()
    {
        var config = RandomParent.Preset("llama-3.2-1b") with { BosTokenId = 1, EosTokenIds = [2] };
        var cal = new Calibration("fixed", 1e10, 2e10, ScalarType.BFloat16, 0, 0, null);
        long Gkd(RunConfig run) => Planner.Plan(config, run, cal).Single(p => p.Stage == "8 distill (GKD)").PeakBytes;
        long embeddings = 128_256L * 2048;                                                          // tied
        // Batch 1: the optimizer step (fp32 gradients, 4 bytes per trained parameter, + AdamW's temporaries, 8 bytes per
        // element of the largest chunk it steps: the tied embedding when it trains, else a 32 Mi-element chunk) is the peak.
        long chunk = Puzzle.Training.MixedPrecisionOptimizer.DefaultChunkElements;
        GkdSection Gkd1(bool trainEmbeddings = true) => new() { Batch = 1, TrainEmbeddings = trainEmbeddings };
        long full = Gkd(new RunConfig { Gkd = Gkd1() });
        // Frozen: no AdamW moments (8 bytes) nor step gradients (4) for them, and the step's temporaries shrink from the
        // embedding's 8 · V · H to a chunk's 8 · 32 Mi; the masters and the working copy stay.
        Assert.Equal(full - embeddings * (8 + 4) - 8 * (embeddings - chunk), Gkd(new RunConfig { Gkd = Gkd1(false) }));
        // A child bounded at 600 M parameters: 6 bytes of weights, 8 of moments and 4 of step gradients per parameter fewer.
        long bounded = Gkd(new RunConfig { Gkd = Gkd1(), Search = new SearchSection { MaxParams = 600_000_000 } });
        Assert.Equal(full - (config.TotalParameters - 600_000_000) * (6 + 8 + 4), bounded);
        Assert.Equal(1_235_814_400, config.TotalParameters);
    }

    [Fact]
    public void Calibration_on_this_machine_gives_positive_rates_and_a_baseline()
    {
        var cal = Planner.Calibrate(TestSupport.TinyParentConfig(), 32, ScalarType.BFloat16, seconds: 0.2);
        Assert.True(cal.Fp32Rate > 1e6 && cal.ComputeRate > 1e6);
        Assert.True(cal.BaselineBytes > 50L << 20);
        // The started process, read before the tensor work (libtorch loaded); a stage without tensor work is planned at
        // the lower of the two (in a test host the working set also moves with other tests).
        Assert.True(cal.StartupBytes > 50L << 20);
        Assert.Equal(Math.Min(cal.StartupBytes, cal.BaselineBytes), cal.IdleFloorBytes);
        var plans = Planner.Plan(TestSupport.TinyParentConfig(), new RunConfig(), cal);
        Assert.All(plans, p => Assert.True(p.PeakBytes >= ((p.Stage == "6 search" && !p.Note.Contains("measured")) || p.Stage == "7 assemble" ? cal.IdleFloorBytes : cal.BaselineBytes), p.Stage));
    }

    /// <summary>
    /// The decode step is timed at the scenario's batch over its mean context (the engine's path: a KV cache filled by a
    /// prefill, one new token per sequence): on a SmolLM2-shaped layer, batch 32 over 512 positions costs well above
    /// batch 1 over one (the plan had counted every decode step at batch 1 without a cache: the SmolLM2 costs stage at
    /// batch 16 over 191 positions took 1.53x its plan).
    /// </summary>
    [Fact]
    public void Calibration_times_a_decode_step_at_the_scenarios_batch_and_context()
    {
        var config = RandomParent.Preset("smollm2-135m") with { BosTokenId = 1, EosTokenIds = [2] };
        var one = Planner.Calibrate(config, 32, ScalarType.BFloat16, seconds: 0.4);
        var scenario = Planner.Calibrate(config, 32, ScalarType.BFloat16, seconds: 0.4, decodeBatch: 32, decodeContext: 512);
        Assert.True(scenario.DecodeLayerSeconds > 1.5 * one.DecodeLayerSeconds,
            $"decode step at batch 32 over 512 positions {scenario.DecodeLayerSeconds * 1e3:F3} ms, at batch 1 over 1 {one.DecodeLayerSeconds * 1e3:F3} ms");
    }

    /// <summary>
    /// A search without measured checks builds no model (the 1B on target h100 measured 0.20 GiB against a plan of 0.60,
    /// the runtime after tensor work): it is planned at the started process; with checks, at the runtime plus both models.
    /// </summary>
    [Fact]
    public void A_search_without_measured_checks_is_planned_at_the_started_process()
    {
        var config = RandomParent.Preset("llama-3.2-1b") with { BosTokenId = 1, EosTokenIds = [2] };
        var cal = new Calibration("fixed", 1e10, 2e10, ScalarType.BFloat16, 600L << 20, 0, null) { StartupBytes = 200L << 20 };
        StagePlan Search(string target, Calibration c) =>
            Planner.Plan(config, new RunConfig { Search = new SearchSection { Target = target, Solutions = 1 } }, c).Single(p => p.Stage == "6 search");
        Assert.Equal(200L << 20, Search("h100", cal).PeakBytes);
        Assert.Contains("MIP only", Search("h100", cal).Note);
        // Measured checks: the runtime after tensor work plus parent and child in the measurement dtype, at least.
        Assert.True(Search("measured", cal).PeakBytes > (600L << 20) + 2 * config.TotalParameters * 2);
        // A calibration without the started process's figure (a roofline, older JSON): the runtime baseline stands.
        Assert.Equal(600L << 20, Search("h100", cal with { StartupBytes = 0 }).PeakBytes);
    }

    [Fact]
    public void An_80_layer_70b_config_is_searched_on_roofline_costs()
    {
        string parent = TestSupport.TempDir(), runDir = TestSupport.TempDir();
        var config = Llama70.Config;
        File.WriteAllText(Path.Combine(parent, "config.json"), HfConfig.ToLlama(config, "bfloat16").ToJsonString());
        var runConfig = new RunConfig { Parent = new ParentSection { Path = parent } };
        runConfig.Save(Path.Combine(runDir, RunConfig.FileName));
        var run = new RunDirectory(runDir);

        // Scores as a proxy (KL grows with the parameters removed): the search needs only their shape here.
        var variants = SearchSpace.Expand(config, runConfig.SearchSpace);
        var candidates = BlockScorer.Candidates(config, variants, "composed");
        long Full(int layer) => config.BlockParameters(layer);
        var entries = new JsonArray(candidates.Select(c =>
        {
            long kept = (c.Attention.Attention!.NoOp ? 0 : config.AttentionParameters(c.Attention.Attention!)) + (c.Ffn.Ffn!.NoOp ? 0 : config.FfnParameters(c.Ffn.Ffn!));
            double kl = (1 - kept / (double)Full(c.Layer)) * (1 + c.Layer % 7) * 1e-3;
            return (JsonNode)new BlockScore(c.Layer, c.Attention.Id, c.Ffn.Id, kl, 2.0, 0.9, 1024).ToJson();
        }).ToArray());
        Puzzle.IO.AtomicFile.WriteJson(run.Artifact(BlockScorer.FileName), new JsonObject
        {
            ["format_version"] = 1, ["fingerprint"] = "proxy", ["mode"] = "composed", ["tokens"] = 1024, ["parent_lm_loss"] = 2.0,
            ["candidates_total"] = candidates.Count, ["complete"] = true, ["entries"] = entries,
        });

        var costs = BlockCosts.Run(run, _ => { }, rooflineOnly: true).ToJson();
        Assert.True(costs["roofline_only"]!.GetValue<bool>());
        Assert.Equal(variants.Count, costs["entries"]!.AsArray().Count);
        var e = Assert.Throws<PuzzleException>(() => SearchStage.BuildProblem(run, "measured"));
        Assert.Contains("rooflines only", e.Message);

        var solutions = SearchStage.Run(run, new SearchRequest { Target = "h100", MinThroughputRatio = 1.5, Name = "fast" }, _ => { });
        var solution = JsonNode.Parse(File.ReadAllText(run.Artifact(SearchStage.Folder, "fast.json")))!;
        Assert.Equal(80, solution["layers"]!.AsArray().Count);
        Assert.NotEmpty(solutions);
    }
}
