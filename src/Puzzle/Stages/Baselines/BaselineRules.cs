using System.Text.Json.Nodes;
using Puzzle.Domain;
using Puzzle.Model;
using Puzzle.Stages.Library;
using Puzzle.Stages.Search;

namespace Puzzle.Stages.Baselines;

/// <summary>One layer of an architecture: the chosen attention and FFN variant ids of the search space.</summary>
public sealed record LayerChoice(string Attention, string Ffn);

/// <summary>A baseline's architecture, its estimated totals (the search's cost model), what the rule decided on, and the throughput checks made.</summary>
public sealed record BaselineArchitecture(IReadOnlyList<LayerChoice> Layers, SearchTotals Estimated, double EstimatedRatio, double? MeasuredRatio,
    JsonObject Details, JsonArray Checks);

/// <summary>
/// What every rule works with: the search's problem (scores and costs of every variant), the parent's choice in
/// it, the throughput target and how an architecture's throughput is judged: timed in the engine against the
/// parent (the search's measured check, <see cref="ArchitectureTimer"/>) or, for roofline targets, the estimate.
/// </summary>
public sealed class BaselineContext
{
    public required SearchProblem Problem { get; init; }
    public required IReadOnlyList<int> ParentChoice { get; init; }
    public required double TargetRatio { get; init; }
    public required ModelConfig Parent { get; init; }
    public required IReadOnlyDictionary<string, SubblockVariant> Variants { get; init; }
    /// <summary>Memory and parameter bounds of the search request (the throughput bound is the target).</summary>
    public SearchConstraints Bounds { get; init; } = new();
    /// <summary>Measured child/parent throughput ratio of an architecture, given its estimated ratio (the measured check's guard
    /// re-times a pair far from it: <see cref="Search.ArchitectureTimer.SuspectDisagreement"/>); null: the cost model's estimate decides.</summary>
    public Func<ModelConfig, double, double>? Measure { get; init; }
    /// <summary>Engine timings a rule may spend before it gives up.</summary>
    public int MaxMeasurements { get; init; } = DefaultMaxMeasurements;
    public const int DefaultMaxMeasurements = 6;
    /// <summary>Only architectures estimated at this share of the target or more are timed (the cost model errs by ±10%).</summary>
    public double MeasureGate { get; init; } = 0.9;
    public Action<string> Log { get; init; } = _ => { };

    int _measurements;

    public SearchTotals ParentTotals => Problem.Totals(ParentChoice);

    /// <summary>Option index per group for per-layer choices; throws when a variant pair has no score.</summary>
    public int[] ChoiceOf(IReadOnlyList<LayerChoice> layers) => Problem.Groups.Select(g =>
    {
        var (a, f) = (layers[g.Layer].Attention, layers[g.Layer].Ffn);
        int index = g.Options.ToList().FindIndex(o => o.Matches(a, f));
        return index >= 0 ? index : throw new PuzzleException($"baselines: layer {g.Layer}: {a} + {f} has no score in scores.json");
    }).ToArray();

    /// <summary>Per-layer choices of an option index per group.</summary>
    public IReadOnlyList<LayerChoice> LayersOf(IReadOnlyList<int> choice) => Enumerable.Range(0, Problem.Layers).Select(layer =>
    {
        var chosen = Problem.Groups.Select((g, i) => (g, i)).Where(x => x.g.Layer == layer).Select(x => x.g.Options[choice[x.i]]).ToList();
        var (a, f) = BlockOption.LayerIds(chosen);
        return new LayerChoice(a, f);
    }).ToArray();

    public SearchTotals Totals(IReadOnlyList<LayerChoice> layers) => Problem.Totals(ChoiceOf(layers));

    public double EstimatedRatio(IReadOnlyList<LayerChoice> layers) => ParentTotals.TimeMs / Totals(layers).TimeMs;

