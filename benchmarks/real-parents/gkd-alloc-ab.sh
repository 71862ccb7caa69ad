#!/bin/bash
# A B A B of a run's distill (GKD) stage: A as shipped, B with glibc.malloc.mmap_max=0 (no mmapped blocks: freed tensors
# stay in the heap). RESULTS.md, 4 Dec 15:26. Each round on a fresh hard-linked copy of RUN (finished through assemble).
#   flock /tmp/puzzle-bench.lock prio -15 benchmarks/real-parents/gkd-alloc-ab.sh PUZZLE_EXE RUN
# Prints per run: wall, user s, sys s, peak RSS KiB, minor faults.
set -u
exe="$1"; run="$(cd "$2" && pwd)"
for i in 1 2; do
  for v in A B; do
    r="$run-gkd-$v$i"; rm -rf "$r"; mkdir -p "$r"
    for f in config.json parent.json library scores scores.json costs.json solutions child; do [ -e "$run/$f" ] && cp -al "$run/$f" "$r/"; done
    if [ $v = B ]; then export GLIBC_TUNABLES=glibc.malloc.mmap_max=0; else unset GLIBC_TUNABLES; fi
    /usr/bin/time -v -o "$r/time.txt" "$exe" stage distill --run "$r" > "$r/log.txt" 2>&1
    echo "$v$i rc=$? $(grep -E 'Elapsed|User time|System time|Maximum resident|Minor' "$r/time.txt" | awk -F': ' '{printf "%s ", $2}')"
  done
done
