#!/usr/bin/env python3
"""Summarises a `Puzzle.Benchmarks ratio-drift` TSV: does a paired ratio drift, or is its spread sampling noise?

    python3 benchmarks/drift-summary.py RATIO_DRIFT.tsv [A B]

For every ratio to the reference and every ratio between two other models (on all threads and on one): mean,
coefficient of variation over batches, lag-1 autocorrelation (near 0: each batch's own noise; clearly positive:
neighbouring batches alike, a drift), and the median of each third of the run. With A B (1-based model numbers after
the reference, e.g. 1 2): the difference ratio_B - ratio_A per batch, its mean and 95% t interval (batches are
independent where the lag-1 autocorrelation of that difference is near 0).
"""
import math, statistics as st, sys

T975 = {10: 2.228, 20: 2.086, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t975(df):
    return next((v for k, v in sorted(T975.items()) if df <= k), 1.96)


def lag1(x):
    m = st.mean(x)
    return sum((x[i] - m) * (x[i + 1] - m) for i in range(len(x) - 1)) / sum((v - m) ** 2 for v in x)


def main(path, pair):
    lines = open(path).read().splitlines()
    header = next(l for l in lines if l.startswith("minute")).split("\t")
    rows = [l.split("\t") for l in lines if l[:1].isdigit()]
    col = {h: [float(r[i]) for r in rows] for i, h in enumerate(header)}
    threads = sorted({h.rsplit("_", 1)[1] for h in header if h.startswith("ratio")}, reverse=True)
    models = sorted({h.split("_")[0] for h in header if h.startswith("ratio")})
    print(f"{len(rows)} batches")
    print("series\tmean\tcv\tlag-1\tthirds (median)")
    for t in threads:
        series = [(f"{m}/reference {t}", col[f"{m}_{t}"]) for m in models]
        series += [(f"{b}/{a} {t}", [y / x for x, y in zip(col[f"{a}_{t}"], col[f"{b}_{t}"])])
                   for i, a in enumerate(models) for b in models[i + 1:]]
        for name, x in series:
            n = len(x)
            thirds = [st.median(x[:n // 3]), st.median(x[n // 3:2 * n // 3]), st.median(x[2 * n // 3:])]
            print(f"{name}\t{st.mean(x):.3f}\t{st.stdev(x) / st.mean(x):.3f}\t{lag1(x):+.2f}\t" + " ".join(f"{v:.3f}" for v in thirds))
    if pair:
        a, b = (f"ratio{k}" for k in pair)
        for t in threads:
            d = [y - x for x, y in zip(col[f"{a}_{t}"], col[f"{b}_{t}"])]
            m, half = st.mean(d), t975(len(d) - 1) * st.stdev(d) / math.sqrt(len(d))
            print(f"{b} - {a} {t}: {m:+.3f}x [{m - half:+.3f}, {m + half:+.3f}] (95% t, {len(d)} batches; lag-1 {lag1(d):+.2f})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:4] if len(sys.argv) >= 4 else None)
