using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Config;
using Puzzle.Checkpoints;
using Puzzle.Data;
using Puzzle.Model;
using Puzzle.Tests.Data;
using Puzzle.Training;
using static TorchSharp.torch;
using Xunit.Abstractions;

namespace Puzzle.Tests.Cluster;

/// <summary>
/// `puzzle slurm --submit` on a real one-node Slurm cluster started here (root + slurm-wlm + munge): a tiny run's
/// library and scoring stages as 2-task job arrays give artifacts bit-identical to a one-process run, and a lost
/// array task's units are redone by resubmitting its script for that task alone.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class SlurmClusterTests(ITestOutputHelper output)
{
    readonly Stopwatch _clock = Stopwatch.StartNew();
    void Mark(string what) => output.WriteLine($"{_clock.Elapsed.TotalSeconds,6:F1} s  {what}");

    static readonly TimeSpan JobTimeout = TimeSpan.FromSeconds(150);

    /// <summary>A tiny random-init parent (library training needs no pretrained one) and data prepared with its tokenizer.</summary>
    static (string Parent, string Data) TinyParent()
    {
        string corpus = CorpusFixtures.TextFolder(40);
        string tokenizer = CorpusFixtures.Tokenizer(corpus, 320);
        string data = TestSupport.TempDir(), parent = TestSupport.TempDir();
        DataPreparer.Prepare(new DataPrepareOptions { TokenizerDir = tokenizer, Inputs = [corpus], OutDir = data, SeqLen = 32, ValidationFraction = 0.15 }, log: _ => { });
        using var model = new CausalLm(ModelShape.Presets["tiny"].ToConfig(DataManifest.Read(data), 64), CPU, ScalarType.Float32).InitializeRandom(11);
        Checkpoint.SaveLlama(model, parent, ScalarType.Float32, tokenizer);
        return (parent, data);
    }

    static string WriteConfig((string Parent, string Data) fixture)
    {
        string path = Path.Combine(TestSupport.TempDir(), "tiny.json");
        new RunConfig
        {
            Parent = new ParentSection { Path = fixture.Parent },
            Data = new DataSection { Path = fixture.Data },
            SearchSpace = new SearchSpaceSection { KvHeads = [2, 1], AttentionLinear = false, FfnFractions = [1.0, 0.5], FfnLinear = false },
            Bld = new BldSection { TokensPerVariant = 8 * 32 * 6, Batch = 8, Lr = 3e-4, CalibrationTokens = 32 * 8, ValidationTokens = 32 * 8 },
            Scoring = new ScoringSection { ValidationTokens = 32 * 6, Batch = 8 },
        }.Save(path);
        return path;
    }

    static (int Code, string Output) Cli(string slurmConf, params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        info.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Puzzle.Cli.dll"));
        foreach (string a in args) info.ArgumentList.Add(a);
        info.Environment["CI"] = "true";
        info.Environment["SLURM_CONF"] = slurmConf;
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout + stderr.Result);
    }

    static string JobLogs(string run) => string.Join("\n", Directory.GetFiles(Path.Combine(run, "slurm", "logs")).Order()
        .Select(f => $"== {Path.GetFileName(f)}\n{string.Join("\n", File.ReadAllLines(f).TakeLast(8))}"));

    static void AssertCompleted(Dictionary<string, IReadOnlyList<string>>? states, LocalSlurmCluster cluster, string run)
    {
        Assert.True(states is not null, $"the jobs did not finish within {JobTimeout.TotalSeconds} s\n{JobLogs(run)}\n{cluster.Logs()}");
        Assert.True(states!.Values.All(s => s.All(x => x == "COMPLETED")),
            $"job states: {string.Join(", ", states.Select(s => $"{s.Key}: {string.Join("/", s.Value)}"))}\n{JobLogs(run)}\n{cluster.Logs()}");
    }

    /// <summary>Every library and scoring artifact of <paramref name="b"/> equals <paramref name="a"/>'s byte for byte (records: but for their timing).</summary>
    static void AssertSameArtifacts(string a, string b)
    {
        var files = Directory.GetFiles(Path.Combine(a, "library"), "*.safetensors").Concat(Directory.GetFiles(Path.Combine(a, "scores")))
            .Append(Path.Combine(a, "scores.json")).ToList();
        Assert.True(files.Count(f => f.EndsWith(".safetensors", StringComparison.Ordinal)) >= 4, "the reference run trained too few variants");
        foreach (string file in files)
        {
            string other = Path.Combine(b, Path.GetRelativePath(a, file));
            Assert.True(File.Exists(other), $"{other} is missing");
            Assert.True(File.ReadAllBytes(file).AsSpan().SequenceEqual(File.ReadAllBytes(other)), $"{Path.GetRelativePath(a, file)} differs");
        }
        foreach (string record in Directory.GetFiles(Path.Combine(a, "library"), "*.json"))
            Assert.Equal(WithoutSeconds(record), WithoutSeconds(Path.Combine(b, "library", Path.GetFileName(record))));
        Assert.Equal(Directory.GetFiles(Path.Combine(a, "scores")).Length, Directory.GetFiles(Path.Combine(b, "scores")).Length);
    }

    static string WithoutSeconds(string path)
    {
        var node = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        foreach (var record in node["variants"] is JsonArray list ? list.Select(v => v!.AsObject()) : [node]) record.Remove("seconds");
        return node.ToJsonString();
    }

    [SkippableFact]
    public void LibraryAndScoring_AsTwoTaskArrays_MatchOneProcess_AndALostTaskIsRedoneByResubmittingIt()
    {
        string? unavailable = LocalSlurmCluster.Unavailable();
        Skip.If(unavailable is not null, unavailable);
        string config = WriteConfig(TinyParent());
        Mark("tiny parent and data");

        // The one-process reference runs while the cluster works.
        string single = TestSupport.TempDir();
        File.Copy(config, Path.Combine(single, RunConfig.FileName));
        var reference = Task.Run(() =>
        {
            var library = TestSupport.RunCli("stage", "library", "--run", single);
            var score = library.Code == 0 ? TestSupport.RunCli("stage", "score", "--run", single) : library;
            return score.Code == 0 ? null : library.Stderr + score.Stderr;
        });

        using var cluster = new LocalSlurmCluster(TimeSpan.FromSeconds(30));
        Mark("cluster up");
        string run = Path.Combine(TestSupport.TempDir(), "run");
        var (code, text) = Cli(cluster.ConfigPath, "slurm", config, "--run", run, "--tasks", "2", "--stages", "parent,data,library,score", "--submit");
        Assert.True(code == 0, text);
        var submitted = text.Split('\n').Where(l => l.StartsWith("submitted ", StringComparison.Ordinal)).Select(l => l.Split(' ')).ToDictionary(p => p[1], p => p[2]);
        Assert.Equal(["01-parent", "02-data", "03-library", "04-library-index", "05-score", "06-score-index"], submitted.Keys);
        Mark("jobs submitted");
        AssertCompleted(cluster.WaitAll(submitted.Values, JobTimeout), cluster, run);
        Mark("jobs done");

        // One log per array task, each doing its own shard.
        foreach (string job in new[] { "03-library", "05-score" })
            for (int i = 0; i < 2; i++)
            {
                string log = File.ReadAllText(Path.Combine(run, "slurm", "logs", $"{job}-{submitted[job]}_{i}.out"));
                Assert.Contains($"puzzle slurm: {job} shard {i}/2", log);
                Assert.Contains($"shard {i}/2 owns", log);
            }
        foreach (string job in new[] { "01-parent", "02-data", "04-library-index", "06-score-index" })
            Assert.Contains($"puzzle slurm: {job}, job {submitted[job]}", File.ReadAllText(Path.Combine(run, "slurm", "logs", $"{job}-{submitted[job]}.out")));
        Assert.Contains("\"fingerprint\"", File.ReadAllText(Path.Combine(run, "parent.json")));
        Assert.Contains("\"complete\": true", File.ReadAllText(Path.Combine(run, "library", "library.json")));
        Assert.Contains("\"complete\": true", File.ReadAllText(Path.Combine(run, "scores.json")));
        Assert.True(reference.Wait(JobTimeout), "the one-process reference run did not finish");
        Assert.True(reference.Result is null, reference.Result);
        Mark("reference done");
        AssertSameArtifacts(single, run);

        // Task 1's units lost (say its node's disk): resubmitting the array script for task 1 alone redoes exactly them.
        var lost = Directory.GetFiles(Path.Combine(run, "library"), "*.safetensors").Select(Path.GetFileNameWithoutExtension).OfType<string>()
            .Where(id => OwnedBy(single, id) == 1).ToList();
        Assert.NotEmpty(lost);
        foreach (string id in lost)
        {
            File.Delete(Path.Combine(run, "library", id + ".safetensors"));
            File.Delete(Path.Combine(run, "library", id + ".json"));
        }
        (code, text) = cluster.Tool("sbatch", "--parsable", "--array=1", Path.Combine(run, "slurm", "03-library.sbatch"));
        Assert.True(code == 0, text);
        string again = text.Trim().Split(';')[0];
        AssertCompleted(cluster.WaitAll([again], JobTimeout), cluster, run);
        Assert.False(File.Exists(Path.Combine(run, "slurm", "logs", $"03-library-{again}_0.out")));
        string rerun = File.ReadAllText(Path.Combine(run, "slurm", "logs", $"03-library-{again}_1.out"));
        Assert.Contains("shard 1/2 owns", rerun);
        Assert.Contains($"({lost.Count} trained now,", rerun);
        Mark("rerun done");
        AssertSameArtifacts(single, run);
    }

    /// <summary>Which of 2 shards owns a variant: its index in the library index's canonical order, modulo 2.</summary>
    static int OwnedBy(string run, string id)
    {
        var ids = JsonNode.Parse(File.ReadAllText(Path.Combine(run, "library", "library.json")))!["variants"]!.AsArray().Select(v => v!["id"]!.GetValue<string>()).ToList();
        return ids.IndexOf(id) % 2;
    }
}
