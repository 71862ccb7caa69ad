#!/usr/bin/env bash
# Issue 12's lever ablation on a finished run: each lever alone changes one setting of a copy of RUN and reruns the
# pipeline, which reuses every stage the change does not touch (parent, data, library, scores, costs, the measured
# checks) and redoes the rest (a GKD lever redoes distill + evaluate; a BLD or scoring lever also redoes the library or
# the scores and the search). Baselines are off in the copies. One table row per lever: measured throughput ratio (bench,
# with the rounds' spread), accuracy retention with its 95% interval, KL and top-1 agreement, from each copy's report.json.
#
#   [PUZZLE=COMMAND] benchmarks/ablation.sh RUN OUT [LEVER ...]
# PUZZLE: the CLI to run (default: the project's ./puzzle; e.g. "dotnet /tmp/bin/Puzzle.Cli.dll" for a fixed build).
# LEVER is NAME=section.key=value[,section.key=value...], e.g. lm=gkd.lm_weight=1; default: the set below.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run="$(cd "${1:?usage: benchmarks/ablation.sh RUN OUT [LEVER ...]}" && pwd)"; out="${2:?usage: benchmarks/ablation.sh RUN OUT [LEVER ...]}"; shift 2
levers=("$@")
if [ ${#levers[@]} -eq 0 ]; then
  levers=(
    "gkd-1m=gkd.tokens=1000000"
    "gkd-lm=gkd.lm_weight=1"
    "gkd-t2=gkd.temperature=2"
    "gkd-lr1e-3=gkd.lr=0.001"
    "bld-2x=bld.tokens_per_variant=262144"
  )
fi
mkdir -p "$out"
for lever in "${levers[@]}"; do
  name="${lever%%=*}"; settings="${lever#*=}"
  dir="$out/$name"
  if [ ! -f "$dir/report.json" ]; then
    rm -rf "$dir"; mkdir -p "$dir"
    # Read-only inputs are hard-linked; whatever a stage rewrites is written atomically (a new file), so RUN is untouched.
    for item in parent data tokenizer library scores scores.json costs.json measured-checks.json solutions child config.json; do
      [ -e "$run/$item" ] && cp -al "$run/$item" "$dir/$item"
    done
    rm -f "$dir/config.json"; cp "$run/config.json" "$dir/config.json"
    args=(--set baselines=[] --set baselines_gkd_fractions=[])
    IFS=',' read -ra kvs <<< "$settings"
    for kv in "${kvs[@]}"; do args+=(--set "$kv"); done
    echo "== $name: ${args[*]} ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"
    start=$(date +%s)
    ${PUZZLE:-"$root/puzzle"} run "$dir/config.json" --run "$dir" "${args[@]}" > "$dir/ablation.log" 2>&1 || { echo "$name failed: see $dir/ablation.log"; tail -5 "$dir/ablation.log"; continue; }
    echo "$(( $(date +%s) - start ))" > "$dir/seconds"
  fi
done
python3 - "$run" "$out" "${levers[@]}" <<'PY'
import json, os, sys
run, out, levers = sys.argv[1], sys.argv[2], sys.argv[3:]
def row(name, d, settings):
    r = json.load(open(os.path.join(d, "report.json")))
    ret = r["accuracy_retention"]; ci = ret.get("ci95") or [None, None]
    rounds = r.get("measured_throughput_ratio_rounds") or {}
    f = r.get("fidelity") or {}
    kl = (f.get("kl_parent_child") or {}).get("value"); top1 = (f.get("top1_agreement") or {}).get("value")
    secs = open(os.path.join(d, "seconds")).read().strip() if os.path.exists(os.path.join(d, "seconds")) else "–"
    lo, hi = rounds.get("min"), rounds.get("max")
    spread = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
    print(f"| {name} | {settings} | {r['measured_throughput_ratio']:.2f}x{spread} | {100*ret['value']:.1f}% [{100*ci[0]:.1f}, {100*ci[1]:.1f}] | "
          f"{kl:.4f} | {100*top1:.1f}% | {secs} |")
print("| lever | settings | measured ratio [rounds] | accuracy retention [95%] | KL | top-1 | seconds |")
print("|---|---|---:|---:|---:|---:|---:|")
row("as run", run, "the run's config")
for lever in levers:
    name, settings = lever.split("=", 1)
    d = os.path.join(out, name)
    if os.path.exists(os.path.join(d, "report.json")): row(name, d, settings)
    else: print(f"| {name} | {settings} | failed or not run | | | | |")
PY
