#!/bin/bash
# A B A B: the demo's three test-split evaluations (depth, puzzle-at-depth, child) on a copy of a finished demo run
# without its reference files, then GKD of 100 steps (3 validations), an old build against a new one (each a copy of
# src/Puzzle.Cli/bin/Release/net10.0). Run it with nothing else on the machine, e.g. under `nice -n -15`.
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:?usage: eval-reference-states.sh FINISHED_DEMO_RUN OLD_BIN NEW_BIN OUT}
OLD=${2:?}; NEW=${3:?}; OUT=${4:?}; mkdir -p "$OUT"
for rep in 1 2; do
for b in old new; do
  C=$OUT/$b-$rep; rm -rf $C; mkdir -p $C/eval $C/baselines/depth $C/baselines/puzzle-at-depth
  cp -r $R/config.json $R/parent $R/parent.json $R/data $R/tokenizer $R/child $R/child-gkd $C/
  cp -r $R/baselines/depth/child-gkd $C/baselines/depth/; cp -r $R/baselines/puzzle-at-depth/child-gkd $C/baselines/puzzle-at-depth/
  s0=$(date +%s.%N)
  for m in baselines/depth/child-gkd baselines/puzzle-at-depth/child-gkd child-gkd; do
    s=$(date +%s.%N)
    /usr/bin/time -f "%M" -o $OUT/time.txt dotnet $([ $b = old ] && echo $OLD || echo $NEW)/Puzzle.Cli.dll eval $C/$m --run $C > $C/eval-$(echo $m | tr / _).log 2>&1
    e=$(date +%s.%N)
    echo "$rep $b eval $m $(echo "$e - $s" | bc | cut -c1-6) s peak $(( $(cat $OUT/time.txt) / 1024 )) MB | $(grep -o 'accuracy retention [^(]*' $C/eval-$(echo $m | tr / _).log) $(grep -o 'KL to reference [0-9.]*' $C/eval-$(echo $m | tr / _).log)"
  done
  e0=$(date +%s.%N); echo "$rep $b evals total $(echo "$e0 - $s0" | bc | cut -c1-6) s"
  s=$(date +%s.%N)
  /usr/bin/time -f "%M" -o $OUT/time.txt dotnet $([ $b = old ] && echo $OLD || echo $NEW)/Puzzle.Cli.dll distill --run $C --tokens 204800 > $C/distill.log 2>&1
  e=$(date +%s.%N)
  echo "$rep $b distill $(echo "$e - $s" | bc | cut -c1-6) s peak $(( $(cat $OUT/time.txt) / 1024 )) MB | $(grep -o 'done: validation KL.*in [0-9]* s' $C/distill.log)"
done; done
