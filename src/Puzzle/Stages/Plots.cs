using System.Text.Json.Nodes;
using ScottPlot;

namespace Puzzle.Stages;

/// <summary>PNG plots for reports, rendered headless with ScottPlot (text needs a font: DejaVu from fonts-dejavu-core).</summary>
public static class Plots
{
    static readonly string[] FontFiles = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"];
    static bool _fontsRegistered;

    internal static void RegisterFonts()
    {
        if (_fontsRegistered) return;
        foreach (string file in FontFiles.Where(File.Exists))
        {
            Fonts.AddFontFile("DejaVu Sans", file);
            Fonts.Default = "DejaVu Sans";
        }
        _fontsRegistered = true;
    }

    /// <summary>Summed KL (estimated quality loss) against estimated throughput ratio; the chosen point marked.</summary>
    public static void ParetoFront(string path, JsonNode pareto, (double Ratio, double Kl, string Label)? chosen)
    {
        RegisterFonts();
        var points = pareto["points"]!.AsArray();
        double[] xs = points.Select(p => p!["throughput_ratio"]!.GetValue<double>()).ToArray();
        double[] ys = points.Select(p => p!["kl"]!.GetValue<double>()).ToArray();
        var plot = new Plot();
        var front = plot.Add.Scatter(xs, ys);
        front.LegendText = "MIP optimum per throughput target";
        front.MarkerSize = 8;
        var parent = plot.Add.Marker(1.0, 0.0, MarkerShape.FilledSquare, 10, Colors.Black);
        parent.LegendText = "parent";
        if (chosen is { } c)
        {
            var marker = plot.Add.Marker(c.Ratio, c.Kl, MarkerShape.FilledDiamond, 16, Colors.Red);
            marker.LegendText = c.Label;
        }
        plot.Title($"Quality vs throughput ({pareto["target"]} target)");
        plot.XLabel("estimated throughput / parent throughput");
        plot.YLabel("summed replace-1-block KL (lower is better)");
        plot.ShowLegend(Alignment.UpperLeft);
        Save(plot, path, 800, 550);
    }

    /// <summary>Per-layer architecture of a child against its parent: KV heads and FFN width as a share of the parent's.</summary>
    public static void ArchitectureMap(string path, IReadOnlyList<(int Layer, double KvShare, double FfnShare, string Attention, string Ffn)> layers, string title)
    {
        RegisterFonts();
        var plot = new Plot();
        double[] positions = layers.Select(l => (double)l.Layer).ToArray();
        var attention = plot.Add.Bars(positions.Select(p => p - 0.2).ToArray(), layers.Select(l => l.KvShare).ToArray());
        attention.LegendText = "attention: KV heads / parent (linear = 0.05, no-op = 0)";
        foreach (var bar in attention.Bars) bar.Size = 0.38;
        var ffn = plot.Add.Bars(positions.Select(p => p + 0.2).ToArray(), layers.Select(l => l.FfnShare).ToArray());
        ffn.LegendText = "FFN: width / parent (linear = 0.05, no-op = 0)";
        foreach (var bar in ffn.Bars) bar.Size = 0.38;
        plot.Axes.SetLimitsY(0, 1.35);
        plot.Title(title);
        plot.XLabel("layer");
        plot.YLabel("share of the parent's sublayer");
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(positions, layers.Select(l => l.Layer.ToString()).ToArray());
        plot.ShowLegend(Alignment.UpperRight);
        Save(plot, path, Math.Max(700, 60 * layers.Count + 200), 500);
    }

    internal static void Save(Plot plot, string path, int width, int height)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        string tmp = path + ".tmp.png";
        plot.SavePng(tmp, width, height);
        File.Move(tmp, path, overwrite: true);
    }
}
