#!/usr/bin/env python3
"""How many measured checks end undecided at the round cap, and what deferring them to the cost model would change.

    python3 benchmarks/cap-replay.py RUN_OR_GLOB [...]      e.g. '/work/runs/*' '/work/runs/rs6/*'

Reads every RUN/measured-checks.json, keeps each check once (copied runs share entries), and counts the checks timed
against a band (band_lower set) and those whose signed-rank interval still straddled a band edge at the cap
("decided": false), which the search decides by their median. For those with a recorded cost-model estimate
(evidence), it replays an alternative rule: where the estimate lies inside the check's interval, take the estimate's
region instead of the median's. Prints the counts and every check that rule decides otherwise.
"""
import glob, json, sys


def main(patterns):
    seen = {}
    for pattern in patterns:
        for path in glob.glob(pattern.rstrip('/') + '/measured-checks.json'):
            try:
                cache = json.load(open(path))
            except (OSError, ValueError):
                continue
            estimates = {k: v['estimated_ratio'] for pairs in (cache.get('evidence') or {}).values() for k, v in pairs.items()}
            for key, e in cache.get('entries', {}).items():
                if 'band_lower' in e and 'interval_low' in e:
                    seen.setdefault((key, e.get('measured_at')), (e, estimates.get(key), path))
    open_at_cap = [x for x in seen.values() if x[0].get('decided') is False]
    print(f"checks with a band: {len(seen)}; undecided at the cap (decided by the median): {len(open_at_cap)}")
    changed = with_estimate = 0
    for e, estimate, path in open_at_cap:
        if estimate is None:
            continue
        with_estimate += 1
        low, high, lower, upper = e['interval_low'], e['interval_high'], e['band_lower'], e.get('band_upper')
        region = lambda r: -1 if r < lower else 1 if upper is not None and r > upper else 0
        median, alternative = region(e['ratio']), region(estimate) if low <= estimate <= high else region(e['ratio'])
        if alternative != median:
            changed += 1
            print(f"  {path}: median {e['ratio']:.3f} [{low:.3f}, {high:.3f}], band {lower:.3f}-{upper or float('inf'):.3f}, "
                  f"estimate {estimate:.3f}: region {median:+d} -> {alternative:+d}")
    print(f"with an estimate: {with_estimate}; decided otherwise by the estimate: {changed}")


if __name__ == '__main__':
    main(sys.argv[1:])
