using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using Puzzle.Checkpoints;
using Puzzle.Domain;
using Puzzle.IO;
using Puzzle.Stages;
using Puzzle.Stages.Library;
using Puzzle.Stages.Scoring;

namespace Puzzle.Cluster;

/// <summary>How `puzzle slurm` writes a run's jobs: the command that starts the CLI on a node, and the sbatch settings.</summary>
public sealed record SlurmOptions
{
    /// <summary>Shell text that starts the `puzzle` CLI on a node, e.g. `'/usr/bin/dotnet' '/opt/puzzle/Puzzle.Cli.dll'`.</summary>
    public required string Command { get; init; }
    /// <summary>Array tasks for the library and scoring stages (capped at their work units).</summary>
    public int Tasks { get; init; } = 4;
    public string? Partition { get; init; }
    public int GpusPerTask { get; init; }
    /// <summary>sbatch --time for every job (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS).</summary>
    public string? Time { get; init; }
    /// <summary>Pipeline stages to write jobs for, in pipeline order; all when empty.</summary>
    public IReadOnlyList<string> Stages { get; init; } = [];
}

/// <summary>One sbatch script: its file, the pipeline stage it runs and, for a job array, the shard count.</summary>
public sealed record SlurmJob(string Name, string Script, string Stage, int ArrayTasks, int Units)
{
    public bool IsArray => ArrayTasks > 0;
}

/// <summary>
/// Slurm jobs for a run (design.md 6: stages 3 and 4 are sets of independent, resumable work units). One sbatch
/// script per stage under RUN/slurm/: the library and scoring stages as job arrays (task i runs `--shard i/n`), each
/// followed by a single job that runs the stage unsharded to write its index (library.json, scores.json) from every
/// shard's units, and single jobs for the other stages. RUN/slurm/submit.sh submits them in order, each with
/// --dependency=afterok on the one before. Every job is --requeue'd and logs to RUN/slurm/logs/ (appending across
/// requeues); since finished units and stages are skipped, a failed or preempted job is rerun by submitting its
/// script again (`sbatch --array=1 RUN/slurm/03-library.sbatch` for one array task) and the chain by
/// `RUN/slurm/submit.sh FROM` (e.g. 05-score).
/// </summary>
public static class SlurmScripts
{
    public const string Folder = "slurm";
    public const string SubmitScript = "submit.sh";

    /// <summary>Stages that compute on the configured device and so get --gpus-per-task; the others only read and write files.</summary>
    public static readonly string[] DeviceStages = ["library", "score", "costs", "search", "distill", "evaluate"];

    static readonly Regex TimeFormat = new(@"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2}|UNLIMITED|INFINITE)$");
    static readonly Regex PartitionFormat = new(@"^[A-Za-z0-9_.,\-]+$");

    /// <summary>The jobs for the selected stages, in submission order, with each array's unit count.</summary>
    public static IReadOnlyList<SlurmJob> Plan(RunDirectory run, SlurmOptions o)
    {
        Validate(o);
        if (run.Path.Any(char.IsWhiteSpace))
            throw new PuzzleException($"{run.Path}: the run directory's path has whitespace, which #SBATCH lines cannot hold; use a path without spaces");
        var stages = o.Stages.Count == 0 ? Pipeline.StageNames : Pipeline.StageNames.Where(o.Stages.Contains).ToArray();
        var parent = HfConfig.Read(run.ParentDir);
        var variants = run.Variants.All;
        var jobs = new List<SlurmJob>();
        int n = 0;
        string Name(string what) => $"{++n:00}-{what}";
        foreach (string stage in stages)
        {
            int units = stage switch
            {
                "library" => variants.Count,
                "score" => BlockScorer.Candidates(parent, variants, run.Config.Scoring.Mode).Count,
                _ => 0,
            };
            if (units > 0)
            {
                jobs.Add(new SlurmJob(Name(stage), "", stage, Math.Min(o.Tasks, units), units));
                jobs.Add(new SlurmJob(Name(stage + "-index"), "", stage, 0, units));
            }
            else jobs.Add(new SlurmJob(Name(stage), "", stage, 0, 0));
        }
        string folder = run.Artifact(Folder);
        return jobs.Select(j => j with { Script = Path.Combine(folder, j.Name + ".sbatch") }).ToList();
    }

