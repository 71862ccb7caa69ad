using System.Globalization;
using Puzzle.Config;
using Puzzle.Model;

namespace Puzzle.Domain;

/// <summary>
/// Expands the search-space config into per-layer subblock variants (design.md 2). Stages do not call it: they take
/// <see cref="VariantCatalog"/> (RunDirectory.Variants), which expands once per run.
/// </summary>
public static class SearchSpace
{
    public static int FfnMultiple(SearchSpaceSection s, int parentIntermediate) =>
        s.FfnMultiple ?? (parentIntermediate >= 2048 ? 256 : 8);

    public static IReadOnlyList<SubblockVariant> Expand(ModelConfig parent, SearchSpaceSection s)
    {
        var variants = new List<SubblockVariant>();
        for (int layer = 0; layer < parent.NumLayers; layer++)
        {
            variants.AddRange(AttentionVariants(parent, layer, s));
            variants.AddRange(FfnVariants(parent, layer, s));
        }
        return variants;
    }

    static IEnumerable<SubblockVariant> AttentionVariants(ModelConfig parent, int layer, SearchSpaceSection s)
    {
        var own = parent.Blocks[layer].Attention;
        
        var seen = new HashSet<AttentionConfig>();
        SubblockVariant? Make(string name, AttentionConfig config) =>
            seen.Add(config) ? new SubblockVariant(new VariantId(layer, SubblockKind.Attention, name).ToString(), layer, SubblockKind.Attention, config, null, config == own) : null;

        var list = new List<SubblockVariant?>();
        if (own.IsGqa)
        {
            int parentKv = own.NumKeyValueHeads!.Value;
            var counts = s.KvHeads ?? DefaultKvHeads(parentKv);
            foreach (int kv in counts.Distinct().OrderDescending())
            {
                // Consecutive KV heads are averaged in groups: the new count must divide the parent's.
                if (kv <= 0 || kv > parentKv || parentKv % kv != 0)
                    throw new PuzzleException(
                        $"search_space.kv_heads: {kv} does not divide layer {layer}'s {parentKv} KV heads (initialisation averages groups of consecutive heads)");
                list.Add(Make($"kv{kv}", AttentionConfig.Gqa(kv)));
            }
            list.Add(Make($"kv{parentKv}", own));
        }
        else if (own.ReplaceWithLinear) list.Add(Make("linear", own));
        if (s.AttentionLinear && !own.NoOp) list.Add(Make("linear", AttentionConfig.Linear));
        if (s.AttentionNoOp || own.NoOp) list.Add(Make("noop", AttentionConfig.NoOperation));
        return list.OfType<SubblockVariant>();
    }

    static int[] DefaultKvHeads(int parentKv)
    {
        var counts = new List<int>();
        for (int kv = parentKv; kv >= 1; kv /= 2)
        {
            counts.Add(kv);
            if (kv % 2 != 0) break;
        }
        if (!counts.Contains(1)) counts.Add(1);
        return [.. counts];
    }

    static IEnumerable<SubblockVariant> FfnVariants(ModelConfig parent, int layer, SearchSpaceSection s)
    {
        var own = parent.Blocks[layer].Ffn;
        var seen = new HashSet<FfnConfig>();
        var list = new List<SubblockVariant>();
        void Add(string name, FfnConfig config)
        {
            if (seen.Add(config)) list.Add(new SubblockVariant(new VariantId(layer, SubblockKind.Ffn, name).ToString(), layer, SubblockKind.Ffn, null, config, config == own));
        }
        if (own.IsSwiGlu)
        {
            int width = own.IntermediateSize!.Value, multiple = FfnMultiple(s, width);
            Add("w1", own);                                                                   // the parent's own width first
            foreach (double fraction in s.FfnFractions.Distinct().OrderDescending())
            {
                if (fraction is <= 0 or > 1)
                    throw new PuzzleException($"search_space.ffn_fractions: {fraction} is not in (0, 1]");
                int size = fraction == 1 ? width : Math.Max(multiple, (int)Math.Round(fraction * width / multiple, MidpointRounding.AwayFromZero) * multiple);
                Add($"w{fraction.ToString("0.####", CultureInfo.InvariantCulture)}", FfnConfig.SwiGlu(Math.Min(size, width)));
            }
        }
        else if (own.ReplaceWithLinear) Add("linear", own);
        if (s.FfnLinear && !own.NoOp) Add("linear", FfnConfig.Linear);
        if (s.FfnNoOp || own.NoOp) Add("noop", FfnConfig.NoOperation);
        return list;
    }
}
