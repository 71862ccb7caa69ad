#!/bin/bash
# As run for benchmarks/results/demo-parent4m-2026-12-04.md, with that machine's paths: /work/runs/q4/demo is
# `puzzle demo --run /work/runs/q4/demo --seed 3 --parent-tokens 4000000`, /tmp/bin2 a copy of the Release build.
# 4M-token parent (q4/demo): retention against speed target (search at R, 1 solution, no probes; GKD 400k; eval on test)
# then retention against GKD tokens on the demo's own child.
set -u
src=/work/runs/q4/demo
for R in ${RATIOS:-1.5 2.0}; do
  r=/work/runs/q4/t$R; rm -rf $r; mkdir -p $r
  for f in parent.json parent tokenizer data library scores scores.json costs.json measured-checks.json; do cp -al $src/$f $r/; done
  python3 - $src/config.json $r/config.json $R <<'PY'
import json,sys
c=json.load(open(sys.argv[1])); c["search"].update(min_throughput_ratio=float(sys.argv[3]), solutions=1, sweep=None); c["baselines"]=[]
json.dump(c,open(sys.argv[2],"w"),indent=2)
PY
  s=$(date +%s)
  for st in search assemble distill; do dotnet /tmp/bin2/Puzzle.Cli.dll stage $st --run $r > $r/$st.log 2>&1 || echo "stage $st failed"; done
  dotnet /tmp/bin2/Puzzle.Cli.dll eval $r/child-gkd --run $r > $r/eval.log 2>&1
  e=$(date +%s)
  echo "target $R: $((e-s)) s; $(grep -E 'measured check' $r/search.log | tail -1)"
  grep -E "^search: child:" $r/search.log | tail -1
  grep -E "accuracy retention|model: perplexity" $r/eval.log
done
for n in ${TOKENS:-1200000 2400000}; do
  r=/work/runs/q4/g$n; rm -rf $r; mkdir -p $r
  for f in config.json parent.json parent tokenizer data library scores scores.json costs.json solutions child measured-checks.json; do cp -al $src/$f $r/; done
  s=$(date +%s)
  dotnet /tmp/bin2/Puzzle.Cli.dll distill --run $r --tokens $n > $r/distill.log 2>&1 || echo "distill failed"
  dotnet /tmp/bin2/Puzzle.Cli.dll eval $r/child-gkd --run $r > $r/eval.log 2>&1
  e=$(date +%s)
  echo "GKD $n tokens: $((e-s)) s; $(grep 'distill: done' $r/distill.log)"
  grep -E "accuracy retention|model: perplexity" $r/eval.log
done
