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
using Puzzle.Runtime;
using Puzzle.Training;

namespace Puzzle;

/// <summary>
/// The whole method, in the paper's order (design.md 1). Every stage reads and writes files in the run directory
/// and skips work already done, so an interrupted run continues where it stopped and a changed constraint reruns
/// only the search and what follows it.
/// </summary>
public static class Pipeline
{
    public const string Solution = ChildRecipe.Solution;

    /// <summary>The stages in order, as `puzzle stage NAME` and `puzzle slurm --stages` name them.</summary>
    public static readonly string[] StageNames = ["parent", "data", "library", "score", "costs", "search", "assemble", "distill", "evaluate", "export"];

    /// <summary>
    /// Runs every stage, or with <paramref name="only"/> that one stage alone (a scheduler's job: no stage table);
    /// <paramref name="shard"/> is the library's and scoring's share of the work units.
    /// </summary>
    public static JsonObject Run(RunDirectory run, Action<string>? log = null, string? only = null, Shard? shard = null)
    {
        log ??= Log.Info;
        if (only is not null && !StageNames.Contains(only))
            throw new PuzzleException($"stage '{only}' is not one of {string.Join(", ", StageNames)}");
        TempFiles.Clean(run.Path);                                                                  // leftovers of killed runs
        var stages = new StageTable(run, log, only);
        stages.Run("1 parent", () => DescribeParent(run));
        stages.Run("2 data", () => PrepareData(run));
        stages.Run("3 library", () => BlockLibraryBuilder.Run(run, shard ?? Shard.All));
        stages.Run("4 score", () => BlockScorer.Run(run, shard ?? Shard.All));
        stages.Run("5 costs", () => BlockCosts.Run(run));
        stages.Run("6 search", () => Search(run));
        bool rebuilt = false;
        stages.Run("7 assemble", () => rebuilt = Assemble(run));
        stages.Run("8 distill", () => Distill(run, rebuilt));
        stages.Run("8b baselines", () => Stages.Baselines.BaselinesStage.Run(run, bench: o => BenchInFreshProcess(o) ?? BenchStage.Run(o)));
        JsonObject report = new();
        stages.Run("9 evaluate", () => report = Evaluate(run));
        stages.Run("10 export", () => ExportStage.Run(run.Artifact("child-gkd"), run.Artifact("export"), run.Config.Export.Dtype, run.Artifact("report.json"), run.Config.Export.PadFfn, formats: run.Config.Export.Formats));
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
            var manifest = DataManifest.Read(run.DataDir);                                           // prepared elsewhere: check it
            manifest.Split("test");                                                                   // it must have a test split
            CheckDataAgainstParent(run, manifest);
            return;
        }
        var options = new DataPrepareOptions
        {
            TokenizerDir = run.ParentDir, Inputs = d.Inputs.Select(run.Resolve).ToArray(), OutDir = run.DataDir,
            SeqLen = d.SeqLen, ValidationFraction = d.ValidationFraction, TestFraction = d.TestFraction, TextField = d.TextField, TxtDocuments = d.TxtDocuments,
        };
        var prepared = DataPreparer.Prepare(options);
        if (!prepared.Reused) return;
        try
        {
            foreach (string split in prepared.Manifest.Splits.Keys) using (new TokenDataset(run.DataDir, split)) { }
        }
        catch (PuzzleException e)
        {
            JsonFile.Discard(Path.Combine(run.DataDir, DataManifest.FileName), $"its shards do not match it ({e.Message})");
            DataPreparer.Prepare(options);
        }
    }

    /// <summary>
    /// A checkpoint directory a stage wrote (child/, child-gkd/): false, after a warning and deleting it, when its
    /// config or weights are torn, so the stage redoes it instead of every later stage failing.
    /// </summary>
    static bool IntactOrDiscarded(string dir)
    {
        if (!Directory.Exists(dir)) return false;
        try
        {
            HfConfig.Read(dir);
            foreach (string file in Checkpoint.WeightMap(dir).Values.Distinct()) using (SafeTensorsFile.Open(file)) { }
            return true;
        }
        catch (PuzzleException e)
        {
            Log.Warning($"{dir}: torn or incomplete checkpoint ({e.Message}); discarding it, the stage that wrote it is redone");
            Directory.Delete(dir, recursive: true);
            return false;
        }
    }

    /// <summary>The library records of the variants a solution uses: changes when one of them was trained again.</summary>
    static string LibraryKey(RunDirectory run, JsonField solution) => RunDirectory.Hash(string.Join("|",
        solution["layers"].Items().SelectMany(l => new[] { l["attention"].String(), l["ffn"].String() }).Distinct().Order(StringComparer.Ordinal)
            .Select(id => File.Exists(BlockLibrary.RecordPath(run.Path, id)) ? File.ReadAllText(BlockLibrary.RecordPath(run.Path, id)) : id)));

    /// <summary>Data given by data.path must be tokenized with the parent's tokenizer: ids past its vocabulary crash, others mislead.</summary>
    static void CheckDataAgainstParent(RunDirectory run, DataManifest manifest)
    {
        string manifestPath = Path.Combine(run.DataDir, DataManifest.FileName);
        var parent = HfConfig.Read(run.ParentDir);
        if (manifest.VocabSize > parent.VocabSize)
            throw new PuzzleException(
                $"{manifestPath}: tokenizer.vocab_size {manifest.VocabSize} is larger than the parent's vocab_size {parent.VocabSize} ({run.ParentDir}); prepare the data with the parent's tokenizer");
        string parentTokenizer;
        try { parentTokenizer = DataPreparer.TokenizerChecksum(run.ParentDir); }
        catch (PuzzleException)
        {
            Log.Warning($"{run.ParentDir}: no tokenizer files, so data.path cannot be checked against the parent's tokenizer");
            return;
        }
        if (parentTokenizer != manifest.TokenizerSha256)
            throw new PuzzleException(
                $"{manifestPath}: tokenizer.sha256 {manifest.TokenizerSha256[..12]}… is not the parent's tokenizer ({parentTokenizer[..12]}… in {run.ParentDir}); prepare the data with the parent's tokenizer");
    }

    static void Search(RunDirectory run)
    {
        var request = ChildRecipe.SearchRequestFor(run);
        if (!string.IsNullOrWhiteSpace(run.Config.Search.Sweep)) SearchStage.Run(run, request with { Sweep = run.Config.Search.Sweep, Name = "sweep", Solutions = 1 });
        SearchStage.Run(run, request);
    }

    /// <summary>Assembles the chosen child unless RUN/child already holds exactly this solution; true when rebuilt.</summary>
    static bool Assemble(RunDirectory run)
    {
        var solution = JsonFile.Read(run.Artifact(SearchStage.Folder, Solution + ".json"));
        string child = run.Artifact("child");
        string libraryKeyPath = Path.Combine(child, "puzzle_library.json");
        string libraryKey = LibraryKey(run, solution);
        var existing = JsonFile.ReadDerived(Path.Combine(child, "puzzle_solution.json"));
        if (existing is { } e && e["layers"].Node?.ToJsonString() == solution["layers"].Node?.ToJsonString() && IntactOrDiscarded(child))
        {
            if (JsonFile.ReadDerived(libraryKeyPath)?["key"].OptionalString() == libraryKey)
            {
                Log.Info("assemble: RUN/child already holds this solution; reusing it");
                return false;
            }
            Log.Warning($"{child}: library variants it was assembled from were trained again (or their record is missing); assembling it again");
        }
        ChildAssembler.Run(run, Solution, child);
        AtomicFile.WriteJson(libraryKeyPath, new JsonObject { ["format_version"] = 1, ["key"] = libraryKey });
        return true;
    }

    static void Distill(RunDirectory run, bool childRebuilt)
    {
        string outDir = run.Artifact("child-gkd");
        if (childRebuilt && Directory.Exists(outDir)) Directory.Delete(outDir, recursive: true);   // distilled from another child
        if (File.Exists(Path.Combine(outDir, "config.json"))) IntactOrDiscarded(outDir);
        Distiller.Run(ChildRecipe.DistillOptionsFor(run, run.Artifact("child"), outDir, run.Config.Gkd.Tokens));
        string solution = Path.Combine(run.Artifact("child"), "puzzle_solution.json");
        if (File.Exists(solution)) AtomicFile.Copy(solution, Path.Combine(outDir, "puzzle_solution.json"));
    }

    /// <summary>Eval and bench of parent vs distilled child (cached by the child's fingerprint), then the report.</summary>
    static JsonObject Evaluate(RunDirectory run)
    {
        string child = run.Artifact("child-gkd");
        string evalKey = ArtifactKeys.Evaluation(run, child), benchKey = ArtifactKeys.Bench(run, child);
        string evalPath = run.Artifact("eval", "eval.json"), benchPath = run.Artifact("eval", "bench.json");
        static JsonNode? Cached(string path, string key) => JsonFile.ReadDerived(path) is { } j && j["key"].OptionalString() == key ? j.Node : null;
        var e = run.Config.Evaluation;
        var eval = Cached(evalPath, evalKey);
        if (eval is null)
        {
            var fresh = EvalStage.Run(ChildRecipe.EvalOptionsFor(run, child));
            fresh["key"] = evalKey;
            AtomicFile.WriteJson(evalPath, fresh);
            eval = fresh;
        }
        var bench = Cached(benchPath, benchKey);
        if (bench is null)
        {
            var sc = run.Config.Scenario;
            var options = ChildRecipe.BenchOptionsFor(run, child);
            // Measured after hours of training in this process, generation ran ~20% slower for the child than in a
            // fresh process (allocator and thread-pool state): benchmark in a fresh `puzzle bench` where we can.
            var fresh = BenchInFreshProcess(options) ?? BenchStage.Run(options);
            fresh["key"] = benchKey;
            AtomicFile.WriteJson(benchPath, fresh);
            bench = fresh;
        }
        string distillation = Path.Combine(child, "distillation.json");
        return ReportStage.Write(run, Solution, child, eval, bench, JsonFile.ReadDerived(distillation)?.Node);
    }

    static JsonObject? BenchInFreshProcess(BenchOptions o)
    {
        var info = SelfLaunch.StartInfo(["bench", "--models", .. o.Models, "--batch", $"{o.Batch}", "--prompt-len", $"{o.PromptLength}",
            "--gen-len", $"{o.GenerationLength}", "--repeats", $"{o.Repeats}", "--dtype", o.Dtype, "--device", o.Device, "--json"]);
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

    /// <summary>The stage table: done / running / pending with elapsed times; the last run's durations give ETAs.</summary>
    sealed class StageTable(RunDirectory run, Action<string> log, string? only)
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
