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

    /// <summary>
    /// Waits until the device has run everything queued on it. CUDA kernels run asynchronously, so a timer read without
    /// this measures kernel launches; every timer read on a device goes through <see cref="DeviceClock"/>. No-op on the CPU.
    /// </summary>
    public static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
    }

    /// <summary>The device in words; on the CPU its cores, the torch threads (<paramref name="threads"/>, default the current setting) and the allocator.</summary>
    public static string Describe(Device device, int? threads = null) =>
        device.type == DeviceType.CPU
            ? $"cpu ({Environment.ProcessorCount} logical cores, {threads ?? torch.get_num_threads()} torch threads{(ProcessSetup.Applied is { } s ? $"; {s.Allocator}" : "")})"
            : device.ToString();
}

/// <summary>
/// A stopwatch for device work: synchronises the device when started and before every read, so that the time covers
/// the work queued in between and not only its launch.
/// </summary>
public sealed class DeviceClock
{
    readonly Action _synchronize;
    long _start;

    public DeviceClock(Device device, Action? synchronize = null)
    {
        _synchronize = synchronize ?? (() => Devices.Synchronize(device));
        Restart();
    }

    public static DeviceClock StartNew(Device device) => new(device);

    public void Restart()
    {
        _synchronize();
        _start = System.Diagnostics.Stopwatch.GetTimestamp();
    }

    public double ElapsedSeconds
    {
        get
        {
            _synchronize();
            return System.Diagnostics.Stopwatch.GetElapsedTime(_start).TotalSeconds;
        }
    }

    public double ElapsedMilliseconds => ElapsedSeconds * 1e3;
}
