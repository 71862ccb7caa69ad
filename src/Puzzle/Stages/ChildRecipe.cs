using Puzzle.Stages.Benchmark;
using Puzzle.Stages.Evaluation;
using Puzzle.Stages.Search;
using Puzzle.Training;

namespace Puzzle.Stages;

/// <summary>
/// How a child of the run is distilled, evaluated and benchmarked: the same settings for the Puzzle child (Pipeline)
/// and every baseline (Stages/Baselines), so their rows compare like with like.
/// </summary>
public static class ChildRecipe
{
    /// <summary>The name of the Puzzle child's solution (RUN/solutions/child.json) and folders (RUN/child, RUN/child-gkd).</summary>
    public const string Solution = "child";

    /// <summary>
    /// The search of the run's config.search section (constraints, target, solutions, diversity), named
    /// <see cref="Solution"/>: what the pipeline's stage 6 and `puzzle search --run` solve, the Pareto sweep aside.
    /// </summary>
    public static SearchRequest SearchRequestFor(RunDirectory run)
    {
        var s = run.Config.Search;
        return new SearchRequest
        {
            MaxMemoryGiB = s.MaxMemoryGib, MinThroughputRatio = s.MinThroughputRatio, MinTokensPerSecond = s.MinTokensPerS,
            MaxLatencyMs = s.MaxLatencyMs, MaxParameters = s.MaxParams, Target = s.Target, Solutions = s.Solutions, Diversity = s.Diversity,
            MaxOvershoot = s.MaxOvershoot, DriftControl = s.DriftControl, Name = Solution,
        };
    }

    /// <summary>
    /// Stage 6: the Pareto sweep of search.sweep (RUN/solutions/sweep-*.json, pareto.json), then the run's search as
    /// <see cref="Solution"/>: with search.solutions ≥ 2, its diverse candidates probed by a short GKD and the best
    /// chosen (<see cref="CandidateProbe"/>).
    /// </summary>
    public static void Search(RunDirectory run)
    {
        var request = SearchRequestFor(run);
        if (!string.IsNullOrWhiteSpace(run.Config.Search.Sweep)) SearchStage.Run(run, request with { Sweep = run.Config.Search.Sweep, Name = "sweep", Solutions = 1 });
        SearchAndChoose(run, request);
    }

    /// <summary>A search of the run as its child is chosen: the Puzzle child and the `matched` baselines alike.</summary>
    public static SearchResult SearchAndChoose(RunDirectory run, SearchRequest request, Action<string>? log = null) =>
        CandidateProbe.SearchAndChoose(run, request, run.Config.Search.ProbeTokens, run.Config.Search.ProbeCandidates, log);

    /// <summary>Global distillation of a student with the run's gkd settings (the Puzzle child and every baseline alike).</summary>
    public static DistillOptions DistillOptionsFor(RunDirectory run, string student, string outDir, long tokens)
    {
        var g = run.Config.Gkd;
        return new DistillOptions
        {
            TeacherDir = run.ParentDir, StudentDir = student, DataDir = run.DataDir, OutDir = outDir,
            Tokens = tokens, Batch = g.Batch, LearningRate = g.Lr, CosineWeight = g.CosineWeight, KlWeight = g.KlWeight,
            LmWeight = g.LmWeight, Temperature = g.Temperature, Precision = g.Precision, ValidationTokens = g.ValidationTokens,
            TrainEmbeddings = g.TrainEmbeddings, Seed = g.Seed,
            RestartOnChangedSettings = true, Device = run.Config.Scenario.Device,
        };
    }

    /// <summary>The evaluation of a model against the parent on the test split (the Puzzle child and every baseline alike).</summary>
    public static EvalOptions EvalOptionsFor(RunDirectory run, string model)
    {
        var e = run.Config.Evaluation;
        return new EvalOptions
        {
            ModelDir = model, ReferenceDir = run.ParentDir, DataDir = run.DataDir, Tasks = e.Tasks.Select(run.Resolve).ToArray(),
            TaskLimit = e.TaskLimit, MaxTokens = e.MaxTokens, Device = run.Config.Scenario.Device, ContinuationItems = e.ContinuationItems,
            ContinuationTaskPath = run.ContinuationTask, BootstrapResamples = e.BootstrapResamples, Seed = e.Seed, ReferenceCache = run.ReferenceMetrics,
            ReferenceStatesPath = run.ReferenceStates,
        };
    }

    /// <summary>
    /// The side-by-side benchmark of parent and model at the scenario, in its one measurement dtype, in the engine of
    /// evaluation.bench_engine (logged as resolved), or of <paramref name="engine"/> where given (`puzzle bench --run
    /// RUN --engine E`); llama.cpp's GGUF exports are kept in RUN/gguf, one per model.
    /// </summary>
    public static BenchOptions BenchOptionsFor(RunDirectory run, string model, string? engine = null)
    {
        var sc = run.Config.Scenario;
        string why;
        if (engine is not null)
        {
            BenchEngine.Check(engine, "--engine");
            why = $"--engine {engine} (instead of evaluation.bench_engine {run.Config.Evaluation.BenchEngine})";
        }
        else engine = BenchEngine.Resolve(run.Config.Evaluation.BenchEngine, out why);
        Log.Info($"bench: {why}");
        return new BenchOptions
        {
            Models = [run.ParentDir, model], Batch = sc.Batch, PromptLength = sc.PromptLength, GenerationLength = sc.GenerationLength,
            Repeats = run.Config.Evaluation.BenchRepeats, Dtype = sc.MeasureDtype, Device = sc.Device,   // one dtype: costs, measured check and bench
            Engine = engine, GgufDir = engine == BenchEngine.Puzzle ? null : run.Artifact(GgufFolder),
        };
    }

    /// <summary>RUN/gguf: the benchmark's GGUF exports for llama.cpp (parent and children), written once and reused.</summary>
    public const string GgufFolder = "gguf";
}
