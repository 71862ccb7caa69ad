using Puzzle.Stages.Search;

namespace Puzzle.Tests.Stages;

public sealed class SearchTests
{
    /// <summary>Random options; option 0 of every group plays the parent (slowest, KL 0).</summary>
    static SearchProblem Random(int layers, int options, int seed, int groupsPerLayer = 1)
    {
        var random = new Random(seed);
        var groups = new List<SearchGroup>();
        for (int layer = 0; layer < layers; layer++)
            for (int g = 0; g < groupsPerLayer; g++)
            {
                var list = new List<BlockOption> { new($"L{layer}.g{g}.parent", "", 0, 10, 1000, 100) };
                for (int o = 1; o < options; o++)
                    list.Add(new BlockOption($"L{layer}.g{g}.o{o}", null, random.NextDouble(), 10 * random.NextDouble(), 1000 * random.NextDouble(), random.Next(0, 100)));
                groups.Add(new SearchGroup(layer, $"g{g}", list));
            }
        return new SearchProblem(groups, layers, 5, 500, 50, 16, 128, "measured", "composed");
    }

    static (double Kl, int[] Choice) BruteForce(SearchProblem p, SearchConstraints c)
    {
        double best = double.PositiveInfinity;
        int[] bestChoice = [];
        var choice = new int[p.Groups.Count];
        void Recurse(int g)
        {
            if (g == p.Groups.Count)
            {
                var t = p.Totals(choice);
                if (!c.Violations(t, 0).Any() && t.Kl < best) (best, bestChoice) = (t.Kl, (int[])choice.Clone());
                return;
            }
            for (int o = 0; o < p.Groups[g].Options.Count; o++) { choice[g] = o; Recurse(g + 1); }
        }
        Recurse(0);
        return (best, bestChoice);
    }

    [Theory]
    [InlineData(4, 5, 11)]
    [InlineData(5, 4, 12)]
    public void MinAttentionLayers_MatchesEnumeration_AndEachRungKeepsMore(int layers, int options, int seed)
    {
        // Options whose attention mixes tokens at random (the parent's always does), so the unconstrained optimum
        // drops attention somewhere and each rung of the ladder must keep more.
        var random = new Random(seed);
        var baseProblem = Random(layers, options, seed);
        var p = baseProblem with
        {
            Groups = baseProblem.Groups.Select(g => g with
            {
                Options = g.Options.Select((o, i) => o with { MixesTokens = i == 0 || random.NextDouble() < 0.4 }).ToList(),
            }).ToList(),
        };
        var parent = p.Totals(new int[p.Groups.Count]);
        Assert.Equal(layers, parent.AttentionLayers);
        var free = MipSearch.Solve(p, new SearchConstraints(MaxTimeMs: parent.TimeMs / 1.5), relativeGap: 0);
        Assert.NotNull(free);
        int kept = free!.Totals.AttentionLayers;
        Assert.Equal(Enumerable.Range(0, p.Groups.Count).Count(g => p.Groups[g].Options[free.Choice[g]].MixesTokens), kept);
        for (int more = 1; kept + more <= layers; more++)
        {
            var c = new SearchConstraints(MaxTimeMs: parent.TimeMs / 1.5) { MinAttentionLayers = kept + more };
            var (best, _) = BruteForce(p, c);
            var rung = MipSearch.Solve(p, c, relativeGap: 0);
            if (double.IsPositiveInfinity(best)) { Assert.Null(rung); continue; }
            Assert.NotNull(rung);
            Assert.Equal(best, rung!.Totals.Kl, tolerance: 1e-9);
            Assert.True(rung.Totals.AttentionLayers >= kept + more);
            Assert.True(rung.Totals.Kl >= free.Totals.Kl - 1e-12);
            // Verification counts them too: one more than it keeps is a violation, named.
            int above = rung.Totals.AttentionLayers + 1;
            string message = Assert.Throws<PuzzleException>(() => MipSearch.Verify(p, c with { MinAttentionLayers = above }, rung.Choice)).Message;
            Assert.Contains($"{rung.Totals.AttentionLayers} attention layers < {above}", message);
        }
    }

    [Theory]
    [InlineData(4, 5, 1, 1)]
    [InlineData(3, 6, 2, 1)]
    [InlineData(3, 4, 3, 2)]                                                                   // subblock-style: two groups per layer
    public void Solve_TinyInstances_MatchEnumeration(int layers, int options, int seed, int groupsPerLayer)
    {
        var p = Random(layers, options, seed, groupsPerLayer);
        var parent = p.Totals(new int[p.Groups.Count]);
        foreach (var c in new[]
                 {
                     new SearchConstraints(MaxTimeMs: parent.TimeMs / 1.6),
                     new SearchConstraints(MaxMemoryBytes: parent.MemoryBytes * 0.6, MaxParameters: 200),
                     new SearchConstraints(MaxTimeMs: parent.TimeMs / 1.3, MaxMemoryBytes: parent.MemoryBytes * 0.8),
                 })
        {
            var (best, _) = BruteForce(p, c);
            var solution = MipSearch.Solve(p, c, relativeGap: 0);
            if (double.IsPositiveInfinity(best)) { Assert.Null(solution); continue; }
            Assert.NotNull(solution);
            Assert.Equal("optimal", solution!.Status);
            Assert.Equal(best, solution.Totals.Kl, tolerance: 1e-9);
            MipSearch.Verify(p, c, solution.Choice, solution.SolverObjective);
        }
    }

