using Puzzle.Stages.Evaluation;

namespace Puzzle.Tests.Stages;

/// <summary>
/// The paired difference of two children's accuracy retention (issue 19) on synthetic per-token data: against a
/// direct computation that expands every resample into the tokens and items it draws, and its verdicts.
/// </summary>
public class PairedRetentionTests
{
    const int Documents = 14, Items = 60, Resamples = 300;

    /// <summary>Per-token correctness per document and per-item hits of one synthetic model, right with probability <paramref name="p"/>.</summary>
    sealed record Synthetic(bool[][] Tokens, bool[] Items)
    {
        public UnitResults Units => new(Tokens.Select(d => (double)d.Count(c => c)).ToArray(),
            new Dictionary<string, IReadOnlyList<bool>> { ["task"] = Items });
    }

    static readonly int[] Lengths = Enumerable.Range(0, Documents).Select(d => 20 + 7 * d % 45).ToArray();

    static Synthetic Model(double tokenP, double itemP, int seed)
    {
        var random = new Random(seed);
        return new Synthetic(Lengths.Select(n => Enumerable.Range(0, n).Select(_ => random.NextDouble() < tokenP).ToArray()).ToArray(),
            Enumerable.Range(0, Items).Select(_ => random.NextDouble() < itemP).ToArray());
    }

    static double[] Tokens => Lengths.Select(n => (double)n).ToArray();

    static List<Resample> Draws(long seed = 5) => PairedRetention.Resamples(Documents, [("task", Items)], Resamples, seed).ToList();

    [Fact]
    public void Difference_EqualsADirectComputationOverTheSameDocumentAndItemResamples()
    {
        var parent = Model(0.5, 0.7, 1);
        var a = Model(0.46, 0.66, 2);
        var b = Model(0.40, 0.60, 3);
        var draws = Draws();
        Assert.All(draws, r => { Assert.Equal(Documents, r.Units.Sum()); Assert.Equal(Items, r.Items["task"].Sum()); });

        // Second computation: each resample expanded into the concatenated tokens of the documents it draws (a document
        // drawn twice appears twice) and the items it draws; accuracies counted from those lists.
        double Retention(Synthetic child, IReadOnlyList<int> documents, IReadOnlyList<int> items)
        {
            var childTokens = documents.SelectMany(d => child.Tokens[d]).ToList();
            var parentTokens = documents.SelectMany(d => parent.Tokens[d]).ToList();
            double tokenRatio = childTokens.Count(c => c) / (double)childTokens.Count / (parentTokens.Count(c => c) / (double)parentTokens.Count);
            double itemRatio = items.Count(i => child.Items[i]) / (double)items.Count / (items.Count(i => parent.Items[i]) / (double)items.Count);
            return (tokenRatio + itemRatio) / 2;
        }
        static List<int> Expand(double[] counts) => counts.SelectMany((c, i) => Enumerable.Repeat(i, (int)c)).ToList();
        var all = Enumerable.Range(0, Documents).ToList();
        var allItems = Enumerable.Range(0, Items).ToList();
        var direct = draws.Select(r => Retention(a, Expand(r.Units), Expand(r.Items["task"])) - Retention(b, Expand(r.Units), Expand(r.Items["task"]))).Order().ToArray();
        double Percentile(double q)
        {
            double position = q * (direct.Length - 1);
            int lo = (int)position;
            return direct[lo] + (position - lo) * (direct[Math.Min(lo + 1, direct.Length - 1)] - direct[lo]);
        }

        var d = PairedRetention.Difference(parent.Units, a.Units, b.Units, Tokens, ["task"], draws);
        Assert.Equal(Retention(a, all, allItems), d.RetentionA, tolerance: 1e-12);
        Assert.Equal(Retention(b, all, allItems), d.RetentionB, tolerance: 1e-12);
        Assert.Equal(d.RetentionA - d.RetentionB, d.Value, 15);
        Assert.Equal(Resamples, d.Resamples);
        Assert.Equal(Percentile(0.025), d.Low, tolerance: 1e-12);
        Assert.Equal(Percentile(0.975), d.High, tolerance: 1e-12);
        Assert.True(d.Low < d.Value && d.Value < d.High, $"{d.Low} {d.Value} {d.High}");

        // Pairing matters: the same difference with the children resampled independently of each other is wider.
        var other = Draws(seed: 99);
        var unpaired = draws.Zip(other, (r1, r2) => PairedRetention.Retention(a.Units, parent.Units, Tokens, ["task"], r1)
                                                   - PairedRetention.Retention(b.Units, parent.Units, Tokens, ["task"], r2)).ToList();
        var wide = EvalStage.Interval(unpaired);
        Assert.True(wide[1]!.GetValue<double>() - wide[0]!.GetValue<double>() > d.High - d.Low);

        // Only the next-token metric counted (the task left out of retention): the items do not enter.
        var tokensOnly = PairedRetention.Difference(parent.Units, a.Units, b.Units, Tokens, [], draws);
        var directTokens = draws.Select(r =>
        {
            var docs = Expand(r.Units);
            double Acc(Synthetic m) => docs.SelectMany(x => m.Tokens[x]).Count(c => c) / (double)docs.Sum(x => Lengths[x]);
            return Acc(a) / Acc(parent) - Acc(b) / Acc(parent);
        }).ToList();
        Assert.Equal(EvalStage.Interval(directTokens)[0]!.GetValue<double>(), tokensOnly.Low, tolerance: 1e-12);
        Assert.Equal(EvalStage.Interval(directTokens)[1]!.GetValue<double>(), tokensOnly.High, tolerance: 1e-12);
    }

