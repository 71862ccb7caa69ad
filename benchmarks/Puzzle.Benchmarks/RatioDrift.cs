using System.Diagnostics;
using System.Globalization;
using Puzzle.Checkpoints;
using Puzzle.Stages;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Search;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Benchmarks;

/// <summary>
/// What moves a paired throughput ratio from one minute to the next on this VM? The models (the first is the reference,
/// e.g. the parent) are loaded once and timed in the engine in the run's scenario, interleaved (EngineTimer), in batches
/// of ROUNDS rounds for MINUTES minutes; each batch runs twice, on the process's torch threads and on one thread, in
/// alternating order. A small model's decode is many small kernels, and every multi-threaded kernel waits for all the
/// pool's threads: if the drift comes from what that wait costs from minute to minute (the hypervisor's scheduling of
/// the vCPUs), the ratios on one thread hold still while those on every thread move. Each batch also records the
/// machine's steal time (/proc/stat) and the median time of one small multi-threaded kernel (the demo's fused QKV
/// projection at the scenario's batch) on every thread.
/// Printed per batch (TSV on stdout): the minute, the steal share, the kernel's µs, the reference's request ms and every
/// model's paired ratio to the reference (median over the batch's rounds) on all threads, then on one. Then, over
/// batches: each ratio's spread (max/min, coefficient of variation) on all threads and on one, the same for every ratio
/// between two models other than the reference, and the correlation of each all-thread ratio with the kernel's time.
///   Puzzle.Benchmarks ratio-drift RUN MINUTES ROUNDS MODEL_DIR...
/// </summary>
public static class RatioDrift
{
    public static void Run(string runDir, double minutes, int rounds, string[] dirs)
    {
        var run = new RunDirectory(runDir);
        var sc = run.Config.Scenario;
        var scenario = ScenarioCost.From(sc);
        var device = Runtime.Devices.Parse(sc.Device);
        var dtype = Checkpoint.ParseDtype(sc.MeasureDtype);
        var models = dirs.Select(d => Checkpoint.Load(d, device, dtype)).ToList();
        int all = torch.get_num_threads();
        using var x = torch.randn(sc.Batch, 1, 384).to(dtype);
        using var w = torch.randn(1152, 384).to(dtype);
        try
        {
            Console.WriteLine($"# ratio-drift: {dirs.Length} models ({string.Join(", ", dirs)}), batches of {rounds} rounds for {minutes} min on {all} threads and on 1; " +
                              $"batch {sc.Batch}, prompt {sc.PromptLength}, generation {sc.GenerationLength}, {sc.MeasureDtype}");
            var ratioNames = dirs.Skip(1).Select((_, k) => $"ratio{k + 1}").ToList();
            Console.WriteLine(string.Join('\t', new[] { "minute", "steal", "kernel_us", $"reference_ms_t{all}" }.Concat(ratioNames.Select(r => $"{r}_t{all}"))
                .Concat(["reference_ms_t1"]).Concat(ratioNames.Select(r => $"{r}_t1"))));
            var clock = Stopwatch.StartNew();
            var rows = new List<(double[] All, double[] One, double Kernel)>();
            var stat = Steal();
            int batch = 0;
            while (clock.Elapsed.TotalMinutes < minutes)
            {
                double minute = clock.Elapsed.TotalMinutes;
                double kernel = KernelMicroseconds(x, w);
                (double Ms, double[] Ratios) Time(int threads)
                {
                    torch.set_num_threads(threads);
                    try
                    {
                        var samples = EngineTimer.Interleaved(models, scenario, batch == 0 ? Math.Max(1, sc.WarmupRuns) : 1, rounds);
                        double[] reference = samples[0].Select(s => s.TotalSeconds).ToArray();
                        return (1e3 * Median(reference), Enumerable.Range(1, models.Count - 1).Select(m => Median(reference.Zip(samples[m], (p, c) => p / c.TotalSeconds))).ToArray());
                    }
                    finally { torch.set_num_threads(all); }
                }
                // Alternating order, so that neither count always runs first after the kernel probe.
                (double Ms, double[] Ratios) first, second;                                  // first: all threads; second: one
                if (batch % 2 == 0) { first = Time(all); second = Time(1); }
                else { second = Time(1); first = Time(all); }
                var now = Steal();
                double steal = now.Total > stat.Total ? (now.Steal - stat.Steal) / (now.Total - stat.Total) : 0;
                stat = now;
                rows.Add((first.Ratios, second.Ratios, kernel));
                Console.WriteLine(string.Join('\t', new[] { F(minute, "0.00"), F(steal, "0.000"), F(kernel, "0.0"), F(first.Ms, "0.0") }
                    .Concat(first.Ratios.Select(r => F(r, "0.000"))).Concat([F(second.Ms, "0.0")]).Concat(second.Ratios.Select(r => F(r, "0.000")))));
                batch++;
            }
            Summarise(rows, dirs, all);
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }

    static void Summarise(List<(double[] All, double[] One, double Kernel)> rows, string[] dirs, int all)
    {
        if (rows.Count < 3) { Console.WriteLine("# fewer than 3 batches: no spread"); return; }
        int n = dirs.Length - 1;
        double[] kernel = rows.Select(r => r.Kernel).ToArray();
        Console.WriteLine($"# {rows.Count} batches; kernel µs {F(kernel.Min(), "0.0")}–{F(kernel.Max(), "0.0")} (cv {F(Cv(kernel), "0.000")})");
        // Lag-1 autocorrelation over batches: near 0 where a ratio's spread is each batch's sampling noise, clearly
        // positive where it drifts (neighbouring batches alike).
        Console.WriteLine($"# ratio\tmax/min t{all}\tcv t{all}\tlag-1 t{all}\tmax/min t1\tcv t1\tlag-1 t1\tcorr(t{all} ratio, kernel µs)");
        void Line(string name, Func<double[], double> pick)
        {
            double[] a = rows.Select(r => pick(r.All)).ToArray(), o = rows.Select(r => pick(r.One)).ToArray();
            Console.WriteLine($"# {name}\t{F(a.Max() / a.Min(), "0.000")}\t{F(Cv(a), "0.000")}\t{F(Corr(a[..^1], a[1..]), "0.00")}\t" +
                              $"{F(o.Max() / o.Min(), "0.000")}\t{F(Cv(o), "0.000")}\t{F(Corr(o[..^1], o[1..]), "0.00")}\t{F(Corr(a, kernel), "0.00")}");
        }
        for (int a = 0; a < n; a++) { int i = a; Line($"{dirs[a + 1]} / {dirs[0]}", r => r[i]); }
        // Model a+1's time over model b+1's = ratio b over ratio a (both to the reference, in the same batch).
        for (int a = 0; a < n; a++)
            for (int b = a + 1; b < n; b++) { int i = a, j = b; Line($"{dirs[b + 1]} / {dirs[a + 1]}", r => r[j] / r[i]); }
    }

    /// <summary>Median µs of one bf16 linear [batch, 1, 384] × [1152, 384]ᵀ on the process's threads, over 200 calls after 50.</summary>
    static double KernelMicroseconds(Tensor x, Tensor w)
    {
        using var _ = torch.no_grad();
        var times = new List<double>();
        for (int i = 0; i < 250; i++)
        {
            long start = Stopwatch.GetTimestamp();
            using (var y = nn.functional.linear(x, w)) { }
            if (i >= 50) times.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds * 1e3);
        }
        return Median(times);
    }

    /// <summary>The machine's steal and total ticks (/proc/stat's "cpu" line); zeros where it cannot be read.</summary>
    static (double Steal, double Total) Steal()
    {
        try
        {
            var f = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(double.Parse).ToArray();
            return (f.Length > 7 ? f[7] : 0, f.Take(8).Sum());
        }
        catch (IOException) { return (0, 0); }
    }

    static double Median(IEnumerable<double> v) => TimingStatistic.Median.Apply(v.ToList());
    static double Cv(double[] v) { double m = v.Average(); return Math.Sqrt(v.Select(x => (x - m) * (x - m)).Sum() / (v.Length - 1)) / m; }
    static double Corr(double[] a, double[] b)
    {
        double ma = a.Average(), mb = b.Average();
        double sab = a.Zip(b, (x, y) => (x - ma) * (y - mb)).Sum(), saa = a.Sum(x => (x - ma) * (x - ma)), sbb = b.Sum(y => (y - mb) * (y - mb));
        return saa > 0 && sbb > 0 ? sab / Math.Sqrt(saa * sbb) : double.NaN;
    }
    static string F(double v, string format) => v.ToString(format, CultureInfo.InvariantCulture);
}