    public ModelConfig ConfigOf(IReadOnlyList<LayerChoice> layers) =>
        Parent.WithBlocks(layers.Select(l => new BlockConfig(Variants[l.Attention].Attention!, Variants[l.Ffn].Ffn!)));

    public bool CanMeasure => Measure is null || _measurements < MaxMeasurements;

    /// <summary>
    /// Whether the architecture reaches the target within the other bounds: the engine's measured ratio within 1%
    /// (as the search's measured check), or the estimate where nothing is measured. Every check is recorded.
    /// </summary>
    public bool Meets(IReadOnlyList<LayerChoice> layers, JsonArray checks, string what, out double ratio)
    {
        var totals = Totals(layers);
        double estimated = ParentTotals.TimeMs / totals.TimeMs;
        ratio = estimated;
        var violations = Bounds.Violations(totals).ToList();
        var check = new JsonObject { ["architecture"] = what, ["estimated_ratio"] = estimated };
        checks.Add(check);
        if (violations.Count > 0)
        {
            check["violates"] = string.Join("; ", violations);
            return false;
        }
        if (Measure is null) return estimated >= TargetRatio * (1 - 1e-9);
        if (estimated < TargetRatio * MeasureGate || _measurements >= MaxMeasurements) return false;
        _measurements++;
        ratio = Measure(ConfigOf(layers), estimated);
        check["measured_ratio"] = ratio;
        Log($"baselines: {what}: estimated {estimated:F2}x, measured {ratio:F2}x in the engine (target {TargetRatio:F2}x)");
        return ratio >= TargetRatio * Search.SearchStage.ReachedShare;
    }

    public BaselineArchitecture Result(IReadOnlyList<LayerChoice> layers, double ratio, JsonObject details, JsonArray checks)
    {
        var totals = Totals(layers);
        return new BaselineArchitecture(layers, totals, ParentTotals.TimeMs / totals.TimeMs, Measure is null ? null : ratio, details, checks);
    }

    public string Judged => Measure is null ? "estimated by the cost model" : "measured in the engine";
}

/// <summary>
/// The baselines of issue 19: rules that pick one variant per layer from the search space without the search,
/// each at the search's throughput target. A rule that cannot reach the target throws, saying what it reached.
/// </summary>
public static class BaselineRules
{
    public static readonly string[] Names = ["uniform", "depth", "subblock", "random"];

    static string Suffix(string id) => VariantId.Parse(id).Name;                              // "L3.attn.kv2" -> "kv2"
    static string Id(int layer, SubblockKind kind, string name) => new VariantId(layer, kind, name).ToString();

    /// <summary>
    /// Minitron-style width pruning: one KV-head count and one FFN width in every layer (GQA and SwiGLU variants
    /// only: linear and no-op sublayers are not widths), the widest (most parameters) whose throughput reaches the target.
    /// </summary>
    public static BaselineArchitecture Uniform(BaselineContext ctx)
    {
        int layers = ctx.Problem.Layers;
        var perLayer = Enumerable.Range(0, layers).Select(l => ctx.Variants.Values.Where(v => v.Layer == l).ToList()).ToList();
        var attention = perLayer[0].Where(v => v.Kind == SubblockKind.Attention && v.Attention!.IsGqa).Select(v => Suffix(v.Id))
            .Where(s => perLayer.All(vs => vs.Any(v => v.Id == Id(v.Layer, SubblockKind.Attention, s) && v.Attention!.IsGqa))).ToList();
        var ffn = perLayer[0].Where(v => v.Kind == SubblockKind.Ffn && v.Ffn!.IsSwiGlu).Select(v => Suffix(v.Id))
            .Where(s => perLayer.All(vs => vs.Any(v => v.Id == Id(v.Layer, SubblockKind.Ffn, s) && v.Ffn!.IsSwiGlu))).ToList();
        var candidates = (from a in attention from f in ffn
                          let choice = Enumerable.Range(0, layers).Select(l => new LayerChoice(Id(l, SubblockKind.Attention, a), Id(l, SubblockKind.Ffn, f))).ToArray()
                          let totals = ctx.Totals(choice)
                          orderby totals.Parameters descending, totals.TimeMs descending
                          select (A: a, F: f, Choice: choice, Totals: totals)).ToList();
        if (candidates.Count == 0) throw new PuzzleException("uniform: the search space has no GQA attention and SwiGLU FFN variant common to every layer");
        var checks = new JsonArray();
        foreach (var c in candidates)
        {
            if (!ctx.CanMeasure) break;
            if (ctx.Meets(c.Choice, checks, $"uniform {c.A} + {c.F}", out double ratio))
                return ctx.Result(c.Choice, ratio, new JsonObject
                {
                    ["rule"] = "one KV-head count and one FFN width in every layer, the widest whose throughput reaches the target",
                    ["attention"] = c.A, ["ffn"] = c.F, ["candidates"] = candidates.Count,
                }, checks);
        }
        var fastest = candidates.MinBy(c => c.Totals.TimeMs);
        throw new PuzzleException($"uniform: no uniform width choice (one KV-head count and one FFN width in every layer) reaches {ctx.TargetRatio:F2}x the parent's throughput " +
            $"({ctx.Judged}): the fastest, {fastest.A} + {fastest.F}, is estimated at {ctx.ParentTotals.TimeMs / fastest.Totals.TimeMs:F2}x" +
            Measured(checks, $"uniform {fastest.A} + {fastest.F}"));
    }

