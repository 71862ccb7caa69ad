#!/bin/bash
# Fresh demos, seeds 3 and 5, from scratch (pretraining included); then both children benched side by side with the
# parent in one process, both orders, 31 rounds each, and pair.py's paired per-round ratio. Run alone:
#   flock /tmp/puzzle-bench.lock nice -n -15 env BIN=/tmp/binN PREFIX=h benchmarks/seed-agreement/fresh-demos.sh
# BIN: a copy of the built CLI (default /tmp/bin2); PREFIX: run names /work/runs/<PREFIX><seed> (default e).
# Used on 4 Dec 18:22-19:09 UTC (benchmarks/results/seed-agreement-2026-12-04.md, build af99711, prefix e) and
# 5 Dec 03:24-04:06 UTC (benchmarks/results/busy-work-2026-12-05.md §1: build 5ba7a68, the halfway bound, prefix i).
set -u
here="$(cd "$(dirname "$0")" && pwd)"; cd "$here/../.."
bin=${BIN:-/tmp/bin2}; p=${PREFIX:-e}
for s in 3 5; do
  r=/work/runs/$p$s; rm -rf $r
  /usr/bin/time -f "$p$s wall %e s, peak RSS %M KB" dotnet $bin/Puzzle.Cli.dll demo --seed $s --run $r > $r.log 2>&1
  echo "$p$s rc=$?: $(grep -m1 'report: measured throughput' $r.log)"; tail -1 $r.log
done
mkdir -p /work/runs/seedpair
dotnet $bin/Puzzle.Cli.dll bench --models /work/runs/${p}3/parent /work/runs/${p}3/child-gkd /work/runs/${p}5/child-gkd --repeats 31 --json > /work/runs/seedpair/${p}35.json 2> /work/runs/seedpair/${p}35.err
dotnet $bin/Puzzle.Cli.dll bench --models /work/runs/${p}3/parent /work/runs/${p}5/child-gkd /work/runs/${p}3/child-gkd --repeats 31 --json > /work/runs/seedpair/${p}53.json 2> /work/runs/seedpair/${p}53.err
python3 "$here/pair.py" /work/runs/seedpair/${p}35.json /work/runs/seedpair/${p}53.json
