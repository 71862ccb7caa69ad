using System.Text.Json.Nodes;

namespace Puzzle.Stages.Evaluation;

/// <summary>The evaluation's small statistics: bootstrap intervals, their formatting, the Wilson bound that decides which tasks count.</summary>
public static partial class EvalStage
{
    static JsonNode? Num(double v) => double.IsFinite(v) ? v : null;

    /// <summary>The lower end of the 95% Wilson score interval of a proportion <paramref name="p"/> over <paramref name="n"/> trials.</summary>
    public static double WilsonLower(double p, int n)
    {
        const double z = 1.959963984540054;
        double z2n = z * z / n;
        return (p + z2n / 2 - z * Math.Sqrt(p * (1 - p) / n + z2n / (4 * n))) / (1 + z2n);
    }

    /// <summary>The 2.5th and 97.5th percentiles (linear interpolation) of bootstrap replicates.</summary>
    public static JsonArray Interval(IReadOnlyCollection<double> values)
    {
        var sorted = values.Order().ToArray();
        double At(double q)
        {
            double position = q * (sorted.Length - 1);
            int lo = (int)Math.Floor(position), hi = Math.Min(sorted.Length - 1, lo + 1);
            return sorted[lo] + (position - lo) * (sorted[hi] - sorted[lo]);
        }
        return new JsonArray(At(0.025), At(0.975));
    }

    /// <summary>"[lo, hi]" of an interval (as percentages when asked); empty when there is none.</summary>
    public static string FormatInterval(JsonNode? ci, bool percent = false, string format = "0.000")
    {
        if (ci is not JsonArray { Count: 2 } a) return "";
        string F(double v) => percent
            ? (100 * v).ToString("0.0", System.Globalization.CultureInfo.InvariantCulture) + "%"
            : v.ToString(format, System.Globalization.CultureInfo.InvariantCulture);
        return $"[{F(a[0]!.GetValue<double>())}, {F(a[1]!.GetValue<double>())}]";
    }
}
