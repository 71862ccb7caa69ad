using Puzzle.Domain;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Scoring;

namespace Puzzle.Stages.Search;

/// <summary>The search's inputs: the MIP's groups and options from scores.json (<see cref="ScoresFile"/>) and costs.json (<see cref="CostsFile"/>).</summary>
public static partial class SearchStage
{
    /// <summary>Options per layer from scores.json with costs from costs.json for the target (<see cref="ScenarioCost"/>'s time and memory).</summary>
    public static SearchProblem BuildProblem(RunDirectory run, string target)
    {
        string scoresPath = run.Scores, costsPath = run.Costs;
        if (!File.Exists(scoresPath)) throw new PuzzleException($"{scoresPath}: not found; run `puzzle score --run {run.Path}` first");
        if (!File.Exists(costsPath)) throw new PuzzleException($"{costsPath}: not found; run `puzzle costs --run {run.Path}` first");
        var scores = ScoresFile.Read(scoresPath);
        var costs = CostsFile.Read(costsPath);
        if (!scores.Complete)
            throw new PuzzleException($"{scoresPath}: scoring is incomplete ({scores.Entries.Count}/{scores.CandidatesTotal} candidates); finish `puzzle score` (all shards)");
        string mode = scores.Mode;
        string key = CostsFile.TargetKey(target);
        if (key == "measured" && costs.RooflineOnly)
            throw new PuzzleException($"{costsPath}: costs are from the rooflines only; search with a named accelerator (--target {string.Join("|", Accelerators.All.Select(a => a.Key))}) or run `puzzle costs` without --roofline-only");
        var cost = new Dictionary<string, CostEntry>();
        foreach (var e in costs.Entries) cost[e.Variant] = e;
        CostEntry Cost(string id) => cost.TryGetValue(id, out var c) ? c
            : throw new PuzzleException($"{costsPath}: no cost for variant {id} (scores and costs come from different search spaces; rerun `puzzle costs`)");
        // A layer that keeps both sublayers carries the measured interaction (CostsFile.PairTimeMs): a composed option
        // (a pair) whole where neither is a no-op; a subblocks-mode option, which chooses one sublayer, half of it where
        // it is not a no-op (exact for a layer that keeps both or neither).
        double pair = costs.PairTimeMs(key);
        BlockOption Option(string? a, string? f, double kl)
        {
            var parts = new[] { a, f }.OfType<string>().Select(Cost).ToList();
            int present = parts.Count(e => !e.IsNoOp);
            double interaction = a is not null && f is not null ? (present == 2 ? pair : 0) : present * pair / 2;
            return new BlockOption(a, f, kl, parts.Sum(e => costs.BlockTimeMs(e, key)) + interaction, parts.Sum(costs.BlockMemoryBytes), parts.Sum(e => e.Parameters))
            {
                MixesTokens = a is not null && run.Variants.Get(a, scoresPath).Attention!.IsGqa,
            };
        }

        string objective = run.Config.Search.Objective;
        double Quality(BlockScore e) => objective switch
        {
            "kl" => e.Kl,
            "lm_loss" => Math.Max(0, e.LmLoss - scores.ParentLmLoss),
            "top1" => 1 - e.Top1Agreement,
            _ => throw new PuzzleException($"search.objective '{objective}' is not kl, lm_loss or top1"),
        };
        var entries = scores.Entries;
        if (entries.Count == 0) throw new PuzzleException($"{scoresPath}: entries is empty");
        int layers = entries.Max(e => e.Layer) + 1;
        var groups = new List<SearchGroup>();
        for (int layer = 0; layer < layers; layer++)
        {
            var here = entries.Where(e => e.Layer == layer).ToList();
            if (mode == "composed")
                groups.Add(new SearchGroup(layer, "block", here.Select(e => Option(e.Attention, e.Ffn, Quality(e))).ToList()));
            else
            {
                string parentFfn = run.Variants.Parent(layer, SubblockKind.Ffn).Id, parentAttention = run.Variants.Parent(layer, SubblockKind.Attention).Id;
                groups.Add(new SearchGroup(layer, "attention", here.Where(e => e.Ffn == parentFfn).Select(e => Option(e.Attention, null, Quality(e))).ToList()));
                groups.Add(new SearchGroup(layer, "ffn", here.Where(e => e.Attention == parentAttention).Select(e => Option(null, e.Ffn, Quality(e))).ToList()));
            }
        }
        return new SearchProblem(groups, layers, costs.NonBlockTimeMs(key), costs.NonBlock.ParameterBytes, costs.NonBlock.Parameters,
            costs.Scenario.Batch, costs.Scenario.GenerationLength, key, mode)
        {
            Fingerprint = ArtifactKeys.SearchProblem(run, scores.Fingerprint, costs.Fingerprint, key, objective),
            CostsKey = RunDirectory.Hash($"costs|{File.ReadAllText(costsPath)}|{key}"),      // the timings themselves: a costs stage rerun on the same inputs re-times them
        };
    }

    static HashSet<string> ParentVariantIds(RunDirectory run) => run.Variants.All.Where(v => v.IsParent).Select(v => v.Id).ToHashSet();

    public static IReadOnlyList<int> ParentChoice(RunDirectory run, SearchProblem problem)
    {
        var parentIds = ParentVariantIds(run);
        var choice = problem.ParentChoice(o => (o.AttentionId is null || parentIds.Contains(o.AttentionId)) && (o.FfnId is null || parentIds.Contains(o.FfnId)));
        if (choice.Any(c => c < 0)) throw new PuzzleException("search: the parent's own blocks are missing from scores.json");
        return choice;
    }
}
