#!/bin/bash
# As run for benchmarks/results/demo-parent4m-2026-12-04.md, with that machine's paths: /work/runs/q4/demo is
# `puzzle demo --run /work/runs/q4/demo --seed 3 --parent-tokens 4000000`, /tmp/bin2 a copy of the Release build.
# Depth baseline's and the 2.0x child's assembled children at 1.2M GKD tokens, for a comparison at equal budget.
set -u
src=/work/runs/q4/demo
for pair in "depth1200k:$src/baselines/depth/child" "t2.0g1200k:/work/runs/q4/t2.0/child"; do
  name=${pair%%:*}; child=${pair#*:}
  r=/work/runs/q4/$name; rm -rf $r; mkdir -p $r
  for f in config.json parent.json parent tokenizer data; do cp -al $src/$f $r/; done
  cp -al $child $r/child
  s=$(date +%s)
  dotnet /tmp/bin2/Puzzle.Cli.dll distill --run $r --tokens 1200000 > $r/distill.log 2>&1 || echo "distill failed"
  dotnet /tmp/bin2/Puzzle.Cli.dll eval $r/child-gkd --run $r > $r/eval.log 2>&1
  e=$(date +%s)
  echo "$name at 1.2M GKD tokens: $((e-s)) s; $(grep 'distill: done' $r/distill.log)"
  grep -E "accuracy retention|model: perplexity" $r/eval.log
done
