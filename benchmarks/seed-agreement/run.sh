#!/bin/bash
# 4 Dec 18:40 UTC (benchmarks/results/seed-agreement-2026-12-04.md), run alone as
#   flock /tmp/puzzle-bench.lock nice -n -15 benchmarks/seed-agreement/run.sh
# (1) re-search A B B A, A = /tmp/bin1 (commit 216ef4a), B = /tmp/bin2 (af99711: cap 12 rounds, 1 warm-up round after
#     the engine's first timing), on fresh hard-linked copies of the 4 Dec seed-3 / seed-5 demo runs (/work/runs/dN/aim);
# (2) both seeds' demos searched again with search.max_overshoot 0.06 (bin2), from the search on (library, scores and
#     costs reused; measured checks dropped, as in a fresh demo; no baselines);
# (3) both children benched side by side with the parent in one process (pair.py: the paired per-round ratio).
set -u
mkdir -p /work/runs/ab2
for seed in d1 d2; do
 for v in A B B A; do
  bin=/tmp/bin1; [ $v = B ] && bin=/tmp/bin2
  r=/work/runs/ab2/$seed-$v-$RANDOM; rm -rf $r; cp -al /work/runs/$seed/aim $r; rm -rf $r/solutions/re15*
  s=$(date +%s.%N)
  dotnet $bin/Puzzle.Cli.dll search --run $r --min-throughput-ratio 1.5 --solutions 3 --probe-tokens 0 --name re15 > $r.log 2>&1
  rc=$?; e=$(date +%s.%N)
  rounds=$(grep -o "([0-9]* rounds" $r.log | tr -d '(' | awk '{s+=$1; n++} END {print n" checks, "s" rounds"}')
  printf "%s %s rc=%s %.1f s  %s  %s\n" $seed $v $rc $(echo "$e - $s" | bc) "$rounds" "$(grep -o 're15[-0-9]*: KL [0-9.]*, [0-9,]* tokens/s ([0-9.]*x' $r.log | tr '\n' ' ')"
 done
done
for seed in d1 d2; do
  r=/work/runs/o6/$seed; rm -rf $r; mkdir -p /work/runs/o6; cp -al /work/runs/$seed/aim $r
  rm -rf $r/measured-checks.json $r/solutions $r/probes $r/child $r/child-gkd $r/baselines $r/eval $r/export $r/gguf $r/report* $r/pipeline.json
  python3 - $r/config.json <<'PY'
import json, os, sys
p = sys.argv[1]; c = json.load(open(p)); c["search"]["max_overshoot"] = 0.06; c["baselines"] = []
json.dump(c, open(p + ".new", "w"), indent=2); os.replace(p + ".new", p)
PY
  s=$(date +%s)
  dotnet /tmp/bin2/Puzzle.Cli.dll run $r/config.json --run $r > $r.log 2>&1
  echo "o6 $seed rc=$? $(( $(date +%s) - s )) s: $(grep -m1 'report: measured throughput' $r.log)"
done
dotnet /tmp/bin2/Puzzle.Cli.dll bench --models /work/runs/d1/aim/parent /work/runs/o6/d1/child-gkd /work/runs/o6/d2/child-gkd --repeats 15 --json > /work/runs/seedpair/o6.json 2> /work/runs/seedpair/o6.err
python3 "$(dirname "$0")/pair.py" /work/runs/seedpair/o6.json
