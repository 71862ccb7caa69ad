using System.Diagnostics;
using System.Globalization;
using Puzzle.Checkpoints;
using Puzzle.IO;
using Puzzle.Model;
using Puzzle.Stages;
using Puzzle.Stages.Assembly;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Search;
using TorchSharp;

namespace Puzzle.Benchmarks;

/// <summary>
/// How far apart do the children of several runs' searches run, timed side by side? Every solution file
/// (RUN/solutions/NAME.json, each labelled LABEL=PATH) becomes its architecture with random weights (speed does not
/// depend on them), the first solution's run gives the parent's architecture and the scenario, and all of them are
/// timed in the engine interleaved (EngineTimer, ABBA orders), in batches of ROUNDS rounds for MINUTES minutes, on the
/// process's torch threads. One moment's drift moves every ratio to the parent alike (ratio-drift), so the spread of the
/// children's ratios here is their architectures', not the moments at which their searches timed them.
/// Printed: per batch (TSV) the minute, the parent's request ms and every child's paired ratio (median over the batch's
/// rounds); then per child (lines starting "# child") its label, the median over all rounds of the paired ratio and its
/// 90% signed-rank interval, and the rounds.
///   Puzzle.Benchmarks side-by-side MINUTES ROUNDS LABEL=RUN/solutions/NAME.json...
/// </summary>
public static class SolutionsSideBySide
{
    public static void Run(double minutes, int rounds, string[] labelled)
    {
        var entries = labelled.Select(a => a.Split('=', 2) is [var label, var path] ? (Label: label, Path: path) : (Label: a, Path: a)).ToList();
        if (entries.Count == 0) throw new PuzzleException("side-by-side: give at least one LABEL=RUN/solutions/NAME.json");
        var (first, parent, children) = Architectures(entries.Select(e => e.Path).ToList());
        var sc = first.Config.Scenario;
        var scenario = ScenarioCost.From(sc);
        var models = ArchitectureTimer.TimingModels([parent, .. children], sc).ToList();
        try
        {
            Console.WriteLine($"# side-by-side: the parent of {first.Path} and {entries.Count} children, batches of {rounds} rounds for {minutes} min on {torch.get_num_threads()} threads; " +
                              $"batch {sc.Batch}, prompt {sc.PromptLength}, generation {sc.GenerationLength}, {sc.MeasureDtype}");
            Console.WriteLine(string.Join('\t', new[] { "minute", "parent_ms" }.Concat(entries.Select(e => e.Label))));
            var perRound = entries.Select(_ => new List<double>()).ToArray();
            var clock = Stopwatch.StartNew();
            int batch = 0;
            while (clock.Elapsed.TotalMinutes < minutes)
            {
                double minute = clock.Elapsed.TotalMinutes;
                var samples = EngineTimer.Interleaved(models, scenario, batch == 0 ? Math.Max(1, sc.WarmupRuns) : 1, rounds, seed: batch);
                double[] reference = [.. samples[0].Select(s => s.TotalSeconds)];
                var medians = new double[entries.Count];
                for (int m = 0; m < entries.Count; m++)
                {
                    double[] ratios = [.. reference.Zip(samples[m + 1], (p, c) => p / c.TotalSeconds)];
                    perRound[m].AddRange(ratios);
                    medians[m] = TimingStatistic.Median.Apply([.. ratios]);
                }
                Console.WriteLine(string.Join('\t', new[] { F(minute, "0.00"), F(1e3 * TimingStatistic.Median.Apply([.. reference]), "0.0") }.Concat(medians.Select(r => F(r, "0.000")))));
                batch++;
            }
            for (int m = 0; m < entries.Count; m++)
            {
                var ci = ArchitectureTimer.SignedRankInterval(perRound[m]);
                Console.WriteLine($"# child\t{entries[m].Label}\t{F(TimingStatistic.Median.Apply([.. perRound[m]]), "0.000")}\t" +
                                  $"{(ci is { } c ? $"{F(c.Low, "0.000")}\t{F(c.High, "0.000")}" : "\t")}\t{perRound[m].Count}\t{entries[m].Path}");
            }
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }

    /// <summary>The run of RUN/solutions/NAME.json.</summary>
    static RunDirectory RunOf(string path) => new(Path.GetDirectoryName(Path.GetDirectoryName(Path.GetFullPath(path)))!);

    /// <summary>
    /// The first solution's run, the parent's architecture and each solution's (all runs' parents must share one shape).
    /// </summary>
    public static (RunDirectory First, ModelConfig Parent, List<ModelConfig> Children) Architectures(IReadOnlyList<string> paths)
    {
        var first = RunOf(paths[0]);
        var parent = HfConfig.Read(first.ParentDir);
        var children = new List<ModelConfig>();
        foreach (string path in paths)
        {
            var run = RunOf(path);
            var config = HfConfig.Read(run.ParentDir);
            if ((config.VocabSize, config.HiddenSize, config.NumAttentionHeads, config.HeadDim, config.NumLayers) != (parent.VocabSize, parent.HiddenSize, parent.NumAttentionHeads, parent.HeadDim, parent.NumLayers)
                || !config.Blocks.SequenceEqual(parent.Blocks))
                throw new PuzzleException($"{path}: its run's parent ({run.ParentDir}) differs in shape from {first.ParentDir}'s; side by side needs one parent architecture");
            var layers = JsonFile.Read(path)["layers"].Items();
            children.Add(config.WithBlocks(ChildAssembler.Choices(run, path, layers).Select(c => new BlockConfig(c.Attention.Attention!, c.Ffn.Ffn!))));
        }
        return (first, parent, children);
    }

    static string F(double v, string format) => v.ToString(format, CultureInfo.InvariantCulture);
}