    /// <summary>
    /// ShortGPT depth pruning: whole layers (attention and FFN both no-op) removed in order of increasing block
    /// influence, as few as reach the target (at least one layer is kept).
    /// </summary>
    public static BaselineArchitecture Depth(BaselineContext ctx, IReadOnlyList<double> influence)
    {
        int layers = ctx.Problem.Layers;
        if (influence.Count != layers) throw new PuzzleException($"depth: {influence.Count} block-influence values for {layers} layers");
        foreach (int l in Enumerable.Range(0, layers))
            if (!ctx.Variants.ContainsKey(Id(l, SubblockKind.Attention, "noop")) || !ctx.Variants.ContainsKey(Id(l, SubblockKind.Ffn, "noop")))
                throw new PuzzleException($"depth: layer {l} has no no-op attention and FFN in the search space (set search_space.attention_no_op and ffn_no_op to true)");
        var order = Enumerable.Range(0, layers).OrderBy(l => influence[l]).ThenBy(l => l).ToArray();
        var parent = ctx.LayersOf(ctx.ParentChoice);
        var checks = new JsonArray();
        IReadOnlyList<LayerChoice> Removing(int k) => parent.Select((p, l) => order.Take(k).Contains(l) ? new LayerChoice(Id(l, SubblockKind.Attention, "noop"), Id(l, SubblockKind.Ffn, "noop")) : p).ToArray();
        for (int k = 1; k < layers && ctx.CanMeasure; k++)
        {
            var choice = Removing(k);
            string removed = string.Join(", ", order.Take(k).Order());
            if (ctx.Meets(choice, checks, $"depth without layers {removed}", out double ratio))
                return ctx.Result(choice, ratio, new JsonObject
                {
                    ["rule"] = "whole layers removed in order of increasing block influence (1 - cos(input, output) hidden state), as few as reach the target",
                    ["removed_layers"] = new JsonArray(order.Take(k).Order().Select(l => (JsonNode)l).ToArray()),
                    ["influence"] = new JsonArray(influence.Select(v => (JsonNode)v).ToArray()),
                }, checks);
        }
        var most = Removing(layers - 1);
        throw new PuzzleException($"depth: removing layers by block influence does not reach {ctx.TargetRatio:F2}x the parent's throughput ({ctx.Judged}) " +
            $"with at least one layer kept: {layers - 1} of {layers} removed is estimated at {ctx.EstimatedRatio(most):F2}x" +
            Measured(checks, $"depth without layers {string.Join(", ", order.Take(layers - 1).Order())}"));
    }

