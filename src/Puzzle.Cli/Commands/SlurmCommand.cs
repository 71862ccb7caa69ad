using System.CommandLine;
using Puzzle.Cluster;
using Puzzle.Config;
using Puzzle.Stages;

namespace Puzzle.Cli.Commands;

/// <summary>`puzzle slurm` (sbatch scripts for a run, optionally submitted) and `puzzle stage` (one stage, as a job runs it).</summary>
internal static class SlurmCommand
{
    public static Command Create()
    {
        var config = new Argument<string>("CONFIG") { Description = "run config (JSON or YAML); saved resolved as RUN/config.json" };
        var runDir = new Option<string>("--run") { Description = "run directory on storage every node sees", Required = true };
        var set = new Option<string[]>("--set") { Description = "override: section.key=value (repeatable)", AllowMultipleArgumentsPerToken = true };
        var partition = new Option<string?>("--partition") { Description = "Slurm partition for every job" };
        var tasks = new Option<int>("--tasks") { Description = "array tasks for the library and scoring stages", DefaultValueFactory = _ => 4 };
        var gpus = new Option<int>("--gpus-per-task") { Description = "GPUs per job / array task (0: none requested)", DefaultValueFactory = _ => 0 };
        var time = new Option<string?>("--time") { Description = "time limit of each job, e.g. 04:00:00 or 1-00:00:00" };
        var stages = new Option<string?>("--stages") { Description = $"comma list of stages to write jobs for (default all: {string.Join(",", Pipeline.StageNames)})" };
        var command = new Option<string?>("--command") { Description = "shell text that starts puzzle on a node (default: this process's own, absolute)" };
        var submit = new Option<bool>("--submit") { Description = "submit the jobs with sbatch (RUN/slurm/submit.sh)" };
        var slurm = new Command("slurm", "Write one sbatch script per pipeline stage under RUN/slurm/ (job arrays for library and scoring), chained with afterok; --submit submits them.")
            { config, runDir, set, partition, tasks, gpus, time, stages, command, submit };
        slurm.SetAction(r => CliSupport.Run(() =>
        {
            string dir = Path.GetFullPath(r.GetValue(runDir)!);
            var options = new SlurmOptions
            {
                Command = r.GetValue(command) ?? SlurmScripts.CurrentCommand(), Tasks = r.GetValue(tasks), Partition = r.GetValue(partition),
                GpusPerTask = r.GetValue(gpus), Time = r.GetValue(time),
                Stages = (r.GetValue(stages) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            };
            SlurmScripts.Validate(options);
            var resolved = RunCommands.Resolve(r.GetValue(config)!, r.GetValue(set) ?? []);
            Directory.CreateDirectory(dir);
            resolved.Save(Path.Combine(dir, RunConfig.FileName));
            var run = new RunDirectory(dir);
            var jobs = SlurmScripts.Write(run, options);
            foreach (var job in jobs)
                Console.WriteLine($"{job.Script}  {(job.IsArray ? $"array of {job.ArrayTasks} tasks over {job.Units} units" : job.Units > 0 ? "index of all shards" : "single job")}");
            string submitScript = run.Artifact(SlurmScripts.Folder, SlurmScripts.SubmitScript);
            if (!r.GetValue(submit))
            {
                Console.WriteLine($"submit with: {submitScript}   (logs: {run.Artifact(SlurmScripts.Folder, "logs")})");
                return 0;
            }
            foreach (var (name, id) in SlurmScripts.SubmitAll(run))
                Console.WriteLine($"submitted {name} {id}");
            Console.WriteLine($"logs: {run.Artifact(SlurmScripts.Folder, "logs")}; rerun from a job after a failure: {submitScript} NAME");
            return 0;
        }));
        return slurm;
    }

    public static Command Stage()
    {
        var name = new Argument<string>("STAGE") { Description = string.Join(", ", Pipeline.StageNames) };
        var run = CliSupport.RunOption();
        var shard = CliSupport.ShardOption();
        var command = new Command("stage", "Run one pipeline stage on a run directory (what each Slurm job runs), skipping finished work.") { name, run, shard };
        command.SetAction(r => CliSupport.Run(() => SpectreProgress.Run(() =>
        {
            string stage = r.GetValue(name)!;
            string? shardText = r.GetValue(shard);
            if (!Pipeline.StageNames.Contains(stage))
                throw new PuzzleException($"stage '{stage}' is not one of {string.Join(", ", Pipeline.StageNames)}");
            if (shardText is not null && stage is not ("library" or "score"))
                throw new PuzzleException($"--shard {shardText}: only the library and score stages are split into shards, not '{stage}'");
            Pipeline.Run(new RunDirectory(r.GetValue(run)!) { Shard = Shard.Parse(shardText) }, only: stage);
            return 0;
        })));
        return command;
    }
}
