using System.Text.Json.Nodes;
using Puzzle.Config;
using Puzzle.Stages;
using Puzzle.Stages.Assembly;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Library;
using Puzzle.Stages.Scoring;
using Puzzle.Stages.Search;
using Puzzle.Training;

namespace Puzzle.Tests.Stages;

/// <summary>The child chosen among the search's diverse candidates by a short GKD probe (search.probe_tokens).</summary>
public sealed class CandidateProbeTests(RunFixture fixture) : IClassFixture<RunFixture>
{
    static readonly Action<string> Quiet = _ => { };

    string ScoredRun(long probeTokens, string candidates = "diverse")
    {
        string run = fixture.NewRun(c =>
        {
            c["search_space"] = new JsonObject
            {
                ["kv_heads"] = new JsonArray(2), ["attention_linear"] = false, ["attention_no_op"] = true,
                ["ffn_fractions"] = new JsonArray(1.0, 0.5), ["ffn_linear"] = false, ["ffn_no_op"] = true,
            };
            c["scoring"] = new JsonObject { ["validation_tokens"] = 32 * 8, ["batch"] = 8 };
            c["scenario"] = new JsonObject { ["batch"] = 4, ["prompt_length"] = 32, ["generation_length"] = 32, ["repeats"] = 3, ["warmup_runs"] = 1 };
            c["search"] = new JsonObject
            {
                ["target"] = "h100", ["min_throughput_ratio"] = 1.1, ["solutions"] = 3, ["diversity"] = 0.5, ["sweep"] = "",
                ["probe_tokens"] = probeTokens, ["probe_candidates"] = candidates,
            };
            c["gkd"] = new JsonObject { ["tokens"] = 8 * 32 * 4, ["batch"] = 8, ["lr"] = 1e-3, ["validation_tokens"] = 32 * 8 };
        });
        var directory = new RunDirectory(run);
        BlockLibraryBuilder.Run(directory, new LogProgress(), Quiet);
        BlockScorer.Run(directory, new LogProgress(), Quiet);
        BlockCosts.Run(directory, Quiet);
        return run;
    }

