using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Config;
using Puzzle.Data;
using Puzzle.IO;
using Puzzle.Stages;
using Puzzle.Stages.Assembly;
using Puzzle.Stages.Benchmark;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Evaluation;
using Puzzle.Stages.Library;
using Puzzle.Stages.Report;
using Puzzle.Stages.Scoring;
using Puzzle.Stages.Search;
using Puzzle.Training;

namespace Puzzle;

/// <summary>
/// The whole method, in the paper's order (design.md 1). Every stage reads and writes files in the run directory
/// and skips work already done, so an interrupted run continues where it stopped and a changed constraint reruns
/// only the search and what follows it.
/// </summary>
public static class Pipeline
{
    public const string Solution = "child";

    public static JsonObject Run(RunDirectory run, Action<string>? log = null)
    {
        log ??= Log.Info;
        var stages = new StageTable(run, log);
        stages.Run("1 parent", () => DescribeParent(run));
        stages.Run("2 data", () => PrepareData(run));
        stages.Run("3 library", () => BlockLibraryBuilder.Run(run, Shard.All));
        stages.Run("4 score", () => BlockScorer.Run(run, Shard.All));
        stages.Run("5 costs", () => BlockCosts.Run(run));
        stages.Run("6 search", () => Search(run));
        bool rebuilt = false;
        stages.Run("7 assemble", () => rebuilt = Assemble(run));
        stages.Run("8 distill", () => Distill(run, rebuilt));
        stages.Run("8b baselines", () => Stages.Baselines.BaselinesStage.Run(run, bench: o => BenchInFreshProcess(o) ?? BenchStage.Run(o)));
        JsonObject report = new();
        stages.Run("9 evaluate", () => report = Evaluate(run));
        stages.Run("10 export", () => ExportStage.Run(run.Artifact("child-gkd"), run.Artifact("export"), run.Config.Export.Dtype, run.Artifact("report.json"), run.Config.Export.PadFfn));
        stages.Finish();
        return report;
    }

    static void DescribeParent(RunDirectory run)
    {
        var config = HfConfig.Read(run.ParentDir);
        AtomicFile.WriteJson(run.Artifact("parent.json"), new JsonObject
        {
            ["format_version"] = 1, ["path"] = run.ParentDir, ["fingerprint"] = RunDirectory.ParentFingerprint(run.ParentDir),
            ["layers"] = config.NumLayers, ["hidden_size"] = config.HiddenSize, ["parameters"] = config.TotalParameters,
            ["kv_bytes_per_token_bf16"] = config.KvBytesPerToken(2),
        });
    }

    static void PrepareData(RunDirectory run)
    {
        var d = run.Config.Data;
        if (!string.IsNullOrWhiteSpace(d.Path))
        {
            DataManifest.Read(run.DataDir);                                                        // prepared elsewhere: just check it
            return;
        }
        DataPreparer.Prepare(new DataPrepareOptions
        {
            TokenizerDir = run.ParentDir, Inputs = d.Inputs.Select(run.Resolve).ToArray(), OutDir = run.DataDir,
            SeqLen = d.SeqLen, ValidationFraction = d.ValidationFraction, TextField = d.TextField,
        });
    }

    static void Search(RunDirectory run)
    {
        var s = run.Config.Search;
        var request = new SearchRequest
        {
            MaxMemoryGiB = s.MaxMemoryGib, MinThroughputRatio = s.MinThroughputRatio, MinTokensPerSecond = s.MinTokensPerS,
            MaxLatencyMs = s.MaxLatencyMs, MaxParameters = s.MaxParams, Target = s.Target, Diversity = s.Diversity, Name = Solution,
        };
        if (!string.IsNullOrWhiteSpace(s.Sweep)) SearchStage.Run(run, request with { Sweep = s.Sweep, Name = "sweep" });
        SearchStage.Run(run, request with { Solutions = 1 });
    }

    /// <summary>Assembles the chosen child unless RUN/child already holds exactly this solution; true when rebuilt.</summary>
    static bool Assemble(RunDirectory run)
    {
        string solution = File.ReadAllText(run.Artifact(SearchStage.Folder, Solution + ".json"));
        string existing = Path.Combine(run.Artifact("child"), "puzzle_solution.json");
        if (File.Exists(existing) && SameLayers(File.ReadAllText(existing), solution) && File.Exists(Path.Combine(run.Artifact("child"), "config.json")))
        {
            Log.Info("assemble: RUN/child already holds this solution; reusing it");
            return false;
        }
        ChildAssembler.Run(run, Solution, run.Artifact("child"));
        return true;
    }

    static bool SameLayers(string a, string b) =>
        JsonNode.Parse(a)!["layers"]!.ToJsonString() == JsonNode.Parse(b)!["layers"]!.ToJsonString();

