using System.Globalization;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.IO;
using Puzzle.Stages.Costs;
using Puzzle.Domain;
using Puzzle.Stages.Library;
using Puzzle.Stages.Scoring;
using Puzzle.Stages;

namespace Puzzle.Stages.Search;

/// <summary>What the user asks of the child.</summary>
public sealed record SearchRequest
{
    public double? MaxMemoryGiB { get; init; }
    public double? MinThroughputRatio { get; init; }
    public double? MinTokensPerSecond { get; init; }
    public double? MaxLatencyMs { get; init; }
    public long? MaxParameters { get; init; }
    /// <summary>cpu | measured (the run's measured times) or h100 | h200 | a100 | l40s (rooflines).</summary>
    public string Target { get; init; } = "measured";
    public int Solutions { get; init; } = 1;
    public double Diversity { get; init; } = 0.8;
    public string Name { get; init; } = "solution";
    /// <summary>"throughput-ratio=1.2:3.0:0.2": a Pareto front over that target.</summary>
    public string? Sweep { get; init; }
    public double RelativeGap { get; init; } = 1e-3;
    /// <summary>
    /// On the measured target, time each chosen architecture against the parent in the engine and, while it falls
    /// short of the throughput target, tighten the time bound by the shortfall and solve again (at most this many times).
    /// </summary>
    public int MeasuredChecks { get; init; } = 4;

    /// <summary>
    /// With measured checks: a child measured faster than the target by more than this fraction is loosened toward it
    /// (a larger child) while checks remain; null: any speed above the target is kept. The `matched` baselines use it so
    /// that the Puzzle child is compared at the rule baseline's speed, not well above it.
    /// </summary>
    public double? MaxOvershoot { get; init; }

    /// <summary>
    /// Solutions after the first are not the diverse next-best (<see cref="Diversity"/>) but the best child keeping at
    /// least k more token-mixing attention layers than the first (k = 1, 2, …): the candidates <see cref="CandidateProbe"/>
    /// distils. The summed replace-1-block KL counts each dropped attention layer alone and so undercounts dropping most of
    /// them together; diverse next-best children (3 Dec) differed in FFN widths only and distilled alike.
    /// </summary>
    public bool AttentionLadder { get; init; }

    /// <summary>
    /// Measured checks also time a control child and read each child against it, scaled to the control's reference ratio
    /// to the parent on this machine (<see cref="DriftControl"/>), so that the moment of a check does not move the search.
    /// Left out of the request's fingerprint when off, so solutions stored before it stand.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault)]
    public bool DriftControl { get; init; }

    /// <summary>How the measured check times an architecture against the parent; null: <see cref="ArchitectureTimer.Measure"/> (tests inject one).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public ArchitectureTimer.Timing? Timer { get; init; }
}

/// <summary>A solution the search returns: its name, file and the solver's answer, with the parent's totals.</summary>
public sealed record SearchResult(string Name, string Path, SearchSolution Solution, SearchTotals Parent);

/// <summary>Stage 6: builds the MIP from scores.json and costs.json (never recomputing them), solves, verifies, stores.</summary>
public static partial class SearchStage
{
    public const string Folder = RunDirectory.SolutionsFolder;