    [Fact]
    public void Probe_ChoosesTheCandidateWithTheLowestKlAfterAShortGkd_AndARerunReusesEveryProbe()
    {
        string run = ScoredRun(probeTokens: 8 * 32 * 2);
        var directory = new RunDirectory(run);
        ChildRecipe.Search(directory);

        string[] names = [.. Enumerable.Range(0, 3).Select(k => SearchStage.SolutionName(CandidateProbe.CandidateName(ChildRecipe.Solution), k))
            .Where(n => File.Exists(directory.Solution(n)))];
        Assert.True(names.Length >= 2, $"the tiny space gave {names.Length} diverse candidates");
        var child = SolutionFile.Read(directory.Solution(ChildRecipe.Solution));
        var probe = Assert.IsType<ProbeSelection>(child.Probe);
        Assert.Equal(ChildRecipe.Solution, child.Name);
        Assert.Equal(8 * 32 * 2, probe.Tokens);
        Assert.Equal(names, probe.Candidates.Select(c => c.Name));
        var best = probe.Candidates.MinBy(c => c.ProbedKl)!;
        Assert.Equal(best.Name, probe.Chosen);
        var chosen = SolutionFile.Read(directory.Solution(probe.Chosen));
        Assert.Equal(chosen.Layers.Select(l => (l.Attention, l.Ffn)), child.Layers.Select(l => (l.Attention, l.Ffn)));
        Assert.Equal(chosen.Verified.Kl, best.SummedKl, tolerance: 1e-12);
        foreach (var c in probe.Candidates)
        {
            Assert.Equal(2, c.Steps);                                                      // 512 tokens of 8 × 32
            Assert.True(double.IsFinite(c.ProbedKl) && c.ProbedKl <= c.InitialKl + 1e-12, $"{c.Name}: best KL {c.ProbedKl} above the start {c.InitialKl}");
            Assert.True(File.Exists(directory.Artifact(CandidateProbe.Folder, c.Name + ".json")));
            Assert.False(Directory.Exists(directory.Artifact(CandidateProbe.Folder, c.Name)));    // the probe's models are deleted once measured
        }
        // The candidates differ, and so do their probes' starting points.
        Assert.True(probe.Candidates.Select(c => c.InitialKl).Distinct().Count() > 1);

        // Second computation: the chosen candidate assembled and distilled again by hand starts from the same KL.
        string dir = TestSupport.TempDir();
        ChildAssembler.Run(directory, probe.Chosen, Path.Combine(dir, "child"), Quiet);
        var again = Distiller.Run(ChildRecipe.DistillOptionsFor(directory, Path.Combine(dir, "child"), Path.Combine(dir, "gkd"), probe.Tokens), Quiet);
        Assert.Equal(again.InitialValidationKl, best.InitialKl, 6);

        // A rerun reuses the search's candidates and every probe, and chooses the same child.
        var logs = new List<string>();
        ChildRecipe.SearchAndChoose(directory, ChildRecipe.SearchRequestFor(directory), logs.Add);
        Assert.Equal(names.Length, logs.Count(l => l.Contains("already probed")));
        Assert.DoesNotContain(logs, l => l.Contains("tokens of GKD"));
        Assert.Equal(probe.Chosen, SolutionFile.Read(directory.Solution(ChildRecipe.Solution)).Probe!.Chosen);

        // Other probe settings are another probe.
        var longer = new RunDirectory(run, ["search.probe_tokens=768"]);
        var logs2 = new List<string>();
        ChildRecipe.SearchAndChoose(longer, ChildRecipe.SearchRequestFor(longer), logs2.Add);
        Assert.Equal(names.Length, logs2.Count(l => l.Contains("tokens of GKD")));
        Assert.All(SolutionFile.Read(directory.Solution(ChildRecipe.Solution)).Probe!.Candidates, c => Assert.Equal(3, c.Steps));
    }

    [Fact]
    public void WithoutProbe_OrOneSolution_TheSearchsFirstSolutionIsTheChild()
    {
        string run = ScoredRun(probeTokens: 0);
        var directory = new RunDirectory(run);
        ChildRecipe.Search(directory);
        Assert.False(File.Exists(directory.Solution(CandidateProbe.CandidateName(ChildRecipe.Solution))));
        Assert.True(File.Exists(directory.Solution(ChildRecipe.Solution + "-2")));
        Assert.Null(SolutionFile.Read(directory.Solution(ChildRecipe.Solution)).Probe);
        Assert.False(Directory.Exists(directory.Artifact(CandidateProbe.Folder)));
    }

    [Fact]
    public void SearchCommand_ProbesItsCandidates_AndProbeTokensZeroKeepsTheMipsBest()
    {
        string run = ScoredRun(probeTokens: 0);
        var (code, stdout, stderr) = TestSupport.RunCli("search", "--run", run, "--solutions", "2", "--probe-tokens", "512", "--name", "cli");
        Assert.True(code == 0, stderr);
        var file = SolutionFile.Read(new RunDirectory(run).Solution("cli"));
        var probe = Assert.IsType<ProbeSelection>(file.Probe);
        Assert.Equal(512, probe.Tokens);
        Assert.Contains($"cli: {probe.Chosen},", stdout);
        Assert.All(probe.Candidates, c => Assert.Contains($"{c.Name}: summed block KL", stdout));
        (code, stdout, stderr) = TestSupport.RunCli("search", "--run", run, "--solutions", "2", "--probe-tokens", "0", "--name", "plain");
        Assert.True(code == 0, stderr);
        Assert.Null(SolutionFile.Read(new RunDirectory(run).Solution("plain")).Probe);
        Assert.Contains("plain-2:", stdout);
    }

