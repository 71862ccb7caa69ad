"""Per-stage table: measured time (pipeline.json), peak RSS (sampled), disk (du of the stage's outputs), plan's prediction."""
import json, sys

from outputs import du

pipeline, rss_path, plan_path, run = sys.argv[1:5]
stages = json.load(open(pipeline))["stages"]
samples = [tuple(map(float, l.split())) for l in open(rss_path) if l.strip()]
plan = {s["stage"].split()[0]: s for s in json.load(open(plan_path))["stages"]}
# The first samples belong to start-up before stage 1; stage windows follow each other in order.
t = samples[0][0] if samples else 0
print("| stage | time s | plan time s | peak RSS GiB | plan peak GiB | disk GiB | plan disk GiB |")
print("|---|---|---|---|---|---|---|")
for s in stages:
    name, secs = s["name"], s["seconds"]
    window = [r for (ts, r) in samples if t <= ts <= t + secs + 0.5]
    t += secs
    key = name.split()[0]
    p = plan.get(key) or (plan.get("9") if key == "9" else None)
    peak = max(window) / 2**20 if window else float("nan")
    fmt = lambda v: f"{v:.2f}"
    print(f"| {name} | {secs:.1f} | {p['seconds'] if p else '-'} | {fmt(peak)} | {fmt(p['peak_bytes'] / 2**30) if p else '-'} | "
          f"{fmt(du(run, name.split()[1]) / 2**30)} | {fmt(p['disk_bytes'] / 2**30) if p else '-'} |")
