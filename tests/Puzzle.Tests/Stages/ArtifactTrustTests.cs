using System.Text.Json.Nodes;
using Puzzle.Config;
using Puzzle.IO;
using Puzzle.Stages;
using Puzzle.Stages.Assembly;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Library;
using Puzzle.Stages.Scoring;

namespace Puzzle.Tests.Stages;

/// <summary>Stored work is reused only when its inputs are unchanged, and library records are checked before they are used.</summary>
public sealed class ArtifactTrustTests(RunFixture fixture) : IClassFixture<RunFixture>
{
    static readonly Action<string> Quiet = _ => { };

    /// <summary>kv 2 is the parent's own, so nothing is trained: a library in a second.</summary>
    static void UntrainedSpace(JsonObject config)
    {
        config["search_space"] = new JsonObject
        {
            ["kv_heads"] = new JsonArray(2), ["attention_linear"] = false, ["attention_no_op"] = true,
            ["ffn_fractions"] = new JsonArray(1.0), ["ffn_linear"] = false, ["ffn_no_op"] = true,
        };
        config["scoring"] = new JsonObject { ["validation_tokens"] = 32 * 4, ["batch"] = 4 };
    }

    static void EditConfig(string run, Action<JsonObject> edit)
    {
        string path = Path.Combine(run, RunConfig.FileName);
        var config = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(config);
        File.WriteAllText(path, config.ToJsonString());
    }

    static void EditJson(string path, Action<JsonObject> edit)
    {
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(json);
        File.WriteAllText(path, json.ToJsonString());
    }

    [Fact]
    public void Costs_AreRecomputed_WhenFfnFractionsOrKvHeadsChange()
    {
        string run = fixture.NewRun(UntrainedSpace);
        var first = BlockCosts.Run(new RunDirectory(run), Quiet, rooflineOnly: true);
        string[] Variants(CostsFile costs) => costs.Entries.Select(e => e.Variant).ToArray();
        Assert.DoesNotContain("L0.ffn.w0.5", Variants(first));

        // Before canonical-JSON keys, both edits left the key alone (arrays print as System.Double[]) and the stale file was reused.
        EditConfig(run, c => c["search_space"]!["ffn_fractions"] = new JsonArray(1.0, 0.5));
        var second = BlockCosts.Run(new RunDirectory(run), Quiet, rooflineOnly: true);
        Assert.NotEqual(first.Fingerprint, second.Fingerprint);
        Assert.Contains("L0.ffn.w0.5", Variants(second));

        EditConfig(run, c => c["search_space"]!["kv_heads"] = new JsonArray(2, 1));
        var third = BlockCosts.Run(new RunDirectory(run), Quiet, rooflineOnly: true);
        Assert.NotEqual(second.Fingerprint, third.Fingerprint);
        Assert.Contains("L1.attn.kv1", Variants(third));

        var again = BlockCosts.Run(new RunDirectory(run), Quiet, rooflineOnly: true);                // unchanged: reused as it is
        Assert.Equal(third.ToJson().ToJsonString(), again.ToJson().ToJsonString());
    }

    [Fact]
    public void EvaluationKey_ChangesWithTheTasks_AndTheirContents_NotWithBenchRepeats()
    {
        string taskA = Path.Combine(TestSupport.TempDir(), "a.jsonl"), taskB = Path.Combine(TestSupport.TempDir(), "b.jsonl");
        File.WriteAllText(taskA, "{\"context\": \"x\", \"choices\": [\"a\", \"b\"], \"label\": 0}\n");
        File.WriteAllText(taskB, "{\"context\": \"y\", \"choices\": [\"a\", \"b\"], \"label\": 1}\n");
        string run = fixture.NewRun(c => c["evaluation"] = new JsonObject { ["tasks"] = new JsonArray(taskA) });
        string Key() => ArtifactKeys.Evaluation(new RunDirectory(run), fixture.ParentDir);
        string withA = Key();
        Assert.Equal(withA, Key());

        EditConfig(run, c => c["evaluation"]!["tasks"] = new JsonArray(taskA, taskB));
        string withAB = Key();
        Assert.NotEqual(withA, withAB);

        File.AppendAllText(taskB, "{\"context\": \"z\", \"choices\": [\"a\", \"b\"], \"label\": 0}\n");
        Assert.NotEqual(withAB, Key());
        string edited = Key();

        EditConfig(run, c => c["evaluation"]!["bench_repeats"] = 7);                              // the benchmark's, not the evaluation's
        Assert.Equal(edited, Key());
    }

