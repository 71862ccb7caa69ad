using System.Text.Json.Nodes;
using Puzzle.Config;
using Puzzle.IO;
using Puzzle.Model;
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
}
