using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Config;
using Puzzle.Data;
using Puzzle.Domain;
using Puzzle.IO;
using Puzzle.Model;
using Puzzle.Stages;
using Puzzle.Stages.Assembly;
using Puzzle.Stages.Library;
using Puzzle.Tests.Data;
using Puzzle.Training;
using static TorchSharp.torch;

namespace Puzzle.Tests.Stages;

/// <summary>A 3-layer tiny parent pretrained on a synthetic corpus and its block library, once; each test gets a run over a copy of it.</summary>
public sealed class CoupledBldFixture
{
    public string ParentDir { get; }
    public string DataDir { get; }
    readonly string _template;

    public CoupledBldFixture()
    {
        (ParentDir, DataDir) = RunFixture.Pretrained(new ModelShape(3, 64, 4, 2, 128));
        _template = TestSupport.TempDir();
        var config = new RunConfig
        {
            Parent = new ParentSection { Path = ParentDir },
            Data = new DataSection { Path = DataDir },
            SearchSpace = new SearchSpaceSection { KvHeads = [1], AttentionLinear = false, FfnFractions = [1.0, 0.5], FfnLinear = false },
            Bld = new BldSection { TokensPerVariant = 8 * 32 * 8, Batch = 8, Lr = 1e-3, CalibrationTokens = 32 * 16, ValidationTokens = 32 * 16 },
        };
        config.Save(Path.Combine(_template, RunConfig.FileName));
        BlockLibraryBuilder.Run(new RunDirectory(_template), new LogProgress(), _ => { });
    }

    /// <summary>A fresh run with the fixture's library (copied) and a solution of these (attention, FFN) choices per layer.</summary>
    public string NewRun(params (string Attention, string Ffn)[] layers)
    {
        string run = TestSupport.TempDir();
        File.Copy(Path.Combine(_template, RunConfig.FileName), Path.Combine(run, RunConfig.FileName));
        Directory.CreateDirectory(Path.Combine(run, RunDirectory.LibraryFolder));
        foreach (string f in Directory.GetFiles(Path.Combine(_template, RunDirectory.LibraryFolder)))
            File.Copy(f, Path.Combine(run, RunDirectory.LibraryFolder, Path.GetFileName(f)));
        WriteSolution(new RunDirectory(run), layers);
        return run;
    }

    /// <summary>RUN/solutions/child.json choosing, per layer, "parent", "noop" or "new" (the one trained variant) for attention and FFN.</summary>
    public static void WriteSolution(RunDirectory run, (string Attention, string Ffn)[] layers)
    {
        SubblockVariant Pick(int layer, SubblockKind kind, string what) => run.Variants.Of(layer, kind).Single(v => what switch
        {
            "parent" => v.IsParent,
            "noop" => v.IsNoOp,
            _ => v.NeedsTraining,
        });
        var choices = layers.Select((l, i) => (Attention: Pick(i, SubblockKind.Attention, l.Attention), Ffn: Pick(i, SubblockKind.Ffn, l.Ffn))).ToList();
        var config = HfConfig.Read(run.ParentDir).WithBlocks(choices.Select(c => new BlockConfig(c.Attention.Attention!, c.Ffn.Ffn!)));
        var solution = new JsonObject
        {
            ["format_version"] = 1, ["name"] = ChildRecipe.Solution,
            ["verified"] = new JsonObject { ["parameters"] = config.TotalParameters },
            ["layers"] = new JsonArray(choices.Select((c, i) => (JsonNode)new JsonObject { ["layer"] = i, ["attention"] = c.Attention.Id, ["ffn"] = c.Ffn.Id }).ToArray()),
        };
        Directory.CreateDirectory(run.Solutions);
        File.WriteAllText(run.Solution(ChildRecipe.Solution), solution.ToJsonString());
    }
}

