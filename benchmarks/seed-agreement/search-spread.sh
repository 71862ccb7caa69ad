#!/usr/bin/env bash
# How far apart do fresh demo searches on several runs' costs land, for two builds? Each run in RUNS (finished demo
# runs of different seeds) is copied twice, without its solutions and measured checks (as its search first found it);
# build A and build B search their copy with the run's own request (the demo's: 2.4x, 3 candidates on the attention
# ladder, probes), alternating which goes first (A B, B A, ...); then every chosen child (RUN/solutions/child.json) is
# timed side by side against one parent in one process (Puzzle.Benchmarks side-by-side), so that the spread of each
# build's children is their architectures', not the moments of the checks. Summary: benchmarks/search-spread.py.
#   env A=/tmp/binA B=/tmp/binB BENCH=/tmp/benchbin OUT=/work/runs/sim MINUTES=10 RUNS="/work/runs/k3 /work/runs/k5 ..." \
#     benchmarks/seed-agreement/search-spread.sh
# Copies link the run's parent, library, data and tokenizer (read only) and copy the rest of what a search reads.
set -euo pipefail
: "${A:?build A (a Puzzle.Cli folder)}" "${B:?build B}" "${BENCH:?Puzzle.Benchmarks folder}" "${OUT:?output folder}" "${RUNS:?runs}"
MINUTES=${MINUTES:-10}
mkdir -p "$OUT"
copy() {                                   # copy RUN DEST
  local run=$1 dest=$2
  rm -rf "$dest"; mkdir -p "$dest"
  for f in config.json costs.json scores.json parent.json pipeline.json; do [ -e "$run/$f" ] && cp "$run/$f" "$dest/"; done
  for d in scores probes; do [ -d "$run/$d" ] && cp -r "$run/$d" "$dest/"; done
  for d in parent library data tokenizer; do ln -s "$(readlink -f "$run/$d")" "$dest/$d"; done
}
search() {                                 # search BUILD LABEL RUN
  local bin=$1 label=$2 run=$3 name
  name=$(basename "$run")
  local dest="$OUT/$label-$name" start end
  copy "$run" "$dest"
  start=$(date +%s.%N)
  dotnet "$bin/Puzzle.Cli.dll" search --run "$dest" > "$OUT/$label-$name.log" 2>&1
  end=$(date +%s.%N)
  printf '%s\t%s\t%.1f\n' "$label" "$name" "$(echo "$end - $start" | bc)" | tee -a "$OUT/searches.tsv"
}
: > "$OUT/searches.tsv"
i=0
for run in $RUNS; do
  if (( i % 2 == 0 )); then search "$A" A "$run"; search "$B" B "$run"; else search "$B" B "$run"; search "$A" A "$run"; fi
  i=$((i + 1))
done
args=()
for label in A B; do for run in $RUNS; do name=$(basename "$run"); args+=("$label-$name=$OUT/$label-$name/solutions/child.json"); done; done
dotnet "$BENCH/Puzzle.Benchmarks.dll" side-by-side "$MINUTES" 4 "${args[@]}" > "$OUT/side-by-side.tsv" 2> "$OUT/side-by-side.err"
python3 "$(dirname "$0")/../search-spread.py" "$OUT/side-by-side.tsv"
