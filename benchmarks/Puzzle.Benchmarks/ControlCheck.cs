using System.Diagnostics;
using System.Globalization;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Search;

namespace Puzzle.Benchmarks;

/// <summary>
/// Would a control child timed beside each measured check cancel the drift between moments? Checks as the search makes
/// them (the parent and one child, ROUNDS rounds, interleaved), each with one more model: a fixed control child (the
/// first solution). The children (the other solutions) take turns, check after check, for MINUTES minutes. Each check
/// gives the child's raw ratio to the parent, and its normalised ratio: the child's ratio to the control, times the
/// control's ratio to the parent at the first check (a fixed reference). The drift between moments moves every child's
/// ratio to the parent alike, so if the normalised readings of a child hold where the raw ones move, a check against a
/// control would choose the same child at any moment.
/// Printed: one TSV line per check, then per child the mean, cv, lag-1 autocorrelation and medians of the three thirds
/// of its raw and of its normalised readings.
///   Puzzle.Benchmarks control-check MINUTES ROUNDS CONTROL=RUN/solutions/NAME.json LABEL=RUN/solutions/NAME.json...
/// </summary>
public static class ControlCheck
{
    public static void Run(double minutes, int rounds, string[] labelled)
    {
        var entries = labelled.Select(a => a.Split('=', 2) is [var label, var path] ? (Label: label, Path: path) : (Label: a, Path: a)).ToList();
        if (entries.Count < 2) throw new PuzzleException("control-check: give a control and at least one child, LABEL=RUN/solutions/NAME.json each");
        var (first, parent, architectures) = SolutionsSideBySide.Architectures([.. entries.Select(e => e.Path)]);
        var sc = first.Config.Scenario;
        var scenario = ScenarioCost.From(sc);
        var models = ArchitectureTimer.TimingModels([parent, .. architectures], sc).ToList();           // 0: parent, 1: control, 2..: children
        try
        {
            Console.WriteLine($"# control-check: the parent of {first.Path}, control {entries[0].Label}, children {string.Join(", ", entries.Skip(1).Select(e => e.Label))}; " +
                              $"checks of {rounds} rounds for {minutes} min; batch {sc.Batch}, prompt {sc.PromptLength}, generation {sc.GenerationLength}, {sc.MeasureDtype}");
            Console.WriteLine("minute\tchild\tparent_ms\traw\tcontrol\tnormalised");
            var readings = entries.Skip(1).Select(_ => new List<(double Raw, double Normalised)>()).ToArray();
            double? reference = null;
            var clock = Stopwatch.StartNew();
            for (int check = 0; clock.Elapsed.TotalMinutes < minutes; check++)
            {
                double minute = clock.Elapsed.TotalMinutes;
                int k = check % readings.Length;
                var samples = EngineTimer.Interleaved([models[0], models[1], models[2 + k]], scenario, check == 0 ? Math.Max(1, sc.WarmupRuns) : 1, rounds, seed: check);
                double[] p = [.. samples[0].Select(s => s.TotalSeconds)], c = [.. samples[1].Select(s => s.TotalSeconds)], x = [.. samples[2].Select(s => s.TotalSeconds)];
                double raw = Median(p.Zip(x, (a, b) => a / b)), control = Median(p.Zip(c, (a, b) => a / b));
                reference ??= control;
                double normalised = reference.Value * Median(c.Zip(x, (a, b) => a / b));
                readings[k].Add((raw, normalised));
                Console.WriteLine($"{F(minute, "0.00")}\t{entries[1 + k].Label}\t{F(1e3 * Median(p), "0.0")}\t{F(raw, "0.000")}\t{F(control, "0.000")}\t{F(normalised, "0.000")}");
            }
            Console.WriteLine("# child\treadings\traw: mean\tcv\tlag-1\tthirds\tnormalised: mean\tcv\tlag-1\tthirds");
            for (int k = 0; k < readings.Length; k++)
            {
                if (readings[k].Count < 3) continue;
                string Stats(double[] v) => $"{F(v.Average(), "0.000")}\t{F(Cv(v), "0.000")}\t{F(Lag1(v), "0.00")}\t" +
                    string.Join(" ", Enumerable.Range(0, 3).Select(t => F(Median(v.Skip(t * v.Length / 3).Take((t + 1) * v.Length / 3 - t * v.Length / 3)), "0.000")));
                Console.WriteLine($"# {entries[1 + k].Label}\t{readings[k].Count}\t{Stats([.. readings[k].Select(r => r.Raw)])}\t{Stats([.. readings[k].Select(r => r.Normalised)])}");
            }
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }

    static double Median(IEnumerable<double> v) => TimingStatistic.Median.Apply(v.ToList());
    static double Cv(double[] v) { double m = v.Average(); return Math.Sqrt(v.Select(x => (x - m) * (x - m)).Sum() / (v.Length - 1)) / m; }
    static double Lag1(double[] v)
    {
        double m = v.Average(), num = 0, den = v.Sum(x => (x - m) * (x - m));
        for (int i = 1; i < v.Length; i++) num += (v[i - 1] - m) * (v[i] - m);
        return den > 0 ? num / den : double.NaN;
    }
    static string F(double v, string format) => v.ToString(format, CultureInfo.InvariantCulture);
}
