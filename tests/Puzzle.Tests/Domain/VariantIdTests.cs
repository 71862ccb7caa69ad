using System.Text.Json.Nodes;
using Puzzle.Config;
using Puzzle.Domain;
using Puzzle.Model;
using Puzzle.Stages.Scoring;

namespace Puzzle.Tests.Domain;

public sealed class VariantIdTests
{
    [Theory]
    [InlineData("L0.attn.kv2", 0, SubblockKind.Attention, "kv2")]
    [InlineData("L12.ffn.w0.5", 12, SubblockKind.Ffn, "w0.5")]
    [InlineData("L3.ffn.noop", 3, SubblockKind.Ffn, "noop")]
    public void Parse_RoundTrips(string text, int layer, SubblockKind kind, string name)
    {
        var id = VariantId.Parse(text);
        Assert.Equal(new VariantId(layer, kind, name), id);
        Assert.Equal(text, id.ToString());
    }

    [Theory]
    [InlineData("")]
    [InlineData("L1.mlp.w1")]
    [InlineData("L01.attn.kv2")]
    [InlineData("Lx.attn.kv2")]
    [InlineData("L1.attn.")]
    [InlineData("1.attn.kv2")]
    public void Parse_RejectsOtherSpellings_NamingWhere(string text)
    {
        Assert.False(VariantId.TryParse(text, out _));
        var e = Assert.Throws<PuzzleException>(() => VariantId.Parse(text, "RUN/solutions/child.json: layers[1].attention"));
        Assert.StartsWith("RUN/solutions/child.json: layers[1].attention: '" + text + "' is not a variant id", e.Message);
    }

    [Fact]
    public void CandidateId_IsOneLayersAttentionPlusFfn_OrOneSublayer()
    {
        var c = CandidateId.Parse("L2.attn.kv1+L2.ffn.w0.25");
        Assert.Equal((2, "kv1", "w0.25"), (c.Layer, c.Attention!.Value.Name, c.Ffn!.Value.Name));
        Assert.Equal("L2.attn.kv1+L2.ffn.w0.25", c.ToString());
        Assert.Equal("L2.ffn.noop", CandidateId.Of(null, "L2.ffn.noop").ToString());
        Assert.Null(CandidateId.Parse("L2.ffn.noop").Attention);
        Assert.Throws<PuzzleException>(() => CandidateId.Parse("L2.attn.kv1+L3.ffn.w1"));
        Assert.Throws<PuzzleException>(() => CandidateId.Parse("L2.ffn.w1+L2.attn.kv1"));
        // The scorer's candidate ids and score ids are this type's spelling.
        Assert.Equal("L2.attn.kv1+L2.ffn.w0.25", new BlockScore(2, "L2.attn.kv1", "L2.ffn.w0.25", 0, 0, 1, 1).Id);
    }

    [Fact]
    public void Catalog_ResolvesIds_AndTheParentsOwn_WithOneLabelPerSublayer()
    {
        var parent = TestSupport.TinyParentConfig();                                                 // 4 heads, 2 KV heads, FFN 160
        var catalog = VariantCatalog.Expand(parent, new SearchSpaceSection { FfnFractions = [1.0, 0.5] });
        Assert.Equal(parent.NumLayers, catalog.Layers);
        Assert.Equal("L1.attn.kv2", catalog.Parent(1, SubblockKind.Attention).Id);
        Assert.Equal("L1.ffn.w1", catalog.Parent(1, SubblockKind.Ffn).Id);
        Assert.All(catalog.All, v => Assert.Equal(v.Id, v.Key.ToString()));
        Assert.Equal("SwiGLU, width 80", catalog.Get("L0.ffn.w0.5", "test").Label);
        Assert.Equal("GQA, 1 KV heads", VariantLabel.Of(AttentionConfig.Gqa(1)));
        Assert.Equal("no-op", catalog.Get("L0.attn.noop", "test").Label);
        var e = Assert.Throws<PuzzleException>(() => catalog.Get("L0.ffn.w0.3", "RUN/solutions/child.json: layers[0].ffn"));
        Assert.Equal("RUN/solutions/child.json: layers[0].ffn: variant L0.ffn.w0.3 is not in the run's search space (search_space changed since it was written?)", e.Message);
    }

    [Fact]
    public void ScoresFile_RoundTrips_AndRejectsAnInconsistentComplete()
    {
        string path = Path.Combine(TestSupport.TempDir(), "scores.json");
        var file = new ScoresFile("abc", "composed", 128, 2.5, 2, [new BlockScore(0, "L0.attn.kv2", "L0.ffn.w1", 0.1, 2.6, 0.9, 128)]);
        file.Write(path);
        var back = ScoresFile.Read(path);
        Assert.Equal(file.ToJson().ToJsonString(), back.ToJson().ToJsonString());
        Assert.False(back.Complete);
        var json = JsonNode.Parse(File.ReadAllText(path))!;
        json["complete"] = true;
        File.WriteAllText(path, json.ToJsonString());
        Assert.Equal($"{path}: complete is true but it holds 1 of 2 candidates", Assert.Throws<PuzzleException>(() => ScoresFile.Read(path)).Message);
        json["format_version"] = 2;
        File.WriteAllText(path, json.ToJsonString());
        Assert.Contains("format_version 2 is not 1", Assert.Throws<PuzzleException>(() => ScoresFile.Read(path)).Message);
    }
}