    [Fact]
    public void SameModel_GivesADegenerateZeroInterval_EquallyGoodChildrenAnIntervalAroundZero_AndClearGapsAVerdict()
    {
        var parent = Model(0.5, 0.7, 1);
        var a = Model(0.45, 0.65, 2);
        var draws = Draws();

        var same = PairedRetention.Difference(parent.Units, a.Units, a.Units, Tokens, ["task"], draws);
        Assert.Equal((0.0, 0.0, 0.0), (same.Value, same.Low, same.High));
        Assert.Equal("no significant difference", same.Verdict);

        // An equally good child: the same correct tokens and items in total, but one more right in half the documents and
        // one fewer in the other half, and two items traded: the difference is 0 and its interval, of some width, holds it.
        var twinTokens = a.Tokens.Select((d, i) =>
        {
            var copy = d.ToArray();
            int flip = Array.IndexOf(copy, i % 2 == 1);
            copy[flip] = !copy[flip];
            return copy;
        }).ToArray();
        var twinItems = a.Items.ToArray();
        int right = Array.IndexOf(twinItems, true), wrong = Array.IndexOf(twinItems, false);
        (twinItems[right], twinItems[wrong]) = (false, true);
        var twin = new Synthetic(twinTokens, twinItems);
        Assert.Equal(a.Units.Correct.Sum(), twin.Units.Correct.Sum());
        var alike = PairedRetention.Difference(parent.Units, a.Units, twin.Units, Tokens, ["task"], draws);
        Assert.Equal(0.0, alike.Value, 15);
        Assert.InRange(0.0, alike.Low, alike.High);
        Assert.True(alike.High > alike.Low);
        Assert.Equal(RetentionDifference.Undecided, alike.Verdict);

        // A child far better or far worse than the other: the whole interval on one side of zero.
        var strong = Model(0.55, 0.8, 4);
        var weak = Model(0.30, 0.45, 5);
        var better = PairedRetention.Difference(parent.Units, strong.Units, weak.Units, Tokens, ["task"], draws);
        Assert.True(better.Low > 0, $"{better.Low}");
        Assert.Equal("Puzzle better", better.Verdict);
        var worse = PairedRetention.Difference(parent.Units, weak.Units, strong.Units, Tokens, ["task"], draws);
        Assert.Equal(-better.Value, worse.Value, tolerance: 1e-12);
        Assert.Equal(-better.Low, worse.High, tolerance: 1e-12);
        Assert.Equal("baseline better", worse.Verdict);
    }
}
