#!/usr/bin/env bash
# Same speed however the program is started (issue 18): pretraining tokens/s and `puzzle bench` end-to-end tokens/s
# for ./puzzle, the built executable and `dotnet run`, plus the built executable with the allocator settings given
# as GLIBC_TUNABLES (the old ./puzzle way) and with them turned off (GLIBC_TUNABLES = glibc's defaults), alternating
# the variants round by round (order reversed every other round: A B C C B A ...), under the shared bench lock.
# Also prints tokens per CPU-second (user+sys), which a busy machine disturbs less than wall-clock speed.
#
#   benchmarks/launch-parity.sh [ROUNDS=2] [PRETRAIN_STEPS=6] [CORPUS=../shared/data/tinystories-val.txt]
# Bench scenario: BENCH_BATCH (16), BENCH_PROMPT (128), BENCH_GEN (16). Minor page faults are printed too: they do not
# depend on how busy the machine is, and the allocator settings act on them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds="${1:-2}" steps="${2:-6}" corpus="${3:-$root/../shared/data/tinystories-val.txt}"
work="${PUZZLE_BENCH_WORK:-/tmp/puzzle-launch-parity}"
batch="${BENCH_BATCH:-16}" prompt="${BENCH_PROMPT:-128}" gen="${BENCH_GEN:-16}"
exe="$root/src/Puzzle.Cli/bin/Release/net10.0/Puzzle.Cli"
ours="glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296:glibc.malloc.top_pad=268435456"
off="glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072:glibc.malloc.top_pad=131072"
[ -f "$corpus" ] || { echo "error: corpus $corpus not found (give a text file as the third argument)" >&2; exit 1; }

# Set-up, not timed: build, a tokenizer, token shards and a small demo-shape model for `puzzle bench`.
dotnet build "$root/src/Puzzle.Cli" -c Release --nologo -v quiet -clp:NoSummary >&2
mkdir -p "$work"
[ -f "$work/tok/tokenizer.json" ] || "$exe" tokenizer train --input "$corpus" --vocab-size 4096 --out "$work/tok" >&2
[ -f "$work/data/manifest.json" ] || "$exe" data prepare --tokenizer "$work/tok" --input "$corpus" --out "$work/data" --seq-len 256 >&2
[ -f "$work/model/model.safetensors" ] || "$exe" pretrain --data "$work/data" --out "$work/model" --preset demo --tokens $((16 * 256 * 4)) --batch 16 >&2

names=(puzzle-script executable dotnet-run exe+GLIBC_TUNABLES exe-settings-off)
command_of() { # the command that starts the CLI for one variant
  case "$1" in
    puzzle-script) cmd=("$root/puzzle") ;;
    executable) cmd=("$exe") ;;
    dotnet-run) cmd=(dotnet run --project "$root/src/Puzzle.Cli" -c Release --no-build --) ;;
    exe+GLIBC_TUNABLES) cmd=(env "GLIBC_TUNABLES=$ours" "$exe") ;;
    exe-settings-off) cmd=(env "GLIBC_TUNABLES=$off" "$exe") ;;
  esac
}

# Timed part: one benchmark at a time on this machine (the shared bench lock, held on fd 9 until the script ends).
exec 9>/tmp/puzzle-bench.lock
echo "# waiting for /tmp/puzzle-bench.lock" >&2
flock 9
"$exe" --version | sed 's/^/# /'
echo "# round  variant  pretrain-tokens/s  pretrain-tokens/CPU-s  pretrain-minor-faults  bench-e2e-tokens/s  bench-prefill-tokens/s  (${steps} steps x 4096 tokens; bench batch $batch, prompt $prompt, gen $gen; CPU-s and faults include start-up, for dotnet run its build check too)"
results="$work/results.tsv"
: > "$results"
for ((r = 0; r < rounds; r++)); do
  order=("${names[@]}")
  if ((r % 2 == 1)); then order=(); for ((i = ${#names[@]} - 1; i >= 0; i--)); do order+=("${names[$i]}"); done; fi
  for v in "${order[@]}"; do
    command_of "$v"
    rm -rf "$work/pretrain-out"
    /usr/bin/time -f "%e %U %S %R" -o "$work/time" "${cmd[@]}" pretrain --data "$work/data" --out "$work/pretrain-out" --preset demo \
      --tokens $((16 * 256 * steps)) --batch 16 --checkpoint-every 100000 > "$work/pretrain.log" 2>&1
    read -r wall user sys faults < "$work/time"
    tps=$(grep -o '[0-9,]* tokens/s ->' "$work/pretrain.log" | tail -1 | tr -d ', ' | sed 's|tokens/s->||')
    cpu=$(awk -v t=$((16 * 256 * steps)) -v u="$user" -v s="$sys" 'BEGIN { printf "%.0f", t / (u + s) }')
    "${cmd[@]}" bench --models "$work/model" --batch "$batch" --prompt-len "$prompt" --gen-len "$gen" --repeats 2 --dtype bfloat16 --json > "$work/bench.json" 2> "$work/bench.log"
    e2e=$(grep -o '"end_to_end_tokens_per_s": [0-9.]*' "$work/bench.json" | awk '{ printf "%.1f", $2 }')
    prefill=$(grep -o '"prefill_tokens_per_s": [0-9.]*' "$work/bench.json" | awk '{ printf "%.0f", $2 }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$v" "$tps" "$cpu" "$faults" "$e2e" "$prefill" | tee -a "$results"
  done
done
flock -u 9
echo "# per variant: mean speed, and the median (min..max) over rounds of its ratio to the built executable in the same round"
awk -F'\t' '{ n[$2]++; a[$2]+=$3; b[$2]+=$4; c[$2]+=$6; d[$2]+=$7; P[$1,$2]=$3; E[$1,$2]=$6; Q[$1,$2]=$7; if ($1+1>R) R=$1+1 }
  function med(x, k,   i, j, t) { for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (x[j] < x[i]) { t=x[i]; x[i]=x[j]; x[j]=t }
    return k % 2 ? x[(k+1)/2] : (x[k/2] + x[k/2+1]) / 2 }
  function span(M, v,   r, k, x) { k=0; for (r = 0; r < R; r++) if (M[r,"executable"] > 0) x[++k] = M[r,v] / M[r,"executable"]
    return sprintf("%.3fx (%.3f..%.3f)", med(x, k), x[1], x[k]) }
  END { for (v in n) printf "%-20s pretrain %6.0f tok/s %s | bench e2e %6.1f tok/s %s | prefill %6.0f tok/s %s\n",
    v, a[v]/n[v], span(P, v), c[v]/n[v], span(E, v), d[v]/n[v], span(Q, v) }' "$results" | sort
