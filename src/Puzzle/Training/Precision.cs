using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Training;

/// <summary>Compute precision for training: bf16 compute with fp32 master weights where the CPU has bf16 units.</summary>
public static class Precision
{
    public static ScalarType Resolve(string name, Device device) => name.ToLowerInvariant() switch
    {
        "fp32" or "float32" => ScalarType.Float32,
        "bf16" or "bfloat16" => ScalarType.BFloat16,
        "auto" => device.type != DeviceType.CPU || CpuHasBf16() ? ScalarType.BFloat16 : ScalarType.Float32,
        _ => throw new PuzzleException($"unknown precision '{name}' (expected auto, bf16 or fp32)"),
    };

    /// <summary>avx512_bf16 or amx_bf16 in /proc/cpuinfo: bf16 matmuls run ~4x faster than fp32 there (design.md 7).</summary>
    public static bool CpuHasBf16()
    {
        try
        {
            string flags = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal)) ?? "";
            return flags.Contains(" avx512_bf16") || flags.Contains(" amx_bf16");
        }
        catch (IOException)
        {
            return false;
        }
    }
}
