"""Per-stage table from stages.sh's RUN/stages.tsv (one process per stage): wall time, peak RSS (/usr/bin/time -v),
disk written (du of the stage's outputs) beside `puzzle plan --json`'s prediction.
Usage: python3 stage_table.py RUN PLAN.json [RUN ...]   (several RUNs: their rows in order, e.g. a run and its continuation)"""
import json, os, sys

args = sys.argv[1:]
plan_path = args[1]
runs = [args[0]] + args[2:]
plan = {s["stage"].split()[1] if s["stage"][0].isdigit() else s["stage"]: s for s in json.load(open(plan_path))["stages"]}
plan_key = {"library": "library", "score": "score", "costs": "costs", "search": "search", "assemble": "assemble",
            "distill": "distill", "evaluate": "evaluate", "export": "export"}
outputs = {"data": ["data"], "library": ["library"], "score": ["scores", "scores.json"], "costs": ["costs.json"],
           "search": ["solutions"], "assemble": ["child"], "distill": ["child-gkd"], "evaluate": ["eval"], "export": ["export"]}

def du(run, paths):
    total = 0
    for p in paths:
        p = os.path.join(run, p)
        if os.path.isfile(p): total += os.path.getsize(p)
        for d, _, files in os.walk(p):
            total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
    return total

gib = lambda b: b / 2**30
print("| stage | wall s | plan s | peak RSS GiB | plan GiB | RSS / plan | disk GiB | plan disk GiB | exit |")
print("|---|---|---|---|---|---|---|---|---|")
for run in runs:
    for line in open(os.path.join(run, "stages.tsv")):
        name, wall, rss_kib, rc = line.split()
        p = plan.get(plan_key.get(name, "-"))
        rss = int(rss_kib) * 1024
        cells = [name, f"{float(wall):.0f}", f"{p['seconds']:.0f}" if p else "-", f"{gib(rss):.2f}",
                 f"{gib(p['peak_bytes']):.2f}" if p else "-", f"{rss / p['peak_bytes']:.2f}" if p else "-",
                 f"{gib(du(run, outputs.get(name, []))):.2f}", f"{gib(p['disk_bytes']):.2f}" if p else "-", rc]
        print("| " + " | ".join(cells) + " |")
