using Puzzle.Config;
using Puzzle.Domain;
using Puzzle.Model;
using Puzzle.Stages.Library;

namespace Puzzle.Tests.Stages;

public sealed class SearchSpaceTests
{
    [Fact]
    public void Expand_DefaultSpace_GivesStableIdsPerLayer()
    {
        var config = TestSupport.TinyParentConfig();                                           // 4 heads, 2 KV, FFN 160, multiple 8
        var variants = SearchSpace.Expand(config, new SearchSpaceSection());
        Assert.Equal(
            ["L1.attn.kv2", "L1.attn.kv1", "L1.attn.linear", "L1.attn.noop",
             "L1.ffn.w1", "L1.ffn.w0.875", "L1.ffn.w0.75", "L1.ffn.w0.5", "L1.ffn.w0.25", "L1.ffn.w0.2", "L1.ffn.w0.1", "L1.ffn.linear", "L1.ffn.noop"],
            variants.Where(v => v.Layer == 1).Select(v => v.Id));
        Assert.Equal([160, 144, 120, 80, 40, 32, 16], variants.Where(v => v.Layer == 0 && v.Ffn is { IsSwiGlu: true }).Select(v => v.Ffn!.IntermediateSize!.Value));
        Assert.True(variants.Single(v => v.Id == "L0.attn.kv2").IsParent);
        Assert.False(variants.Single(v => v.Id == "L0.attn.noop").NeedsTraining);
        Assert.True(variants.Single(v => v.Id == "L0.ffn.w0.5").NeedsTraining);
    }

    [Fact]
    public void Expand_FractionsRoundingToTheSameWidth_AreMerged()
    {
        // FFN 160 rounded to multiples of 64: 0.875 -> 128, 0.75 -> 128 (merged); 0.5 -> 64, 0.25, 0.2 and 0.1 -> 64 (merged)
        var variants = SearchSpace.Expand(TestSupport.TinyParentConfig(layers: 1), new SearchSpaceSection { FfnMultiple = 64 });
        var ffn = variants.Where(v => v.Kind == SubblockKind.Ffn).ToList();
        Assert.Equal(["L0.ffn.w1", "L0.ffn.w0.875", "L0.ffn.w0.5", "L0.ffn.linear", "L0.ffn.noop"], ffn.Select(v => v.Id));
        Assert.Equal([160, 128, 64], ffn.Where(v => v.Ffn!.IsSwiGlu).Select(v => v.Ffn!.IntermediateSize!.Value));
    }

    [Fact]
    public void Expand_RespectsSwitches_AndDefaultMultipleFollowsParentWidth()
    {
        var space = new SearchSpaceSection { KvHeads = [1], AttentionLinear = false, AttentionNoOp = false, FfnFractions = [0.5], FfnLinear = false, FfnNoOp = false };
        var variants = SearchSpace.Expand(TestSupport.TinyParentConfig(layers: 1), space);
        Assert.Equal(["L0.attn.kv1", "L0.attn.kv2", "L0.ffn.w1", "L0.ffn.w0.5"], variants.Select(v => v.Id));
        Assert.Equal(256, SearchSpace.FfnMultiple(new SearchSpaceSection(), 28672));
        Assert.Equal(8, SearchSpace.FfnMultiple(new SearchSpaceSection(), 768));
    }

    [Fact]
    public void Expand_KvCountNotDividingTheParents_IsAnError()
    {
        var e = Assert.Throws<PuzzleException>(() => SearchSpace.Expand(TestSupport.TinyParentConfig(), new SearchSpaceSection { KvHeads = [3] }));
        Assert.Contains("search_space.kv_heads: 3 does not divide layer 0's 2 KV heads", e.Message);
    }

    [Fact]
    public void RunConfig_UnknownKeysAndWrongTypes_NameTheKey()
    {
        var root = new RunConfig().ToJson();
        root["bld"]!["learning_rate"] = 0.1;
        Assert.Contains("unknown key 'bld.learning_rate'", Assert.Throws<PuzzleException>(() => RunConfig.Parse(root, "run.json")).Message);
        root = new RunConfig().ToJson();
        root["bld"]!["batch"] = "sixteen";
        string message = Assert.Throws<PuzzleException>(() => RunConfig.Parse(root, "run.json")).Message;
        Assert.Contains("run.json: 'bld.batch' has the wrong type", message);
        var parsed = RunConfig.Parse(new RunConfig().ToJson(), "x");
        Assert.Equal(new RunConfig().Bld, parsed.Bld);
        var overridden = new RunConfig().ToJson();
        RunConfig.ApplyOverride(overridden, "bld.lr=0.5");
        RunConfig.ApplyOverride(overridden, "parent.path=some/dir");
        var config = RunConfig.Parse(overridden, "x");
        Assert.Equal(0.5, config.Bld.Lr);
        Assert.Equal("some/dir", config.Parent.Path);
    }

    [Fact]
    public void SearchMaxOvershoot_ReachesThePipelinesSearch_AndMustBePositive()
    {
        var root = new RunConfig().ToJson();
        root["search"]!["max_overshoot"] = -0.1;
        Assert.Contains("run.json: search.max_overshoot must be a positive number, got -0.1",
            Assert.Throws<PuzzleException>(() => RunConfig.Parse(root, "run.json")).Message);

        string dir = Path.Combine(Path.GetTempPath(), "puzzle-overshoot-" + Guid.NewGuid().ToString("N"));
        try
        {
            Directory.CreateDirectory(dir);
            new RunConfig { Parent = new ParentSection { Path = "parent" } }.Save(Path.Combine(dir, RunConfig.FileName));
            Assert.Equal(0.15, Puzzle.Stages.ChildRecipe.SearchRequestFor(new Puzzle.Stages.RunDirectory(dir)).MaxOvershoot);
            Assert.Null(Puzzle.Stages.ChildRecipe.SearchRequestFor(new Puzzle.Stages.RunDirectory(dir, ["search.max_overshoot=null"])).MaxOvershoot);
            Assert.Equal(0.3, Puzzle.Stages.ChildRecipe.SearchRequestFor(new Puzzle.Stages.RunDirectory(dir, ["search.max_overshoot=0.3"])).MaxOvershoot);
        }
        finally { Directory.Delete(dir, true); }
    }
}
