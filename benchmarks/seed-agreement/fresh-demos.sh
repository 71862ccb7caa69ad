#!/bin/bash
# 4 Dec 18:22-19:09 UTC (benchmarks/results/seed-agreement-2026-12-04.md), run alone as
#   flock /tmp/puzzle-bench.lock nice -n -15 benchmarks/seed-agreement/fresh-demos.sh
# Fresh demos, seeds 3 and 5, build af99711 (/tmp/bin2), from scratch (pretraining included); then both children benched
# side by side with the parent, both orders, 31 rounds each.
set -u
here="$(cd "$(dirname "$0")" && pwd)"; cd "$here/../.."
for s in 3 5; do
  r=/work/runs/e$s; rm -rf $r
  /usr/bin/time -f "e$s wall %e s, peak RSS %M KB" dotnet /tmp/bin2/Puzzle.Cli.dll demo --seed $s --run $r > $r.log 2>&1
  echo "e$s rc=$?: $(grep -m1 'report: measured throughput' $r.log)"; tail -1 $r.log
done
dotnet /tmp/bin2/Puzzle.Cli.dll bench --models /work/runs/e3/parent /work/runs/e3/child-gkd /work/runs/e5/child-gkd --repeats 31 --json > /work/runs/seedpair/e35.json 2> /work/runs/seedpair/e35.err
dotnet /tmp/bin2/Puzzle.Cli.dll bench --models /work/runs/e3/parent /work/runs/e5/child-gkd /work/runs/e3/child-gkd --repeats 31 --json > /work/runs/seedpair/e53.json 2> /work/runs/seedpair/e53.err
python3 "$here/pair.py" /work/runs/seedpair/e35.json /work/runs/seedpair/e53.json
