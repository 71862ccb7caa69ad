namespace Puzzle.Stages.Costs;

/// <summary>Peak dense throughput (FLOP/s, no sparsity), memory bandwidth (bytes/s) and memory size of an accelerator.</summary>
public sealed record AcceleratorSpec(string Key, string Name, double Bf16Flops, double? Fp8Flops, double Bandwidth, double MemoryBytes, string Source)
{
    public double PeakFlops(string weightDtype) => weightDtype == "fp8" && Fp8Flops is { } f ? f : Bf16Flops;

    /// <summary>Roofline time of a phase: the slower of compute and memory traffic.</summary>
    public double Seconds(double flops, double bytes, string weightDtype) => Math.Max(flops / PeakFlops(weightDtype), bytes / Bandwidth);
}

/// <summary>Spec table for planning on hardware one does not have (figures from the vendors' datasheets).</summary>
public static class Accelerators
{
    public static readonly IReadOnlyList<AcceleratorSpec> All =
    [
        new("h100", "NVIDIA H100 SXM5 80GB", 989.4e12, 1978.9e12, 3.35e12, 80e9,
            "NVIDIA H100 Tensor Core GPU datasheet (SXM5): BF16 1,979 TFLOPS and FP8 3,958 TFLOPS with sparsity, i.e. half dense; HBM3 3.35 TB/s"),
        new("h200", "NVIDIA H200 SXM 141GB", 989.4e12, 1978.9e12, 4.8e12, 141e9,
            "NVIDIA H200 Tensor Core GPU datasheet (SXM): same Hopper compute as H100 SXM; HBM3e 4.8 TB/s, 141 GB"),
        new("a100", "NVIDIA A100 SXM4 80GB", 312e12, null, 2.039e12, 80e9,
            "NVIDIA A100 Tensor Core GPU datasheet (80GB SXM): BF16 312 TFLOPS dense (624 sparse), no FP8; HBM2e 2,039 GB/s"),
        new("l40s", "NVIDIA L40S 48GB", 362.05e12, 733e12, 864e9, 48e9,
            "NVIDIA L40S datasheet: BF16 362.05 TFLOPS dense (733 sparse), FP8 733 TFLOPS dense (1,466 sparse); GDDR6 864 GB/s, 48 GB"),
    ];

    public static AcceleratorSpec Get(string key) => All.FirstOrDefault(a => a.Key == key.ToLowerInvariant())
        ?? throw new PuzzleException($"unknown accelerator '{key}' (known: {string.Join(", ", All.Select(a => a.Key))})");
}
