#!/usr/bin/env python3
"""Which throughput-ratio estimator is steadier on this machine: the ratio of the two models' median request times, or
the median over rounds of the ratio within a round (paired; rounds run the models side by side, ABBA)?

Input: RAW_TSV files of `benchmarks/cost-model.sh` (columns model, name, round, prefill_s, decode_s; one row per model
and round, the parent named "parent"). For every architecture and every window of W consecutive rounds (W = the
scenario's repeats, 9 by default), both estimators are computed; printed per architecture: each estimator on all
rounds, and the coefficient of variation over the windows (overlapping windows: compare the two, not absolute values).

  benchmarks/paired-ratio.py RAW.tsv [RAW.tsv ...] [--window 9]
"""
import csv
import statistics as st
import sys


def main(argv):
    window = 9
    if "--window" in argv:
        i = argv.index("--window")
        window = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    for path in argv:
        times = {}
        with open(path) as f:
            for r in csv.DictReader(f, delimiter="\t"):
                times.setdefault(r["name"], {})[int(r["round"])] = float(r["prefill_s"]) + float(r["decode_s"])
        parent = times["parent"]
        rounds = sorted(parent)
        print(f"{path}: {len(times) - 1} architectures, {len(rounds)} rounds, windows of {window}")
        print("| architecture | ratio of medians | paired median | CV ratio of medians | CV paired median |")
        print("|---|---:|---:|---:|---:|")
        cvs = [[], []]
        for name, child in times.items():
            if name == "parent":
                continue
            def rom(idx):
                return st.median(parent[i] for i in idx) / st.median(child[i] for i in idx)
            def mor(idx):
                return st.median(parent[i] / child[i] for i in idx)
            windows = [rounds[s:s + window] for s in range(0, len(rounds) - window + 1)]
            a = [rom(w) for w in windows]
            b = [mor(w) for w in windows]
            cv_a, cv_b = st.pstdev(a) / st.mean(a), st.pstdev(b) / st.mean(b)
            cvs[0].append(cv_a)
            cvs[1].append(cv_b)
            print(f"| {name} | {rom(rounds):.3f} | {mor(rounds):.3f} | {cv_a:.1%} | {cv_b:.1%} |")
        print(f"| mean CV | | | {st.mean(cvs[0]):.1%} | {st.mean(cvs[1]):.1%} |\n")


if __name__ == "__main__":
    main(sys.argv[1:])
