using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.IO;
using Puzzle.Runtime;
using Puzzle.Stages.Benchmark;
using Puzzle.Stages.Report;

namespace Puzzle.Stages.Evaluation;

/// <summary>
/// Stage 9: evaluation (RUN/eval/eval.json) and side-by-side benchmark (RUN/eval/bench.json) of the parent against
/// RUN/child-gkd, each reused while its <see cref="ArtifactKeys"/> key stands, then the report.
/// </summary>
public static class EvaluationStage
{
    public static JsonObject Run(RunDirectory run)
    {
        string child = run.ChildGkd;
        var eval = Cached(run.Eval, ArtifactKeys.Evaluation(run, child), () => EvalStage.Run(ChildRecipe.EvalOptionsFor(run, child)));
        // Measured after hours of training in this process, generation ran ~20% slower for the child than in a
        // fresh process (allocator and thread-pool state): benchmark in a fresh `puzzle bench` where we can.
        var bench = Cached(run.Bench, ArtifactKeys.Bench(run, child), () =>
        {
            var options = ChildRecipe.BenchOptionsFor(run, child);
            return BenchInFreshProcess(options) ?? BenchStage.Run(options);
        });
        string distillation = Path.Combine(child, "distillation.json");
        return ReportStage.Write(run, ChildRecipe.Solution, child, eval, bench, JsonFile.ReadDerived(distillation)?.Node);
    }

    /// <summary>The stored result at <paramref name="path"/> when its key is <paramref name="key"/>, else a fresh one, stored with the key.</summary>
    public static JsonNode Cached(string path, string key, Func<JsonObject> compute)
    {
        if (JsonFile.ReadDerived(path) is { } stored && stored["key"].OptionalString() == key) return stored.Node!;
        var fresh = compute();
        fresh["key"] = key;
        AtomicFile.WriteJson(path, fresh);
        return fresh;
    }

    /// <summary>`puzzle bench --json` in a fresh process started the way this one was; null where the program cannot start itself.</summary>
    public static JsonObject? BenchInFreshProcess(BenchOptions o)
    {
        var info = SelfLaunch.StartInfo(["bench", "--models", .. o.Models, "--batch", $"{o.Batch}", "--prompt-len", $"{o.PromptLength}",
            "--gen-len", $"{o.GenerationLength}", "--repeats", $"{o.Repeats}", "--dtype", o.Dtype, "--device", o.Device, "--json", .. o.EngineArguments()]);
        if (info is null) return null;
        Log.Info($"bench: running in a fresh process ({string.Join(' ', SelfLaunch.Command!.Select(Path.GetFileName))} bench ...)");
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0) throw new PuzzleException($"bench: the benchmark process failed: {stderr.Result.Trim()}");
        var result = JsonNode.Parse(stdout)!.AsObject();
        result["process"] = "fresh";
        return result;
    }
}
