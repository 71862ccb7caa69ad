#!/usr/bin/env python3
"""Replays recorded measured checks under two stopping rules of the sequential check (ArchitectureTimer.Decided).

    python3 benchmarks/seq-replay.py RUN [RUN ...] [--each]
    python3 benchmarks/seq-replay.py RUN [RUN ...] --cap N [--cap M ...]

Reads every RUN/measured-checks.json, keeps each distinct check once (runs copied from one another share entries),
and replays its rounds (parent ms / child ms, in the order timed) under
  median:      the sign test's 90% interval of the median ratio (ArchitectureTimer.MedianInterval, the rule before);
  signed-rank: the Wilcoxon signed-rank 90% interval of the log ratios (ArchitectureTimer.SignedRankInterval).
A rule decides at the first round n >= 5 where its interval lies wholly below the band, inside it, or above it.
The recorded rounds stop where the rule in force decided, so a rule that had not decided by then is "open" here
without saying what it would have done with more rounds.

--cap N replays the signed-rank rule with at most N rounds (ArchitectureTimer.MaxRounds) against at most 18 (the cap
before 4 Dec evening): a check still open at the cap is decided by its median's region. It prints the rounds taken
under each cap and every check whose outcome the lower cap changes.
"""
import glob, json, math, statistics, sys
from functools import lru_cache

CONFIDENCE, MIN_ROUNDS = 0.90, 5


def median_interval(v):
    n, s = len(v), sorted(v)
    term, tail, k = 0.5 ** n, 0.0, 0
    for j in range((n + 1) // 2):
        tail += term
        if 2 * tail > 1 - CONFIDENCE:
            break
        k = j + 1
        term = term * (n - j) / (j + 1)
    return None if k == 0 else (s[k - 1], s[n - k])


@lru_cache(None)
def signed_rank_counts(n):
    m = n * (n + 1) // 2
    c = [0] * (m + 1)
    c[0] = 1
    for i in range(1, n + 1):
        for t in range(m, i - 1, -1):
            c[t] += c[t - i]
    return c


def signed_rank_interval(v):
    n = len(v)
    m, c, cum, k = n * (n + 1) // 2, signed_rank_counts(n), 0, 0
    for t in range(m + 1):
        cum += c[t]
        if cum / 2 ** n > (1 - CONFIDENCE) / 2:
            break
        k = t + 1
    if k == 0:
        return None
    logs = [math.log(x) for x in v]
    w = sorted((logs[i] + logs[j]) / 2 for i in range(n) for j in range(i, n))
    return math.exp(w[k - 1]), math.exp(w[m - k])


def region(x, lo, hi):
    return -1 if x < lo else (1 if hi is not None and x > hi else 0)


def decide(ratios, lo, hi, interval):
    for n in range(MIN_ROUNDS, len(ratios) + 1):
        ci = interval(ratios[:n])
        if ci is not None and region(ci[0], lo, hi) == region(ci[1], lo, hi):
            return n, region(ci[0], lo, hi)
    return None, None


def capped(ratios, lo, hi, cap):
    """(rounds, region) of the signed-rank rule stopped at `cap` rounds, the median deciding an open check."""
    r = ratios[:cap]
    n, d = decide(r, lo, hi, signed_rank_interval)
    return (n, d) if n else (len(r), region(statistics.median(r), lo, hi))


def replay_caps(checks, caps, full=18):
    for cap in caps:
        rounds_full = rounds_cap = past = changed = 0
        for run, r, lo, hi in checks:
            nf, df = capped(r, lo, hi, full)
            nc, dc = capped(r, lo, hi, cap)
            rounds_full += nf
            rounds_cap += nc
            if nf > cap:
                past += 1
                if dc != df:
                    changed += 1
                    print(f"  cap {cap}: {run}: {len(r)} rounds, band {lo:.3f}-{hi}: region {dc} at the cap, {df} at {full} rounds")
        print(f"cap {cap}: {len(checks)} distinct checks, rounds {rounds_full} (cap {full}) -> {rounds_cap}; "
              f"{past} ran past {cap} rounds, {changed} decided otherwise")


def main(args):
    each = "--each" in args
    caps = [int(args[i + 1]) for i, a in enumerate(args) if a == "--cap"]
    skip = {i + 1 for i, a in enumerate(args) if a == "--cap"}
    runs = [a for i, a in enumerate(args) if a not in ("--each", "--cap") and i not in skip]
    checks, seen = [], set()
    for run in runs:
        for path in glob.glob(f"{run}/measured-checks.json"):
            for e in json.load(open(path))["entries"].values():
                p, c, lo = e.get("parent_round_ms"), e.get("child_round_ms"), e.get("band_lower")
                if not p or lo is None:
                    continue
                ratios = [a / b for a, b in zip(p, c)]
                key = (tuple(round(x, 9) for x in ratios), lo, e.get("band_upper"))
                if key not in seen:
                    seen.add(key)
                    checks.append((run, ratios, lo, e.get("band_upper")))
    if caps:
        replay_caps(checks, caps)
        return
    both = agree = rounds_m = rounds_s = only_m = only_s = neither = 0
    for run, r, lo, hi in checks:
        nm, dm = decide(r, lo, hi, median_interval)
        ns, ds = decide(r, lo, hi, signed_rank_interval)
        if each:
            print(f"{run}: {len(r)} rounds, band {lo:.3f}-{hi if hi is None else round(hi, 3)}: median {nm},{dm}; signed-rank {ns},{ds}")
        if nm and ns:
            both += 1
            agree += dm == ds
            rounds_m += nm
            rounds_s += ns
        elif nm:
            only_m += 1
        elif ns:
            only_s += 1
        else:
            neither += 1
    print(f"{len(checks)} distinct checks; decided by both: {both} (alike: {agree}), rounds median {rounds_m}, "
          f"signed-rank {rounds_s}; median only: {only_m}; signed-rank only: {only_s}; neither: {neither}")


if __name__ == "__main__":
    main(sys.argv[1:])
