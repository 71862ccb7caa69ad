using System.Text.Json.Nodes;
using Puzzle.Config;
using Puzzle.Model;
using Puzzle.Stages;
using Puzzle.Stages.Search;

namespace Puzzle.Tests.Stages;

/// <summary>The search's measured check follows scenario.warmup_runs / repeats (issue 14: they used to be ignored).</summary>
public class MeasuredCheckSettingsTests
{
    static readonly ScenarioSection Small = new() { Batch = 2, PromptLength = 8, GenerationLength = 4, MeasureDtype = "float32", WarmupRuns = 1, Repeats = 3 };

    [Fact]
    public void MeasuredCheck_TimesTheScenariosRepeats()
    {
        var parent = TestSupport.TinyParentConfig();
        var child = TestSupport.TinyChildConfig();
        Assert.Equal(3, ArchitectureTimer.Measure(parent, child, Small).Rounds);
        Assert.Equal(5, ArchitectureTimer.Measure(parent, child, Small with { Repeats = 5 }).Rounds);
    }

    [Fact]
    public void MeasuredCheckCacheKey_ChangesWithWarmupAndRepeats()
    {
        var parent = TestSupport.TinyParentConfig();
        var child = TestSupport.TinyChildConfig();
        string key = ArchitectureTimer.Key(parent, child, Small);
        Assert.Equal(key, ArchitectureTimer.Key(parent, child, Small with { }));
        Assert.NotEqual(key, ArchitectureTimer.Key(parent, child, Small with { Repeats = 5 }));
        Assert.NotEqual(key, ArchitectureTimer.Key(parent, child, Small with { WarmupRuns = 2 }));
    }

    /// <summary>A run directory holding only a config with the small scenario: enough for the measured-check cache.</summary>
    static RunDirectory CacheOnlyRun()
    {
        string dir = TestSupport.TempDir();
        new RunConfig { Parent = new ParentSection { Path = "parent" }, Scenario = Small }.Save(Path.Combine(dir, RunConfig.FileName));
        return new RunDirectory(dir);
    }

    /// <summary>A timer that answers the given (parent, child) tokens/s in turn and counts its calls.</summary>
    sealed class ScriptedTimer(params (double Parent, double Child)[] answers)
    {
        public int Calls { get; private set; }
        public ArchitectureTiming Time(ModelConfig parent, ModelConfig child, ScenarioSection sc)
        {
            var (p, c) = answers[Calls++];
            return new ArchitectureTiming(p, c, sc.Repeats);
        }
    }

    [Fact]
    public void MeasuredCheck_FarFromTheEstimate_IsRetimedOnce_KeptAndMarkedSuspect_WhileANormalCheckIsTimedOnce()
    {
        var run = CacheOnlyRun();
        var parent = TestSupport.TinyParentConfig(3);
        var child = TestSupport.TinyChildConfig();
        var warnings = new List<string>();
        var logs = new List<string>();

        // 10.3x against an estimate of 2.79x (the demo's broken check), then 9.8x when re-timed: kept, marked suspect, one warning.
        var broken = new ScriptedTimer((100, 1030), (120, 1176));
        var timing = ArchitectureTimer.MeasureCached(run, parent, child, 2.79, "puzzle-at-depth", broken.Time, logs.Add, warnings.Add);
        Assert.Equal(2, broken.Calls);
        Assert.Equal(9.8, timing.Ratio, 12);
        Assert.Equal(10.3, timing.FirstRatio!.Value, 12);
        Assert.True(timing.Suspect);
        string warning = Assert.Single(warnings);
        Assert.Contains("puzzle-at-depth", warning);
        Assert.Contains("estimated 2.79x, measured 10.30x", warning);
        Assert.Contains("re-timed 9.80x", warning);
        var entry = JsonNode.Parse(File.ReadAllText(run.Artifact(ArchitectureTimer.CacheFileName)))!["entries"]![ArchitectureTimer.Key(parent, child, Small)]!;
        Assert.Equal(9.8, entry["ratio"]!.GetValue<double>(), 12);
        Assert.Equal(10.3, entry["first_ratio"]!.GetValue<double>(), 12);
        Assert.Equal(2.79, entry["estimated_ratio"]!.GetValue<double>());
        Assert.True(entry["suspect"]!.GetValue<bool>());

        // Read back from the cache: not timed again, still suspect.
        var never = new ScriptedTimer();
        var cached = ArchitectureTimer.MeasureCached(run, parent, child, 2.79, "puzzle-at-depth", never.Time, logs.Add, warnings.Add);
        Assert.Equal(0, never.Calls);
        Assert.True(cached.Cached && cached.Suspect);
        Assert.Equal((9.8, 10.3), (Math.Round(cached.Ratio, 12), cached.FirstRatio));
        Assert.Single(warnings);

        // A first timing off by more than the bound whose re-timing agrees: the re-timed figure, not suspect, no warning.
        var parent4 = TestSupport.TinyParentConfig(4);
        var recovered = new ScriptedTimer((100, 1030), (100, 290));
        var second = ArchitectureTimer.MeasureCached(run, parent4, child, 2.79, "child", recovered.Time, logs.Add, warnings.Add);
        Assert.Equal(2, recovered.Calls);
        Assert.Equal((2.9, 10.3, false), (Math.Round(second.Ratio, 12), second.FirstRatio, second.Suspect));
        Assert.Single(warnings);
        Assert.Contains(logs, l => l.Contains("child") && l.Contains("re-timed 2.90x"));

        // Within the bound (|2.79 × 1.3 / 2.79 − 1| = 0.30 < 0.35): timed once, nothing marked.
        Assert.Equal(0.35, ArchitectureTimer.SuspectDisagreement);
        var parent5 = TestSupport.TinyParentConfig(5);
        var normal = new ScriptedTimer((100, 2.79 * 1.3 * 100));
        var plain = ArchitectureTimer.MeasureCached(run, parent5, child, 2.79, "child", normal.Time, logs.Add, warnings.Add);
        Assert.Equal(1, normal.Calls);
        Assert.Equal((null, false), (plain.FirstRatio, plain.Suspect));
        var plainEntry = JsonNode.Parse(File.ReadAllText(run.Artifact(ArchitectureTimer.CacheFileName)))!["entries"]![ArchitectureTimer.Key(parent5, child, Small)]!;
        Assert.Null(plainEntry["suspect"]);
        Assert.Single(warnings);
    }
}
