using System.Globalization;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Config;
using Puzzle.IO;
using Puzzle.Model;
using Puzzle.Runtime;
using Puzzle.Stages.Costs;

namespace Puzzle.Stages.Search;

/// <summary>
/// A control child timed beside every measured check (search.drift_control). On a shared VM a child's ratio to the
/// parent moves with the moment: the same 22 children measured 6.2% faster together from one 10-minute bench to the next,
/// and a check and a bench minutes apart differed by 6% for the same child, while the children's ratios to one another
/// held (benchmarks/results/search-spread-2026-12-05.md). A check that also times a fixed control reads the child's
/// ratio to the control, which holds, and scales it by a fixed reference of the control's ratio to the parent: the
/// median of this machine's earlier readings of that ratio (<see cref="StorePath"/>), or, with none yet, the check's own.
/// Every check adds its reading to the store. Two runs on one machine thus judge their children against the same
/// reference, whatever the moment of their checks.
/// The control is a child of a typical shape (<see cref="ControlOf"/>), timed with random weights like every check.
/// </summary>
public sealed class DriftControl
{
    /// <summary>The readings kept per key (the newest).</summary>
    public const int MaxReadings = 200;

    /// <summary>
    /// The readings a reference should rest on: with fewer, one moment's drift moves it (on 5 Dec the reference of a
    /// fresh store fell from 2.48x to 2.26x over its first readings, and the children kept followed it). The pipeline
    /// takes up to <see cref="ReadingsPerGap"/> readings between its stages while fewer are stored
    /// (<see cref="BetweenStages"/>); `puzzle drift-control` takes as many as asked.
    /// </summary>
    public const int SettledReadings = 12;

    /// <summary>The environment variable that moves the store; default $XDG_CACHE_HOME/puzzle or ~/.cache/puzzle.</summary>
    public const string StoreVariable = "PUZZLE_DRIFT_CONTROL";

    static readonly Dictionary<string, double> ProcessReferences = [];
    static readonly Lock Gate = new();

    public ModelConfig Control { get; }
    /// <summary>The store of readings: one JSON file for the machine, keyed by parent shape, scenario and threads.</summary>
    public string StorePath { get; }
    readonly string _key;

    DriftControl(ModelConfig control, string storePath, string key) => (Control, StorePath, _key) = (control, storePath, key);

    /// <summary>The control for this parent and scenario, timed on <paramref name="threads"/> threads, with its readings in <paramref name="storePath"/> (default <see cref="DefaultStorePath"/>).</summary>
    public static DriftControl For(ModelConfig parent, ScenarioSection sc, int threads, string? storePath = null)
    {
        var control = ControlOf(parent);
        string key = ArchitectureTimer.Key(parent, control, sc, threads);
        return new DriftControl(control, storePath ?? DefaultStorePath(), key);
    }

    /// <summary>
    /// A child of the shape searches at 2–3x keep: the parent's attention in every third layer (0, 3, 6, …) and none in
    /// the others, every SwiGLU FFN at a quarter of its width (at least 1). The drift moves children against the parent,
    /// so the control must be child-like: the parent with FFNs at half width ran only 1.12x the parent's speed, against
    /// 2.4–2.7x for the demo's children and this control's 2.5–2.7x (A-i3 of the 5 Dec runs, whose shape it follows).
    /// </summary>
    public static ModelConfig ControlOf(ModelConfig parent) =>
        parent.WithBlocks(parent.Blocks.Select((b, layer) => new BlockConfig(
            layer % 3 == 0 ? b.Attention : AttentionConfig.NoOperation,
            b.Ffn.IsSwiGlu ? FfnConfig.SwiGlu(Math.Max(1, b.Ffn.IntermediateSize!.Value / 4)) : b.Ffn)));

    public static string DefaultStorePath()
    {
        if (Environment.GetEnvironmentVariable(StoreVariable) is { Length: > 0 } path) return path;
        string cache = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(cache, "puzzle", "drift-control.json");
    }

    /// <summary>The stored readings of this control (oldest first).</summary>
    public IReadOnlyList<double> Readings() =>
        Read()?["controls"]?[_key]?["readings"] is JsonArray a ? [.. a.Select(r => r!["ratio"]!.GetValue<double>())] : [];

    /// <summary>
    /// The reference this process scales checks by: fixed at its first use, the median of the readings stored before it,
    /// or, with none, <paramref name="firstReading"/> (the first check's own: no correction).
    /// </summary>
    public double Reference(double firstReading) => Fix(firstReading)!.Value;

    /// <summary>The reference where one is fixed or stored (fixing it for the process), else null: the first check sets it (<see cref="Reference"/>).</summary>
    public double? StoredReference() => Fix(null);

    double? Fix(double? firstReading)
    {
        lock (Gate)
        {
            string processKey = StorePath + "|" + _key;
            if (ProcessReferences.TryGetValue(processKey, out double fixedHere)) return fixedHere;
            var readings = Readings();
            double? reference = readings.Count > 0 ? TimingStatistic.Median.Apply([.. readings]) : firstReading;
            if (reference is { } r) ProcessReferences[processKey] = r;
            return reference;
        }
    }

    /// <summary>The reference fixed for this process, if a check has fixed it yet.</summary>
    public double? FixedReference
    {
        get { lock (Gate) return ProcessReferences.TryGetValue(StorePath + "|" + _key, out double r) ? r : null; }
    }

