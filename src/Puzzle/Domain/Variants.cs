using System.Globalization;
using Puzzle.Model;

namespace Puzzle.Domain;

public enum SubblockKind { Attention, Ffn }

/// <summary>
/// A variant's stable id, <c>L{layer}.attn.{name}</c> or <c>L{layer}.ffn.{name}</c> (e.g. L12.attn.kv2, L12.ffn.w0.5):
/// the key of its library files, scores, costs and solutions. Parsed here and nowhere else.
/// </summary>
public readonly record struct VariantId(int Layer, SubblockKind Kind, string Name)
{
    public override string ToString() => $"L{Layer.ToString(CultureInfo.InvariantCulture)}.{KindToken(Kind)}.{Name}";

    static string KindToken(SubblockKind kind) => kind == SubblockKind.Attention ? "attn" : "ffn";

    public static bool TryParse(string? text, out VariantId id)
    {
        id = default;
        if (text is null || text.Length < 4 || text[0] != 'L') return false;
        int first = text.IndexOf('.'), second = first < 0 ? -1 : text.IndexOf('.', first + 1);
        if (second < 0 || second == text.Length - 1) return false;
        if (!int.TryParse(text.AsSpan(1, first - 1), NumberStyles.None, CultureInfo.InvariantCulture, out int layer)) return false;
        SubblockKind? kind = text[(first + 1)..second] switch { "attn" => SubblockKind.Attention, "ffn" => SubblockKind.Ffn, _ => null };
        if (kind is null) return false;
        id = new VariantId(layer, kind.Value, text[(second + 1)..]);
        return id.ToString() == text;                                                               // canonical spelling only ("L01" is not L1)
    }

    /// <param name="where">the file and field the id was read from, for the error.</param>
    public static VariantId Parse(string text, string where = "variant id") =>
        TryParse(text, out var id) ? id : throw new PuzzleException($"{where}: '{text}' is not a variant id (expected L<layer>.attn.<name> or L<layer>.ffn.<name>, e.g. L3.attn.kv2)");
}

/// <summary>
/// A replace-1-block candidate: the attention and FFN variants of one layer, <c>{attention}+{ffn}</c>; in subblock
/// scoring and search groups one side may be absent (the other sublayer is the parent's own), never an empty string.
/// </summary>
public readonly record struct CandidateId(VariantId? Attention, VariantId? Ffn)
{
    public int Layer => (Attention ?? Ffn ?? throw new InvalidOperationException("a candidate has at least one sublayer")).Layer;

    public static CandidateId Of(string? attention, string? ffn) => new(
        string.IsNullOrEmpty(attention) ? null : VariantId.Parse(attention), string.IsNullOrEmpty(ffn) ? null : VariantId.Parse(ffn));

    public override string ToString() => Attention is { } a && Ffn is { } f ? $"{a}+{f}" : (Attention ?? Ffn)?.ToString() ?? "";

    public static CandidateId Parse(string text, string where = "candidate id")
    {
        int plus = text.IndexOf('+');
        if (plus < 0)
        {
            var one = VariantId.Parse(text, where);
            return one.Kind == SubblockKind.Attention ? new CandidateId(one, null) : new CandidateId(null, one);
        }
        var a = VariantId.Parse(text[..plus], where);
        var f = VariantId.Parse(text[(plus + 1)..], where);
        if (a.Kind != SubblockKind.Attention || f.Kind != SubblockKind.Ffn || a.Layer != f.Layer)
            throw new PuzzleException($"{where}: '{text}' must be one layer's attention variant + FFN variant");
        return new CandidateId(a, f);
    }
}

/// <summary>One candidate for one sublayer of one layer, with a stable id such as <c>L12.attn.kv2</c> or <c>L12.ffn.w0.5</c>.</summary>
public sealed record SubblockVariant(string Id, int Layer, SubblockKind Kind, AttentionConfig? Attention, FfnConfig? Ffn, bool IsParent)
{
    public VariantId Key => new(Layer, Kind, VariantId.Parse(Id).Name);

    public bool IsNoOp => Kind == SubblockKind.Attention ? Attention!.NoOp : Ffn!.NoOp;

    /// <summary>Only new, non-empty subblocks are trained; the parent's own and no-ops are used as they are.</summary>
    public bool NeedsTraining => !IsParent && !IsNoOp;

    public string Label => Kind == SubblockKind.Attention ? VariantLabel.Of(Attention!) : VariantLabel.Of(Ffn!);

    public override string ToString() => $"{Id} ({Label})";
}

/// <summary>The one human-readable spelling of a sublayer, for the report, the model card, logs and summaries.</summary>
public static class VariantLabel
{
    public static string Of(AttentionConfig a) => a.NoOp ? "no-op" : a.ReplaceWithLinear ? "linear" : $"GQA, {a.NumKeyValueHeads} KV heads";

    public static string Of(FfnConfig f) => f.NoOp ? "no-op" : f.ReplaceWithLinear ? "linear" : $"SwiGLU, width {f.IntermediateSize}";

    public static string Of(BlockConfig b) => $"{Of(b.Attention)} | {Of(b.Ffn)}";
}

/// <summary>
/// A run's variants, expanded once from the parent and search_space: lookup by id (with an error naming where the
/// id came from), each layer's variants, and the parent's own.
/// </summary>
public sealed class VariantCatalog
{
    readonly Dictionary<string, SubblockVariant> _byId;

    public IReadOnlyList<SubblockVariant> All { get; }
    public int Layers { get; }

    public VariantCatalog(IReadOnlyList<SubblockVariant> variants, int layers)
    {
        All = variants;
        Layers = layers;
        _byId = variants.ToDictionary(v => v.Id, StringComparer.Ordinal);
    }

    public static VariantCatalog Expand(ModelConfig parent, Config.SearchSpaceSection space) => new(SearchSpace.Expand(parent, space), parent.NumLayers);

    public bool Contains(string id) => _byId.ContainsKey(id);

    public bool TryGet(string id, out SubblockVariant variant) => _byId.TryGetValue(id, out variant!);

    /// <param name="where">the file (and field) the id was read from, for the error.</param>
    public SubblockVariant Get(string id, string where) => _byId.TryGetValue(id, out var v) ? v
        : throw new PuzzleException($"{where}: variant {id} is not in the run's search space (search_space changed since it was written?)");

    public SubblockVariant Get(VariantId id, string where) => Get(id.ToString(), where);

    public IEnumerable<SubblockVariant> Of(int layer, SubblockKind kind) => All.Where(v => v.Layer == layer && v.Kind == kind);

    /// <summary>The parent's own sublayer of that layer and kind.</summary>
    public SubblockVariant Parent(int layer, SubblockKind kind) => Of(layer, kind).Single(v => v.IsParent);
}
