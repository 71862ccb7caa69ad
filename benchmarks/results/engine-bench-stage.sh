#!/usr/bin/env bash
# The demo's bench stage (parent + child, batch 16, prompt 128, generation 128, bf16, 1 warm-up + 5 rounds) in ours
# only and in both engines, A B B A; wall time of each `puzzle bench` process.
# Usage: flock /tmp/puzzle-bench.lock prio -15 benchmarks/results/engine-bench-stage.sh [DEMO_RUN]
# (DEMO_RUN: a finished demo run with parent/ and child-gkd/, default runs/demo).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
demo=${1:-runs/demo}
cli=src/Puzzle.Cli/bin/Release/net10.0/Puzzle.Cli
models=("$demo/parent" "$demo/child-gkd")
gguf=$(mktemp -d)
trap 'rm -rf "$gguf"' EXIT
echo "uptime before: $(uptime)"
run() {
  local label=$1; shift
  local t0=$(date +%s.%N)
  "$cli" bench --models "${models[@]}" --batch 16 --prompt-len 128 --gen-len 128 --repeats 5 --dtype bfloat16 --json "$@" > "/tmp/engine3-demo-bench-$label.json"
  local t1=$(date +%s.%N)
  python3 - "$label" "$t0" "$t1" "/tmp/engine3-demo-bench-$label.json" <<'PY'
import json, sys
label, t0, t1, path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
b = json.load(open(path))
rows = b["models"]
line = f"{label}: wall {t1 - t0:.1f} s; ours {rows[1]['end_to_end_ratio']:.3f}x (rounds {rows[1]['end_to_end_ratio_min']:.3f}-{rows[1]['end_to_end_ratio_max']:.3f})"
if "llama_cpp" in b:
    l = b["llama_cpp"]["models"]
    line += f"; llama.cpp {l[1]['end_to_end_ratio']:.3f}x (rounds {l[1]['end_to_end_ratio_min']:.3f}-{l[1]['end_to_end_ratio_max']:.3f}), parent {l[0]['end_to_end_tokens_per_s']:.0f} / child {l[1]['end_to_end_tokens_per_s']:.0f} tokens/s; llama.cpp/ours {l[1]['end_to_end_ratio']/rows[1]['end_to_end_ratio']:.3f}"
print(line, flush=True)
PY
}
run A1 --engine puzzle
run B1-export --engine both --gguf-dir "$gguf"
run B2-reuse --engine both --gguf-dir "$gguf"
run A2 --engine puzzle
echo "uptime after: $(uptime)"
