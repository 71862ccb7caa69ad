using System.Diagnostics;
using Puzzle.Checkpoints;
using Puzzle.Cluster;
using Puzzle.Config;
using Puzzle.Domain;
using Puzzle.IO;
using Puzzle.Stages;
using Puzzle.Stages.Library;
using Puzzle.Stages.Scoring;

namespace Puzzle.Tests.Cluster;

/// <summary>The scripts `puzzle slurm` writes, run by bash with the variables Slurm sets (no Slurm needed).</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class SlurmScriptsTests
{
    static RunDirectory TinyRun()
    {
        string parent = TestSupport.TempDir();
        HfConfig.WriteAtomically(Path.Combine(parent, "config.json"), HfConfig.ToLlama(TestSupport.TinyParentConfig(), "float32"));
        string run = Path.Combine(TestSupport.TempDir(), "tiny-run");
        Directory.CreateDirectory(run);
        new RunConfig { Parent = new ParentSection { Path = parent }, Data = new DataSection { Path = TestSupport.TempDir() } }.Save(Path.Combine(run, RunConfig.FileName));
        return new RunDirectory(run);
    }

    static SlurmOptions Options() => new()
    {
        Command = "printf '%s\\n'", Tasks = 3, Partition = "gpu", GpusPerTask = 2, Time = "1-02:00:00",
    };

    /// <summary>Runs a script with bash and the given environment; (exit code, stdout + stderr).</summary>
    static (int Code, string Output) Bash(string script, Dictionary<string, string> environment, params string[] args)
    {
        var info = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        info.ArgumentList.Add(script);
        foreach (string a in args) info.ArgumentList.Add(a);
        foreach (var (k, v) in environment) info.Environment[k] = v;
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout + stderr.Result);
    }

    [Fact]
    public void Scripts_OnePerStage_ArraysForLibraryAndScoring_EachTaskRunsItsShard()
    {
        var run = TinyRun();
        var jobs = SlurmScripts.Write(run, Options());
        Assert.Equal(["01-parent", "02-data", "03-library", "04-library-index", "05-score", "06-score-index", "07-costs", "08-search", "09-assemble",
            "10-distill", "11-evaluate", "12-export"], jobs.Select(j => j.Name));
        var parent = HfConfig.Read(run.ParentDir);
        var variants = SearchSpace.Expand(parent, run.Config.SearchSpace);
        Assert.Equal(variants.Count, jobs.Single(j => j.Name == "03-library").Units);
        Assert.Equal(BlockScorer.Candidates(parent, variants, "composed").Count, jobs.Single(j => j.Name == "05-score").Units);
        Assert.Equal([3, 0, 3, 0], jobs.Where(j => j.Stage is "library" or "score").Select(j => j.ArrayTasks));

        string library = File.ReadAllText(Path.Combine(run.Path, "slurm", "03-library.sbatch"));
        Assert.Contains("#SBATCH --array=0-2\n", library);
        Assert.Contains("#SBATCH --requeue\n", library);
        Assert.Contains($"#SBATCH --output={run.Path}/slurm/logs/03-library-%A_%a.out\n", library);
        Assert.Contains("#SBATCH --partition=gpu\n", library);
        Assert.Contains("#SBATCH --gpus-per-task=2\n", library);
        Assert.Contains("#SBATCH --time=1-02:00:00\n", library);
        string data = File.ReadAllText(Path.Combine(run.Path, "slurm", "02-data.sbatch"));
        Assert.DoesNotContain("--array", data);
        Assert.DoesNotContain("--gpus-per-task", data);                                             // file work only
        Assert.Contains($"#SBATCH --output={run.Path}/slurm/logs/02-data-%j.out\n", data);
        Assert.True(Directory.Exists(Path.Combine(run.Path, "slurm", "logs")));

        // Array task 1 (also when resubmitted alone: Slurm then says the array has 1 task) runs shard 1/3; the index job runs unsharded.
        var task = new Dictionary<string, string> { ["SLURM_ARRAY_TASK_ID"] = "1", ["SLURM_ARRAY_TASK_COUNT"] = "1", ["SLURM_ARRAY_JOB_ID"] = "77", ["SLURM_JOB_ID"] = "78" };
        var (code, output) = Bash(Path.Combine(run.Path, "slurm", "05-score.sbatch"), task);
        Assert.True(code == 0, output);
        Assert.Equal(["puzzle slurm: 05-score shard 1/3, job 77_1, restart 0, on", "stage", "score", "--run", run.Path, "--shard", "1/3"],
            output.Trim().Split('\n').Select((l, i) => i == 0 ? l[..l.IndexOf(" on ", StringComparison.Ordinal)] + " on" : l));
        (code, output) = Bash(Path.Combine(run.Path, "slurm", "06-score-index.sbatch"), task);
        Assert.True(code == 0, output);
        Assert.Equal(["stage", "score", "--run", run.Path], output.Trim().Split('\n').Skip(1));
    }

    [Fact]
    public void SubmitScript_ChainsTheSelectedStagesWithAfterok_AndRejectsAnUnknownStart()
    {
        var run = TinyRun();
        var jobs = SlurmScripts.Write(run, Options() with { Stages = ["score", "library"], Tasks = 1000 });
        Assert.Equal(["01-library", "02-library-index", "03-score", "04-score-index"], jobs.Select(j => j.Name));
        Assert.All(jobs.Where(j => j.IsArray), j => Assert.Equal(j.Units, j.ArrayTasks));          // no empty array tasks
        Assert.Equal(jobs.Select(j => j.Script).Order(), Directory.GetFiles(Path.Combine(run.Path, "slurm"), "*.sbatch").Order());

        // A stand-in sbatch on PATH records its arguments: submit.sh runs the real chain logic.
        string bin = TestSupport.TempDir(), record = Path.Combine(bin, "calls.txt");
        File.WriteAllText(Path.Combine(bin, "sbatch"), $"#!/bin/bash\necho \"$*\" >> {record}\necho $((100 + $(wc -l < {record})))\\;cluster\n");
        File.SetUnixFileMode(Path.Combine(bin, "sbatch"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var path = new Dictionary<string, string> { ["PATH"] = $"{bin}:{Environment.GetEnvironmentVariable("PATH")}" };
        string submit = Path.Combine(run.Path, "slurm", "submit.sh");
        var (code, output) = Bash(submit, path, "02-library-index");
        Assert.True(code == 0, output);
        Assert.Equal(["02-library-index 101", "03-score 102", "04-score-index 103"], output.Trim().Split('\n'));
        Assert.Equal(["--parsable 02-library-index.sbatch", "--parsable --dependency=afterok:101 03-score.sbatch",
            "--parsable --dependency=afterok:102 04-score-index.sbatch"], File.ReadAllLines(record));
        (code, output) = Bash(submit, path, "05-costs");
        Assert.Equal(2, code);
        Assert.Contains("submit.sh: no job '05-costs'; jobs: 01-library 02-library-index 03-score 04-score-index", output);

        // Regenerating for other stages removes the scripts of jobs no longer in the chain.
        SlurmScripts.Write(run, Options() with { Stages = ["costs"] });
        Assert.Equal(["01-costs.sbatch"], Directory.GetFiles(Path.Combine(run.Path, "slurm"), "*.sbatch").Select(Path.GetFileName));
    }

    [Theory]
    [InlineData("tasks", "--tasks 0: need at least 1 array task")]
    [InlineData("time", "--time '90 minutes': expected minutes, MM:SS, HH:MM:SS")]
    [InlineData("stages", "--stages: 'libary' is not one of parent, data, library, score")]
    [InlineData("partition", "--partition 'gpu a100': expected a partition name")]
    public void BadOptions_NameTheOptionAndValue(string which, string message)
    {
        var run = TinyRun();
        var o = Options();
        o = which switch
        {
            "tasks" => o with { Tasks = 0 },
            "time" => o with { Time = "90 minutes" },
            "stages" => o with { Stages = ["libary"] },
            _ => o with { Partition = "gpu a100" },
        };
        Assert.Contains(message, Assert.Throws<PuzzleException>(() => SlurmScripts.Write(run, o)).Message);
        Assert.False(Directory.Exists(Path.Combine(run.Path, "slurm")));
    }

    [Fact]
    public void StageCommand_RejectsAShardOfAnUnshardedStage_AndAnUnknownStage()
    {
        var (code, _, stderr) = TestSupport.RunCli("stage", "costs", "--run", TestSupport.TempDir(), "--shard", "0/2");
        Assert.Equal(1, code);
        Assert.Equal("error: --shard 0/2: only the library and score stages are split into shards, not 'costs'", stderr.Trim());
        (code, _, stderr) = TestSupport.RunCli("stage", "scores", "--run", TestSupport.TempDir());
        Assert.Equal(1, code);
        Assert.Equal("error: stage 'scores' is not one of parent, data, library, score, costs, search, assemble, distill, evaluate, export", stderr.Trim());
    }

    [Fact]
    public void CurrentCommand_IsThisProcessAbsolute_AndQuotingSurvivesBash()
    {
        string command = SlurmScripts.CurrentCommand();
        Assert.StartsWith(SlurmScripts.Quote(Environment.ProcessPath!), command);
        string script = Path.Combine(TestSupport.TempDir(), "q.sh");
        AtomicFile.WriteAllText(script, $"printf '%s\\n' {SlurmScripts.Quote("it's a $HOME \"path\"")}\n");
        Assert.Equal("it's a $HOME \"path\"", Bash(script, new()).Output.Trim());
    }
}
