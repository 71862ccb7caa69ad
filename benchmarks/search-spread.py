#!/usr/bin/env python3
"""How far apart two builds' children land: the spread of side-by-side ratios per build.

    python3 benchmarks/search-spread.py SIDE_BY_SIDE_TSV

Reads the "# child" lines of `Puzzle.Benchmarks side-by-side` (label, median paired ratio to the parent, its 90% interval,
rounds, path), groups the children by the label's prefix before the first '-' (the build: A-k3, B-k3, ...), and prints
for each build: the ratios, their range and standard deviation, the mean |difference| over all pairs of runs (what two
seeds' demos would differ by) and the share of pairs within ±0.1x. Then B against A: the ratio of their standard
deviations and the difference of their mean |pair differences|, with 95% bootstrap intervals over runs (resampling the
runs both builds searched, paired). Last, per build, where each child's search happened: the spread (sd of logs) of the
cost model's estimate and of the search's own check of the kept child (RUN/solutions/child.json's measured_check), and
of the side-by-side ratio over that check, the drift between the check's moment and the bench's plus both timings' noise.
"""
import itertools, json, math, random, statistics, sys


def read(path):
    groups = {}
    for line in open(path):
        if line.startswith('# child\t'):
            f = line.rstrip('\n').split('\t')
            label, ratio = f[1], float(f[2])
            build, _, run = label.partition('-')
            groups.setdefault(build, {})[run] = ratio
            paths[label] = f[6] if len(f) > 6 else None
    return groups


paths = {}


def kept_check(path):
    """(estimated, measured) of the attempt the solution stands on, or None."""
    try:
        check = json.load(open(path)).get('measured_check') or {}
    except (OSError, ValueError, TypeError):
        return None
    attempts = check.get('attempts') or []
    if not attempts:
        return None
    a = attempts[check['kept'] if check.get('kept') is not None else -1]
    return a['estimated_ratio'], a['measured_ratio']


def spread(values):
    pairs = [abs(a - b) for a, b in itertools.combinations(values, 2)]
    return statistics.stdev(values), statistics.mean(pairs), sum(p <= 0.1 for p in pairs) / len(pairs)


def main(path):
    groups = read(path)
    for build, ratios in sorted(groups.items()):
        v = list(ratios.values())
        sd, mad, within = spread(v)
        print(f"{build}: {len(v)} children: " + ", ".join(f"{r} {x:.3f}" for r, x in sorted(ratios.items())))
        print(f"  range {min(v):.3f}-{max(v):.3f}, mean {statistics.mean(v):.3f}, sd {sd:.3f}x; mean |pair difference| {mad:.3f}x; "
              f"pairs within ±0.1x: {within:.0%}")
    if len(groups) == 2:
        (a, ra), (b, rb) = sorted(groups.items())
        runs = sorted(set(ra) & set(rb))
        rng = random.Random(0)
        sd_ratios, mad_diffs = [], []
        for _ in range(4000):
            sample = [rng.choice(runs) for _ in runs]
            if len(set(sample)) < 3:
                continue
            sa, ma, _ = spread([ra[r] for r in sample])
            sb, mb, _ = spread([rb[r] for r in sample])
            if sa > 0:
                sd_ratios.append(sb / sa)
            mad_diffs.append(mb - ma)
        def ci(xs):
            xs = sorted(xs)
            return xs[int(0.025 * len(xs))], xs[int(0.975 * len(xs)) - 1]
        sa, ma, _ = spread([ra[r] for r in runs])
        sb, mb, _ = spread([rb[r] for r in runs])
        lo, hi = ci(sd_ratios)
        print(f"{b} over {a}, {len(runs)} runs: sd ratio {sb / sa:.2f} [{lo:.2f}, {hi:.2f}]; "
              f"mean |pair difference| {mb - ma:+.3f}x [{ci(mad_diffs)[0]:+.3f}, {ci(mad_diffs)[1]:+.3f}] (95% bootstrap over runs)")


def decompose(groups):
    for build, ratios in sorted(groups.items()):
        rows = [(kept_check(paths.get(f"{build}-{run}")), side) for run, side in ratios.items()]
        rows = [(c, side) for c, side in rows if c is not None]
        if len(rows) < 3:
            continue
        sd = lambda xs: statistics.stdev([math.log(x) for x in xs])
        est, chk, side = [c[0] for c, _ in rows], [c[1] for c, _ in rows], [s for _, s in rows]
        print(f"{build}: sd of log: estimate {sd(est):.3f}, the search's check {sd(chk):.3f}, side by side {sd(side):.3f}, "
              f"side by side / check {sd([s / c for s, c in zip(side, chk)]):.3f} (mean {statistics.mean([s / c for s, c in zip(side, chk)]):.3f})")


if __name__ == '__main__':
    main(sys.argv[1])
    decompose(read(sys.argv[1]))
