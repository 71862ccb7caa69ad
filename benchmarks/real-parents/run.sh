#!/usr/bin/env bash
# Real-shaped random parent through the whole pipeline with small budgets: per-stage time, peak RSS, disk, and
# `puzzle plan`'s prediction beside them. Usage: benchmarks/real-parents/run.sh smollm2-135m|llama-3.2-1b OUT_DIR
# Run under the bench lock: flock /tmp/puzzle-bench.lock benchmarks/real-parents/run.sh smollm2-135m /tmp/rp
set -euo pipefail
like="$1"; out="$2"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
data="${PUZZLE_BENCH_TEXT:-$root/../shared/data/tinystories-val.txt}"
mkdir -p "$out"
parent="$out/parent-$like"; run="$out/run-$like"; cfg="$out/$like.json"
[ -f "$parent/config.json" ] || /usr/bin/time -f "init-random: %e s, peak RSS %M KiB" "$root/puzzle" init-random --like "$like" --out "$parent"
cat > "$cfg" <<JSON
{
  "parent": {"path": "$parent"},
  "data": {"inputs": ["$data"], "seq_len": 128},
  "search_space": {"kv_heads": [${KV_HEADS:-3, 1}], "attention_linear": false, "attention_no_op": true, "ffn_fractions": [1.0, 0.5], "ffn_linear": false, "ffn_no_op": true},
  "bld": {"tokens_per_variant": 2048, "batch": 8, "validation_tokens": 1024, "calibration_tokens": 1024},
  "scoring": {"mode": "subblocks", "validation_tokens": 256, "batch": 2},
  "scenario": {"batch": 2, "prompt_length": 32, "generation_length": 16, "repeats": 3, "warmup_runs": 1},
  "search": {"min_throughput_ratio": 1.3, "sweep": ""},
  "gkd": {"tokens": 2048, "batch": 4},
  "evaluation": {"max_tokens": 1024, "bench_repeats": 1},
  "export": {"dtype": "bfloat16"}
}
JSON
"$root/puzzle" plan "$parent" --config "$cfg" --json > "$out/plan-$like.json"
"$root/puzzle" plan "$parent" --config "$cfg" | tee "$out/plan-$like.txt"
# RSS of the pipeline process (and its children: the fresh bench process) sampled every 0.5 s.
start=$(date +%s.%N)
"$root/puzzle" run "$cfg" --run "$run" > "$out/run-$like.log" 2>&1 &
pid=$!
: > "$out/rss-$like.tsv"
while kill -0 "$pid" 2>/dev/null; do
  rss=0
  for p in $pid $(pgrep -P "$pid" || true) $(for c in $(pgrep -P "$pid" || true); do pgrep -P "$c" || true; done); do
    r=$(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0); rss=$((rss + ${r:-0}))
  done
  printf '%s\t%s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$rss" >> "$out/rss-$like.tsv"
  sleep 0.5
done
wait "$pid" || { echo "pipeline failed; see $out/run-$like.log"; tail -5 "$out/run-$like.log"; exit 1; }
python3 "$root/benchmarks/real-parents/table.py" "$run/pipeline.json" "$out/rss-$like.tsv" "$out/plan-$like.json" "$run" | tee "$out/table-$like.md"
