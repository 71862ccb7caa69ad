using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Puzzle.Runtime;

namespace Puzzle.Tests;

/// <summary>The test host runs with the CLI's process settings (allocator, threads), as the CLI and the benchmarks do.</summary>
internal static class TestHostSetup
{
    [ModuleInitializer]
    [SuppressMessage("Usage", "CA2255", Justification = "the test assembly is the entry point of the test host's work; settings must precede the first tensor")]
    internal static void Initialize() => ProcessSetup.Apply();
}
