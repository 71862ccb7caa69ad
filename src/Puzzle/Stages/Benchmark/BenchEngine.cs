namespace Puzzle.Stages.Benchmark;

/// <summary>
/// Which engine a benchmark runs in: ours, llama.cpp, or both side by side. The run config's
/// <c>evaluation.bench_engine</c> also takes <see cref="Auto"/>, resolved here: both where the project's llama.cpp
/// (scripts/install-llama-cpp.sh) is installed, ours otherwise. The resolved engine is part of the bench key
/// (<see cref="ArtifactKeys.Bench"/>), so another choice benches again and the same one reuses bench.json.
/// </summary>
public static class BenchEngine
{
    public const string Auto = "auto", Puzzle = "puzzle", LlamaCpp = "llama.cpp", Both = "both";

    /// <summary>The engines a benchmark runs in (what <c>puzzle bench --engine</c> takes).</summary>
    public static readonly IReadOnlyList<string> Engines = [Puzzle, LlamaCpp, Both];

    public static bool LlamaCppInstalled => LlamaCppBench.FindTool("llama-batched-bench") is not null;

    /// <summary>Throws, naming <paramref name="what"/>, unless <paramref name="engine"/> is one of <see cref="Engines"/>.</summary>
    public static void Check(string engine, string what)
    {
        if (!Engines.Contains(engine)) throw new PuzzleException($"{what} '{engine}' is not an engine (expected {string.Join(", ", Engines)})");
    }

    /// <summary>The engine <paramref name="setting"/> (a value of <see cref="Config.EvaluationSection.BenchEngines"/>) means on this machine, and why.</summary>
    public static string Resolve(string setting, out string why)
    {
        if (setting != Auto)
        {
            why = $"evaluation.bench_engine is {setting}";
            return setting;
        }
        if (LlamaCppBench.FindTool("llama-batched-bench") is { } tool)
        {
            why = $"evaluation.bench_engine auto: llama.cpp is installed ({tool}), so both engines";
            return Both;
        }
        why = $"evaluation.bench_engine auto: llama.cpp is not installed ({LlamaCppBench.InstallHint} to add it), so ours only";
        return Puzzle;
    }
}