    [Fact]
    public void Infeasible_SaysTheTightestFeasibleValue()
    {
        var p = Random(3, 4, 7);
        var parent = p.Totals(new int[3]);
        var c = new SearchConstraints(MaxTimeMs: 1e-3);
        Assert.Null(MipSearch.Solve(p, c));
        double fastest = 5 + Enumerable.Range(0, 3).Sum(g => p.Groups[g].Options.Min(o => o.TimeMs));
        string message = SearchStage.Infeasible(p, c, parent);
        Assert.Contains("the highest feasible throughput is", message);
        Assert.Contains($"{p.GeneratedTokens / (fastest / 1e3):N0} tokens/s", message);
        string memory = SearchStage.Infeasible(p, new SearchConstraints(MaxMemoryBytes: 1), parent);
        double smallest = 500 + Enumerable.Range(0, 3).Sum(g => p.Groups[g].Options.Min(o => o.MemoryBytes));
        Assert.Contains($"the smallest feasible memory is {smallest / (1L << 30):F4} GiB", memory);
    }

    [Fact]
    public void DiverseSolutions_ShareAtMostAlphaLChoices()
    {
        var p = Random(6, 5, 11);
        var c = new SearchConstraints(MaxTimeMs: p.Totals(new int[6]).TimeMs / 1.2);
        var previous = new List<IReadOnlyList<int>>();
        for (int k = 0; k < 4; k++)
        {
            var s = MipSearch.Solve(p, c, previous, diversity: 0.5, relativeGap: 0);
            Assert.NotNull(s);
            foreach (var earlier in previous) Assert.True(Enumerable.Range(0, 6).Count(g => earlier[g] == s!.Choice[g]) <= 3);
            MipSearch.Verify(p, c, s!.Choice, s.SolverObjective, previous, 0.5);
            if (previous.Count > 0) Assert.True(s.Totals.Kl >= MipSearch.Solve(p, c, relativeGap: 0)!.Totals.Kl - 1e-12);
            previous.Add(s.Choice);
        }
    }

    [Fact]
    public void Verify_CatchesACorruptedSolution()
    {
        var p = Random(4, 5, 5);
        var c = new SearchConstraints(MaxTimeMs: p.Totals(new int[4]).TimeMs / 1.5);
        var s = MipSearch.Solve(p, c, relativeGap: 0)!;
        var slow = s.Choice.ToArray();
        slow[0] = slow[1] = slow[2] = slow[3] = 0;                                             // all parent: too slow
        Assert.Contains("violates generation time", Assert.Throws<PuzzleException>(() => MipSearch.Verify(p, c, slow)).Message);
        Assert.Contains("the solver reports objective", Assert.Throws<PuzzleException>(() => MipSearch.Verify(p, c, s.Choice, s.SolverObjective + 0.5)).Message);
        var missing = s.Choice.ToArray();
        missing[2] = -1;
        Assert.Contains("group 2 (layer 2 g0) has no single chosen option", Assert.Throws<PuzzleException>(() => MipSearch.Verify(p, c, missing)).Message);
        Assert.Contains("3 choices for 4 groups", Assert.Throws<PuzzleException>(() => MipSearch.Verify(p, c, s.Choice.Take(3).ToArray())).Message);
    }

    [Fact]
    public void SameProblem_SameAnswer_EvenWithTies()
    {
        // Every option duplicated with the same KL, time, memory and parameters: many optimal choices, one answer.
        var p = Random(12, 5, seed: 3);
        var tied = p with
        {
            Groups = p.Groups.Select(g => g with { Options = g.Options.Concat(g.Options.Skip(1).Select(o => o with { AttentionId = o.AttentionId + ".twin" })).ToList() }).ToList(),
        };
        var c = new SearchConstraints(MaxTimeMs: p.Totals(p.Groups.Select(_ => 0).ToArray()).TimeMs / 1.8);
        var first = MipSearch.Solve(tied, c)!;
        var previous = new List<IReadOnlyList<int>> { first.Choice };
        var second = MipSearch.Solve(tied, c, previous, diversity: 0.5)!;
        for (int run = 0; run < 3; run++)
        {
            Assert.Equal(first.Choice, MipSearch.Solve(tied, c)!.Choice);
            Assert.Equal(second.Choice, MipSearch.Solve(tied, c, previous, diversity: 0.5)!.Choice);
        }
    }
}