    /// <summary>
    /// Puzzle with subblock scores: each attention and FFN variant scored alone (with the parent's other sublayer)
    /// and summed, the MIP over two groups per layer; the same target and bounds, the same measured check (the
    /// bound tightened by the shortfall, at most four times). Composed scores hold the subblock scores: they are
    /// the pairs with the parent's own other sublayer.
    /// </summary>
    public static BaselineArchitecture Subblock(BaselineContext ctx, double relativeGap = 1e-3)
    {
        var problem = SubblockProblem(ctx.Problem, ctx.ParentChoice);
        var parentChoice = problem.Mode == ctx.Problem.Mode ? ctx.ParentChoice : SubblockParentChoice(problem, ctx.Problem, ctx.ParentChoice);
        var parentTotals = problem.Totals(parentChoice);
        var constraints = ctx.Bounds with { MaxTimeMs = parentTotals.TimeMs / ctx.TargetRatio };
        var checks = new JsonArray();
        for (int attempt = 0; attempt <= 4; attempt++)
        {
            var solution = MipSearch.Solve(problem, constraints, relativeGap: relativeGap);
            if (solution is null)
                throw new PuzzleException($"subblock: {SearchStage.Infeasible(problem, constraints, parentTotals)}");
            var totals = MipSearch.Verify(problem, constraints, solution.Choice, solution.SolverObjective);
            var layers = LayersOf(problem, solution.Choice);
            if (ctx.Meets(layers, checks, $"subblock MIP (bound {constraints.MaxTimeMs:F3} ms)", out double ratio))
                return ctx.Result(layers, ratio, new JsonObject
                {
                    ["rule"] = "MIP on subblock scores (each sublayer scored alone with the parent's other sublayer, summed)",
                    ["subblock_kl"] = totals.Kl, ["solver_status"] = solution.Status, ["max_time_ms"] = constraints.MaxTimeMs,
                    ["scores"] = ctx.Problem.Mode == "composed" ? "derived from composed scores (pairs with the parent's other sublayer)" : "subblock scoring",
                }, checks);
            if (!ctx.CanMeasure || ctx.Measure is null) break;
            constraints = constraints with { MaxTimeMs = constraints.MaxTimeMs * Math.Min(ratio / ctx.TargetRatio, 0.995) };
        }
        throw new PuzzleException($"subblock: the MIP's architectures do not reach {ctx.TargetRatio:F2}x the parent's throughput ({ctx.Judged})" + Measured(checks, null));
    }

    /// <summary>
    /// A seeded random architecture that just meets the target: from the parent, repeatedly pick a random layer
    /// with a faster option and swap in a random faster option, until the estimated time meets the bound (then
    /// the measured check; a shortfall tightens the bound and the walk goes on).
    /// </summary>
    public static BaselineArchitecture Random(BaselineContext ctx, int seed)
    {
        var random = new Random(seed);
        var p = ctx.Problem;
        var choice = ctx.ParentChoice.ToArray();
        double bound = ctx.ParentTotals.TimeMs / ctx.TargetRatio;
        var checks = new JsonArray();
        int steps = 0;
        while (true)
        {
            while (p.Totals(choice).TimeMs > bound * (1 + 1e-9))
            {
                var movable = Enumerable.Range(0, p.Groups.Count).Where(g => p.Groups[g].Options.Any(o => o.TimeMs < p.Groups[g].Options[choice[g]].TimeMs)).ToList();
                if (movable.Count == 0)
                    throw new PuzzleException($"random: no architecture in the search space reaches {ctx.TargetRatio:F2}x the parent's throughput ({ctx.Judged}): " +
                        $"the fastest is estimated at {ctx.ParentTotals.TimeMs / p.Totals(choice).TimeMs:F2}x" + Measured(checks, null));
                int group = movable[random.Next(movable.Count)];
                var faster = Enumerable.Range(0, p.Groups[group].Options.Count).Where(o => p.Groups[group].Options[o].TimeMs < p.Groups[group].Options[choice[group]].TimeMs).ToList();
                choice[group] = faster[random.Next(faster.Count)];
                steps++;
            }
            var layers = ctx.LayersOf(choice);
            if (ctx.Meets(layers, checks, $"random (seed {seed}, {steps} swaps)", out double ratio))
                return ctx.Result(layers, ratio, new JsonObject
                {
                    ["rule"] = "seeded random walk from the parent: a random layer takes a random faster option until the target is met",
                    ["seed"] = seed, ["swaps"] = steps,
                }, checks);
            if (!ctx.CanMeasure) break;
            if (ctx.Bounds.Violations(p.Totals(choice)).Any())
                throw new PuzzleException($"random: the architecture violates {string.Join("; ", ctx.Bounds.Violations(p.Totals(choice)))}");
            bound *= Math.Min(ratio / ctx.TargetRatio, 0.995);
        }
        throw new PuzzleException($"random: no random architecture reached {ctx.TargetRatio:F2}x the parent's throughput ({ctx.Judged}) within {ctx.MaxMeasurements} timings" + Measured(checks, null));
    }