    static void Distill(RunDirectory run, bool childRebuilt)
    {
        string outDir = run.Artifact("child-gkd");
        if (childRebuilt && Directory.Exists(outDir)) Directory.Delete(outDir, recursive: true);   // distilled from another child
        var g = run.Config.Gkd;
        Distiller.Run(new DistillOptions
        {
            TeacherDir = run.ParentDir, StudentDir = run.Artifact("child"), DataDir = run.DataDir, OutDir = outDir,
            Tokens = g.Tokens, Batch = g.Batch, LearningRate = g.Lr, CosineWeight = g.CosineWeight, KlWeight = g.KlWeight,
            LmWeight = g.LmWeight, Temperature = g.Temperature, Precision = g.Precision, RestartOnChangedSettings = true,
        });
        string solution = Path.Combine(run.Artifact("child"), "puzzle_solution.json");
        if (File.Exists(solution)) AtomicFile.Copy(solution, Path.Combine(outDir, "puzzle_solution.json"));
    }

    /// <summary>Eval and bench of parent vs distilled child (cached by the child's fingerprint), then the report.</summary>
    static JsonObject Evaluate(RunDirectory run)
    {
        string child = run.Artifact("child-gkd");
        string key = RunDirectory.Hash($"{RunDirectory.ParentFingerprint(run.ParentDir)}|{RunDirectory.ParentFingerprint(child)}|{run.Config.Evaluation}|{run.Config.Scenario}");
        string evalPath = run.Artifact("eval", "eval.json"), benchPath = run.Artifact("eval", "bench.json");
        JsonNode? Cached(string path) => File.Exists(path) && JsonNode.Parse(File.ReadAllText(path)) is { } j && j["key"]?.GetValue<string>() == key ? j : null;
        var e = run.Config.Evaluation;
        var eval = Cached(evalPath);
        if (eval is null)
        {
            var fresh = EvalStage.Run(new EvalOptions
            {
                ModelDir = child, ReferenceDir = run.ParentDir, DataDir = run.DataDir, Tasks = e.Tasks.Select(run.Resolve).ToArray(),
                TaskLimit = e.TaskLimit, MaxTokens = e.MaxTokens,
            });
            fresh["key"] = key;
            AtomicFile.WriteJson(evalPath, fresh);
            eval = fresh;
        }
        var bench = Cached(benchPath);
        if (bench is null)
        {
            var sc = run.Config.Scenario;
            var options = new BenchOptions
            {
                Models = [run.ParentDir, child], Batch = sc.Batch, PromptLength = sc.PromptLength, GenerationLength = sc.GenerationLength,
                Repeats = e.BenchRepeats, Dtype = e.BenchDtype,
            };
            // Measured after hours of training in this process, generation ran ~20% slower for the child than in a
            // fresh process (allocator and thread-pool state): benchmark in a fresh `puzzle bench` where we can.
            var fresh = BenchInFreshProcess(options) ?? BenchStage.Run(options);
            fresh["key"] = key;
            AtomicFile.WriteJson(benchPath, fresh);
            bench = fresh;
        }
        string distillation = Path.Combine(child, "distillation.json");
        return ReportStage.Write(run, Solution, child, eval, bench, File.Exists(distillation) ? JsonNode.Parse(File.ReadAllText(distillation)) : null);
    }

    static JsonObject? BenchInFreshProcess(BenchOptions o)
    {
        string? cli = Environment.GetCommandLineArgs().FirstOrDefault();
        if (cli is null || !Path.GetFileName(cli).Equals("Puzzle.Cli.dll", StringComparison.OrdinalIgnoreCase) || Environment.ProcessPath is not { } host)
            return null;
        var info = new ProcessStartInfo(host) { RedirectStandardOutput = true, RedirectStandardError = true };
        string[] arguments = [cli, "bench", "--models", .. o.Models, "--batch", $"{o.Batch}", "--prompt-len", $"{o.PromptLength}",
            "--gen-len", $"{o.GenerationLength}", "--repeats", $"{o.Repeats}", "--dtype", o.Dtype, "--device", o.Device, "--json"];
        foreach (string a in arguments)
            info.ArgumentList.Add(a);
        Log.Info("bench: running in a fresh process");
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0) throw new PuzzleException($"bench: the benchmark process failed: {stderr.Result.Trim()}");
        var result = JsonNode.Parse(stdout)!.AsObject();
        result["process"] = "fresh";
        return result;
    }

    /// <summary>The stage table: done / running / pending with elapsed times; the last run's durations give ETAs.</summary>
    sealed class StageTable(RunDirectory run, Action<string> log)
    {
        readonly string _path = run.Artifact("pipeline.json");
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
