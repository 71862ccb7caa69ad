#!/usr/bin/env bash
# Runs pipeline stages one process each (`puzzle stage NAME --run RUN`) under /usr/bin/time -v, so every stage's
# peak RSS is its own (not what earlier stages left resident), and appends
# "stage<TAB>wall s<TAB>peak RSS KiB<TAB>rc<TAB>CPU s (user + sys)" to RUN/stages.tsv.
# On a shared machine launch it in the background session (`prio 19 benchmarks/real-parents/stages.sh ...`): peak
# RSS and CPU seconds stay valid under load, wall times do not. For a stage's wall time, launch it alone under the
# bench lock: `flock /tmp/puzzle-bench.lock prio -15 benchmarks/real-parents/stages.sh ... STAGE`.
# Usage: benchmarks/real-parents/stages.sh PUZZLE_EXE CONFIG RUN [STAGE ...]   (default: every stage in order)
# KEEP_GOING=1 goes on after a failed stage (a random parent's evaluation can fail writing eval.json: accuracy 0).
# PUZZLE_EXE is a copy of the build (e.g. cp -r src/Puzzle.Cli/bin/Release/net10.0 /tmp/bin; /tmp/bin/Puzzle.Cli),
# so rebuilding the tree does not change the binary under a running benchmark.
set -euo pipefail
exe="$1"; cfg="$2"; run="$3"; shift 3
stages=("$@"); [ ${#stages[@]} -gt 0 ] || stages=(parent data library score costs search assemble distill evaluate export)
mkdir -p "$run"
cp "$cfg" "$run/config.json"               # the config's paths must be absolute: the run directory holds it as is
for s in "${stages[@]}"; do
  log="$run/stage-$s.log"
  set +e
  { uptime; date -u +%FT%TZ; } > "$run/uptime-$s.txt"
  /usr/bin/time -v -o "$run/time-$s.txt" "$exe" stage "$s" --run "$run" > "$log" 2>&1
  rc=$?
  set -e
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$run/time-$s.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$run/time-$s.txt")
  cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {print s}' "$run/time-$s.txt")
  { uptime; date -u +%FT%TZ; } >> "$run/uptime-$s.txt"
  printf '%s\t%s\t%s\t%s\t%s\n' "$s" "$wall" "$rss" "$rc" "$cpu" | tee -a "$run/stages.tsv"
  [ "$rc" -eq 0 ] || { echo "stage $s failed (rc $rc); see $log"; tail -5 "$log"; [ "${KEEP_GOING:-0}" = 1 ] || exit "$rc"; }
done