    public static IReadOnlyList<SearchResult> Run(RunDirectory run, SearchRequest request, Action<string>? log = null)
    {
        log ??= Log.Info;
        if (request.Solutions < 1) throw new PuzzleException($"search: --solutions must be at least 1, got {request.Solutions}");
        if (!(request.Diversity >= 0 && request.Diversity <= 1)) throw new PuzzleException($"search: --diversity must be in [0, 1], got {request.Diversity}");
        var problem = BuildProblem(run, request.Target);
        var parentChoice = ParentChoice(run, problem);
        var parentTotals = problem.Totals(parentChoice);
        log($"search: {problem.Groups.Count} groups × {problem.Groups.Average(g => g.Options.Count):F1} options ({problem.Mode} scores, target {problem.Target}); " +
            $"parent: {parentTotals.TokensPerSecond:N0} tokens/s, {parentTotals.MemoryBytes / (1 << 20):F1} MiB, {parentTotals.Parameters:N0} parameters");
        var results = new List<SearchResult>();
        if (request.Sweep is { } sweep)
        {
            var (key, values) = ParseSweep(sweep);
            var front = new JsonArray();
            foreach (double value in values)
            {
                var r = key switch
                {
                    "throughput-ratio" => request with { MinThroughputRatio = value, MinTokensPerSecond = null },
                    "memory-gib" => request with { MaxMemoryGiB = value },
                    "params" => request with { MaxParameters = (long)value },
                    _ => throw new PuzzleException($"--sweep: unknown target '{key}' (throughput-ratio, memory-gib or params)"),
                };
                string name = $"{request.Name}-{key}-{value.ToString("0.###", CultureInfo.InvariantCulture)}";
                var solved = SolveAndStore(run, problem, parentTotals, r with { Solutions = 1, Name = name, MeasuredChecks = 0 }, log, throwIfInfeasible: false);
                foreach (var s in solved)
                {
                    results.Add(s);
                    front.Add(new JsonObject
                    {
                        ["target"] = value, ["name"] = s.Name, ["kl"] = s.Solution.Totals.Kl,
                        ["tokens_per_second"] = s.Solution.Totals.TokensPerSecond,
                        ["throughput_ratio"] = s.Solution.Totals.TokensPerSecond / parentTotals.TokensPerSecond,
                        ["memory_bytes"] = s.Solution.Totals.MemoryBytes, ["parameters"] = s.Solution.Totals.Parameters,
                    });
                }
            }
            var pareto = new JsonObject
            {
                ["format_version"] = 1, ["sweep"] = sweep, ["target"] = problem.Target,
                ["parent"] = Totals(parentTotals, parentTotals), ["points"] = front,
            };
            AtomicFile.WriteJson(run.Artifact(Folder, "pareto.json"), pareto);
            Plots.ParetoFront(run.Artifact(Folder, "pareto.png"), pareto, chosen: null);
            log($"search: Pareto front of {front.Count} points -> {run.Artifact(Folder, "pareto.json")}, pareto.png");
            return results;
        }
        return SolveAndStore(run, problem, parentTotals, request, log, throwIfInfeasible: true);
    }

