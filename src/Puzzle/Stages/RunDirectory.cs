using Puzzle.Checkpoints;
using Puzzle.Config;
using Puzzle.Domain;

namespace Puzzle.Stages;

/// <summary>A run directory: its config (RUN/config.json; relative paths are relative to RUN) and its artifacts.</summary>
public sealed class RunDirectory
{
    public string Path { get; }
    public RunConfig Config { get; }

    /// <param name="overrides">"section.key=value" settings applied to this process's view of the config (a CLI
    /// stage command's flags); RUN/config.json is not changed.</param>
    public RunDirectory(string path, IEnumerable<string>? overrides = null)
    {
        Path = System.IO.Path.GetFullPath(path);
        string configPath = System.IO.Path.Combine(Path, RunConfig.FileName);
        if (!File.Exists(configPath))
            throw new PuzzleException($"{configPath}: not found (a run directory holds the run config; `puzzle run CONFIG --run {path}` creates it)");
        Config = RunConfig.Read(configPath, overrides);
        if (string.IsNullOrWhiteSpace(Config.Parent.Path)) throw new PuzzleException($"{configPath}: parent.path is not set");
    }

    /// <summary>
    /// This process's share of the work units of the stages that split (library, score): `--shard i/n`, a Slurm array
    /// task's. <see cref="Shard.All"/> (the default) does every unit; the other stages ignore it.
    /// </summary>
    public Shard Shard { get; init; } = Shard.All;

    VariantCatalog? _variants;

    /// <summary>The run's variants: the parent's config.json and search_space, expanded once (SearchSpace.Expand is called nowhere else by the stages).</summary>
    public VariantCatalog Variants => _variants ??= VariantCatalog.Expand(HfConfig.Read(ParentDir), Config.SearchSpace);

    public string Resolve(string path) => System.IO.Path.GetFullPath(System.IO.Path.Combine(Path, path));
    public string ParentDir => Resolve(Config.Parent.Path);
    /// <summary>data.path, or RUN/data when the pipeline prepares data.inputs itself.</summary>
    public string DataDir => !string.IsNullOrWhiteSpace(Config.Data.Path) ? Resolve(Config.Data.Path)
        : Config.Data.Inputs.Length > 0 ? Artifact("data")
        : throw new PuzzleException($"{System.IO.Path.Combine(Path, RunConfig.FileName)}: set data.path (prepared data) or data.inputs (text to prepare)");
    public string Artifact(params string[] parts) => System.IO.Path.Combine([Path, .. parts]);

    // The catalogue of a run's artifacts: every stage finds its inputs and writes its output here, by these names only.
    public const string LibraryFolder = "library", LibraryIndexFile = "library.json", ScoresFolder = "scores", ScoresFile = "scores.json",
        CostsFile = "costs.json", SolutionsFolder = "solutions", ChildFolder = "child", EvalFolder = "eval";

    /// <summary>RUN/parent.json: what the parent is (stage 1).</summary>
    public string ParentInfo => Artifact("parent.json");
    /// <summary>RUN/library/: one record (+ weights when trained) per variant, and library.json (stage 3).</summary>
    public string Library => Artifact(LibraryFolder);
    public string LibraryIndex => Artifact(LibraryFolder, LibraryIndexFile);
    public string LibraryRecord(string variantId) => Artifact(LibraryFolder, variantId + ".json");
    public string LibraryWeights(string variantId) => Artifact(LibraryFolder, variantId + ".safetensors");
    /// <summary>RUN/scores/ (one file per candidate) and RUN/scores.json (stage 4).</summary>
    public string ScoresDir => Artifact(ScoresFolder);
    public string Scores => Artifact(ScoresFile);
    /// <summary>RUN/costs.json (stage 5).</summary>
    public string Costs => Artifact(CostsFile);
    /// <summary>RUN/solutions/NAME.json (stage 6); the pipeline's is <see cref="ChildRecipe.Solution"/>.</summary>
    public string Solutions => Artifact(SolutionsFolder);
    public string Solution(string name) => Artifact(SolutionsFolder, name + ".json");
    /// <summary>RUN/child/: the assembled child (stage 7); RUN/child-gkd/: after global distillation (stage 8).</summary>
    public string Child => Artifact(ChildFolder);
    public string ChildGkd => Artifact(ChildFolder + "-gkd");
    /// <summary>RUN/eval/eval.json and bench.json (stage 9), the report, the export (stage 10).</summary>
    public string Eval => Artifact(EvalFolder, "eval.json");
    public string Bench => Artifact(EvalFolder, "bench.json");
    public string ContinuationTask => Artifact(EvalFolder, "test_continuation.jsonl");
    /// <summary>The parent's own per-window and per-item test results, measured once per run and read by every evaluation against it.</summary>
    public string ReferenceMetrics => Artifact(EvalFolder, "reference-metrics.json");
    /// <summary>The parent's final hidden states on the test split (<see cref="Runtime.ReferenceStates"/>), written by the first evaluation against it.</summary>
    public string ReferenceStates => Artifact(EvalFolder, "reference-states.bin");
    public string Report => Artifact("report.json");
    public string ReportMarkdown => Artifact("report.md");
    public string Export => Artifact("export");
    /// <summary>RUN/pipeline.json: the stage table's durations.</summary>
    public string PipelineState => Artifact("pipeline.json");

    /// <summary>The parent's (or any model directory's) weights, cheaply: <see cref="IO.Fingerprint.OfModel"/>.</summary>
    public static string ParentFingerprint(string parentDir) => IO.Fingerprint.OfModel(parentDir);

    public static string Hash(string text) => IO.Fingerprint.Hash(text);
}

/// <summary>`--shard i/n`: this process does the work units whose index in canonical order is i modulo n.</summary>
public sealed record Shard(int Index, int Count)
{
    public static readonly Shard All = new(0, 1);

    public static Shard Parse(string? text)
    {
        if (string.IsNullOrEmpty(text)) return All;
        var parts = text.Split('/');
        if (parts.Length == 2 && int.TryParse(parts[0], out int i) && int.TryParse(parts[1], out int n) && n > 0 && i >= 0 && i < n)
            return new Shard(i, n);
        throw new PuzzleException($"--shard '{text}': expected i/n with 0 <= i < n, e.g. 0/2");
    }

    public bool Owns(int unitIndex) => unitIndex % Count == Index;

    public override string ToString() => $"{Index}/{Count}";
}