    [Fact]
    public void ProbeSettings_AreCheckedWithTheKeyAndValue()
    {
        var e = Assert.Throws<PuzzleException>(() => new RunConfig { Search = new SearchSection { ProbeTokens = -5 } }.Validate("run.json"));
        Assert.Contains("search.probe_tokens", e.Message);
        Assert.Contains("-5", e.Message);
        e = Assert.Throws<PuzzleException>(() => new RunConfig { Search = new SearchSection { ProbeCandidates = "best" } }.Validate("run.json"));
        Assert.Contains("search.probe_candidates must be one of attention, diverse, got best", e.Message);
    }

    [Fact]
    public void AttentionCandidates_EachKeepMoreAttentionLayersThanTheFirst_OrTheLadderStopsSayingWhy()
    {
        string run = ScoredRun(probeTokens: 0);
        var directory = new RunDirectory(run);
        var logs = new List<string>();
        // A target that makes the tiny parent drop attention somewhere: its fastest child's ratio, less a little.
        var problem = SearchStage.BuildProblem(directory, "h100");
        var parent = problem.Totals(SearchStage.ParentChoice(directory, problem));
        var fastest = MipSearch.Optimise(problem, new SearchConstraints(), null, 1, 1e-6, 30, o => o.TimeMs)!;
        double target = parent.TimeMs / fastest.Totals.TimeMs * 0.97;
        var files = SearchStage.Run(directory, new SearchRequest { Target = "h100", MinThroughputRatio = target, Solutions = 3, Name = "ladder", AttentionLadder = true }, logs.Add);
        var solutions = files.Select(f => SolutionFile.Read(f.Path)).ToList();
        int first = problem.Totals(files[0].Solution.Choice).AttentionLayers;
        for (int k = 1; k < files.Count; k++)
        {
            Assert.True(problem.Totals(files[k].Solution.Choice).AttentionLayers >= first + k);
            Assert.Equal(first + k, solutions[k].Constraints.MinAttentionLayers);
            Assert.True(solutions[k].Verified.Kl >= solutions[0].Verified.Kl - 1e-12);
            Assert.True(solutions[k].Request.AttentionLadder);
        }
        if (files.Count < 3) Assert.Contains(logs, l => l.Contains($"no architecture keeping {first + files.Count} attention layers"));
    }

    [Fact]
    public void SeveralSolutions_FirstChecksAreTimedTogether_AndWhereAllMeetTheTarget_EachStandsOnTheFirstBound()
    {
        string run = ScoredRun(probeTokens: 0);
        var directory = new RunDirectory(run);
        // The engine says every child runs 1.3x the parent, above the 1.1x target: all first checks meet it.
        int calls = 0;
        ArchitectureTiming Constant(Puzzle.Model.ModelConfig p, Puzzle.Model.ModelConfig c, ScenarioSection sc, RoundsRule r) { calls++; return new(100, 130, sc.Repeats); }
        var logs = new List<string>();
        var files = SearchStage.Run(directory, new SearchRequest
        {
            Target = "measured", MinThroughputRatio = 1.1, Solutions = 2, Diversity = 0.5, Name = "together", Timer = Constant,
        }, logs.Add);
        Assert.Equal(2, files.Count);
        Assert.Equal(2, calls);                                                                  // each child timed once, in the first loop
        Assert.Contains(logs, l => l.Contains("the first checks of 2 solutions") && l.Contains("timed in one loop against one parent"));
        var checks = files.Select(f => SolutionFile.Read(f.Path).MeasuredCheck!).ToList();
        Assert.All(checks, c => Assert.True(Assert.Single(c.Attempts).Cached && c.Met));
        Assert.Equal(checks[0].Attempts[0].MaxTimeMs!.Value, checks[1].Attempts[0].MaxTimeMs!.Value, 12);
        Assert.NotEqual(files[0].Solution.Choice, files[1].Solution.Choice);
    }