    static List<SearchResult> SolveAndStore(RunDirectory run, SearchProblem problem, SearchTotals parent, SearchRequest request,
        Action<string> log, bool throwIfInfeasible)
    {
        var constraints = Constraints(problem, parent, request);
        var previous = new List<IReadOnlyList<int>>();
        var files = new List<SearchResult>();
        // Same scores, costs and request: the stored solutions stand (their measured checks are not redone).
        string key = IO.Fingerprint.Of("solution-v3", problem.Fingerprint, request with { Name = "" });
        var stored = Enumerable.Range(0, request.Solutions).Select(k => run.Artifact(Folder, SolutionName(request.Name, k) + ".json")).ToList();
        var storedFiles = stored.Select(p => JsonFile.ReadDerived(p, j => j["fingerprint"].Node is not null && j["layers"].Items().Count == problem.Layers) is { } j
            ? SolutionFile.Parse(j) : null).ToList();
        if (storedFiles.All(f => f?.Fingerprint == key))
        {
            foreach (var (file, path) in storedFiles.Zip(stored))
            {
                var choice = ChoiceOf(problem, file!, path);
                var totals = MipSearch.Verify(problem, StoodOn(constraints, file!), choice);
                files.Add(new SearchResult(file!.Name, path, new SearchSolution(choice, totals, totals.Kl, file.Solver.Status, 0, 0), parent));
            }
            log($"search: {string.Join(", ", files.Select(f => f.Name))} already solved for these scores, costs and constraints; reusing");
            return files;
        }
        // The same request under another name (a repeated re-search, a matched baseline asking what an earlier search
        // asked): its architectures stand, so the same request on the same costs gives the same children whatever ran
        // in between (a search starts from the run's earlier checks, so solving again could take another path).
        if (SolvedElsewhere(run, key, request.Solutions, problem.Layers) is { } earlier)
        {
            for (int k = 0; k < earlier.Count; k++)
            {
                var file = earlier[k].File;
                var copy = file with { Name = SolutionName(request.Name, k), Probe = null };
                copy.Write(stored[k]);
                var choice = ChoiceOf(problem, copy, stored[k]);
                var totals = MipSearch.Verify(problem, StoodOn(constraints, file), choice);
                files.Add(new SearchResult(copy.Name, stored[k], new SearchSolution(choice, totals, totals.Kl, file.Solver.Status, 0, 0), parent));
            }
            log($"search: the same request on these scores and costs was solved as {earlier[0].File.Name}; its architectures stand -> " +
                string.Join(", ", stored));
            return files;
        }
        var pooled = new List<MeasuredAttempt>();     // this search's measured checks so far: later solutions start from their correction
        bool anyChecks = constraints.MaxTimeMs is not null && problem.Target == "measured" && request.MeasuredChecks > 0;
        // The checks of this run's earlier searches on the same costs (another target, the matched baselines, a
        // re-search): the first solution starts from their correction. Only the start: once this search has checks of
        // its own, they alone steer it (they are at its target; on 3 Dec a prior correction of 0.875 from checks at
        // 2.25x kept a search at 2.93x on the bound of a child that measured 0.77 of its estimate).
        var runEvidence = anyChecks ? ArchitectureTimer.Evidence(run, problem.CostsKey).Select(e => new MeasuredAttempt(e.Estimated, e.Measured, 0, 0, null, Cached: true)).ToList() : [];
        if (runEvidence.Count > 0)
            log($"search: {runEvidence.Count} architectures checked before on these costs measured {Correction(runEvidence):F3}x their estimate (median); " +
                $"the first bound starts from that correction ({ArchitectureTimer.CacheFileName})");
        // Several solutions: their first checks are timed together against one parent. Where every one of them met the
        // target, each solution starts from the search's first bound (so each is the child timed there); else from the
        // pooled correction of the checks so far, as a single check's search does.
        // The others' timings are evidence of the model's error from the start: where the first solution's check misses,
        // its next bound pools them with its own.
        var (togetherMet, others) = anyChecks && request.Solutions > 1 ? FirstChecksTogether(run, problem, constraints, request, runEvidence, parent, log) : (false, []);
        int? firstAttention = null;
        for (int k = 0; k < request.Solutions; k++)
        {
            var (asked, exclude) = Rung(constraints, request, firstAttention, k, previous);
            // Solved at the bound the checks so far say meets the target, not at the cost model's own bound: they have
            // measured the model's error on this machine.
            var evidence = pooled.Count > 0 && !togetherMet ? pooled : runEvidence;
            var start = anyChecks ? asked with { MaxTimeMs = AimedBound(constraints.MaxTimeMs!.Value, request.MaxOvershoot) * (evidence.Count > 0 ? Correction(evidence) : 1) } : asked;
            var solution = MipSearch.Solve(problem, start, exclude, request.Diversity, request.RelativeGap);
            MeasuredCheck? check = null;
            if (solution is not null && anyChecks)
            {
                if (k == 0) pooled.AddRange(others);
                (solution, check) = CheckMeasured(run, problem, asked, start, exclude, request, solution!, parent.TimeMs / constraints.MaxTimeMs!.Value, pooled, log);
                pooled.AddRange(check.Attempts);
                if (check.Attempts.Count > 1 || !check.Met) togetherMet = false;               // the model missed here: later solutions start corrected
            }
            if (solution is null)
            {
                string why = k == 0 ? Infeasible(problem, constraints, parent)
                    : request.AttentionLadder ? $"no architecture keeping {asked.MinAttentionLayers} attention layers meets the constraints"
                    : $"no further solution shares at most {MipSearch.MaxShared(problem, request.Diversity)} choices with the {k} found";
                if (k == 0 && throwIfInfeasible) throw new PuzzleException($"search: {why}");
                log($"search: {why}");
                break;
            }
            // A child loosened toward the target (SearchRequest.MaxOvershoot) stands on the bound it was solved under.
            var bounds = check?.KeptAttempt.MaxTimeMs is { } kept && kept > constraints.MaxTimeMs ? asked with { MaxTimeMs = kept } : asked;
            var verified = MipSearch.Verify(problem, bounds, solution.Choice, solution.SolverObjective, exclude, request.Diversity);
            previous.Add(solution.Choice);
            firstAttention ??= verified.AttentionLayers;
            string name = SolutionName(request.Name, k);
            string path = run.Artifact(Folder, name + ".json");
            var file = ToFile(name, problem, request, asked, solution, verified, parent) with { Fingerprint = key, MeasuredCheck = check };
            if (check is { Met: false })
            {
                // Never store a child that misses the target as if it met it: the file says so and the user is told loudly.
                Log.Warning($"search: {name}: the measured throughput ratio {check.LastRatio:F2}x misses the target {check.TargetRatio:F2}x " +
                            $"after {check.Attempts.Count} checks; {path} holds the closest architecture found (\"target_met\": false). " +
                            "Lower search.min_throughput_ratio or widen the search space");
            }
            file.Write(path);
            log($"search: {name}: KL {verified.Kl:F4}, {verified.TokensPerSecond:N0} tokens/s ({verified.TokensPerSecond / parent.TokensPerSecond:F2}x the parent), " +
                $"{verified.MemoryBytes / (1 << 20):F1} MiB, {verified.Parameters:N0} parameters; {solution.Status} (gap {solution.Gap:P2}) in {solution.Seconds:F2} s -> {path}");
            files.Add(new SearchResult(name, path, solution, parent));
        }
        return files;
    }