    /// <summary>Writes RUN/slurm/*.sbatch, RUN/slurm/submit.sh and RUN/slurm/logs/; returns the jobs.</summary>
    public static IReadOnlyList<SlurmJob> Write(RunDirectory run, SlurmOptions o)
    {
        var jobs = Plan(run, o);
        string folder = run.Artifact(Folder);
        Directory.CreateDirectory(Path.Combine(folder, "logs"));                                   // sbatch does not create it
        foreach (string stale in Directory.GetFiles(folder, "*.sbatch"))
            if (!jobs.Any(j => j.Script == stale)) File.Delete(stale);
        foreach (var job in jobs) AtomicFile.WriteAllText(job.Script, Script(run, o, job));
        string submit = Path.Combine(folder, SubmitScript);
        AtomicFile.WriteAllText(submit, Submit(jobs));
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(submit, File.GetUnixFileMode(submit) | UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute);
        return jobs;
    }

    /// <summary>Checks the options (one line naming the option and value); Plan and Write call it too.</summary>
    public static void Validate(SlurmOptions o)
    {
        if (o.Tasks < 1) throw new PuzzleException($"--tasks {o.Tasks}: need at least 1 array task");
        if (o.GpusPerTask < 0) throw new PuzzleException($"--gpus-per-task {o.GpusPerTask}: must be 0 or more");
        if (o.Time is not null && !TimeFormat.IsMatch(o.Time))
            throw new PuzzleException($"--time '{o.Time}': expected minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (e.g. 2-00:00:00)");
        if (o.Partition is not null && !PartitionFormat.IsMatch(o.Partition))
            throw new PuzzleException($"--partition '{o.Partition}': expected a partition name (letters, digits, _ . - or a comma list)");
        if (string.IsNullOrWhiteSpace(o.Command)) throw new PuzzleException("--command: empty; give the shell command that starts `puzzle` on a node");
        foreach (string s in o.Stages.Where(s => !Pipeline.StageNames.Contains(s)))
            throw new PuzzleException($"--stages: '{s}' is not one of {string.Join(", ", Pipeline.StageNames)}");
    }

    /// <summary>Single-quoted for bash.</summary>
    public static string Quote(string text) => "'" + text.Replace("'", "'\\''") + "'";

    /// <summary>The command line of this process as shell text: `dotnet Puzzle.Cli.dll` or the app host / tool shim, absolute.</summary>
    public static string CurrentCommand()
    {
        string host = Environment.ProcessPath ?? throw new PuzzleException("cannot tell how this process was started; pass --command");
        string first = Environment.GetCommandLineArgs().FirstOrDefault() ?? "";
        return Path.GetFileNameWithoutExtension(host) == "dotnet" && first.EndsWith(".dll", StringComparison.OrdinalIgnoreCase)
            ? $"{Quote(host)} {Quote(Path.GetFullPath(first))}"
            : Quote(host);
    }

    static string Script(RunDirectory run, SlurmOptions o, SlurmJob job)
    {
        string runName = Path.GetFileName(run.Path.TrimEnd('/'));
        string logs = Path.Combine(run.Artifact(Folder), "logs");
        var s = new StringBuilder();
        s.Append("#!/bin/bash\n");
        s.Append($"#SBATCH --job-name=puzzle-{runName}-{job.Name[3..]}\n");
        if (job.IsArray) s.Append($"#SBATCH --array=0-{job.ArrayTasks - 1}\n");
        s.Append("#SBATCH --ntasks=1\n");
        s.Append(job.IsArray ? $"#SBATCH --output={logs}/{job.Name}-%A_%a.out\n" : $"#SBATCH --output={logs}/{job.Name}-%j.out\n");
        s.Append("#SBATCH --open-mode=append\n");
        s.Append("#SBATCH --requeue\n");
        s.Append("#SBATCH --kill-on-invalid-dep=yes\n");
        s.Append($"#SBATCH --chdir={run.Path}\n");
        if (o.Partition is not null) s.Append($"#SBATCH --partition={o.Partition}\n");
        if (o.GpusPerTask > 0 && DeviceStages.Contains(job.Stage)) s.Append($"#SBATCH --gpus-per-task={o.GpusPerTask}\n");
        if (o.Time is not null) s.Append($"#SBATCH --time={o.Time}\n");
        string what = job.IsArray
            ? $"stage '{job.Stage}' of run {run.Path}: array task i does work units i, i+{job.ArrayTasks}, ... of {job.Units}. The shard count is\n" +
              $"# fixed here (not $SLURM_ARRAY_TASK_COUNT) so that `sbatch --array=I` reruns exactly task I's units."
            : job.Units > 0
                ? $"stage '{job.Stage}' of run {run.Path}, unsharded: after the array, finds all {job.Units} units done and writes the stage's index."
                : $"stage '{job.Stage}' of run {run.Path}.";
        s.Append($"# Puzzle: {what}\n");
        s.Append("# Written by `puzzle slurm`; finished work is skipped, so resubmitting this script is safe.\n");
        s.Append("set -euo pipefail\n");
        string shard = job.IsArray ? $" --shard \"${{SLURM_ARRAY_TASK_ID}}/{job.ArrayTasks}\"" : "";
        string id = job.IsArray ? "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}" : "${SLURM_JOB_ID}";
        s.Append($"echo \"puzzle slurm: {job.Name}{(job.IsArray ? $" shard ${{SLURM_ARRAY_TASK_ID}}/{job.ArrayTasks}" : "")}, job {id}, " +
                 "restart ${SLURM_RESTART_COUNT:-0}, on $(uname -n) at $(date -u +%FT%TZ)\"\n");
        s.Append($"exec {o.Command} stage {job.Stage} --run {Quote(run.Path)}{shard}\n");
        return s.ToString();
    }

