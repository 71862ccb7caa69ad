using System.Reflection;
using System.Runtime.InteropServices;
using TorchSharp;

namespace Puzzle.Runtime;

/// <summary>What `puzzle --version` prints: the program, TorchSharp and libtorch versions, the devices found and the process settings.</summary>
public static class VersionInfo
{
    public static string ProgramVersion =>
        (Assembly.GetEntryAssembly() ?? typeof(VersionInfo).Assembly).GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";

    public static string TorchSharpVersion =>
        typeof(torch).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0]
        ?? typeof(torch).Assembly.GetName().Version?.ToString() ?? "unknown";

    public static IEnumerable<string> Lines()
    {
        var settings = ProcessSetup.Apply();
        yield return $"puzzle {ProgramVersion}";
        yield return $"TorchSharp {TorchSharpVersion}, libtorch {torch.__version__}";
        yield return $"devices: {string.Join(", ", DevicesFound())}";
        yield return $"process: {settings.Describe()}";
        yield return $"runtime: .NET {Environment.Version}, {RuntimeInformation.RuntimeIdentifier}, started as {Launch()}";
    }

    public static IEnumerable<string> DevicesFound()
    {
        yield return $"cpu ({Environment.ProcessorCount} CPUs)";
        if (torch.cuda.is_available())
            for (int i = 0; i < torch.cuda.device_count(); i++) yield return $"cuda:{i}";
        else
            yield return "no CUDA device (CPU build or no GPU visible)";
    }

    static string Launch() => SelfLaunch.Command is { } command
        ? string.Join(' ', command) + (command.Count == 1 ? " (executable)" : " (dotnet host)")
        : Environment.ProcessPath ?? "unknown";
}