    /// <summary>
    /// The bounds a stored solution stands on: the request's, with the time bound its measured check kept where that is
    /// looser (a child loosened toward the target, or solved from a correction above 1).
    /// </summary>
    static SearchConstraints StoodOn(SearchConstraints constraints, SolutionFile file) =>
        file.MeasuredCheck?.KeptAttempt.MaxTimeMs is { } kept && constraints.MaxTimeMs is { } asked && kept > asked ? constraints with { MaxTimeMs = kept } : constraints;

    /// <summary>The stored solutions NAME, NAME-2, … of an earlier search with this fingerprint (all <paramref name="solutions"/> of them), or null.</summary>
    static List<(SolutionFile File, string Path)>? SolvedElsewhere(RunDirectory run, string key, int solutions, int layers)
    {
        string folder = run.Artifact(Folder);
        if (!Directory.Exists(folder)) return null;
        // Read only (JsonFile.ReadDerived would discard files that are not solutions, pareto.json among them).
        SolutionFile? Read(string path)
        {
            try
            {
                if (!File.Exists(path) || JsonNode.Parse(File.ReadAllText(path)) is not JsonObject o || o["fingerprint"]?.GetValue<string>() != key
                    || o["layers"] is not JsonArray a || a.Count != layers) return null;
                return SolutionFile.Read(path);
            }
            catch (Exception e) when (e is System.Text.Json.JsonException or IOException or InvalidOperationException or PuzzleException) { return null; }
        }
        foreach (string path in Directory.GetFiles(folder, "*.json").Order(StringComparer.Ordinal))
        {
            if (Read(path) is not { } first || Path.GetFileNameWithoutExtension(path) != first.Name) continue;
            var all = new List<(SolutionFile, string)> { (first, path) };
            for (int k = 1; k < solutions; k++)
            {
                string next = Path.Combine(folder, SolutionName(first.Name, k) + ".json");
                if (Read(next) is { } f) all.Add((f, next)); else break;
            }
            if (all.Count == solutions) return all;
        }
        return null;
    }

