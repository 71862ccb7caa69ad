using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.IO;

namespace Puzzle.Tests.Reliability;

/// <summary>Artifacts are never half-trusted: markers written last, torn files discarded loudly, stale temp files removed.</summary>
public sealed class ArtifactTests
{
    [Fact]
    public void CheckpointSave_RemovesTheCompleteMarkerFirst_SoAFailedSaveNeverLooksComplete()
    {
        string dir = TestSupport.TempDir();
        using var model = TestSupport.Build(TestSupport.TinyParentConfig());
        Checkpoint.SaveLlama(model, dir);
        Assert.True(File.Exists(Path.Combine(dir, "config.json")));
        // Make the save fail after the weights are written (generation_config.json cannot be replaced by a file).
        File.Delete(Path.Combine(dir, "generation_config.json"));
        Directory.CreateDirectory(Path.Combine(dir, "generation_config.json"));
        Assert.ThrowsAny<Exception>(() => Checkpoint.SaveLlama(model, dir));
        Assert.False(File.Exists(Path.Combine(dir, "config.json")), "a half-saved checkpoint still has its old config.json, so it looks complete");
        Assert.Throws<PuzzleException>(() => Checkpoint.Load(dir).Dispose());
        Assert.Empty(Directory.GetFiles(dir, "*.tmp-*"));
    }

    [Fact]
    public void ReadDerived_DiscardsATornArtifactWithAWarning_AndTypedGettersNameFileKeyAndValue()
    {
        string dir = TestSupport.TempDir();
        string path = Path.Combine(dir, "costs.json");
        File.WriteAllText(path, "{\"entries\": [1, 2");
        var warnings = new List<string>();
        var previous = Log.Warning;
        Log.Warning = warnings.Add;
        try { Assert.Null(JsonFile.ReadDerived(path)); }
        finally { Log.Warning = previous; }
        Assert.False(File.Exists(path));
        string warning = Assert.Single(warnings, w => w.Contains(path));                  // other tests may log meanwhile
        Assert.StartsWith($"{path}: malformed JSON", warning);
        Assert.EndsWith("discarding it, the work that wrote it is redone", warning);

        File.WriteAllText(path, """{"scenario": {"batch": "4", "lengths": [1, 2.5]}, "kl": 1e400}""");
        var json = JsonFile.Read(path);
        Assert.Equal($"{path}: scenario.batch must be an integer, got \"4\"", Assert.Throws<PuzzleException>(() => json["scenario"]["batch"].Int()).Message);
        Assert.Equal($"{path}: scenario.lengths[1] must be an integer, got 2.5", Assert.Throws<PuzzleException>(() => json["scenario"]["lengths"][1].Int()).Message);
        Assert.Equal($"{path}: scenario.missing is missing (expected a finite number)", Assert.Throws<PuzzleException>(() => json["scenario"]["missing"].Double()).Message);
        Assert.Equal(1, json["scenario"]["lengths"][0].Int());
        Assert.Contains("kl must be a finite number", Assert.Throws<PuzzleException>(() => json["kl"].Double()).Message);
    }

    [Fact]
    public void WriteJson_RefusesNonFiniteResults_NamingTheKey()
    {
        string path = Path.Combine(TestSupport.TempDir(), "eval.json");
        var node = new JsonObject { ["metrics"] = new JsonObject { ["perplexity"] = double.NaN } };
        Assert.Equal($"{path}: metrics.perplexity is NaN; results must be finite numbers", Assert.Throws<PuzzleException>(() => AtomicFile.WriteJson(path, node)).Message);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void TempFiles_RemovesOnlyThoseOfDeadProcessesOnThisMachine()
    {
        string dir = TestSupport.TempDir();
        int dead = 4_000_000;
        while (true)
            try { using var p = System.Diagnostics.Process.GetProcessById(dead); dead--; }
            catch (ArgumentException) { break; }
        string stale = Path.Combine(dir, $"a.json.tmp-{dead}-{Guid.NewGuid():N}-{TempFiles.HostTag}");
        string staleActivations = Path.Combine(dir, "sub", $"h0.bin.tmp-{dead}");
        string mine = Path.Combine(dir, $"b.json.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}-{TempFiles.HostTag}");
        string otherHost = Path.Combine(dir, $"c.json.tmp-{dead}-{Guid.NewGuid():N}-00000000");
        string unrelated = Path.Combine(dir, "notes.tmp");
        Directory.CreateDirectory(Path.Combine(dir, "sub"));
        foreach (string f in new[] { stale, staleActivations, mine, otherHost, unrelated }) File.WriteAllText(f, "x");
        Assert.Equal(2, TempFiles.Clean(dir));
        Assert.False(File.Exists(stale));
        Assert.False(File.Exists(staleActivations));
        Assert.True(File.Exists(mine) && File.Exists(otherHost) && File.Exists(unrelated));
    }
}
