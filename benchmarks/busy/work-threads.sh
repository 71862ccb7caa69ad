#!/bin/bash
# 5 Dec 04:20 UTC (benchmarks/results/busy-work-2026-12-05.md), run alone as
#   flock /tmp/puzzle-bench.lock nice -n -15 env BIN=/tmp/binN benchmarks/busy/work-threads.sh
# BIN: a copy of the built CLI. The data: a finished demo run's prepared data (DATA, default /work/runs/i3/data).
bin=${BIN:-/tmp/bin17}; data=${DATA:-/work/runs/i3/data}
one() { # name mode spin(0|1|n) extra...
  name=$1 mode=$2 spin=$3; shift 3
  case $spin in 1) sh -c "while :; do :; done" & sp=$!;; n) nice -n 19 sh -c "while :; do :; done" & sp=$!;; esac
  rm -rf /tmp/wt-$name
  env $mode dotnet $bin/Puzzle.Cli.dll pretrain --data $data --out /tmp/wt-$name "$@" > /tmp/wt-$name.log 2>&1
  [ $spin != 0 ] && kill $sp
  echo "$name $mode spin=$spin: $(grep -o 'done: .*tokens/s' /tmp/wt-$name.log | grep -o '[0-9,]* tokens/s') | threads: $(grep -o 'running on [0-9] torch thread\|back to [0-9] torch threads' /tmp/wt-$name.log | tr '\n' ';')"
}
demo="--preset demo --tokens 409600 --batch 16"
one d-free-spin1 PUZZLE_WORK_THREADS=free 1 $demo
one d-all-spin1 PUZZLE_WORK_THREADS=all 1 $demo
one d-all-spin2 PUZZLE_WORK_THREADS=all 1 $demo
one d-free-spin2 PUZZLE_WORK_THREADS=free 1 $demo
one d-free-nice PUZZLE_WORK_THREADS=free n $demo
one d-t1-nice PUZZLE_THREADS=1 n $demo
one d-free-idle PUZZLE_WORK_THREADS=free 0 $demo
big="--layers 30 --hidden 576 --heads 9 --kv-heads 3 --intermediate 1536 --tokens 40960 --batch 4"
one b-free-spin1 PUZZLE_WORK_THREADS=free 1 $big
one b-all-spin1 PUZZLE_WORK_THREADS=all 1 $big
one b-all-spin2 PUZZLE_WORK_THREADS=all 1 $big
one b-free-spin2 PUZZLE_WORK_THREADS=free 1 $big
one b-free-idle PUZZLE_WORK_THREADS=free 0 $big
