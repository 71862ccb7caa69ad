#!/usr/bin/env bash
# Writes the run configs of the real-parent benchmarks (RESULTS.md) with absolute paths, since stages.sh copies a
# config into its run directory as is:
#   benchmarks/real-parents/configs.sh OUT_DIR PARENTS_DIR [DATA_TXT]
# PARENTS_DIR holds l1b/ and smol/ (`puzzle init-random --like llama-3.2-1b --dtype bfloat16 --out PARENTS_DIR/l1b`,
# `--like smollm2-135m ... PARENTS_DIR/smol`); DATA_TXT defaults to ../shared/data/tinystories-val.txt. Written:
#   l1b.json     the Llama-3.2-1B-shaped parent, small budgets, max_params 600 M (the ≤ 12 GB target)
#   smol.json    the SmolLM2-135M-shaped parent, the same small budgets
#   smol-60.json the SmolLM2-shaped parent with the demo's search space and budgets cut to fit 60 min (RESULTS.md)
# The data stage reads prepared data: `puzzle data prepare --tokenizer PARENTS_DIR/l1b --input DATA_TXT
# --out OUT_DIR/l1b-data --seq-len 64 --txt-documents paragraphs` (smol: the same with smol; smol-60: --seq-len 256).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$(mkdir -p "$1" && cd "$1" && pwd)"; parents="$(cd "$2" && pwd)"
txt="$(cd "$(dirname "${3:-$root/../shared/data/tinystories-val.txt}")" && pwd)/$(basename "${3:-tinystories-val.txt}")"
[ -f "$txt" ] || { echo "configs.sh: $txt not found (pass DATA_TXT)" >&2; exit 1; }
small() { # name parent kv_heads batch prompt generation ratio max_params
  cat > "$out/$1.json" <<JSON
{
  "parent": { "path": "$parents/$2" },
  "data": { "path": "$out/$1-data", "inputs": ["$txt"], "seq_len": 64, "txt_documents": "paragraphs" },
  "search_space": { "kv_heads": [$3], "attention_linear": false, "attention_no_op": true, "ffn_fractions": [1, 0.5], "ffn_linear": false, "ffn_no_op": true },
  "bld": { "tokens_per_variant": 512, "batch": 8, "validation_tokens": 128, "calibration_tokens": 128 },
  "scoring": { "mode": "subblocks", "validation_tokens": 64, "batch": 1 },
  "scenario": { "batch": $4, "prompt_length": $5, "generation_length": $6, "warmup_runs": 1, "repeats": 3 },
  "search": { "target": "h100", "min_throughput_ratio": $7, "max_params": $8 },
  "gkd": { "tokens": 512, "batch": 4, "validation_tokens": 128, "train_embeddings": false },
  "evaluation": { "tasks": [], "max_tokens": 256, "bench_repeats": 1 },
  "export": { "dtype": "bfloat16", "formats": ["hf"] }
}
JSON
}
small l1b l1b 8 2 32 16 1.3 600000000
small smol smol 3 4 64 32 1.5 null
# The demo's search space and recipe (configs/demo.json) on SmolLM2 with budgets that fit 60 min on 2 cores.
python3 - "$root/configs/demo.json" "$out/smol-60.json" "$parents/smol" "$txt" "$out/smol-60-data" <<'PY'
import json, sys
demo, dest, parent, txt, data = sys.argv[1:]
c = json.load(open(demo))
c["parent"]["path"] = parent
c["data"].update(path=data, inputs=[txt], txt_documents="paragraphs")
c["bld"].update(tokens_per_variant=12288, validation_tokens=4096, calibration_tokens=8192)
c["scoring"].update(mode="subblocks", validation_tokens=1024)
c["scenario"].update(warmup_runs=1, repeats=3)
c["search"].update(min_throughput_ratio=1.5)
c["gkd"].update(tokens=65536, validation_tokens=4096)
c["evaluation"].update(max_tokens=16384, bench_repeats=3)   # the test split of tinystories-val holds 18,419 tokens
c["baselines"] = []
json.dump(c, open(dest, "w"), indent=2)
PY
ls "$out"/*.json
