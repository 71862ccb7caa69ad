using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Config;
using Puzzle.IO;
using Puzzle.Model;
using Puzzle.Stages;
using Puzzle.Stages.Search;

namespace Puzzle.Tests.Stages;

/// <summary>A measured check timed beside a control child, scaled to the control's reference ratio on this machine (search.drift_control).</summary>
public class DriftControlTests
{
    static readonly ScenarioSection Small = new() { Batch = 2, PromptLength = 8, GenerationLength = 4, MeasureDtype = "float32", WarmupRuns = 1, Repeats = 5 };

    static string Store() => Path.Combine(TestSupport.TempDir(), "cache", "drift-control.json");

    [Fact]
    public void TheControl_IsAChildOfATypicalShape_AttentionInEveryThirdLayer_FfnsAtAQuarterWidth()
    {
        var parent = TestSupport.TinyParentConfig(4) is var p ? p.WithBlocks([p.Blocks[0], p.Blocks[1] with { Ffn = new FfnConfig(true, false, null) }, p.Blocks[2], p.Blocks[3]]) : null!;
        var control = DriftControl.ControlOf(parent);
        Assert.Equal(parent.Blocks[0].Ffn.IntermediateSize!.Value / 4, control.Blocks[0].Ffn.IntermediateSize);
        Assert.True(control.Blocks[1].Ffn.NoOp);                                                     // a no-op FFN stays one
        Assert.Equal([parent.Blocks[0].Attention, AttentionConfig.NoOperation, AttentionConfig.NoOperation, parent.Blocks[3].Attention],
            control.Blocks.Select(b => b.Attention));
        Assert.Equal((parent.HiddenSize, parent.VocabSize, parent.NumLayers), (control.HiddenSize, control.VocabSize, control.NumLayers));
        control.Validate("control");
    }

    [Fact]
    public void TheReference_IsTheMedianOfTheReadingsStoredBeforeThisProcess_OrTheFirstChecksOwn()
    {
        string store = Store();
        var parent = TestSupport.TinyParentConfig();
        var control = DriftControl.For(parent, Small, threads: 2, store);
        Assert.Empty(control.Readings());
        Assert.Null(control.FixedReference);
        Assert.Equal(2.0, control.Reference(2.0));                     // none stored: the first check's own reading, no correction
        control.Record(2.0, 12);
        control.Record(2.4, 12);
        control.Record(2.2, 12);
        Assert.Equal(2.0, control.Reference(9.9));                     // fixed for the process
        Assert.Equal([2.0, 2.4, 2.2], control.Readings());

        // A later process (references forgotten) takes the median of what is stored.
        DriftControl.ResetProcessReferences();
        Assert.Equal(2.2, DriftControl.For(parent, Small, threads: 2, store).Reference(9.9), 12);
        // Another thread count or scenario is another control: nothing stored for it.
        Assert.Empty(DriftControl.For(parent, Small, threads: 1, store).Readings());
        Assert.Empty(DriftControl.For(parent, Small with { Batch = 4 }, threads: 2, store).Readings());
        Assert.Throws<ArgumentException>(() => control.Record(double.NaN, 12));

        // The store keeps the newest readings only.
        for (int i = 0; i < DriftControl.MaxReadings + 5; i++) control.Record(3 + i, 1);
        var readings = control.Readings();
        Assert.Equal(DriftControl.MaxReadings, readings.Count);
        Assert.Equal(3 + DriftControl.MaxReadings + 4, readings[^1]);
        Assert.Equal(1, JsonNode.Parse(File.ReadAllText(store))!["format_version"]!.GetValue<int>());
    }

    [Fact]
    public void ACheckBesideTheControl_ReadsTheChildAgainstTheControl_ScaledToTheReference()
    {
        string store = Store();
        var parent = TestSupport.TinyParentConfig(3);
        var control = DriftControl.For(parent, Small, threads: 2, store);
        // A reference far from any real ratio of these tiny models: a child of the control's own shape then reads about it,
        // whatever its true ratio to the parent at this moment.
        control.Record(10.0, 12);
        DriftControl.ResetProcessReferences();
        var timings = ArchitectureTimer.MeasureJoint(parent, [DriftControl.ControlOf(parent), TestSupport.TinyChildConfig()], Small,
            [RoundsRule.Fixed(5), RoundsRule.Fixed(5)], control);
        var same = timings[0];
        Assert.Equal(10.0, same.ControlReference);
        Assert.InRange(same.Ratio, 6.0, 16.0);
        Assert.True(same.ControlRatio > 0 && same.ControlRatio < 6, $"the control's own ratio to the parent {same.ControlRatio}");
        Assert.Equal((5, 5), (same.ParentRoundMs.Count, same.ChildRoundMs.Count));
        Assert.Equal(timings[0].ParentRoundMs, timings[1].ParentRoundMs);                           // both against the same scaled control rounds
        // The check's reading of the control joined the store.
        Assert.Equal(2, control.Readings().Count);
        Assert.Equal(same.ControlRatio!.Value, control.Readings()[^1], 12);
    }

