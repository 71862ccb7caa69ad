#!/usr/bin/env bash
# Does the cost model predict the measured end-to-end throughput ratio (issue 12: within ±5% on the sweep points)?
# For the sweep solutions of a finished run (RUN/solutions/sweep-*.json), every cost-timing method measures the block
# costs and predicts child/parent throughput; then the parent and all those architectures are timed in the engine
# together, interleaved round by round (`Puzzle.Benchmarks cost-model`, CostModelAccuracy.cs). Printed: one
# predicted-vs-measured table per condition and a per-method summary of |predicted / measured − 1|.
# Two conditions, each under the shared bench lock: the machine as it is, then busy (one extra process spinning on one
# core for the whole measurement).
#
#   benchmarks/cost-model.sh RUN [ROUNDS=15] [METHOD ...]      e.g. benchmarks/cost-model.sh runs/demo 15 engine/median isolated/median
# Methods: engine|isolated[/median|min|trimmed[/uncalibrated]] (default: all seven of CostModelAccuracy.cs).
# CONDITIONS=idle or CONDITIONS=busy runs one of them only.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run="${1:?usage: benchmarks/cost-model.sh RUN [ROUNDS] [METHOD ...]}"; rounds="${2:-15}"; shift $(( $# >= 2 ? 2 : 1 ))
exe="$root/benchmarks/Puzzle.Benchmarks/bin/Release/net10.0/Puzzle.Benchmarks"
dotnet build "$root/benchmarks/Puzzle.Benchmarks" -c Release --nologo -v quiet -clp:NoSummary >&2
conditions="${CONDITIONS:-idle busy}"
for condition in $conditions; do
  echo "== $condition: flock /tmp/puzzle-bench.lock $exe cost-model $run $rounds $* (load average before: $(cut -d' ' -f1-3 /proc/loadavg))"
  if [ "$condition" = busy ]; then
    flock /tmp/puzzle-bench.lock bash -c 'nice -n 0 sh -c "while :; do :; done" & spin=$!; trap "kill $spin" EXIT; "$@"' _ "$exe" cost-model "$run" "$rounds" "$@"
  else
    flock /tmp/puzzle-bench.lock "$exe" cost-model "$run" "$rounds" "$@"
  fi
done
