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
