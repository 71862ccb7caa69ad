using System.Diagnostics;
using Google.OrTools.LinearSolver;

namespace Puzzle.Stages.Search;

public sealed record SearchSolution(IReadOnlyList<int> Choice, SearchTotals Totals, double SolverObjective, string Status, double Seconds, double Gap);

/// <summary>
/// The mixed-integer program (design.md 5) with OR-Tools (SCIP): binary x[g, o], exactly one option per group,
/// minimise summed KL, subject to memory, generation time (throughput / latency) and parameter bounds; earlier
/// solutions can be excluded by an overlap bound Σ x·x_prev ≤ α·L.
/// </summary>
public static class MipSearch
{
    public static SearchSolution? Solve(SearchProblem p, SearchConstraints c, IReadOnlyList<IReadOnlyList<int>>? previous = null,
        double diversity = 1.0, double relativeGap = 1e-3, double timeLimitSeconds = 60)
        => Optimise(p, c, previous, diversity, relativeGap, timeLimitSeconds, objective: null);

    /// <summary>Solves with a custom linear objective over (group, option) (used to find the tightest feasible bound).</summary>
    public static SearchSolution? Optimise(SearchProblem p, SearchConstraints c, IReadOnlyList<IReadOnlyList<int>>? previous,
        double diversity, double relativeGap, double timeLimitSeconds, Func<BlockOption, double>? objective)
    {
        var clock = Stopwatch.StartNew();
        using var solver = Solver.CreateSolver("SCIP") ?? throw new PuzzleException("OR-Tools has no SCIP backend in this build");
        var x = new Variable[p.Groups.Count][];
        for (int g = 0; g < p.Groups.Count; g++)
        {
            var options = p.Groups[g].Options;
            x[g] = new Variable[options.Count];
            var one = solver.MakeConstraint(1, 1, $"one_{g}");
            for (int o = 0; o < options.Count; o++)
            {
                x[g][o] = solver.MakeBoolVar($"x_{g}_{o}");
                one.SetCoefficient(x[g][o], 1);
            }
        }
        void Bound(double constant, double max, Func<BlockOption, double> coefficient, string name)
        {
            var row = solver.MakeConstraint(double.NegativeInfinity, max - constant, name);
            for (int g = 0; g < p.Groups.Count; g++)
                for (int o = 0; o < p.Groups[g].Options.Count; o++)
                    row.SetCoefficient(x[g][o], coefficient(p.Groups[g].Options[o]));
        }
        if (c.MaxMemoryBytes is { } m) Bound(p.NonBlockMemoryBytes, m, o => o.MemoryBytes, "memory");
        if (c.MaxTimeMs is { } t) Bound(p.NonBlockTimeMs, t, o => o.TimeMs, "time");
        if (c.MaxParameters is { } n) Bound(p.NonBlockParameters, n, o => o.Parameters, "parameters");
        if (c.MinAttentionLayers is { } a) Bound(0, -a, o => o.MixesTokens ? -1 : 0, "attention");            // Σ mixing ≥ a
        foreach (var earlier in previous ?? [])
        {
            // Share at most α·(number of choices) with each earlier solution (α·L for composed blocks).
            var overlap = solver.MakeConstraint(double.NegativeInfinity, MaxShared(p, diversity), "diversity");
            for (int g = 0; g < p.Groups.Count; g++) overlap.SetCoefficient(x[g][earlier[g]], 1);
        }
        var goal = solver.Objective();
        for (int g = 0; g < p.Groups.Count; g++)
            for (int o = 0; o < p.Groups[g].Options.Count; o++)
                goal.SetCoefficient(x[g][o], (objective ?? (opt => opt.Kl))(p.Groups[g].Options[o]));
        goal.SetMinimization();
        solver.SetTimeLimit((long)(timeLimitSeconds * 1000));
        // Same problem, same answer: one thread and fixed seeds (SCIP's defaults, pinned so a changed default cannot
        // make re-searches differ); ties between equal objectives then resolve the same way every time.
        solver.SetNumThreads(1);
        if (!solver.SetSolverSpecificParametersAsString("randomization/randomseedshift = 0\nrandomization/permutationseed = 0\nrandomization/lpseed = 0\n"))
            throw new PuzzleException("OR-Tools SCIP rejected the fixed-seed parameters");
        var parameters = new MPSolverParameters();
        parameters.SetDoubleParam(MPSolverParameters.DoubleParam.RELATIVE_MIP_GAP, relativeGap);
        var status = solver.Solve(parameters);
        if (status is not (Solver.ResultStatus.OPTIMAL or Solver.ResultStatus.FEASIBLE)) return null;
        var choice = x.Select(row => Array.FindIndex(row, v => v.SolutionValue() > 0.5)).ToArray();
        double bound = goal.BestBound(), value = goal.Value();
        double gap = Math.Abs(value) < 1e-12 ? 0 : Math.Max(0, (value - bound) / Math.Abs(value));
        string label = status != Solver.ResultStatus.OPTIMAL ? "feasible (time limit reached)"
            : gap <= 1e-9 ? "optimal" : $"optimal within the relative gap {relativeGap:G3}";
        return new SearchSolution(choice, p.Totals(choice), value, label, clock.Elapsed.TotalSeconds, gap);
    }

    public static double MaxShared(SearchProblem p, double diversity) => Math.Floor(diversity * p.Groups.Count + 1e-9);

    /// <summary>
    /// Trust but verify: recomputes the objective and every constraint from the problem's data in plain code and
    /// checks exactly one option per group. Throws naming the first problem found.
    /// </summary>
    public static SearchTotals Verify(SearchProblem p, SearchConstraints c, IReadOnlyList<int> choice, double? solverObjective = null,
        IReadOnlyList<IReadOnlyList<int>>? previous = null, double diversity = 1.0)
    {
        if (choice.Count != p.Groups.Count)
            throw new PuzzleException($"verification: {choice.Count} choices for {p.Groups.Count} groups");
        for (int g = 0; g < choice.Count; g++)
            if (choice[g] < 0 || choice[g] >= p.Groups[g].Options.Count)
                throw new PuzzleException($"verification: group {g} (layer {p.Groups[g].Layer} {p.Groups[g].Kind}) has no single chosen option");
        var totals = p.Totals(choice);
        var violations = c.Violations(totals).ToList();
        if (violations.Count > 0) throw new PuzzleException($"verification: the solution violates {string.Join("; ", violations)}");
        if (solverObjective is { } reported && Math.Abs(reported - totals.Kl) > 1e-6 * Math.Max(1, Math.Abs(totals.Kl)))
            throw new PuzzleException($"verification: the solver reports objective {reported} but the choices sum to {totals.Kl}");
        foreach (var earlier in previous ?? [])
        {
            int shared = Enumerable.Range(0, choice.Count).Count(g => choice[g] == earlier[g]);
            if (shared > MaxShared(p, diversity))
                throw new PuzzleException($"verification: shares {shared} choices with an earlier solution (at most {MaxShared(p, diversity)})");
        }
        return totals;
    }
}
