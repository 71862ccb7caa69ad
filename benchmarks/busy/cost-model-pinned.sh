#!/bin/bash
# 5 Dec (benchmarks/results/busy-work-2026-12-05.md), run alone as
#   flock /tmp/puzzle-bench.lock nice -n -15 env RUN=/work/runs/cm-g5 benchmarks/busy/cost-model-pinned.sh
# (build benchmarks/Puzzle.Benchmarks in Release first; RUN: a copy of a finished demo run with its sweep solutions).
# Is the busy cost-model error the scheduler (our threads sharing the spinner's core) or the hardware? Everything of ours
# on core 0 (taskset), the spinner on core 1 or none; A B A B. RAW_TSV per condition.
cd "$(dirname "$0")/../.."
exe=benchmarks/Puzzle.Benchmarks/bin/Release/net10.0/Puzzle.Benchmarks
run=${RUN:-/work/runs/cm-g5}
i=0
for cond in ${CONDS:-pin-idle pin-busy pin-idle pin-busy}; do
  i=$((i+1))
  echo "== $cond ($i) $(date +%T)"
  case $cond in
    pin-busy) taskset -c 1 sh -c 'while :; do :; done' & sp=$!;;
    free-busy) sh -c 'while :; do :; done' & sp=$!;;
    *) sp=;;
  esac
  case $cond in pin-*) pin="taskset -c 0";; *) pin=;; esac
  RAW_TSV=/work/runs/cmp-$cond-$i.tsv $pin $exe cost-model $run 15 engine/min/anchored engine/min 2>&1 | grep -v "^\s*$"
  [ -n "$sp" ] && kill $sp
done