    /// <summary>Adds a check's reading of the control's ratio to the parent (the newest <see cref="MaxReadings"/> are kept).</summary>
    public void Record(double ratio, int rounds)
    {
        if (!(ratio > 0) || double.IsInfinity(ratio)) throw new ArgumentException($"a control reading must be positive and finite, got {ratio}");
        lock (Gate)
        {
            var store = Read() ?? new JsonObject { ["format_version"] = 1, ["controls"] = new JsonObject() };
            var controls = store["controls"] as JsonObject ?? (JsonObject)(store["controls"] = new JsonObject());
            var entry = controls[_key] as JsonObject ?? (JsonObject)(controls[_key] = new JsonObject { ["control"] = string.Join("; ", Control.Blocks), ["readings"] = new JsonArray() });
            var readings = entry["readings"] as JsonArray ?? (JsonArray)(entry["readings"] = new JsonArray());
            readings.Add(new JsonObject { ["ratio"] = ratio, ["rounds"] = rounds, ["at"] = DateTime.UtcNow.ToString("o", CultureInfo.InvariantCulture) });
            while (readings.Count > MaxReadings) readings.RemoveAt(0);
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(StorePath))!);
            AtomicFile.WriteJson(StorePath, store);
        }
    }

    /// <summary>
    /// One reading: the parent and the control timed in one interleaved loop of a check's most rounds
    /// (<see cref="ArchitectureTimer.MaxRounds"/>), the control's paired ratio to the parent stored and returned.
    /// </summary>
    public double TakeReading(ModelConfig parent, ScenarioSection sc)
    {
        int rounds = ArchitectureTimer.MaxRounds(sc);
        double ratio = ArchitectureTimer.MeasureJoint(parent, [Control], sc, [RoundsRule.Fixed(rounds)])[0].Ratio;
        Record(ratio, rounds);
        return ratio;
    }

    /// <summary>
    /// <paramref name="readings"/> readings of the run's control, <paramref name="every"/> apart (so they sample several
    /// moments), each timed on the threads a check would use and stored; returns them.
    /// </summary>
    public static IReadOnlyList<double> Calibrate(RunDirectory run, int readings, TimeSpan every, Action<string>? log = null, string? storePath = null)
    {
        if (readings < 1) throw new PuzzleException($"drift-control: --readings must be at least 1, got {readings}");
        if (every < TimeSpan.Zero) throw new PuzzleException($"drift-control: --every must be at least 0 s, got {every.TotalSeconds} s");
        return Calibrate(HfConfig.Read(run.ParentDir), run.Config.Scenario, readings, every, log ?? Log.Info, storePath);
    }

    static IReadOnlyList<double> Calibrate(ModelConfig parent, ScenarioSection sc, int readings, TimeSpan every, Action<string> log, string? storePath)
    {
        var taken = new List<double>();
        for (int i = 0; i < readings; i++)
        {
            if (i > 0) Thread.Sleep(every);
            using var scope = CpuContention.EnterTiming("drift-control reading", log);
            var control = For(parent, sc, scope.Threads, storePath);
            taken.Add(control.TakeReading(parent, sc));
            var stored = control.Readings();
            log($"drift control: reading {i + 1}/{readings}: the control ran {taken[^1]:F2}x the parent; {stored.Count} readings stored, " +
                $"their median {TimingStatistic.Median.Apply([.. stored]):F2}x ({control.StorePath})");
        }
        return taken;
    }

    /// <summary>Readings <see cref="BetweenStages"/> takes at most per gap between two stages (about 17 s each on the demo).</summary>
    public const int ReadingsPerGap = 2;

    /// <summary>
    /// Between the pipeline's stages, where search.drift_control is on, the target measured and the parent in place:
    /// up to <see cref="ReadingsPerGap"/> readings while fewer than <see cref="SettledReadings"/> are stored, so a
    /// first run's search starts from readings of several moments (the library, scoring and costs stages take minutes)
    /// instead of its first check's alone; later runs on the machine find the history and take none, and so does a
    /// rerun whose child is already searched (RUN/solutions/child.json).
    /// </summary>
    public static void BetweenStages(RunDirectory run, Action<string>? log = null, string? storePath = null)
    {
        var search = run.Config.Search;
        if (!search.DriftControl || search.Target != "measured" || !File.Exists(Path.Combine(run.ParentDir, "config.json"))
            || File.Exists(run.Solution(ChildRecipe.Solution))) return;
        var parent = HfConfig.Read(run.ParentDir);
        // One timing scope (one probe of the other processes' load) for the count and the readings nested in it.
        using var scope = CpuContention.EnterTiming("drift-control reading", log);
        int missing = SettledReadings - For(parent, run.Config.Scenario, scope.Threads, storePath).Readings().Count;
        if (missing > 0) Calibrate(parent, run.Config.Scenario, Math.Min(ReadingsPerGap, missing), TimeSpan.Zero, log ?? Log.Info, storePath);
    }

    JsonObject? Read() => JsonFile.ReadDerived(StorePath, j => j["format_version"].Int() == 1)?.Object();

    /// <summary>Forgets the references fixed in this process (tests).</summary>
    public static void ResetProcessReferences()
    {
        lock (Gate) ProcessReferences.Clear();
    }
}
