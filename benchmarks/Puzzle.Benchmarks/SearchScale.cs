using System.Diagnostics;
using Puzzle.Stages.Search;

namespace Puzzle.Benchmarks;

/// <summary>
/// A Llama-70B-sized search: 80 layers, 6 attention × 9 FFN variants = 54 composed candidates per layer, synthetic
/// scores and costs (cheaper variants score worse). Targets: one solve to optimality or 0.1% in under 5 s; 10 diverse
/// solutions in under 30 s. Run: dotnet run -c Release --project benchmarks/Puzzle.Benchmarks -- search
/// </summary>
public static class SearchScale
{
    public static void Run()
    {
        var random = new Random(70);
        var groups = new List<SearchGroup>();
        double[] kvShare = [1, 0.5, 0.25, 0.125, 0.05, 0];                                      // kv8, kv4, kv2, kv1, linear, no-op
        double[] ffnShare = [1, 0.875, 0.75, 0.5, 0.25, 0.2, 0.1, 0.05, 0];                      // widths, linear, no-op
        for (int layer = 0; layer < 80; layer++)
        {
            double sensitivity = 0.2 + random.NextDouble() * (layer is < 4 or > 75 ? 5 : 1);
            var options = new List<BlockOption>();
            foreach (double a in kvShare)
                foreach (double f in ffnShare)
                {
                    double kl = sensitivity * (Math.Pow(1 - a, 2) * (0.5 + random.NextDouble()) + Math.Pow(1 - f, 2) * (0.8 + random.NextDouble())) * 0.01;
                    double time = 0.3 + 0.9 * a + 1.6 * f + 0.05 * random.NextDouble();
                    double memory = 1e8 * (0.4 * Math.Min(1, a * 4) + 1.8 * f) + 5e7 * a;
                    options.Add(new BlockOption($"L{layer}.attn.{a}", $"L{layer}.ffn.{f}", kl, time, memory, (long)(memory / 2)));
                }
            groups.Add(new SearchGroup(layer, "block", options));
        }
        var problem = new SearchProblem(groups, 80, 20, 2e9, 1_000_000_000, 64, 1024, "synthetic", "composed");
        var parent = problem.Totals(Enumerable.Repeat(0, 80).ToArray());
        var constraints = new SearchConstraints(MaxTimeMs: parent.TimeMs / 2.17, MaxMemoryBytes: parent.MemoryBytes * 0.75);
        Console.WriteLine($"instance: 80 layers × 54 candidates = {80 * 54} binaries; constraints: 2.17x throughput, 75% memory");

        var clock = Stopwatch.StartNew();
        var one = MipSearch.Solve(problem, constraints, relativeGap: 1e-3)!;
        MipSearch.Verify(problem, constraints, one.Choice, one.SolverObjective);
        Console.WriteLine($"one solution: {one.Status}, relative gap {one.Gap:P3}, KL {one.Totals.Kl:F4}, {clock.Elapsed.TotalSeconds:F2} s");
        clock.Restart();
        var exact = MipSearch.Solve(problem, constraints, relativeGap: 0)!;
        Console.WriteLine($"one solution, proven optimal: {exact.Status}, KL {exact.Totals.Kl:F4}, {clock.Elapsed.TotalSeconds:F2} s");

        clock.Restart();
        var previous = new List<IReadOnlyList<int>>();
        for (int k = 0; k < 10; k++)
        {
            var s = MipSearch.Solve(problem, constraints, previous, diversity: 0.8, relativeGap: 1e-3)!;
            MipSearch.Verify(problem, constraints, s.Choice, s.SolverObjective, previous, 0.8);
            previous.Add(s.Choice);
        }
        Console.WriteLine($"10 diverse solutions (alpha 0.8, gap 0.1%): {clock.Elapsed.TotalSeconds:F2} s");
    }
}