    [Fact]
    public void SeveralSolutions_WhereTheFirstChecksMiss_FurtherSolutionsStartFromTheChecksCorrection()
    {
        string run = ScoredRun(probeTokens: 0);
        var directory = new RunDirectory(run);
        var costs = CostsFile.Read(directory.Costs);
        // The first child, as the search solves it: at the target's bound aimed 5% above (no checks on these costs yet).
        const double target = 1.25;
        var problem = SearchStage.BuildProblem(directory, "measured");
        var parent = problem.Totals(SearchStage.ParentChoice(directory, problem));
        var firstChild = MipSearch.Solve(problem, new SearchConstraints(null, SearchStage.AimedBound(parent.TimeMs / target), null))!;
        // The engine runs every child at `factor` × the cost model's estimate, so that the first child measures 0.95 × the
        // target: a miss. The second solution then starts from the first's measured / estimated (factor), not the first bound.
        double factor = 0.95 * target / (parent.TimeMs / firstChild.Totals.TimeMs);
        Assert.True(factor > 1 - ArchitectureTimer.SuspectDisagreement, $"factor {factor}: the checks would be suspect, and no evidence");
        ArchitectureTiming Engine(Puzzle.Model.ModelConfig p, Puzzle.Model.ModelConfig c, ScenarioSection sc, RoundsRule r) =>
            new(100, 100 * factor * costs.PredictTimeMs(Ids(directory, p), "measured") / costs.PredictTimeMs(Ids(directory, c), "measured"), sc.Repeats);
        var files = SearchStage.Run(directory, new SearchRequest
        {
            Target = "measured", MinThroughputRatio = target, Solutions = 2, Diversity = 0.5, Name = "pooled", Timer = Engine,
        }, Quiet);
        Assert.Equal(2, files.Count);
        var first = SolutionFile.Read(files[0].Path).MeasuredCheck!;
        var second = SolutionFile.Read(files[1].Path).MeasuredCheck!;
        var a = first.Attempts[0];
        Assert.Equal(0.95 * target, a.MeasuredRatio, 9);
        Assert.True(first.Attempts.Count >= 2, "a miss is followed by a tighter bound");
        Assert.Equal(a.MaxTimeMs!.Value * factor, second.Attempts[0].MaxTimeMs!.Value, tolerance: 1e-9);
        // The second child timed in the first loop (solved at the first bound, excluding the first) is evidence of the
        // model's error on these costs, though no solution kept it.
        var spare = MipSearch.Solve(problem, new SearchConstraints(null, SearchStage.AimedBound(parent.TimeMs / target), null), [firstChild.Choice], 0.5)!;
        double spareEstimate = parent.TimeMs / spare.Totals.TimeMs;
        Assert.Contains(ArchitectureTimer.Evidence(directory, problem.CostsKey),
            e => Math.Abs(e.Estimated - spareEstimate) < 1e-9 && Math.Abs(e.Measured - factor * spareEstimate) < 1e-9);
    }

