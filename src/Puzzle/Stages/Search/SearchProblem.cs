namespace Puzzle.Stages.Search;

/// <summary>One choice in a group: a composed block (attention + FFN) or, in subblock mode, one sublayer (the other id null).</summary>
public sealed record BlockOption(string? AttentionId, string? FfnId, double Kl, double TimeMs, double MemoryBytes, long Parameters)
{
    /// <summary>Its attention mixes tokens (GQA), not a linear map or a no-op: what <see cref="SearchConstraints.MinAttentionLayers"/> counts.</summary>
    public bool MixesTokens { get; init; }

    public string Id => FfnId is null ? AttentionId! : AttentionId is null ? FfnId : $"{AttentionId}+{FfnId}";

    /// <summary>Whether this option is (part of) the layer choice attention + ffn.</summary>
    public bool Matches(string attention, string ffn) => (AttentionId is null || AttentionId == attention) && (FfnId is null || FfnId == ffn);

    /// <summary>The attention and FFN ids of one layer's chosen options (one composed option, or one per sublayer).</summary>
    public static (string Attention, string Ffn) LayerIds(IEnumerable<BlockOption> chosen) =>
        (chosen.Select(o => o.AttentionId).OfType<string>().First(), chosen.Select(o => o.FfnId).OfType<string>().First());
}

/// <summary>Exactly one option of every group is chosen. Composed scoring: one group per layer; subblock scoring: two.</summary>
public sealed record SearchGroup(int Layer, string Kind, IReadOnlyList<BlockOption> Options);

/// <summary>
/// The program's data: per-group options with their KL score and costs for the chosen target, the constant
/// non-block costs, and the parent's own totals (for relative targets).
/// </summary>
public sealed record SearchProblem(
    IReadOnlyList<SearchGroup> Groups, int Layers, double NonBlockTimeMs, double NonBlockMemoryBytes, long NonBlockParameters,
    int Batch, int GenerationLength, string Target, string Mode)
{
    /// <summary>Identifies the inputs (scores, costs, target) the problem was built from; empty for synthetic problems.</summary>
    public string Fingerprint { get; init; } = "";
    /// <summary>The cost model the options' times come from (costs.json's text and the target): what a measured check's estimate depends on.</summary>
    public string CostsKey { get; init; } = "";

    /// <summary>Tokens generated per scenario run: batch × generation length.</summary>
    public double GeneratedTokens => (double)Batch * GenerationLength;

    public SearchTotals Totals(IReadOnlyList<int> choice)
    {
        if (choice.Count != Groups.Count) throw new ArgumentException($"{choice.Count} choices for {Groups.Count} groups");
        double kl = 0, time = NonBlockTimeMs, memory = NonBlockMemoryBytes;
        long parameters = NonBlockParameters;
        int attention = 0;
        for (int g = 0; g < Groups.Count; g++)
        {
            var o = Groups[g].Options[choice[g]];
            (kl, time, memory, parameters) = (kl + o.Kl, time + o.TimeMs, memory + o.MemoryBytes, parameters + o.Parameters);
            if (o.MixesTokens) attention++;
        }
        return new SearchTotals(kl, time, memory, parameters, GeneratedTokens / (time / 1e3)) { AttentionLayers = attention };
    }

    /// <summary>The parent's own choice (every group's parent option).</summary>
    public IReadOnlyList<int> ParentChoice(Func<BlockOption, bool> isParent) =>
        Groups.Select(g => g.Options.ToList().FindIndex(o => isParent(o))).ToArray();
}

/// <summary>Summed KL, generation time (prefill + all decode steps, ms), memory (bytes), parameters, tokens/s.</summary>
public sealed record SearchTotals(double Kl, double TimeMs, double MemoryBytes, long Parameters, double TokensPerSecond)
{
    /// <summary>Layers whose attention mixes tokens (<see cref="BlockOption.MixesTokens"/>).</summary>
    public int AttentionLayers { get; init; }
}

/// <summary>Upper bounds; null = unconstrained. Throughput targets become a bound on the generation time.</summary>
public sealed record SearchConstraints(double? MaxMemoryBytes = null, double? MaxTimeMs = null, long? MaxParameters = null)
{
    /// <summary>A lower bound on the layers whose attention mixes tokens (the probe's candidates, <see cref="SearchRequest.AttentionLadder"/>).</summary>
    public int? MinAttentionLayers { get; init; }

    public IEnumerable<string> Violations(SearchTotals t, double tolerance = 1e-6)
    {
        if (MinAttentionLayers is { } a && t.AttentionLayers < a) yield return $"{t.AttentionLayers} attention layers < {a}";
        if (MaxMemoryBytes is { } m && t.MemoryBytes > m * (1 + tolerance)) yield return $"memory {t.MemoryBytes:N0} B > {m:N0} B";
        if (MaxTimeMs is { } ms && t.TimeMs > ms * (1 + tolerance)) yield return $"generation time {t.TimeMs:F4} ms > {ms:F4} ms";
        if (MaxParameters is { } p && t.Parameters > p) yield return $"parameters {t.Parameters:N0} > {p:N0}";
    }
}