    [Fact]
    public void ControlledChecks_AreCachedApart_AndTheSetting_LeavesEarlierFingerprintsAlone()
    {
        var parent = TestSupport.TinyParentConfig();
        var child = TestSupport.TinyChildConfig();
        Assert.NotEqual(ArchitectureTimer.Key(parent, child, Small, 2), ArchitectureTimer.Key(parent, child, Small, 2, driftControl: true));
        Assert.Equal(ArchitectureTimer.Key(parent, child, Small, 2), ArchitectureTimer.Key(parent, child, Small, 2, driftControl: false));
        // Off, the request serialises as before (stored solutions keep their fingerprints); on, it is part of the request.
        Assert.DoesNotContain("drift", Fingerprint.Canonical(new SearchRequest { MinThroughputRatio = 2 }));
        Assert.Contains("drift", Fingerprint.Canonical(new SearchRequest { MinThroughputRatio = 2, DriftControl = true }), StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void Calibration_StoresSpacedReadings_AndThePipelineTakesOneBetweenStages_UntilSettled()
    {
        string dir = TestSupport.TempDir(), store = Store();
        Directory.CreateDirectory(Path.Combine(dir, "parent"));
        HfConfig.WriteAtomically(Path.Combine(dir, "parent", "config.json"), HfConfig.ToLlama(TestSupport.TinyParentConfig(3), "float32"));
        void Configure(SearchSection search) =>
            new RunConfig { Parent = new ParentSection { Path = "parent" }, Scenario = Small, Search = search }.Save(Path.Combine(dir, RunConfig.FileName));
        JsonArray Stored()
        {
            var controls = JsonNode.Parse(File.ReadAllText(store))!["controls"]!.AsObject();
            Assert.Single(controls);                                                                // one parent shape, scenario and thread count
            return controls.Single().Value!["readings"]!.AsArray();
        }

        // Off (the default), nothing is timed between the stages.
        Configure(new SearchSection());
        DriftControl.BetweenStages(new RunDirectory(dir), _ => { }, store);
        Assert.False(File.Exists(store));

        var logs = new List<string>();
        var clock = Stopwatch.StartNew();
        var taken = DriftControl.Calibrate(new RunDirectory(dir), 3, TimeSpan.FromMilliseconds(300), logs.Add, store);
        Assert.True(clock.Elapsed >= TimeSpan.FromMilliseconds(600), $"3 readings 300 ms apart took {clock.Elapsed.TotalMilliseconds:F0} ms");
        Assert.Equal(3, taken.Count);
        Assert.All(taken, r => Assert.InRange(r, 0.05, 50));
        var readings = Stored();
        Assert.Equal(taken, readings.Select(r => r!["ratio"]!.GetValue<double>()));
        Assert.All(readings, r => Assert.Equal(ArchitectureTimer.MaxRounds(Small), r!["rounds"]!.GetValue<int>()));
        Assert.Contains(logs, l => l.StartsWith("drift control: reading 3/3: the control ran ") && l.Contains("3 readings stored, their median"));

        // On with a measured target: up to ReadingsPerGap readings per call while fewer than SettledReadings are stored, then none.
        Configure(new SearchSection { DriftControl = true, Target = "h100" });
        DriftControl.BetweenStages(new RunDirectory(dir), _ => { }, store);
        Assert.Equal(3, Stored().Count);                                                            // a roofline target has no checks
        Configure(new SearchSection { DriftControl = true });
        for (int i = 0; i < DriftControl.SettledReadings; i++)
        {
            DriftControl.BetweenStages(new RunDirectory(dir), _ => { }, store);
            Assert.Equal(Math.Min(DriftControl.SettledReadings, 3 + DriftControl.ReadingsPerGap * (i + 1)), Stored().Count);
        }

        // A rerun whose child is already searched takes none either.
        File.Delete(store);
        Directory.CreateDirectory(Path.Combine(dir, "solutions"));
        File.WriteAllText(Path.Combine(dir, "solutions", "child.json"), "{}");
        DriftControl.BetweenStages(new RunDirectory(dir), _ => { }, store);
        Assert.False(File.Exists(store));

        Assert.Equal("drift-control: --readings must be at least 1, got 0",
            Assert.Throws<PuzzleException>(() => DriftControl.Calibrate(new RunDirectory(dir), 0, TimeSpan.Zero, null, store)).Message);
        var (code, _, stderr) = TestSupport.RunCli("drift-control", "--run", dir, "--readings", "2", "--every", "-1");
        Assert.Equal(1, code);
        Assert.Equal("error: drift-control: --every must be at least 0 s, got -1 s", stderr.Trim());
    }
}