    [Fact]
    public void ACheckStillStraddlingTheBandsEdge_IsDecidedByItsMedian()
    {
        string run = ScoredRun(probeTokens: 0);
        var directory = new RunDirectory(run);
        const double target = 1.2;
        double edge = target * SearchStage.ReachedShare;
        // Rounds whose paired ratios are `shares` × the band's lower edge (the parent's request 100 ms a round).
        static ArchitectureTiming Rounds(double edge, double[] shares) => new(100, 100 * edge * shares.Average(), shares.Length)
        {
            ParentRoundMs = [.. shares.Select(_ => 100.0)], ChildRoundMs = [.. shares.Select(s => 100 / (edge * s))],
        };
        var problem = SearchStage.BuildProblem(directory, "measured");
        var parent = problem.Totals(SearchStage.ParentChoice(directory, problem));
        var modelChoice = MipSearch.Solve(problem, new SearchConstraints(null, SearchStage.AimedBound(parent.TimeMs / target), null))!;

        // The interval (5 rounds: their range) straddles the edge and the median, 1.02 × the edge, is above it: the child
        // meets the target and the cost model's choice stands.
        double[] above = [0.90, 0.95, 1.02, 1.03, 1.05];
        var stood = SearchStage.Run(directory, new SearchRequest
        {
            Target = "measured", MinThroughputRatio = target, Name = "straddling-above", Timer = (p, c, sc, r) => Rounds(edge, above),
        }, Quiet);
        var check = SolutionFile.Read(stood[0].Path).MeasuredCheck!;
        Assert.True(Assert.Single(check.Attempts).MeasuredRatio > edge);
        Assert.True(check.Met);
        Assert.Equal(modelChoice.Choice, stood[0].Solution.Choice);

        // The same interval with the median, 0.97 × the edge, below it: a miss, re-solved at a tighter bound. (Letting the
        // cost model's choice stand here instead gave no steadier children: 11 demo runs' searches timed side by side,
        // benchmarks/results/search-spread-2026-12-05.md.)
        double[] below = [0.90, 0.95, 0.97, 1.02, 1.05];
        var resolved = SearchStage.Run(directory, new SearchRequest
        {
            Target = "measured", MinThroughputRatio = target, Name = "straddling-below", MeasuredChecks = 1, Timer = (p, c, sc, r) => Rounds(edge, below),
        }, Quiet);
        var missed = SolutionFile.Read(resolved[0].Path).MeasuredCheck!;
        Assert.Equal(2, missed.Attempts.Count);
        Assert.True(missed.Attempts[0].MeasuredRatio < edge);
        Assert.True(missed.Attempts[1].MaxTimeMs < missed.Attempts[0].MaxTimeMs);
        Assert.False(missed.Met);
    }

    /// <summary>The variant ids of a model's blocks, layer by layer (attention, FFN).</summary>
    static string[] Ids(RunDirectory directory, Puzzle.Model.ModelConfig c) => [.. c.Blocks.SelectMany((b, layer) => new[]
    {
        directory.Variants.All.First(v => v.Layer == layer && v.Kind == Puzzle.Domain.SubblockKind.Attention && Equals(v.Attention, b.Attention)).Id,
        directory.Variants.All.First(v => v.Layer == layer && v.Kind == Puzzle.Domain.SubblockKind.Ffn && Equals(v.Ffn, b.Ffn)).Id,
    })];

    /// <summary>The median measured / estimated over the run's recorded checks on these costs (the search's first correction).</summary>
    static double Correction(RunDirectory run, SearchProblem problem) =>
        TimingStatistic.Median.Apply([.. ArchitectureTimer.Evidence(run, problem.CostsKey).Select(e => e.Measured / e.Estimated)]);

