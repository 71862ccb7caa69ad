using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Config;
using Puzzle.Model;
using Puzzle.Stages;
using Puzzle.Stages.Library;
using static TorchSharp.torch;

namespace Puzzle.Tests.Stages;

public sealed class LibraryTests(RunFixture fixture) : IClassFixture<RunFixture>
{
    static readonly Action<string> Quiet = _ => { };

    [Fact]
    public void Bld_LowersEveryTrainableVariantsValidationNmse_AndWritesTheLibrary()
    {
        string run = fixture.NewRun();
        var result = BlockLibraryBuilder.Run(new RunDirectory(run), new LogProgress(), Quiet);
        // tiny parent: 4 heads, 2 KV heads, FFN 128 -> attn kv2 (parent), kv1, linear, noop; ffn 128, 112, 96, 64, 32, 24, 16, linear, noop
        Assert.Equal(2 * (4 + 9), result.Variants);
        Assert.Equal(2 * (2 + 7), result.Trained);
        foreach (var r in result.Records.Where(r => r.Trained))
        {
            Assert.True(r.NmseFinal < r.NmseInit, $"{r.Id}: NMSE {r.NmseInit} -> {r.NmseFinal}");
            Assert.True(File.Exists(BlockLibrary.WeightsPath(run, r.Id)));
            Assert.Equal(12, r.Steps);
        }
        foreach (var r in result.Records.Where(r => r.IsParent)) Assert.Equal(0, r.NmseInit, 6);
        Assert.All(result.Records.Where(r => !r.Trained), r => Assert.Null(r.File));
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(run, "library", "library.json")))!;
        Assert.True(index["complete"]!.GetValue<bool>());
        Assert.Equal(26, index["variants"]!.AsArray().Count);

        // Saved tensors are the variant's sublayer only, under the layer's HF names.
        using var file = SafeTensorsFile.Open(BlockLibrary.WeightsPath(run, "L1.attn.kv1"));
        Assert.Equal(["input_layernorm.weight", "self_attn.k_proj.weight", "self_attn.o_proj.weight", "self_attn.q_proj.weight", "self_attn.v_proj.weight"],
            file.Tensors.Keys.Order());
        Assert.Equal([16L, 64], file.Tensors["self_attn.k_proj.weight"].Shape);
        using var ffn = SafeTensorsFile.Open(BlockLibrary.WeightsPath(run, "L0.ffn.w0.5"));
        Assert.Equal([64L, 64], ffn.Tensors["mlp.gate_proj.weight"].Shape);

        // A rerun finds everything done and trains nothing.
        var again = BlockLibraryBuilder.Run(new RunDirectory(run), new LogProgress(), Quiet);
        Assert.Equal(0, again.Trained);
        Assert.Equal(26, again.Skipped);
    }

    [Fact]
    public void TwoShards_ProduceTheSameLibraryAsOneProcess()
    {
        string single = fixture.NewRun(), sharded = fixture.NewRun();
        BlockLibraryBuilder.Run(new RunDirectory(single), new LogProgress(), Quiet);
        var first = BlockLibraryBuilder.Run(new RunDirectory(sharded) { Shard = Shard.Parse("0/2") }, new LogProgress(), Quiet);
        Assert.Equal(13, first.Done);
        Assert.False(JsonNode.Parse(File.ReadAllText(Path.Combine(sharded, "library", "library.json")))!["complete"]!.GetValue<bool>());
        var second = BlockLibraryBuilder.Run(new RunDirectory(sharded) { Shard = Shard.Parse("1/2") }, new LogProgress(), Quiet);
        Assert.Equal(26, second.Done);
        AssertSameLibrary(single, sharded);
    }

    [Fact]
    public void ActivationCache_BuiltByShardsAtOnce_IsBuiltOnce_AndEveryShardReadsItWhole()
    {
        // Task-array shards start together and share RUN/library/activations (CI caught a later shard deleting the
        // files an earlier one was reading). Three builders race on one folder; each must read what one computation gives.
        string dir = Path.Combine(fixture.NewRun(), "library", "activations");
        using var parent = Checkpoint.Load(fixture.ParentDir, CPU, ScalarType.Float32);
        using var train = new Puzzle.Data.TokenDataset(fixture.DataDir, "train");
        int seqLen = Puzzle.Data.DataManifest.Read(fixture.DataDir).SeqLen, steps = 6, batch = 4;
        int[] boundaries = [0, 1, 2];
        var logs = new System.Collections.Concurrent.ConcurrentBag<string>();
        using var start = new Barrier(3);
        var read = new List<float[]>[3];
        var errors = new System.Collections.Concurrent.ConcurrentBag<Exception>();
        var threads = Enumerable.Range(0, 3).Select(i => new Thread(() =>
        {
            try
            {
                start.SignalAndWait();
                using var cache = ActivationCache.Build(dir, parent, new Puzzle.Data.TokenBatchLoader(train, seqLen, 7), steps, batch, seqLen, boundaries,
                    "fp-1", "library", logs.Add);
                read[i] = boundaries.SelectMany(b => Enumerable.Range(0, steps).Select(s => { using var t = cache.Read(b, s); return t.to(ScalarType.Float32).data<float>().ToArray(); })).ToList();
            }
            catch (Exception e) { errors.Add(e); }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.Empty(errors);
        Assert.Single(logs, l => l.Contains("cached the parent's activations"));
        Assert.Equal(2, logs.Count(l => l.Contains("reusing the parent activations")));
        for (int i = 1; i < 3; i++)
            for (int k = 0; k < read[0].Count; k++) Assert.Equal(read[0][k], read[i][k]);
        Assert.Empty(Directory.GetFiles(dir, "*.tmp-*"));
    }

    [Fact]
    public void InterruptedRun_Rerun_RedoesOnlyTheMissingUnits_AndEndsTheSame()
    {
        string straight = fixture.NewRun(), interrupted = fixture.NewRun();
        BlockLibraryBuilder.Run(new RunDirectory(straight), new LogProgress(), Quiet);
        BlockLibraryBuilder.Run(new RunDirectory(interrupted), new LogProgress(), Quiet);
        // Killed during layer 1: its units never got their records; one weight file was left half-written.
        foreach (string record in Directory.GetFiles(Path.Combine(interrupted, "library"), "L1.*.json")) File.Delete(record);
        File.WriteAllText(BlockLibrary.WeightsPath(interrupted, "L1.ffn.w0.5") + ".tmp-123-abc", "partial");
        File.WriteAllText(BlockLibrary.WeightsPath(interrupted, "L1.attn.kv1"), "garbage from a crash");
        var rerun = BlockLibraryBuilder.Run(new RunDirectory(interrupted), new LogProgress(), Quiet);
        Assert.Equal(9, rerun.Trained);
        Assert.Equal(13, rerun.Skipped);
        AssertSameLibrary(straight, interrupted);
    }

    [Fact]
    public void CachedAndRecomputedActivations_BothLowerNmse_AndAgreeClosely()
    {
        string cached = fixture.NewRun(c => c["bld"]!["activations"] = "cache");
        string recomputed = fixture.NewRun(c => c["bld"]!["activations"] = "recompute");
        var a = BlockLibraryBuilder.Run(new RunDirectory(cached), new LogProgress(), Quiet);
        var b = BlockLibraryBuilder.Run(new RunDirectory(recomputed), new LogProgress(), Quiet);
        Assert.True(File.Exists(Path.Combine(cached, "library", "activations", "h0.bin")));
        Assert.False(Directory.Exists(Path.Combine(recomputed, "library", "activations")));
        foreach (var ra in a.Records.Where(r => r.Trained))
        {
            var rb = b.Records.Single(r => r.Id == ra.Id);
            Assert.True(ra.NmseFinal < ra.NmseInit && rb.NmseFinal < rb.NmseInit, ra.Id);
            Assert.Equal(ra.NmseInit, rb.NmseInit);                                               // same fp32 validation path
            Assert.InRange(ra.NmseFinal / rb.NmseFinal, 0.9, 1.1);                                // bf16-rounded targets only
        }
    }

    [Fact]
    public void Bf16Parent_GivesTheFp32PathsActivationsAndTargets_WithinBf16Rounding()
    {
        // The fixture's parent stored in bf16: BLD holds it in bf16 when the units compute in bf16, in fp32 when they do in fp32.
        string bf16Parent = TestSupport.TempDir();
        using (var model = Checkpoint.Load(fixture.ParentDir)) Checkpoint.SaveLlama(model, bf16Parent, ScalarType.BFloat16, fixture.ParentDir);
        string exact = fixture.NewRun(c => { c["parent"]!["path"] = bf16Parent; c["bld"]!["precision"] = "fp32"; });
        string held = fixture.NewRun(c => { c["parent"]!["path"] = bf16Parent; c["bld"]!["precision"] = "bf16"; });
        var logsA = new List<string>();
        var logsB = new List<string>();
        var a = BlockLibraryBuilder.Run(new RunDirectory(exact), new LogProgress(), logsA.Add);
        var b = BlockLibraryBuilder.Run(new RunDirectory(held), new LogProgress(), logsB.Add);
        Assert.Contains(logsA, l => l.Contains("parent held in Float32"));
        Assert.Contains(logsB, l => l.Contains("parent held in BFloat16"));

        // Activations (the units' inputs and targets): the embeddings are the same values; every deeper boundary within
        // bf16 rounding (relative RMS error below 2^-6, bf16's epsilon being 2^-8), and not bit-identical (bf16 compute).
        var files = Directory.GetFiles(Path.Combine(exact, "library", "activations"), "h*.bin").Order().ToList();
        Assert.Equal(3, files.Count);
        foreach (string file in files)
        {
            using var x = ReadBf16(file);
            using var y = ReadBf16(Path.Combine(held, "library", "activations", Path.GetFileName(file)));
            double relative = (x - y).norm().item<float>() / x.norm().item<float>();
            if (file.EndsWith("h0.bin")) Assert.Equal(0, relative);
            else Assert.InRange(relative, 1e-5, 1.0 / 64);
        }
        // Validation targets: the parent's own sublayers (fp32 masters of the same weights) reproduce them exactly in fp32
        // and to bf16 rounding in bf16; every variant's starting NMSE (init from the parent's weights) agrees within 2 %.
        foreach (var ra in a.Records)
        {
            var rb = b.Records.Single(r => r.Id == ra.Id);
            if (ra.IsParent)
            {
                Assert.Equal(0, ra.NmseInit, 8);
                Assert.InRange(rb.NmseInit, 1e-9, 1.0 / 64 / 64);
            }
            else Assert.InRange(rb.NmseInit / ra.NmseInit, 0.98, 1.02);
            if (ra.Trained) Assert.True(rb.NmseFinal < rb.NmseInit, rb.Id);
        }
        Assert.NotEqual(a.Records[0].Fingerprint, b.Records[0].Fingerprint);
    }

    /// <summary>
    /// BLD computes the parent's frozen attention half once per step for all the FFN variants of a layer
    /// (TrainedBlock.FrozenParentAttention): a variant trained from that shared tensor takes exactly the steps it takes
    /// from its own full forward, in fp32 and in bf16 compute.
    /// </summary>
    [Theory]
    [InlineData("fp32")]
    [InlineData("bf16")]
    public void FfnVariant_TrainedFromTheSharedAttentionHalf_TakesExactlyItsOwnSteps(string precision)
    {
        var run = new RunDirectory(fixture.NewRun());
        using var parent = Checkpoint.Load(run.ParentDir);
        var compute = Puzzle.Training.Precision.Resolve(precision, CPU);
        var variant = run.Variants.All.Single(v => v.Id == "L1.ffn.w0.5");
        using var channelScores = arange((long)parent.Config.Blocks[1].Ffn.IntermediateSize!, dtype: ScalarType.Float32);
        TrainedBlock New() => new(dtype => VariantInitializer.BuildBlock(parent.Config, parent.Layer(1), variant, channelScores, CPU, dtype),
            name => BlockLibraryBuilder.OwnsParameter(variant, name), compute, new Puzzle.Training.AdamWSettings());
        using var own = New();
        using var shared = New();
        using var scope = NewDisposeScope();
        var generator = new TorchSharp.torch.Generator(7);
        var attention = parent.PrefillInputs(16, 1, compute);
        for (int step = 0; step < 3; step++)
        {
            var input = randn([2, 16, parent.Config.HiddenSize], generator: generator).to(compute);
            var target = randn([2, 16, parent.Config.HiddenSize], generator: generator);
            Tensor afterAttention;
            using (no_grad()) afterAttention = shared.Work.ForwardAttention(input, attention);
            double a = own.Step(input, attention, target, 1.0, 1e-2), b = shared.StepFfn(afterAttention, target, 1.0, 1e-2);
            Assert.Equal(a, b);
        }
        foreach (var ((name, x), (_, y)) in own.Master.named_parameters().Zip(shared.Master.named_parameters()))
            Assert.True(TestSupport.MaxAbsDiff(x, y) == 0, name);
        // The steps changed the FFN (and nothing else): the comparison is not between two untouched copies.
        using var fresh = New();
        Assert.True(TestSupport.MaxAbsDiff(fresh.Master.named_parameters().Single(p => p.name == "mlp.down_proj.weight").parameter,
            own.Master.named_parameters().Single(p => p.name == "mlp.down_proj.weight").parameter) > 0);
        Assert.True(TestSupport.MaxAbsDiff(fresh.Master.named_parameters().Single(p => p.name == "self_attn.q_proj.weight").parameter,
            own.Master.named_parameters().Single(p => p.name == "self_attn.q_proj.weight").parameter) == 0);
    }

    static Tensor ReadBf16(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        using var t = empty(bytes.Length / 2, dtype: ScalarType.BFloat16);
        t.bytes = bytes;
        return t.to(ScalarType.Float32);
    }

    [Fact]
    public void ActivationCache_OverTheDiskBudget_IsAClearError_OrRecomputedWhenAuto()
    {
        string run = fixture.NewRun(c => c["bld"]!["disk_budget_gib"] = 1e-6);
        var e = Assert.Throws<PuzzleException>(() => BlockLibraryBuilder.Run(new RunDirectory(run), new LogProgress(), Quiet));
        // 12 steps × batch 8 × 32 tokens × hidden × 3 boundaries × 2 bytes
        Assert.Matches(@"need \d+\.\d MiB of disk \(12 steps × batch 8 × 32 tokens", e.Message);
        Assert.Contains("bld.disk_budget_gib allows 0.0 MiB", e.Message);
        Assert.Contains("bld.activations=recompute", e.Message);
        Assert.False(Directory.Exists(Path.Combine(run, "library", "activations")));

        string auto = fixture.NewRun(c => { c["bld"]!["disk_budget_gib"] = 1e-6; c["bld"]!["activations"] = "auto"; });
        var logs = new List<string>();
        var result = BlockLibraryBuilder.Run(new RunDirectory(auto), new LogProgress(), logs.Add);
        Assert.Contains(logs, l => l.Contains("recomputing the parent's activations per batch"));
        Assert.Equal(result.Variants, result.Done);
        Assert.False(Directory.Exists(Path.Combine(auto, "library", "activations")));
    }

    [Theory]
    [InlineData(10L << 30, 9L << 30, "(10.00 GiB) less a reserve of 1.00 GiB")]
    [InlineData(3L << 29, 3L << 28, "(1.50 GiB) less a reserve of 768.0 MiB")]
    [InlineData(0L, 0L, "(0.0 MiB) less a reserve of 0.0 MiB")]
    [InlineData(-5L, 0L, "(0.0 MiB) less a reserve of 0.0 MiB")]
    public void DiskRoom_KeepsAGibFree_OrHalfOfANearlyFullDisk(long available, long room, string what)
    {
        var (bytes, message) = ActivationCache.DiskRoom(available, "/runs' disk", null);
        Assert.Equal(room, bytes);
        Assert.Equal($"the free space on /runs' disk {what}", message);
        // a budget below the room is the room; above it, the free space still bounds it
        Assert.Equal((1L << 20, "bld.disk_budget_gib"), ActivationCache.DiskRoom(10L << 30, "d", 1.0 / 1024));
        Assert.Equal(9L << 30, ActivationCache.DiskRoom(10L << 30, "d", 50).Bytes);
        Assert.Throws<PuzzleException>(() => ActivationCache.DiskRoom(10L << 30, "d", -1));
    }

    [Fact]
    public void ChangedBldSettings_RetrainTheUnits()
    {
        string run = fixture.NewRun();
        BlockLibraryBuilder.Run(new RunDirectory(run), new LogProgress(), Quiet);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(run, "config.json")))!.AsObject();
        config["bld"]!["lr"] = 2e-4;
        File.WriteAllText(Path.Combine(run, "config.json"), config.ToJsonString());
        Assert.Equal(18, BlockLibraryBuilder.Run(new RunDirectory(run), new LogProgress(), Quiet).Trained);
    }

    static void AssertSameLibrary(string a, string b)
    {
        foreach (string path in Directory.GetFiles(Path.Combine(a, "library"), "*.json").Where(p => !p.EndsWith("library.json")))
        {
            var ra = VariantRecord.FromJson(JsonNode.Parse(File.ReadAllText(path))!);
            var rb = VariantRecord.FromJson(JsonNode.Parse(File.ReadAllText(Path.Combine(b, "library", Path.GetFileName(path))))!);
            Assert.Equal(ra with { Seconds = 0 }, rb with { Seconds = 0 });
            if (ra.File is null) continue;
            using var fa = SafeTensorsFile.Open(Path.Combine(a, "library", ra.File));
            using var fb = SafeTensorsFile.Open(Path.Combine(b, "library", rb.File!));
            foreach (string name in fa.Tensors.Keys)
            {
                using var ta = fa.Read(name);
                using var tb = fb.Read(name);
                Assert.True(TestSupport.MaxAbsDiff(ta, tb) == 0, $"{ra.Id} {name}");
            }
        }
    }
}
