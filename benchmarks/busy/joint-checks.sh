#!/bin/bash
# Re-search on fresh copies of a finished demo (1.5x, 3 solutions, no probes, the default 15% band) with two builds,
# A B B A, on the idle machine and then beside a spinner (issue 12's "re-search under 60 s"). Each copy starts from the
# demo's measured-checks.json, so no 1.5x child is cached. Run alone:
#   flock /tmp/puzzle-bench.lock prio -15 env RUN=k3 A=/tmp/bin19 B=/tmp/bin20 benchmarks/busy/joint-checks.sh
# RUN: a finished run under /work/runs; A, B: copies of two builds' CLI. Prints per search: condition, build, wall time,
# the checks logged (a check timed in the solutions' joint loop is logged as cached, with its own rounds), the children.
set -u
run=${RUN:-k3}; a=${A:?A: a build}; b=${B:?B: a build}
one() {  # BIN LABEL CONDITION
  local r=/work/runs/rs6/$run-$2-$RANDOM
  mkdir -p /work/runs/rs6; cp -al /work/runs/$run $r; rm -rf $r/solutions/re15*
  local s=$(date +%s.%N)
  dotnet $1/Puzzle.Cli.dll search --run $r --min-throughput-ratio 1.5 --solutions 3 --probe-tokens 0 --name re15 --max-overshoot 0.15 > $r.log 2>&1
  local rc=$? e=$(date +%s.%N)
  local rounds=$(grep -o "([0-9]* rounds" $r.log | tr -d '(' | awk '{s+=$1; n++} END {print n" checks, "s" child rounds"}')
  printf "%s %s rc=%s %.1f s  %s  %s\n" "$3" "$2" $rc $(echo "$e - $s" | bc) "$rounds" \
    "$(grep -o 're15[-0-9]*: KL [0-9.]*, [0-9,]* tokens/s ([0-9.]*x' $r.log | sed 's/ tokens\/s//' | tr '\n' ' ')"
}
for cond in idle busy; do
  if [ $cond = busy ]; then sh -c "while :; do :; done" & spin=$!; trap 'kill $spin' EXIT; fi
  for order in A B B A; do if [ $order = A ]; then one $a A $cond; else one $b B $cond; fi; done
done