    [Fact]
    public void ALaterSearch_OnTheSameCosts_StartsFromTheRunsEarlierChecks()
    {
        string run = ScoredRun(probeTokens: 0);
        var directory = new RunDirectory(run);
        var costs = CostsFile.Read(directory.Costs);
        // The engine runs every child at `factor` × the cost model's own estimate (computed here from costs.json).
        double factor = 0.9;
        ArchitectureTiming Engine(Puzzle.Model.ModelConfig p, Puzzle.Model.ModelConfig c, ScenarioSection sc, RoundsRule r) =>
            new(100, 100 * factor * costs.PredictTimeMs(Ids(directory, p), "measured") / costs.PredictTimeMs(Ids(directory, c), "measured"), sc.Repeats);
        var problem = SearchStage.BuildProblem(directory, "measured");
        Assert.Empty(ArchitectureTimer.Evidence(directory, problem.CostsKey));
        var first = SearchStage.Run(directory, new SearchRequest { Target = "measured", MinThroughputRatio = 1.1, Name = "a", Timer = Engine }, Quiet);
        var checkA = SolutionFile.Read(first[0].Path).MeasuredCheck!;
        // No checks on these costs yet: the first child is solved at the cost model's bound aimed above the target (CheckAim).
        Assert.Equal(SolutionFile.Read(first[0].Path).Constraints.MaxTimeMs!.Value / SearchStage.CheckAim, checkA.Attempts[0].MaxTimeMs!.Value, tolerance: 1e-9);
        var evidence = ArchitectureTimer.Evidence(directory, problem.CostsKey);
        // One pair per architecture checked, as the solution file recorded them.
        Assert.Equal(checkA.Attempts.Select(a => (a.EstimatedRatio, a.MeasuredRatio)).Distinct().OrderBy(x => x.EstimatedRatio),
            evidence.OrderBy(x => x.Estimated).Select(e => (e.Estimated, e.Measured)));
        Assert.All(evidence, e => Assert.Equal(factor, e.Measured / e.Estimated, tolerance: 1e-9));

        // Another target on the same costs: its first bound is the cost model's bound, aimed above the target
        // (SearchStage.CheckAim) × the median measured / estimated so far (0.9), so its first child already meets the target.
        var logs = new List<string>();
        var second = SearchStage.Run(directory, new SearchRequest { Target = "measured", MinThroughputRatio = 1.2, Name = "b", Timer = Engine }, logs.Add);
        var b = SolutionFile.Read(second[0].Path);
        var b1 = Assert.Single(b.MeasuredCheck!.Attempts);
        Assert.Equal(b.Constraints.MaxTimeMs!.Value / SearchStage.CheckAim * factor, b1.MaxTimeMs!.Value, tolerance: 1e-9);
        Assert.True(b.MeasuredCheck.Met);
        Assert.Contains(logs, l => l.Contains($"{evidence.Count} architectures checked before on these costs measured 0.900x"));

        // The engine gets slower (0.5 × the estimate): the first check starts from the run's 0.9; where it misses, the
        // next bound comes from this search's own check (0.5), not from the run's median (still 0.9, which would solve
        // the same child again).
        factor = 0.5;
        var third = SearchStage.Run(directory, new SearchRequest { Target = "measured", MinThroughputRatio = 1.2, Name = "c", Timer = Engine }, Quiet);
        var c = SolutionFile.Read(third[0].Path);
        var c1 = c.MeasuredCheck!.Attempts[0];
        double boundC = c.Constraints.MaxTimeMs!.Value / SearchStage.CheckAim;
        Assert.Equal(boundC * 0.9, c1.MaxTimeMs!.Value, tolerance: 1e-9);
        if (c1.MeasuredRatio < 1.2 * SearchStage.ReachedShare)
        {
            Assert.True(c.MeasuredCheck.Attempts.Count >= 2, "a miss is followed by a tighter bound");
            var c2 = c.MeasuredCheck.Attempts[1];
            Assert.True(c2.MaxTimeMs!.Value <= boundC * 0.5 * (1 + 1e-9), $"{c2.MaxTimeMs} > {boundC * 0.5}");
            Assert.True(c2.EstimatedRatio > c1.EstimatedRatio);
        }

        // A narrow band (overshoot 6%): the first bound aims at the band's centre, (0.99 + 1.06) / 2 = 1.025 above the
        // target, not at CheckAim (1.05), one point below the band's upper edge.
        factor = 0.9;
        double runCorrection = Correction(directory, problem);
        var fourth = SearchStage.Run(directory, new SearchRequest { Target = "measured", MinThroughputRatio = 1.15, MaxOvershoot = 0.06, Name = "d", Timer = Engine }, Quiet);
        var d = SolutionFile.Read(fourth[0].Path);
        Assert.Equal(1.025, SearchStage.Aim(0.06), 12);
        Assert.Equal(d.Constraints.MaxTimeMs!.Value / 1.025 * runCorrection, d.MeasuredCheck!.Attempts[0].MaxTimeMs!.Value, tolerance: 1e-9);

        // Other costs (re-timed): the earlier evidence does not apply.
        File.AppendAllText(directory.Costs, "\n");
        Assert.NotEqual(problem.CostsKey, SearchStage.BuildProblem(directory, "measured").CostsKey);
        Assert.Empty(ArchitectureTimer.Evidence(directory, SearchStage.BuildProblem(directory, "measured").CostsKey));
    }
}
