using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Runtime;

public static class Devices
{
    /// <summary>"cpu", "cuda" or "cuda:N"; CUDA needs the CUDA build (-p:TorchBackend=cuda) and a GPU.</summary>
    public static Device Parse(string name)
    {
        string n = name.Trim().ToLowerInvariant();
        if (n == "cpu") return CPU;
        if (n.StartsWith("cuda", StringComparison.Ordinal))
        {
            if (!cuda.is_available())
                throw new PuzzleException($"device '{name}' requested but CUDA is not available (this is the CPU build, or no GPU is visible)");
            return new Device(n);
        }
        throw new PuzzleException($"unknown device '{name}' (expected cpu, cuda or cuda:N)");
    }

    public static string Describe(Device device) =>
        device.type == DeviceType.CPU
            ? $"cpu ({Environment.ProcessorCount} logical cores, {torch.get_num_threads()} torch threads{(ProcessSetup.Applied is { } s ? $"; {s.Allocator}" : "")})"
            : device.ToString();
}
