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
# Labels other than A and B: SEARCH="C" searches with build $C only (alternating nothing), TIME="A C" times the chosen
# children of those labels (copies left in OUT by an earlier call included), DRIFT_CONTROL="C" sets
# search.drift_control in those labels' copies (its readings in $OUT/drift-control.json).
set -euo pipefail
: "${BENCH:?Puzzle.Benchmarks folder}" "${OUT:?output folder}" "${RUNS:?runs}"
MINUTES=${MINUTES:-10}
SEARCH=${SEARCH:-A B}
TIME=${TIME:-$SEARCH}
DRIFT_CONTROL=${DRIFT_CONTROL:-}
export PUZZLE_DRIFT_CONTROL="$OUT/drift-control.json"
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
  if [[ " $DRIFT_CONTROL " == *" $label "* ]]; then
    python3 -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); c["search"]["drift_control"]=True; json.dump(c,open(p,"w"),indent=2)' "$dest/config.json"
  fi
  start=$(date +%s.%N)
  dotnet "$bin/Puzzle.Cli.dll" search --run "$dest" > "$OUT/$label-$name.log" 2>&1
  end=$(date +%s.%N)
  printf '%s\t%s\t%.1f\n' "$label" "$name" "$(echo "$end - $start" | bc)" | tee -a "$OUT/searches.tsv"
}
touch "$OUT/searches.tsv"
i=0
labels=($SEARCH)
for run in $RUNS; do
  # Alternate the order of the labels run by run (A B, B A, ...).
  if (( i % 2 == 0 )); then order=("${labels[@]}"); else order=(); for (( j=${#labels[@]}-1; j>=0; j-- )); do order+=("${labels[$j]}"); done; fi
  for label in "${order[@]}"; do search "${!label:?build $label (a Puzzle.Cli folder)}" "$label" "$run"; done
  i=$((i + 1))
done
args=()
for label in $TIME; do for run in $RUNS; do name=$(basename "$run"); args+=("$label-$name=$OUT/$label-$name/solutions/child.json"); done; done
dotnet "$BENCH/Puzzle.Benchmarks.dll" side-by-side "$MINUTES" 4 "${args[@]}" > "$OUT/side-by-side.tsv" 2> "$OUT/side-by-side.err"
python3 "$(dirname "$0")/../search-spread.py" "$OUT/side-by-side.tsv"