public sealed class CoupledBldTests(CoupledBldFixture fixture) : IClassFixture<CoupledBldFixture>
{
    // 6 steps of batch 8 × 32: not the library's 8, so coupled BLD caches the parent's activations itself.
    const long Tokens = 8 * 32 * 6;
    static readonly string[] On = [$"assembly.coupled_bld_tokens={Tokens}"];

    // Layer 0: both sublayers new; layer 1: the parent's own (nothing to train); layer 2: no attention, the narrowed FFN.
    static readonly (string, string)[] Solution = [("new", "new"), ("parent", "parent"), ("noop", "new")];

    static string Copy(string dir)
    {
        string copy = TestSupport.TempDir();
        foreach (string f in Directory.GetFiles(dir)) File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
        return copy;
    }

    static byte[] Weights(string dir) => File.ReadAllBytes(Path.Combine(dir, "model.safetensors"));

    /// <summary>NMSE of a child's layer against the parent's on the parent's own input to it, over the bld validation windows.</summary>
    static double LayerNmse(CausalLm parent, CausalLm child, int layer, Tensor ids)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var h = parent.LayerInput(ids, layer);
        var attention = parent.PrefillInputs(ids.shape[1], layer, ScalarType.Float32);
        var target = parent.Layer(layer).Forward(h, attention);
        var output = child.Layer(layer).Forward(h, attention);
        return (output - target).pow(2).sum().item<float>() / (double)target.pow(2).sum().item<float>();
    }

    [Fact]
    public void CoupledBld_LowersEveryTrainedLayersNmse_AndLeavesTheParentsLayersBitwise()
    {
        string path = fixture.NewRun(Solution);
        var off = new RunDirectory(path);
        Assert.True(AssemblyStage.Run(off, _ => { }));
        string decoupled = Copy(off.Child);
        var on = new RunDirectory(path, On);
        Assert.True(AssemblyStage.Run(on, _ => { }));

        // The record: layers 0 and 2 trained, each better after than before; layer 1 (the parent's) not trained.
        var summary = JsonFile.Read(Path.Combine(on.Child, AssemblyStage.CoupledFile));
        var records = summary["layers"].Items();
        Assert.Equal([0, 2], records.Select(r => r["layer"].Int()));
        Assert.All(records, r => Assert.True(r["nmse_after"].Double() < r["nmse_before"].Double(), $"layer {r["layer"].Int()}"));
        Assert.All(records, r => Assert.Equal(Tokens, r["tokens"].Long()));

        // A second computation: each child's layer against the parent's on the parent's own inputs (validation windows).
        using var parent = Checkpoint.Load(fixture.ParentDir);
        using var before = Checkpoint.Load(decoupled);
        using var after = Checkpoint.Load(on.Child);
        using var validation = new TokenDataset(fixture.DataDir, "validation");
        using var ids = BlockTraining.FixedWindows(validation, 32, on.Config.Bld.ValidationTokens, CPU, "test");
        foreach (var r in records)
        {
            int l = r["layer"].Int();
            double b = LayerNmse(parent, before, l, ids), a = LayerNmse(parent, after, l, ids);
            Assert.True(a < b, $"layer {l}: coupled NMSE {a} is not below the decoupled child's {b}");
            Assert.Equal(r["nmse_before"].Double(), b, 0.02 * b + 1e-6);                      // the record's, from fp32 masters
            Assert.Equal(r["nmse_after"].Double(), a, 0.02 * a + 1e-6);
        }
        Assert.Equal(0, LayerNmse(parent, after, 1, ids));

        // The parent's layer and every non-block tensor: bitwise the parent's, in both children.
        using var parentFile = SafeTensorsFile.Open(Checkpoint.WeightMap(fixture.ParentDir).Values.First());
        using var beforeFile = SafeTensorsFile.Open(Path.Combine(decoupled, "model.safetensors"));
        using var afterFile = SafeTensorsFile.Open(Path.Combine(on.Child, "model.safetensors"));
        var untouched = afterFile.Tensors.Keys.Where(n => n.StartsWith("model.layers.1.", StringComparison.Ordinal) || !n.StartsWith("model.layers.", StringComparison.Ordinal)).ToList();
        Assert.Contains("model.layers.1.mlp.down_proj.weight", untouched);
        foreach (string n in untouched)
        {
            using var p = parentFile.Read(n);
            using var x = beforeFile.Read(n);
            using var y = afterFile.Read(n);
            Assert.True(p.equal(x).all().item<bool>() && p.equal(y).all().item<bool>(), n);
        }
        // The trained layers did change.
        using (var x = beforeFile.Read("model.layers.0.self_attn.q_proj.weight"))
        using (var y = afterFile.Read("model.layers.0.self_attn.q_proj.weight"))
            Assert.False(x.equal(y).all().item<bool>());
    }

    [Fact]
    public void Assemble_WithCoupledBld_SkipsOnRerun_ResumesPerLayer_AndOffGivesTheOldChildBitwise()
    {
        string path = fixture.NewRun(Solution);
        var off = new RunDirectory(path);
        // Off: exactly the child the assembler gives without coupled BLD, keyed by the library key alone (as before).
        Assert.True(AssemblyStage.Run(off, _ => { }));
        string old = TestSupport.TempDir();
        ChildAssembler.Run(off, ChildRecipe.Solution, old, _ => { });
        Assert.Equal(Weights(old), Weights(off.Child));
        string offKey = JsonFile.Read(Path.Combine(off.Child, AssemblyStage.LibraryKeyFile))["key"].String();
        Assert.False(File.Exists(Path.Combine(off.Child, AssemblyStage.CoupledFile)));

        var on = new RunDirectory(path, On);
        var log = new List<string>();
        Assert.True(AssemblyStage.Run(on, log.Add));
        Assert.Contains(log, l => l.Contains("0 already done, 2 to train", StringComparison.Ordinal));
        byte[] coupled = Weights(on.Child);
        string onKey = JsonFile.Read(Path.Combine(on.Child, AssemblyStage.LibraryKeyFile))["key"].String();
        Assert.NotEqual(offKey, onKey);                                                        // what distill compares: child-gkd starts over
        Assert.Equal(onKey, CoupledBld.ChildKey(on, offKey));
        Assert.NotEqual(onKey, CoupledBld.ChildKey(new RunDirectory(path, ["assembly.coupled_bld_tokens=512"]), offKey));   // another budget: assembled again

        // A rerun trains nothing and keeps the child.
        log.Clear();
        Assert.False(AssemblyStage.Run(on, log.Add));
        Assert.Contains(log, l => l.Contains("already holds this solution", StringComparison.Ordinal));
        // Interrupted after layer 0 (layer 2's record missing, no child): layer 0 reused, layer 2 trained again, the same child.
        File.Delete(CoupledBld.RecordPath(on, 2));
        Directory.Delete(on.Child, recursive: true);
        var layer0 = File.GetLastWriteTimeUtc(CoupledBld.WeightsPath(on, 0));
        log.Clear();
        Assert.True(AssemblyStage.Run(on, log.Add));
        Assert.Contains(log, l => l.Contains("1 already done, 1 to train", StringComparison.Ordinal));
        Assert.Equal(layer0, File.GetLastWriteTimeUtc(CoupledBld.WeightsPath(on, 0)));
        Assert.Equal(coupled, Weights(on.Child));                                              // same batches, same steps: deterministic
        Assert.False(Directory.Exists(on.Artifact(CoupledBld.Folder, "activations")));         // its own cache is gone once every layer is done

        // Back off: the old child again, bitwise, under the old key.
        Assert.True(AssemblyStage.Run(off, _ => { }));
        Assert.Equal(Weights(old), Weights(off.Child));
        Assert.Equal(offKey, JsonFile.Read(Path.Combine(off.Child, AssemblyStage.LibraryKeyFile))["key"].String());
        Assert.False(File.Exists(Path.Combine(off.Child, AssemblyStage.CoupledFile)));
    }

    [Fact]
    public void PuzzleAssemble_OfASolution_RunsCoupledBld_AsStage7Does()
    {
        string path = fixture.NewRun(Solution);
        var on = new RunDirectory(path, On);
        Assert.True(AssemblyStage.Run(on, _ => { }));
        // `puzzle assemble --solution child --out DIR`: the stage's coupled blocks reused, the same child bitwise, the same record.
        string manual = TestSupport.TempDir();
        var log = new List<string>();
        AssemblyStage.Assemble(on, ChildRecipe.Solution, manual, log.Add);
        Assert.Contains(log, l => l.Contains("2 already done, 0 to train", StringComparison.Ordinal));
        Assert.Equal(Weights(on.Child), Weights(manual));
        Assert.Equal(JsonFile.Read(Path.Combine(on.Child, AssemblyStage.CoupledFile))["key"].String(),
            JsonFile.Read(Path.Combine(manual, AssemblyStage.CoupledFile))["key"].String());
        // Off: the library's decoupled blocks, no record (one left in DIR by an earlier assembly is removed).
        var off = new RunDirectory(path);
        AssemblyStage.Assemble(off, ChildRecipe.Solution, manual, _ => { });
        string plain = TestSupport.TempDir();
        ChildAssembler.Run(off, ChildRecipe.Solution, plain, _ => { });
        Assert.Equal(Weights(plain), Weights(manual));
        Assert.NotEqual(Weights(on.Child), Weights(manual));
        Assert.False(File.Exists(Path.Combine(manual, AssemblyStage.CoupledFile)));
    }

    [Fact]
    public void CoupledBld_TrainsOnlyLayersThatDifferFromTheParent_AndHaveSomethingToTrain()
    {
        var run = new RunDirectory(fixture.NewRun(Solution));
        SubblockVariant V(SubblockKind kind, Func<SubblockVariant, bool> which) => run.Variants.Of(0, kind).Single(which);
        var (parentA, parentF) = (V(SubblockKind.Attention, v => v.IsParent), V(SubblockKind.Ffn, v => v.IsParent));
        var (noopA, noopF) = (V(SubblockKind.Attention, v => v.IsNoOp), V(SubblockKind.Ffn, v => v.IsNoOp));
        var (newA, newF) = (V(SubblockKind.Attention, v => v.NeedsTraining), V(SubblockKind.Ffn, v => v.NeedsTraining));
        Assert.False(CoupledBld.Trains(parentA, parentF));
        Assert.False(CoupledBld.Trains(noopA, noopF));
        Assert.True(CoupledBld.Trains(noopA, parentF));                                         // the parent's FFN learns to stand in for the attention
        Assert.True(CoupledBld.Trains(newA, parentF));
        Assert.True(CoupledBld.Trains(newA, newF));
    }

    [Fact]
    public void RunConfig_NegativeCoupledBldTokens_IsAnErrorNamingTheFieldAndValue()
    {
        string path = Path.Combine(TestSupport.TempDir(), "run.json");
        var tree = RunConfig.Defaults.ToJson();
        Assert.Equal(0, RunConfig.Defaults.Assembly.CoupledBldTokens);
        RunConfig.ApplyOverride(tree, "assembly.coupled_bld_tokens=-5");
        Assert.Equal($"{path}: assembly.coupled_bld_tokens must be a finite number >= 0, got -5",
            Assert.Throws<PuzzleException>(() => RunConfig.Parse(tree, path)).Message);
        tree = RunConfig.Defaults.ToJson();
        RunConfig.ApplyOverride(tree, "assembly.coupled_bld_token=1");
        Assert.Contains("unknown key 'assembly.coupled_bld_token'", Assert.Throws<PuzzleException>(() => RunConfig.Parse(tree, path)).Message);
    }
}
