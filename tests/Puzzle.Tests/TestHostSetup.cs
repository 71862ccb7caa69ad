using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Puzzle.Runtime;

namespace Puzzle.Tests;

/// <summary>
/// The test host runs with the CLI's process settings (allocator, threads), as the CLI and the benchmarks do. Timings
/// keep every thread (PUZZLE_TIMING_THREADS=all, inherited by the CLI processes tests start): the suite's own parallel
/// work would otherwise change a check's thread count, and so its cache key, between two calls of one test. So does long
/// work (PUZZLE_WORK_THREADS=all): a run killed and resumed must compute what an uninterrupted one does. The tests of
/// the choice itself ask for it (CpuContentionTests, WorkThreadsTests).
/// </summary>
internal static class TestHostSetup
{
    [ModuleInitializer]
    [SuppressMessage("Usage", "CA2255", Justification = "the test assembly is the entry point of the test host's work; settings must precede the first tensor")]
    internal static void Initialize()
    {
        Environment.SetEnvironmentVariable(CpuContention.TimingThreadsVariable, "all");
        Environment.SetEnvironmentVariable(WorkThreads.Variable, "all");
        ProcessSetup.Apply();
    }
}
