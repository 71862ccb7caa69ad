using System.Text.Json.Nodes;
using Puzzle.Data;
using Puzzle.IO;

namespace Puzzle.Stages;

/// <summary>
/// What each stored artifact depends on, as one <see cref="Fingerprint"/> per artifact: a stage reuses its own output
/// only when the key it would write now equals the stored one. Each key names exactly the inputs that change the
/// result (never where it runs), in canonical JSON, so a change inside an array (search_space.ffn_fractions,
/// evaluation.tasks) changes the key. The tags' versions were bumped when the keys moved off <c>ToString()</c>, so
/// artifacts of older runs are recomputed once rather than misread.
/// </summary>
public static class ArtifactKeys
{
    /// <summary>RUN/library: the parent, the training data, the BLD settings (not the device or the disk budget) and the compute dtype.</summary>
    public static string Library(RunDirectory run, DataManifest manifest, string computeDtype) => Fingerprint.Of("bld-v3",
        Fingerprint.OfModel(run.ParentDir), manifest.TokenizerSha256, manifest.Splits["train"].Tokens, manifest.SeqLen,
        run.Config.Bld with { Device = "", DiskBudgetGib = null }, computeDtype);

    /// <summary>
    /// The library key of runs made before these keys (bld-v2, ToString-based). BldSection holds no arrays, so that key
    /// did tell settings apart: a record carrying the legacy key of today's settings is current, re-stamped rather
    /// than retrained (<see cref="Library.BlockLibraryBuilder"/>).
    /// </summary>
    public static string LegacyLibrary(RunDirectory run, DataManifest manifest, string computeDtype) => Fingerprint.Hash(
        $"bld-v2|{Fingerprint.OfModel(run.ParentDir)}|{manifest.TokenizerSha256}|{manifest.Splits["train"].Tokens}|{manifest.SeqLen}|{run.Config.Bld with { Device = "" }}|{computeDtype}");

    /// <summary>RUN/scores: the library it scores, the scoring settings (not the device) and the tokenizer of the validation windows.</summary>
    public static string Scores(RunDirectory run, string libraryFingerprint, DataManifest manifest) => Fingerprint.Of("score-v2",
        libraryFingerprint, run.Config.Scoring with { Device = "" }, manifest.TokenizerSha256);

    /// <summary>RUN/costs.json: the parent, the search space, the scenario and whether anything was measured, and how (the timing method).</summary>
    public static string Costs(RunDirectory run, bool rooflineOnly, string method) => Fingerprint.Of("costs-v5",
        Fingerprint.OfModel(run.ParentDir), run.Config.SearchSpace, run.Config.Scenario, rooflineOnly ? "roofline" : "measured " + method);

    /// <summary>The search problem: the scores and costs it is built from, the search space, the scenario and the cost target.</summary>
    /// <remarks>The default objective (KL) adds nothing, so runs made before objectives existed keep their keys.</remarks>
    public static string SearchProblem(RunDirectory run, string? scoresFingerprint, string? costsFingerprint, string target, string objective = "kl") =>
        objective == "kl"
            ? Fingerprint.Of("search-problem-v2", scoresFingerprint, costsFingerprint, run.Config.SearchSpace, run.Config.Scenario, target)
            : Fingerprint.Of("search-problem-v2", scoresFingerprint, costsFingerprint, run.Config.SearchSpace, run.Config.Scenario, target, "objective=" + objective);

    /// <summary>
    /// RUN/eval/eval.json (and every baseline's): parent and model weights, the evaluation settings (bench repeats
    /// aside), the task files' contents, the test split and the device.
    /// </summary>
    public static string Evaluation(RunDirectory run, string modelDir)
    {
        var e = run.Config.Evaluation;
        var tasks = e.Tasks.Select(run.Resolve).Select(t => File.Exists(t) ? Hashing.Sha256File(t) : "missing:" + t).ToArray();
        var manifest = DataManifest.Read(run.DataDir);
        var settings = JsonNode.Parse(Fingerprint.Canonical(e with { BenchRepeats = 0 }))!.AsObject();
        settings.Remove("bench_engine");                                                      // the bench's, not the evaluation's
        return Fingerprint.Of("eval-v4", Fingerprint.OfModel(run.ParentDir), Fingerprint.OfModel(modelDir), settings, tasks,
            manifest.TokenizerSha256, manifest.Splits.GetValueOrDefault("test"), run.Config.Scenario.Device);
    }

    /// <summary>
    /// RUN/eval/bench.json (and every baseline's): parent and model weights, the scenario, the bench repeats and the
    /// engine it ran in (evaluation.bench_engine as resolved here: auto is both where llama.cpp is installed).
    /// </summary>
    public static string Bench(RunDirectory run, string modelDir) => Fingerprint.Of("bench-v3",
        Fingerprint.OfModel(run.ParentDir), Fingerprint.OfModel(modelDir), run.Config.Scenario, run.Config.Evaluation.BenchRepeats,
        Benchmark.BenchEngine.Resolve(run.Config.Evaluation.BenchEngine, out _));
}