    [Fact]
    public void Fingerprint_HashesArraysByContent_AndIgnoresKeyOrder()
    {
        var a = new SearchSpaceSection { FfnFractions = [1.0, 0.5] };
        Assert.Equal("System.Double[]", a.FfnFractions.ToString());                                // what the old keys hashed
        Assert.NotEqual(Fingerprint.Of("t", a), Fingerprint.Of("t", a with { FfnFractions = [1.0, 0.25] }));
        Assert.Equal(Fingerprint.Of("t", a), Fingerprint.Of("t", a with { FfnFractions = [1.0, 0.5] }));
        Assert.Equal("{\"a\":null,\"b\":[1,{\"x\":1,\"y\":2}]}", Fingerprint.Canonical(JsonNode.Parse("{\"b\": [1, {\"y\": 2, \"x\": 1}], \"a\": null}")));
        Assert.NotEqual(Fingerprint.Of("t", 1, 2), Fingerprint.Of("t", 2, 1));
        Assert.NotEqual(Fingerprint.Of("costs-v3", a), Fingerprint.Of("costs-v4", a));
    }

    [Fact]
    public void ScoringAndAssembly_RefuseAnIncompleteOrMixedLibrary_NamingTheFileAndRecord()
    {
        string run = fixture.NewRun(UntrainedSpace);
        BlockLibraryBuilder.Run(new RunDirectory(run), new LogProgress(), Quiet);
        string index = Path.Combine(run, BlockLibrary.Folder, BlockLibrary.IndexFile);
        string intact = File.ReadAllText(index);
        string Score() => Assert.Throws<PuzzleException>(() => BlockScorer.Run(new RunDirectory(run), new LogProgress(), Quiet)).Message;

        // library.json says the library is unfinished (one shard still running, say).
        EditJson(index, j =>
        {
            j["complete"] = false;
            j["variants_done"] = 7;
            j["variants"]!.AsArray().RemoveAt(0);
        });
        string message = Score();
        Assert.Contains(index, message);
        Assert.Contains("complete is false (7 of 8 variants", message);

        // One record trained under other settings (another shard with an older config) while library.json says complete.
        File.WriteAllText(index, intact);
        string record = BlockLibrary.RecordPath(run, "L1.ffn.noop");
        EditJson(record, j => j["fingerprint"] = "0123456789abcdef");
        message = Score();
        Assert.StartsWith(record, message);
        Assert.Contains("record L1.ffn.noop has fingerprint 0123456789abcdef", message);

        string solutionDir = Path.Combine(run, "solutions");
        Directory.CreateDirectory(solutionDir);
        File.WriteAllText(Path.Combine(solutionDir, "child.json"), new JsonObject
        {
            ["layers"] = new JsonArray(
                new JsonObject { ["layer"] = 0, ["attention"] = "L0.attn.kv2", ["ffn"] = "L0.ffn.w1" },
                new JsonObject { ["layer"] = 1, ["attention"] = "L1.attn.kv2", ["ffn"] = "L1.ffn.noop" }),
        }.ToJsonString());
        message = Assert.Throws<PuzzleException>(() => ChildAssembler.Run(new RunDirectory(run), "child", Path.Combine(run, "child"), Quiet)).Message;
        Assert.StartsWith(record, message);

        // The run's bld settings changed since the library was built: its fingerprint is not the one they give.
        BlockLibraryBuilder.Run(new RunDirectory(run), new LogProgress(), Quiet);              // retrains the stale record
        BlockScorer.Run(new RunDirectory(run), new LogProgress(), Quiet);
        EditConfig(run, c => c["bld"]!["lr"] = 1e-3);
        message = Score();
        Assert.Contains(index, message);
        Assert.Contains("rerun `puzzle library", message);
    }

    [Fact]
    public void LibraryOfAnOlderRun_IsRestamped_NotRetrained()
    {
        string run = fixture.NewRun(c => { UntrainedSpace(c); c["search_space"]!["kv_heads"] = new JsonArray(2, 1); });   // kv1: trained
        var first = BlockLibraryBuilder.Run(new RunDirectory(run), new LogProgress(), Quiet);
        Assert.Equal(2, first.Trained);
        var directory = new RunDirectory(run);
        var manifest = Puzzle.Data.DataManifest.Read(directory.DataDir);
        string compute = Puzzle.Training.Precision.Resolve(directory.Config.Bld.Precision, TorchSharp.torch.CPU).ToString();
        string legacy = ArtifactKeys.LegacyLibrary(directory, manifest, compute);
        Assert.NotEqual(first.Records[0].Fingerprint, legacy);
        foreach (string record in Directory.GetFiles(Path.Combine(run, BlockLibrary.Folder), "L*.json")) EditJson(record, j => j["fingerprint"] = legacy);

        var again = BlockLibraryBuilder.Run(new RunDirectory(run), new LogProgress(), Quiet);
        Assert.Equal(0, again.Trained);
        Assert.All(again.Records, r => Assert.Equal(first.Records[0].Fingerprint, r.Fingerprint));
        Assert.Equal(8 + 2, again.Done);

        // Another old record (other settings) is not current: retrained.
        EditJson(BlockLibrary.RecordPath(run, "L0.attn.kv1"), j => j["fingerprint"] = "0123456789abcdef");
        Assert.Equal(1, BlockLibraryBuilder.Run(new RunDirectory(run), new LogProgress(), Quiet).Trained);
    }
}
