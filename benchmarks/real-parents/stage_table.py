"""Per-stage table from stages.sh's RUN/stages.tsv (one process per stage): wall time, CPU seconds, peak RSS
(/usr/bin/time -v) and disk written (du of the stage's outputs) beside `puzzle plan --json`'s prediction.
The plan's time is for the stage alone on THREADS cores; on a shared machine compare it with CPU s / THREADS
(the CPU work the stage did, spread over its threads), not with the wall time.
Usage: python3 stage_table.py RUN PLAN.json [RUN ...] [--threads N]   (several RUNs: their rows in order)"""
import json, os, sys

from outputs import du

args = sys.argv[1:]
threads = 2
if "--threads" in args:
    i = args.index("--threads")
    threads = int(args[i + 1])
    del args[i:i + 2]
plan_path = args[1]
runs = [args[0]] + args[2:]
# Plan stages are "3 library (BLD)", "4 score", …: the word after the number is the stage's CLI name.
plan = {s["stage"].split()[1]: s for s in json.load(open(plan_path))["stages"]}

gib = lambda b: b / 2**30
print(f"| stage | wall s | CPU s | CPU s / {threads} | plan s | (CPU s / {threads}) / plan | peak RSS GiB | plan GiB | RSS / plan | disk GiB | plan disk GiB | exit |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for run in runs:
    for line in open(os.path.join(run, "stages.tsv")):
        fields = line.split()
        name, wall, rss_kib, rc = fields[:4]
        cpu = float(fields[4]) if len(fields) > 4 else None                    # older stages.tsv rows have no CPU column
        p = plan.get(name)
        rss = int(rss_kib) * 1024
        busy = cpu / threads if cpu is not None else None
        cells = [name, f"{float(wall):.0f}", f"{cpu:.0f}" if cpu is not None else "-", f"{busy:.0f}" if busy is not None else "-",
                 f"{p['seconds']:.0f}" if p else "-", f"{busy / p['seconds']:.2f}" if p and busy is not None and p["seconds"] > 0 else "-",
                 f"{gib(rss):.2f}", f"{gib(p['peak_bytes']):.2f}" if p else "-", f"{rss / p['peak_bytes']:.2f}" if p else "-",
                 f"{gib(du(run, name)):.2f}", f"{gib(p['disk_bytes']):.2f}" if p else "-", rc]
        print("| " + " | ".join(cells) + " |")