    /// <summary>
    /// Times the solution's architecture against the parent's (random weights, the generation engine, the scenario;
    /// once per architecture, cached in RUN/measured-checks.json); while the measured ratio misses the target, tightens
    /// the time bound by the cost model's pooled correction (<see cref="TightenedBound"/>) and solves again.
    /// </summary>
    static (SearchSolution? Solution, MeasuredCheck Check) CheckMeasured(RunDirectory run, SearchProblem problem, SearchConstraints constraints,
        SearchConstraints start, IReadOnlyList<IReadOnlyList<int>> previous, SearchRequest request, SearchSolution solution, double targetRatio,
        IReadOnlyList<MeasuredAttempt> prior, Action<string> log)
    {
        var parentConfig = HfConfig.Read(run.ParentDir);
        var attempts = new List<MeasuredAttempt>();
        var current = start;
        var best = solution;
        double parentTime = problem.Totals(ParentChoice(run, problem)).TimeMs;
        List<(SearchSolution Solution, double Measured, int Attempt)> met = [], missed = [];
        double fastest = 0, slowest = double.PositiveInfinity;                     // generation times (ms) of children that overshot / missed
        double aimed = AimedBound(constraints.MaxTimeMs!.Value, request.MaxOvershoot);
        bool lastReached = false;
        for (int attempt = 1; ; attempt++)
        {
            double estimated = parentTime / best.Totals.TimeMs;
            var band = Band(targetRatio, request.MaxOvershoot);
            var timing = ArchitectureTimer.MeasureCached(run, parentConfig, parentConfig.WithBlocks(Blocks(run, problem, best.Choice)), estimated, band, request.Name, request.Timer, log,
                evidenceKey: problem.CostsKey, driftControl: request.DriftControl);
            double measured = timing.Ratio;
            attempts.Add(new MeasuredAttempt(estimated, measured, timing.ParentTokensPerSecond, timing.ChildTokensPerSecond, current.MaxTimeMs, timing.Cached)
            {
                FirstMeasuredRatio = timing.FirstRatio, Suspect = timing.Suspect,
            });
            string interval = timing.Interval is { } ci ? $", {ArchitectureTimer.Confidence:P0} interval {ci.Low:F2}–{ci.High:F2}x" : "";
            string cached = !timing.Cached ? "" : timing.TimedTogether > 1 ? $" (cached: timed in one loop with {timing.TimedTogether - 1} other children)" : " (cached)";
            log($"search: measured check {attempt}: estimated {estimated:F2}x, measured {measured:F2}x in the engine ({timing.Rounds} rounds{interval})" +
                $"{(timing.FirstRatio is { } f ? $" (re-timed; first {f:F2}x)" : "")}{(timing.Pooled ? " (cached rounds extended)" : "")}{(timing.Suspect ? " SUSPECT" : "")}{cached} (target {targetRatio:F2}x)");
            int region = band.Region(timing);
            bool reached = region >= 0;
            bool overshot = region > 0;
            lastReached = reached;
            (reached ? met : missed).Add((best, measured, attempts.Count - 1));
            if ((reached && !overshot) || attempt > request.MeasuredChecks) break;
            // Never back to a child as slow as one that missed the target, nor as fast as one that overshot it.
            if (reached) fastest = Math.Max(fastest, best.Totals.TimeMs); else slowest = Math.Min(slowest, best.Totals.TimeMs);
            List<MeasuredAttempt> evidence = [.. prior, .. attempts];
            double bound = reached ? LoosenedBound(aimed, evidence, fastest) : TightenedBound(aimed, evidence, slowest);
            if (bound <= fastest || bound >= slowest)
            {
                // Bracketed: one child overshot the band, one missed it, and the corrected bound lies beyond one of them.
                // Halfway between their times the solver may still find an architecture slower than the overshooting
                // one with a lower KL, so not dominated by it (on 5 Dec seed 5's search stopped here between 2.35x and
                // 2.79x). If it finds none, the overshooting child comes back and the search stops below.
                if (fastest > 0 && !double.IsPositiveInfinity(slowest) && (fastest + slowest) / 2 is var middle && middle > fastest && middle < slowest
                    && current.MaxTimeMs != middle)
                {
                    log($"search: the checked children bracket the target; trying the bound halfway between them ({middle:F3} ms)");
                    bound = middle;
                }
                else
                {
                    log($"search: the checked children bracket the target between two neighbouring bounds; keeping the last one that met it");
                    break;
                }
            }
            current = current with { MaxTimeMs = bound };
            var next = MipSearch.Solve(problem, current, previous, request.Diversity, request.RelativeGap);
            if (next is null || met.Concat(missed).Any(m => m.Solution.Choice.SequenceEqual(next.Choice)))
            {
                log(next is null ? "search: no architecture meets the adjusted bound; keeping the last one" : "search: the adjusted bound gives an architecture already checked; stopping");
                break;
            }
            best = next;
        }
        // A loosened child that fell below the target: the closest-to-target child that met it stands instead.
        bool lastMet = lastReached;
        if (!lastMet && met.Count > 0)
        {
            var (kept, ratio, index) = met.MinBy(m => m.Measured);
            log($"search: keeping the checked architecture measured at {ratio:F2}x (the last one missed the target)");
            return (kept, new MeasuredCheck(targetRatio, attempts, current.MaxTimeMs, true) { Kept = index });
        }
        return (best, new MeasuredCheck(targetRatio, attempts, current.MaxTimeMs, lastMet));
    }

    /// <summary>
    /// What the k-th solution is solved under: on the attention ladder, k more attention layers than the first keeps and
    /// no exclusions (the rungs differ by construction); otherwise the request's constraints, excluding the ones before.
    /// </summary>
    static (SearchConstraints Asked, IReadOnlyList<IReadOnlyList<int>> Exclude) Rung(SearchConstraints constraints, SearchRequest request, int? firstAttention,
        int k, IReadOnlyList<IReadOnlyList<int>> before) =>
        request.AttentionLadder
            ? (firstAttention is { } a0 ? constraints with { MinAttentionLayers = a0 + k } : constraints, [])
            : (constraints, before);

    /// <summary>What a check decides on: the target less <see cref="ReachedShare"/>'s 1%, up to the overshoot where one is given.</summary>
    static CheckBand Band(double targetRatio, double? maxOvershoot) =>
        new(targetRatio * ReachedShare, maxOvershoot is { } o ? targetRatio * (1 + o) : null);

