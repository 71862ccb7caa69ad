namespace Puzzle.Model;

/// <summary>Checks a size against the machine's memory before allocating it, so a wrong size is an error, not a swap storm.</summary>
public static class MemoryBudget
{
    /// <summary>Memory this process may use: the container limit or physical memory, as the runtime sees it.</summary>
    public static long AvailableBytes => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    public static void Require(long bytes, string what)
    {
        long available = AvailableBytes;
        if (bytes < 0 || (available > 0 && bytes > available))
            throw new PuzzleException(
                $"{what} would need {Gib(bytes)} but this machine has {Gib(available)} of memory; use a smaller size");
    }

    public static string Gib(long bytes) => bytes < 0 ? "more than 8 EiB" : $"{bytes / (double)(1L << 30):F1} GiB";
}
