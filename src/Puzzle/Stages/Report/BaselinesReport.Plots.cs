using System.Globalization;
using System.Text.Json.Nodes;
using ScottPlot;

namespace Puzzle.Stages.Report;

/// <summary>The baselines' plots: retention against measured throughput, and retention against GKD tokens.</summary>
public static partial class BaselinesReport
{
    static readonly Color[] Palette = [Colors.Red, Colors.Blue, Colors.Green, Colors.DarkOrange, Colors.Purple];
    static readonly MarkerShape[] Shapes = [MarkerShape.FilledDiamond, MarkerShape.FilledSquare, MarkerShape.FilledTriangleUp, MarkerShape.FilledCircle, MarkerShape.FilledTriangleDown];

    static void RetentionVsThroughput(string path, JsonObject t)
    {
        Plots.RegisterFonts();
        var plot = new Plot();
        var rows = t["rows"]!.AsArray();
        for (int i = 0; i < rows.Count; i++)
        {
            var r = rows[i]!;
            if (r["status"]!.GetValue<string>() != "ok") continue;
            double x = r["measured_throughput_ratio"]!.GetValue<double>(), y = 100 * r["accuracy_retention"]!.GetValue<double>();
            var color = Palette[i % Palette.Length];
            if (r["retention_low"]?.GetValue<double>() is { } lo && r["retention_high"]?.GetValue<double>() is { } hi)
                plot.Add.Line(x, 100 * lo, x, 100 * hi).Color = color;
            if (r["throughput_ratio_min"]?.GetValue<double>() is { } xlo && r["throughput_ratio_max"]?.GetValue<double>() is { } xhi)
                plot.Add.Line(xlo, y, xhi, y).Color = color;
            var marker = plot.Add.Marker(x, y, Shapes[i % Shapes.Length], 14, color);
            marker.LegendText = Label(r);
            foreach (var p in r["gkd_sweep"]!.AsArray().Where(p => p!["gkd_fraction"]!.GetValue<double>() < 1))
            {
                double py = 100 * p!["accuracy_retention"]!.GetValue<double>();
                plot.Add.Marker(x, py, MarkerShape.OpenCircle, 9, color);
                var label = plot.Add.Text($"GKD {F(p["gkd_fraction"]!.GetValue<double>(), "0.###")}", x, py);
                label.LabelFontSize = 11;
                label.LabelFontColor = color;
                label.OffsetX = 8;
            }
        }
        if (t["target_ratio"]?.GetValue<double>() is { } target)
        {
            var line = plot.Add.VerticalLine(target, 1.5f, Colors.Gray, LinePattern.Dashed);
            line.LegendText = $"throughput target {F(target, "0.00")}x";
        }
        plot.Title("Puzzle child vs baselines at equal measured throughput");
        plot.XLabel("measured throughput / parent throughput (end to end)");
        plot.YLabel("accuracy retention (%)");
        plot.ShowLegend(Alignment.LowerLeft);
        Plots.Save(plot, path, 900, 600);
    }

    static string Label(JsonNode row) => row["method"]!.GetValue<string>() switch
    {
        "puzzle" => "Puzzle child",
        _ when row["matched_to"] is { } b => $"Puzzle child at {b}'s speed",
        var m => m,
    };

    static void RetentionVsGkd(string path, JsonObject t)
    {
        Plots.RegisterFonts();
        var plot = new Plot();
        var rows = t["rows"]!.AsArray();
        for (int i = 0; i < rows.Count; i++)
        {
            var sweep = rows[i]!["gkd_sweep"]?.AsArray();
            if (sweep is not { Count: > 0 }) continue;
            var line = plot.Add.Scatter(sweep.Select(p => (double)p!["gkd_tokens"]!.GetValue<long>()).ToArray(), sweep.Select(p => 100 * p!["accuracy_retention"]!.GetValue<double>()).ToArray());
            line.Color = Palette[i % Palette.Length];
            line.MarkerShape = Shapes[i % Shapes.Length];
            line.MarkerSize = 10;
            line.LegendText = Label(rows[i]!);
        }
        plot.Title("Accuracy retention vs global-distillation budget");
        plot.XLabel("GKD tokens");
        plot.YLabel("accuracy retention (%)");
        plot.ShowLegend(Alignment.LowerRight);
        Plots.Save(plot, path, 900, 600);
    }
}