    /// <summary>The per-layer blocks of a choice of options.</summary>
    static List<Model.BlockConfig> Blocks(RunDirectory run, SearchProblem problem, IReadOnlyList<int> choice) =>
        [.. Enumerable.Range(0, problem.Layers).Select(layer =>
        {
            var chosen = problem.Groups.Select((g, i) => (g, i)).Where(x => x.g.Layer == layer).Select(x => x.g.Options[choice[x.i]]).ToList();
            var (a, f) = BlockOption.LayerIds(chosen);
            return new Model.BlockConfig(run.Variants.Get(a, "search").Attention!, run.Variants.Get(f, "search").Ffn!);
        })];

    /// <summary>
    /// The first checks of a search for several solutions, in one loop (<see cref="ArchitectureTimer.MeasureJointCached"/>):
    /// the solutions as the search's loop solves them first (at its first bound, each excluding the ones before, or on
    /// its rung of the attention ladder), timed together against one parent and cached, where the loop's checks find
    /// them. Returns whether every one of them met the target's band (false where fewer than two were found), and the
    /// (estimated, measured) attempts of all but the first, whose own check records its attempt.
    /// </summary>
    static (bool AllMet, List<MeasuredAttempt> Others) FirstChecksTogether(RunDirectory run, SearchProblem problem, SearchConstraints constraints,
        SearchRequest request, IReadOnlyList<MeasuredAttempt> runEvidence, SearchTotals parent, Action<string> log)
    {
        double bound = AimedBound(constraints.MaxTimeMs!.Value, request.MaxOvershoot) * (runEvidence.Count > 0 ? Correction(runEvidence) : 1);
        var solutions = new List<SearchSolution>();
        int? firstAttention = null;
        for (int k = 0; k < request.Solutions; k++)
        {
            var (asked, exclude) = Rung(constraints, request, firstAttention, k, [.. solutions.Select(s => s.Choice)]);
            if (MipSearch.Solve(problem, asked with { MaxTimeMs = bound }, exclude, request.Diversity, request.RelativeGap) is not { } next) break;
            solutions.Add(next);
            firstAttention ??= problem.Totals(next.Choice).AttentionLayers;
        }
        if (solutions.Count < 2) return (false, []);
        double targetRatio = parent.TimeMs / constraints.MaxTimeMs!.Value;
        var band = Band(targetRatio, request.MaxOvershoot);
        var parentConfig = HfConfig.Read(run.ParentDir);
        var estimates = solutions.Select(s => parent.TimeMs / s.Totals.TimeMs).ToList();
        log($"search: the first checks of {solutions.Count} solutions (estimated {string.Join(", ", estimates.Select(e => $"{e:F2}x"))}; target {targetRatio:F2}x), " +
            "timed in one loop against one parent");
        ArchitectureTimer.JointTiming? joint = request.Timer is { } pair ? (p, children, sc, rules) => [.. children.Select((c, i) => pair(p, c, sc, rules[i]))] : null;
        var timings = ArchitectureTimer.MeasureJointCached(run, parentConfig, [.. solutions.Select(s => parentConfig.WithBlocks(Blocks(run, problem, s.Choice)))],
            estimates, band, joint, log, problem.CostsKey, request.DriftControl);
        var others = timings.Select((t, i) => (t, i)).Skip(1).Where(x => x.t is { Suspect: false })
            .Select(x => new MeasuredAttempt(estimates[x.i], x.t!.Ratio, x.t.ParentTokensPerSecond, x.t.ChildTokensPerSecond, bound, x.t.Cached)).ToList();
        return (timings.All(t => t is not null && band.Region(t) == 0), others);
    }

    /// <summary>A measured ratio this share of the target or more meets it (1% below: the engine's timing resolution).</summary>
    public const double ReachedShare = 0.99;

    /// <summary>
    /// Where a measured search aims: this share above the target ratio, inside the band the checks accept (the target's
    /// <see cref="ReachedShare"/> up to its overshoot). Aimed at the target itself, a child the cost model gets right
    /// measures on the band's lower edge, where its check's interval straddles the edge and runs to the most rounds
    /// (18 on the demo). A re-search at 1.5x with 3 solutions on copies of the 4 Dec seed-3 and seed-5 demos (one run each,
    /// noisy): aimed at 1.00, 150 s and 83 s (checks of 18, 13, 13, 18, 8 rounds on seed 3); at 1.03, 121 s and 63 s; at
    /// 1.05, 73 s and 78 s. The child the search keeps is faster than asked by about this share where the model is right.
    /// </summary>
    public const double CheckAim = 1.05;

