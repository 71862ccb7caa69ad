using Puzzle.Config;
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
}
