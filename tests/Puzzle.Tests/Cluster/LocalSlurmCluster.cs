using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Puzzle.Tests.Cluster;

/// <summary>
/// A one-node Slurm cluster on this machine, all of it under a temp dir: munged with its own key, socket and pid
/// file; slurmctld and slurmd in the foreground with a generated slurm.conf (free ports, state and spool in the temp
/// dir, no cgroups, no accounting). Needs root and Debian's slurm-wlm + munge (scripts/install-slurm.sh).
/// Dispose cancels the cluster's jobs and stops the three daemons it started, by pid.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
internal sealed class LocalSlurmCluster : IDisposable
{
    public const string NodeName = "puzzlenode";
    public string Dir { get; }
    public string ConfigPath => Path.Combine(Dir, "slurm.conf");
    readonly List<Process> _daemons = new();

    /// <summary>Why a cluster cannot start here, or null when it can.</summary>
    public static string? Unavailable()
    {
        string[] tools = ["slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "sinfo", "munged"];
        string? missing = tools.FirstOrDefault(t => Which(t) is null);
        if (missing is not null) return $"{missing} is not installed (scripts/install-slurm.sh installs Debian's slurm-wlm and munge as root); skipping the Slurm cluster test";
        if (Environment.UserName != "root") return "the local Slurm cluster runs its daemons as root; skipping the Slurm cluster test";
        return null;
    }

    static string? Which(string tool) => (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':')
        .Concat(["/usr/sbin", "/sbin"]).Select(d => Path.Combine(d, tool)).FirstOrDefault(File.Exists);

    public LocalSlurmCluster(TimeSpan startTimeout)
    {
        Dir = Path.Combine("/tmp", "pzs-" + Guid.NewGuid().ToString("N")[..10]);                  // short: unix socket paths are limited
        Directory.CreateDirectory(Dir);
        foreach (string d in new[] { "munge", "state", "spool", "log" }) Directory.CreateDirectory(Path.Combine(Dir, d));
        try
        {
            string key = Path.Combine(Dir, "munge", "munge.key");
            File.WriteAllBytes(key, RandomNumberGenerator(1024));
            File.SetUnixFileMode(key, UnixFileMode.UserRead);
            string socket = Path.Combine(Dir, "munge", "munge.socket");
            Start(Which("munged")!, "-F", "-f", $"--key-file={key}", $"--socket={socket}", $"--pid-file={Dir}/munge/munged.pid",
                $"--log-file={Dir}/log/munged.log", $"--seed-file={Dir}/munge/munged.seed");
            WaitFor(() => File.Exists(socket), startTimeout, "munged to create its socket");

            var (controllerPort, nodePort) = FreePorts();
            string host = Environment.MachineName.Split('.')[0];                                      // Slurm compares short host names
            File.WriteAllText(ConfigPath, $"""
                ClusterName=puzzletest
                SlurmctldHost={host}(127.0.0.1)
                SlurmUser=root
                SlurmdUser=root
                SlurmctldPort={controllerPort}
                SlurmdPort={nodePort}
                AuthType=auth/munge
                CredType=cred/munge
                AuthInfo=socket={socket}
                StateSaveLocation={Dir}/state
                SlurmdSpoolDir={Dir}/spool
                SlurmctldPidFile={Dir}/slurmctld.pid
                SlurmdPidFile={Dir}/slurmd.pid
                SlurmctldLogFile={Dir}/log/slurmctld.log
                SlurmdLogFile={Dir}/log/slurmd.log
                ProctrackType=proctrack/linuxproc
                TaskPlugin=task/none
                JobAcctGatherType=jobacct_gather/none
                AccountingStorageType=accounting_storage/none
                JobCompType=jobcomp/none
                MpiDefault=none
                SwitchType=switch/none
                SelectType=select/cons_tres
                SelectTypeParameters=CR_CPU
                ReturnToService=2
                SchedulerType=sched/builtin
                NodeName={NodeName} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={Environment.ProcessorCount} State=UNKNOWN
                PartitionName=puzzle Nodes={NodeName} Default=YES MaxTime=INFINITE State=UP

                """);
            Start(Which("slurmctld")!, "-D", "-f", ConfigPath);
            WaitFor(() => Tool("scontrol", "ping").Output.Contains("is UP"), startTimeout, "slurmctld to answer");
            Start(Which("slurmd")!, "-D", "-f", ConfigPath, "-N", NodeName);
            WaitFor(() => Tool("sinfo", "-h", "-N", "-o", "%t").Output.Trim() == "idle", startTimeout, "the node to be idle");
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    static byte[] RandomNumberGenerator(int bytes) => System.Security.Cryptography.RandomNumberGenerator.GetBytes(bytes);

    /// <summary>Two distinct ports free right now (both held while asking, so they differ).</summary>
    static (int, int) FreePorts()
    {
        using var a = new TcpListener(IPAddress.Loopback, 0);
        using var b = new TcpListener(IPAddress.Loopback, 0);
        a.Start();
        b.Start();
        return (((IPEndPoint)a.LocalEndpoint).Port, ((IPEndPoint)b.LocalEndpoint).Port);
    }

    void Start(string program, params string[] args)
    {
        var info = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) info.ArgumentList.Add(a);
        info.Environment["SLURM_CONF"] = ConfigPath;
        var process = Process.Start(info)!;
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _daemons.Add(process);
    }

    void WaitFor(Func<bool> ready, TimeSpan timeout, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!ready())
        {
            var dead = _daemons.FirstOrDefault(d => d.HasExited);
            if (dead is not null || clock.Elapsed > timeout)
                throw new InvalidOperationException($"local Slurm cluster: waited {clock.Elapsed.TotalSeconds:F0} s for {what}" +
                    (dead is not null ? $"; {Path.GetFileName(dead.StartInfo.FileName)} exited with {dead.ExitCode}" : "") + $"\n{Logs()}");
            Thread.Sleep(100);
        }
    }

    /// <summary>The daemons' log tails, for failure messages.</summary>
    public string Logs() => string.Join("\n", Directory.GetFiles(Path.Combine(Dir, "log")).Select(f =>
        $"== {Path.GetFileName(f)}\n{string.Join("\n", File.ReadAllLines(f).TakeLast(15))}"));

    /// <summary>Runs a Slurm client tool against this cluster.</summary>
    public (int Code, string Output) Tool(string tool, params string[] args)
    {
        var info = new ProcessStartInfo(Which(tool)!) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) info.ArgumentList.Add(a);
        info.Environment["SLURM_CONF"] = ConfigPath;
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout + stderr.Result);
    }

    /// <summary>Every state of the job (one per array task); empty once Slurm has forgotten it.</summary>
    public IReadOnlyList<string> States(string jobId) => Tool("scontrol", "show", "job", "-o", jobId).Output
        .Split([' ', '\n'], StringSplitOptions.RemoveEmptyEntries).Where(t => t.StartsWith("JobState=", StringComparison.Ordinal)).Select(t => t[9..]).ToList();

    static readonly string[] Running = ["PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT"];

    /// <summary>Waits until no task of the jobs is pending or running; their final states, or null on timeout.</summary>
    public Dictionary<string, IReadOnlyList<string>>? WaitAll(IEnumerable<string> jobIds, TimeSpan timeout)
    {
        var ids = jobIds.ToList();
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            var states = ids.ToDictionary(id => id, States);
            if (states.Values.All(s => s.Count > 0 && !s.Any(Running.Contains))) return states;
            Thread.Sleep(250);
        }
        return null;
    }

    static void Terminate(int pid)
    {
        using var kill = Process.Start("kill", ["-TERM", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        kill.WaitForExit();
    }

    public void Dispose()
    {
        if (_daemons.Count >= 2 && !_daemons[1].HasExited)
        {
            // Cancel whatever is still queued or running, and give the job steps a moment to end before slurmd goes.
            Tool("scancel", "--full", "--partition=puzzle");
            var clock = Stopwatch.StartNew();
            while (clock.Elapsed.TotalSeconds < 10 && Tool("squeue", "-h").Output.Trim().Length > 0) Thread.Sleep(200);
        }
        foreach (var daemon in Enumerable.Reverse(_daemons))
        {
            if (!daemon.HasExited)
            {
                Terminate(daemon.Id);                                                                  // SIGTERM: a clean shutdown
                if (!daemon.WaitForExit(5000)) daemon.Kill();
            }
            daemon.WaitForExit();
            daemon.Dispose();
        }
        _daemons.Clear();
        try { Directory.Delete(Dir, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