    /// <summary>
    /// The share above the target a measured search aims at: <see cref="CheckAim"/>, or the centre of the band the
    /// checks accept (<see cref="ReachedShare"/> to 1 + <paramref name="maxOvershoot"/>) where that is lower. Aimed at
    /// 1.05 inside a band that ends at 1.06, a child the cost model gets right would straddle the upper edge.
    /// </summary>
    public static double Aim(double? maxOvershoot) =>
        maxOvershoot is { } o ? Math.Min(CheckAim, (ReachedShare + 1 + o) / 2) : CheckAim;

    /// <summary>The time bound a measured search aims at: the target's bound over <see cref="Aim"/>.</summary>
    public static double AimedBound(double targetTimeMs, double? maxOvershoot = null) => targetTimeMs / Aim(maxOvershoot);

    /// <summary>
    /// The time bound after a measured check missed: the first bound scaled by the cost model's correction, the median
    /// of measured / estimated over every attempt so far (a child whose estimated ratio is r measures about r × that), and
    /// strictly below the generation time of the child that missed. Each attempt's evidence is pooled, not compounded:
    /// the bound used to shrink by every miss in turn (bound × measured / target), so one slow timing moved every later
    /// bound, and a child estimated above the target was penalised for the estimate's margin as if it were the model's error.
    /// </summary>
    public static double TightenedBound(double firstBound, IReadOnlyList<MeasuredAttempt> attempts, double missedTimeMs)
        => Math.Min(firstBound * Correction(attempts), missedTimeMs * (1 - BoundStep));

    /// <summary>
    /// How far below (above) a missed (overshooting) child's time the next bound is at least: a relative step well above
    /// the solver's feasibility tolerance (SCIP's 1e-6), or the re-solve at a bound 1e-9 below returned the same child.
    /// </summary>
    public const double BoundStep = 1e-4;

    /// <summary>The time bound after a child overshot the target (<see cref="SearchRequest.MaxOvershoot"/>): the same pooled correction, strictly above the overshooting child's time.</summary>
    public static double LoosenedBound(double firstBound, IReadOnlyList<MeasuredAttempt> attempts, double overshotTimeMs)
        => Math.Max(firstBound * Correction(attempts), overshotTimeMs * (1 + BoundStep));

    /// <summary>The cost model's correction so far: the median of measured / estimated over the attempts.</summary>
    static double Correction(IReadOnlyList<MeasuredAttempt> attempts) =>
        Costs.TimingStatistic.Median.Apply([.. attempts.Select(a => a.MeasuredRatio / a.EstimatedRatio)]);

    /// <summary>The k-th (from 0) of several diverse solutions: the best keeps the name (the pipeline assembles it), the others NAME-2, NAME-3, ….</summary>
    public static string SolutionName(string name, int k) => k == 0 ? name : $"{name}-{k + 1}";

    /// <summary>Option indices of a stored solution's per-layer choices.</summary>
    static int[] ChoiceOf(SearchProblem problem, SolutionFile file, string path)
    {
        if (file.Layers.Count != problem.Layers) throw new PuzzleException($"{path}: {file.Layers.Count} layers, the problem has {problem.Layers}");
        return problem.Groups.Select(g =>
        {
            var layer = file.Layers[g.Layer];
            int index = g.Options.ToList().FindIndex(o => o.Matches(layer.Attention, layer.Ffn));
            return index >= 0 ? index : throw new PuzzleException($"{path}: layers[{g.Layer}] ({layer.Attention}, {layer.Ffn}) is not among the scored options");
        }).ToArray();
    }

    public static SearchConstraints Constraints(SearchProblem problem, SearchTotals parent, SearchRequest r)
    {
        if (r.MinThroughputRatio is not null && r.MinTokensPerSecond is not null)
            throw new PuzzleException("give --min-throughput-ratio or --min-tokens-per-s, not both");
        var times = new List<double>();
        if (r.MinThroughputRatio is { } ratio)
        {
            if (ratio <= 0) throw new PuzzleException($"--min-throughput-ratio must be positive, got {ratio}");
            times.Add(parent.TimeMs / ratio);
        }
        if (r.MinTokensPerSecond is { } tps)
        {
            if (tps <= 0) throw new PuzzleException($"--min-tokens-per-s must be positive, got {tps}");
            times.Add(problem.GeneratedTokens / tps * 1e3);
        }
        if (r.MaxLatencyMs is { } latency) times.Add(latency);
        return new SearchConstraints(r.MaxMemoryGiB * (1L << 30), times.Count > 0 ? times.Min() : null, r.MaxParameters);
    }