    static string Submit(IReadOnlyList<SlurmJob> jobs)
    {
        var s = new StringBuilder();
        s.Append("#!/usr/bin/env bash\n");
        s.Append("# Submits the run's Slurm jobs in pipeline order, each with --dependency=afterok on the one before, and prints\n");
        s.Append("# \"NAME JOBID\" per job. `submit.sh FROM` starts at job FROM (e.g. 05-score) after a failure: finished work is skipped.\n");
        s.Append("set -euo pipefail\n");
        s.Append("cd \"$(dirname \"${BASH_SOURCE[0]}\")\"\n");
        s.Append($"jobs=({string.Join(" ", jobs.Select(j => j.Name))})\n");
        s.Append("from=\"${1:-${jobs[0]}}\"\n");
        s.Append("printf '%s\\n' \"${jobs[@]}\" | grep -qx -- \"$from\" || { echo \"submit.sh: no job '$from'; jobs: ${jobs[*]}\" >&2; exit 2; }\n");
        s.Append("dependency=\"\"\n");
        s.Append("started=0\n");
        s.Append("for job in \"${jobs[@]}\"; do\n");
        s.Append("  [ \"$job\" = \"$from\" ] && started=1\n");
        s.Append("  [ \"$started\" = 1 ] || continue\n");
        s.Append("  id=$(sbatch --parsable ${dependency:+--dependency=afterok:$dependency} \"$job.sbatch\")\n");
        s.Append("  id=\"${id%%;*}\"\n");
        s.Append("  echo \"$job $id\"\n");
        s.Append("  dependency=\"$id\"\n");
        s.Append("done\n");
        return s.ToString();
    }

    /// <summary>Runs RUN/slurm/submit.sh (sbatch on PATH); returns each job's name and Slurm job id.</summary>
    public static IReadOnlyList<(string Name, string JobId)> SubmitAll(RunDirectory run, string? from = null)
    {
        string script = run.Artifact(Folder, SubmitScript);
        var info = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        info.ArgumentList.Add(script);
        if (from is not null) info.ArgumentList.Add(from);
        Process process;
        try { process = Process.Start(info)!; }
        catch (System.ComponentModel.Win32Exception e) { throw new PuzzleException($"{script}: cannot start bash ({e.Message})"); }
        using (process)
        {
            var stderr = process.StandardError.ReadToEndAsync();
            string stdout = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            var submitted = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ')).Where(p => p.Length == 2).Select(p => (p[0], p[1])).ToList();
            if (process.ExitCode != 0)
                throw new PuzzleException($"{script}: sbatch failed after {submitted.Count} jobs ({(submitted.Count > 0 ? $"submitted: {string.Join(", ", submitted.Select(j => $"{j.Item1} {j.Item2}"))}; " : "")}" +
                                          $"exit {process.ExitCode}): {stderr.Result.Trim().Split('\n').LastOrDefault()}");
            return submitted;
        }
    }
}
