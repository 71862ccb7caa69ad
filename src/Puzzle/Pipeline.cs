using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.IO;
using Puzzle.Stages;
using Puzzle.Stages.Assembly;
using Puzzle.Stages.Baselines;
using Puzzle.Stages.Benchmark;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Distillation;
using Puzzle.Stages.Evaluation;
using Puzzle.Stages.Library;
using Puzzle.Stages.Report;
using Puzzle.Stages.Scoring;
using Puzzle.Stages.Search;

namespace Puzzle;

/// <summary>
/// The whole method, in the paper's order (design.md 1), as numbered calls. Every stage is <c>XStage.Run(run)</c>:
/// it reads its own config section and its inputs from the run directory, skips its own finished work and writes its
/// own artifact, so an interrupted run continues where it stopped and a changed constraint reruns only the search
/// and what follows it.
/// </summary>
public static class Pipeline
{
    public const string Solution = ChildRecipe.Solution;

    /// <summary>The stages in order, as `puzzle stage NAME` and `puzzle slurm --stages` name them.</summary>
    public static readonly string[] StageNames = ["parent", "data", "library", "score", "costs", "search", "assemble", "distill", "evaluate", "export"];

    /// <summary>
    /// Runs every stage, or with <paramref name="only"/> that one stage alone (a scheduler's job: no stage table);
    /// the library's and scoring's share of the work units is the run's <see cref="RunDirectory.Shard"/>.
    /// </summary>
    public static JsonObject Run(RunDirectory run, Action<string>? log = null, string? only = null)
    {
        log ??= Log.Info;
        if (only is not null && !StageNames.Contains(only))
            throw new PuzzleException($"stage '{only}' is not one of {string.Join(", ", StageNames)}");
        TempFiles.Clean(run.Path);                                                                  // leftovers of killed runs
        var stages = new StageTable(run, log, only);
        JsonObject report = new();
        stages.Run("1 parent", () => ParentStage.Run(run));
        stages.Run("2 data", () => DataStage.Run(run));
        // With search.drift_control, readings of its control between the stages before the search (DriftControl.BetweenStages).
        void ControlReading() { if (only is null) DriftControl.BetweenStages(run, log); }
        ControlReading();
        stages.Run("3 library", () => BlockLibraryBuilder.Run(run));
        ControlReading();
        stages.Run("4 score", () => BlockScorer.Run(run));
        ControlReading();
        stages.Run("5 costs", () => BlockCosts.Run(run));
        ControlReading();
        stages.Run("6 search", () => ChildRecipe.Search(run));
        stages.Run("7 assemble", () => AssemblyStage.Run(run));
        stages.Run("8 distill", () => DistillationStage.Run(run));
        stages.Run("8b baselines", () => BaselinesStage.Run(run, bench: o => EvaluationStage.BenchInFreshProcess(o) ?? BenchStage.Run(o)));
        stages.Run("9 evaluate", () => report = EvaluationStage.Run(run));
        stages.Run("10 export", () => ExportStage.Run(run.ChildGkd, run.Export, run.Config.Export.Dtype, run.Report, run.Config.Export.PadFfn, formats: run.Config.Export.Formats));
        stages.Finish();
        return report;
    }

    /// <summary>The stage table: done / running / pending with elapsed times; the last run's durations give ETAs.</summary>
    sealed class StageTable(RunDirectory run, Action<string> log, string? only)
    {
        readonly string _path = run.PipelineState;
        readonly List<(string Name, double Seconds)> _done = new();
        readonly Stopwatch _total = Stopwatch.StartNew();
        static readonly string[] Names = ["1 parent", "2 data", "3 library", "4 score", "5 costs", "6 search", "7 assemble", "8 distill", "8b baselines", "9 evaluate", "10 export"];

        Dictionary<string, double> Previous()
        {
            try
            {
                return File.Exists(_path)
                    ? JsonNode.Parse(File.ReadAllText(_path))!["stages"]!.AsArray().ToDictionary(s => s!["name"]!.GetValue<string>(), s => s!["seconds"]!.GetValue<double>())
                    : new();
            }
            catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or NullReferenceException)
            {
                return new();
            }
        }

        public void Run(string name, Action stage)
        {
            if (only is not null)
            {
                if (name[(name.IndexOf(' ') + 1)..] == only) stage();
                return;
            }
            var previous = Previous();
            log($"pipeline: {string.Join(" | ", Names.Select(n => _done.Any(d => d.Name == n) ? $"{n} done {_done.First(d => d.Name == n).Seconds:F0}s" : n == name ? $"{n} RUNNING" : $"{n} pending"))}" +
                (Names.SkipWhile(n => n != name).All(n => previous.GetValueOrDefault(n) > 0)
                    ? $" | ETA {TimeSpan.FromSeconds(Names.SkipWhile(n => n != name).Sum(n => previous.GetValueOrDefault(n))):mm\\:ss} (from the last run)" : ""));
            var clock = Stopwatch.StartNew();
            stage();
            _done.Add((name, clock.Elapsed.TotalSeconds));
            Save(previous, finished: false);
        }

        public void Finish()
        {
            if (only is not null) return;
            Save(Previous(), finished: true);
            log($"pipeline: all stages done in {_total.Elapsed.TotalSeconds:F0} s: {string.Join(", ", _done.Select(d => $"{d.Name} {d.Seconds:F1}s"))}");
        }

        void Save(Dictionary<string, double> previous, bool finished)
        {
            // Keep the last complete durations for stages not rerun yet, so ETAs stay useful after an interruption.
            var stages = new JsonArray(Names.Select(n => (JsonNode)new JsonObject
            {
                ["name"] = n, ["seconds"] = _done.Any(d => d.Name == n) ? _done.First(d => d.Name == n).Seconds : previous.GetValueOrDefault(n),
                ["done_this_run"] = _done.Any(d => d.Name == n),
            }).ToArray());
            AtomicFile.WriteJson(_path, new JsonObject { ["format_version"] = 1, ["finished"] = finished, ["stages"] = stages });
        }
    }
}
