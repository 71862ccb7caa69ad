using System.Diagnostics;
using Puzzle.Model;
using static TorchSharp.torch;

namespace Puzzle.Tests;

/// <summary>Tiny models with fixed init, and locations of the shared fixtures.</summary>
internal static class TestSupport
{
    public static ModelConfig TinyParentConfig(int layers = 2, bool tied = false) => new()
    {
        VocabSize = 96,
        HiddenSize = 64,
        NumAttentionHeads = 4,
        HeadDim = 16,
        Blocks = Enumerable.Repeat(BlockConfig.Llama(2, 160), layers).ToArray(),
        RmsNormEps = 1e-5,
        RopeTheta = 10000,
        MaxPositionEmbeddings = 128,
        TieWordEmbeddings = tied,
        BosTokenId = 1,
        EosTokenIds = [2],
    };

    /// <summary>Every kind of sublayer at least once.</summary>
    public static ModelConfig TinyChildConfig() => TinyParentConfig() with
    {
        Blocks =
        [
            BlockConfig.Llama(2, 160),
            new BlockConfig(AttentionConfig.Gqa(1), FfnConfig.SwiGlu(48)),
            new BlockConfig(AttentionConfig.Linear, FfnConfig.Linear),
            new BlockConfig(AttentionConfig.NoOperation, FfnConfig.SwiGlu(80)),
            new BlockConfig(AttentionConfig.Gqa(4), FfnConfig.NoOperation),
            new BlockConfig(AttentionConfig.NoOperation, FfnConfig.NoOperation),
        ],
    };

    public static CausalLm Build(ModelConfig config, long seed = 7, ScalarType dtype = ScalarType.Float32) =>
        new CausalLm(config, CPU, dtype).InitializeRandom(seed).Also(m => m.eval());

    static T Also<T>(this T value, Action<T> action)
    {
        action(value);
        return value;
    }

    public static Tensor RandomIds(int batch, int length, int vocab, long seed)
    {
        var generator = new Generator((ulong)seed);
        return randint(vocab, [batch, length], dtype: ScalarType.Int64, generator: generator);
    }

    /// <summary>
    /// A new directory under this test process's root, /tmp/puzzle-tests/pPID-… (a suite run writes about 0.5 GB
    /// there). The root is deleted at a normal exit; as the test runner may end its host without one, the first
    /// TempDir of a process also deletes the roots of processes no longer running (and unowned ones a day old).
    /// </summary>
    public static string TempDir()
    {
        string dir = Path.Combine(TestRoot.Value, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    static readonly Lazy<string> TestRoot = new(() =>
    {
        string parent = Path.Combine(Path.GetTempPath(), "puzzle-tests");
        string root = Path.Combine(parent, $"p{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(root);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(root, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        };
        foreach (var stale in Directory.EnumerateDirectories(parent))
        {
            string name = Path.GetFileName(stale);
            int dash = name.IndexOf('-');
            bool orphan = name.StartsWith('p') && dash > 1 && int.TryParse(name[1..dash], out int pid) && !Running(pid)
                || !name.StartsWith('p') && Directory.GetLastWriteTimeUtc(stale) < DateTime.UtcNow.AddDays(-1);
            if (orphan)
                try { Directory.Delete(stale, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
        return root;
    });

    static bool Running(int pid)
    {
        try { using var p = System.Diagnostics.Process.GetProcessById(pid); return !p.HasExited; }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }

    /// <summary>../shared from the project root, found by walking up from the test binaries.</summary>
    public static string? SharedDir()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "shared");
            if (Directory.Exists(Path.Combine(candidate, "models")) || Directory.Exists(Path.Combine(candidate, "data")))
                return candidate;
        }
        return null;
    }

    public static string Stories260K()
    {
        string? shared = SharedDir();
        string? path = shared is null ? null : Path.Combine(shared, "models", "stories260K-hf");
        Skip.If(path is null || !Directory.Exists(path),
            "../shared/models/stories260K-hf is absent (it sits beside the project root); skipping the conformance test");
        return path!;
    }

    public static float MaxAbsDiff(Tensor a, Tensor b)
    {
        using var d = (a.to(ScalarType.Float32) - b.to(ScalarType.Float32)).abs().max();
        return d.item<float>();
    }

    /// <summary>How a test starts the CLI: `dotnet Puzzle.Cli.dll`, or the built executable (the apphost, as a published app or a dotnet tool starts).</summary>
    public enum CliLaunch { DotnetHost, Executable }

    /// <summary>Starts the real `puzzle` program (from the test output) as a user runs it, plain output (CI=true).</summary>
    public static Process StartCli(params string[] args) => StartCli(CliLaunch.DotnetHost, args);

    public static Process StartCli(CliLaunch launch, params string[] args)
    {
        var info = launch == CliLaunch.Executable
            ? new ProcessStartInfo(Path.Combine(AppContext.BaseDirectory, "Puzzle.Cli"))
            : new ProcessStartInfo("dotnet") { ArgumentList = { Path.Combine(AppContext.BaseDirectory, "Puzzle.Cli.dll") } };
        info.RedirectStandardOutput = info.RedirectStandardError = true;
        foreach (var a in args) info.ArgumentList.Add(a);
        info.Environment["CI"] = "true";
        return Process.Start(info)!;
    }

    public static (int Code, string Stdout, string Stderr) RunCli(params string[] args) => RunCli(CliLaunch.DotnetHost, args);

    public static (int Code, string Stdout, string Stderr) RunCli(CliLaunch launch, params string[] args)
    {
        using var process = StartCli(launch, args);
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        return (process.ExitCode, stdout.Result, stderr.Result);
    }
}