    /// <summary>Why nothing fits: the tightest value each bound could take with the other bounds kept.</summary>
    public static string Infeasible(SearchProblem p, SearchConstraints c, SearchTotals parent)
    {
        var parts = new List<string>();
        if (c.MaxTimeMs is not null)
        {
            var best = MipSearch.Optimise(p, c with { MaxTimeMs = null }, null, 1, 1e-6, 30, o => o.TimeMs);
            parts.Add(best is null ? "no throughput is feasible under the other bounds"
                : $"the highest feasible throughput is {best.Totals.TokensPerSecond:N0} tokens/s = {best.Totals.TokensPerSecond / parent.TokensPerSecond:F3}x the parent (generation time {best.Totals.TimeMs:F3} ms; asked for at most {c.MaxTimeMs:F3} ms)");
        }
        if (c.MaxMemoryBytes is not null)
        {
            var best = MipSearch.Optimise(p, c with { MaxMemoryBytes = null }, null, 1, 1e-6, 30, o => o.MemoryBytes);
            parts.Add(best is null ? "no memory budget is feasible under the other bounds"
                : $"the smallest feasible memory is {best.Totals.MemoryBytes / (1L << 30):F4} GiB (asked for at most {c.MaxMemoryBytes / (1L << 30):F4} GiB)");
        }
        if (c.MaxParameters is not null)
        {
            var best = MipSearch.Optimise(p, c with { MaxParameters = null }, null, 1, 1e-6, 30, o => o.Parameters);
            parts.Add(best is null ? "no parameter budget is feasible under the other bounds"
                : $"the fewest feasible parameters are {best.Totals.Parameters:N0} (asked for at most {c.MaxParameters:N0})");
        }
        return "no architecture meets the constraints: " + string.Join("; ", parts);
    }

    /// <summary>A sweep "target=start:stop:step" as its target and points; a clear error where it is not one.</summary>
    public static (string Key, double[] Values) ParseSweep(string sweep)
    {
        var parts = sweep.Split('=', 2);
        var range = parts.Length == 2 ? parts[1].Split(':') : [];
        if (range.Length != 3 || !range.All(x => double.TryParse(x, CultureInfo.InvariantCulture, out _)))
            throw new PuzzleException($"--sweep '{sweep}': expected target=start:stop:step, e.g. throughput-ratio=1.2:3.0:0.2");
        double start = double.Parse(range[0], CultureInfo.InvariantCulture), stop = double.Parse(range[1], CultureInfo.InvariantCulture),
            step = double.Parse(range[2], CultureInfo.InvariantCulture);
        if (step <= 0 || stop < start) throw new PuzzleException($"--sweep '{sweep}': needs start <= stop and step > 0");
        var values = new List<double>();
        for (double v = start; v <= stop + step * 1e-9; v += step) values.Add(Math.Round(v, 6));
        return (parts[0], [.. values]);
    }

    static JsonObject Totals(SearchTotals t, SearchTotals parent) => SolutionTotals.From(t, parent).ToJson();

    static SolutionFile ToFile(string name, SearchProblem p, SearchRequest r, SearchConstraints c, SearchSolution s, SearchTotals verified, SearchTotals parent)
    {
        var layers = new List<SolutionLayer>();
        for (int layer = 0; layer < p.Layers; layer++)
        {
            var chosen = p.Groups.Select((g, i) => (g, i)).Where(x => x.g.Layer == layer).Select(x => x.g.Options[s.Choice[x.i]]).ToList();
            var (attention, ffn) = BlockOption.LayerIds(chosen);
            layers.Add(new SolutionLayer(layer, attention, ffn,
                chosen.Sum(o => o.Kl), chosen.Sum(o => o.TimeMs), chosen.Sum(o => o.MemoryBytes), chosen.Sum(o => o.Parameters)));
        }
        return new SolutionFile(name, p.Target, p.Mode, r, c, new SolverInfo("OR-Tools SCIP", s.Status, s.Seconds, s.SolverObjective, s.Gap),
            SolutionTotals.From(verified, parent), SolutionTotals.From(parent, parent), p.Batch, p.GenerationLength, layers);
    }
}