    static string Measured(JsonArray checks, string? what)
    {
        var last = checks.LastOrDefault(c => c!["measured_ratio"] is not null && (what is null || c["architecture"]!.GetValue<string>() == what));
        return last is null ? "" : $"; {last["architecture"]} measured {last["measured_ratio"]!.GetValue<double>():F2}x";
    }

    /// <summary>
    /// The subblock problem: two groups per layer. From composed scores, the attention options are the pairs with the
    /// parent's FFN and the FFN options the pairs with the parent's attention; costs are split so that any pair's
    /// summed cost equals the composed one (attention: its pair minus the parent's pair; FFN: its pair).
    /// </summary>
    public static SearchProblem SubblockProblem(SearchProblem composed, IReadOnlyList<int> parentChoice)
    {
        if (composed.Mode != "composed") return composed;
        var groups = new List<SearchGroup>();
        for (int g = 0; g < composed.Groups.Count; g++)
        {
            var group = composed.Groups[g];
            var parent = group.Options[parentChoice[g]];
            groups.Add(new SearchGroup(group.Layer, "attention", group.Options.Where(o => o.FfnId == parent.FfnId)
                .Select(o => new BlockOption(o.AttentionId, null, o.Kl, o.TimeMs - parent.TimeMs, o.MemoryBytes - parent.MemoryBytes, o.Parameters - parent.Parameters)).ToList()));
            groups.Add(new SearchGroup(group.Layer, "ffn", group.Options.Where(o => o.AttentionId == parent.AttentionId)
                .Select(o => new BlockOption(null, o.FfnId, o.Kl, o.TimeMs, o.MemoryBytes, o.Parameters)).ToList()));
        }
        return composed with { Groups = groups, Mode = "subblocks", Fingerprint = composed.Fingerprint.Length > 0 ? composed.Fingerprint + "|subblocks" : "" };
    }

    static int[] SubblockParentChoice(SearchProblem sub, SearchProblem composed, IReadOnlyList<int> parentChoice) => sub.Groups.Select((g, i) =>
    {
        var parent = composed.Groups[i / 2].Options[parentChoice[i / 2]];
        return g.Options.ToList().FindIndex(o => g.Kind == "attention" ? o.AttentionId == parent.AttentionId : o.FfnId == parent.FfnId);
    }).ToArray();

    static IReadOnlyList<LayerChoice> LayersOf(SearchProblem p, IReadOnlyList<int> choice) => Enumerable.Range(0, p.Layers).Select(layer =>
    {
        var chosen = p.Groups.Select((g, i) => (g, i)).Where(x => x.g.Layer == layer).Select(x => x.g.Options[choice[x.i]]).ToList();
        var (a, f) = BlockOption.LayerIds(chosen);
        return new LayerChoice(a, f);
    }).ToArray();
}
