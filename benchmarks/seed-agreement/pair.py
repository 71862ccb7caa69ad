#!/usr/bin/env python3
"""Two children benched side by side with their parent in one process (`puzzle bench --models PARENT A B --json`):
each child's ratio to the parent, and the paired per-round ratio A / B with its 95% signed-rank (Hodges-Lehmann)
interval, i.e. how far apart the two children's speeds are, measured in the same rounds.

    python3 benchmarks/seed-agreement/pair.py BENCH.json [BENCH.json ...]
"""
import os
import importlib.util, json, statistics, sys
spec = importlib.util.spec_from_file_location("r", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "seq-replay.py")); r = importlib.util.module_from_spec(spec); spec.loader.exec_module(r)
r.CONFIDENCE = 0.95
for f in sys.argv[1:]:
    d = json.load(open(f)); a, b = d['models'][1], d['models'][2]
    ra, rb = a['end_to_end_ratio_rounds'], b['end_to_end_ratio_rounds']
    diff = [x / y for x, y in zip(ra, rb)]      # child A speed over child B speed, per round
    med = statistics.median(diff)
    lo, hi = r.signed_rank_interval(diff)
    print(f"{f}: A {a['end_to_end_ratio']:.3f}x {a['end_to_end_ratio_ci95']}, B {b['end_to_end_ratio']:.3f}x {b['end_to_end_ratio_ci95']}; "
          f"A/B per round median {med:.3f} [95% signed-rank {lo:.3f}, {hi:.3f}] -> A-B ~ {b['end_to_end_ratio']*(med-1):+.3f}x [{b['end_to_end_ratio']*(lo-1):+.3f}, {b['end_to_end_ratio']*(hi-1):+.3f}]")
