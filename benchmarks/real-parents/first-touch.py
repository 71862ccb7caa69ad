#!/usr/bin/env python3
"""How fast this machine backs fresh memory: maps N MiB (default 2048) of anonymous memory with MADV_HUGEPAGE and
touches it once per 2 MiB page, as a stage's first use of a fresh tensor does. On a VM whose free memory is reported to
the host (virtio_balloon page reporting), memory that had been free for a while is backed again on this first touch.

    python3 benchmarks/real-parents/first-touch.py [MIB] [--again]

--again: map and touch a second time in the same process (memory freed a moment before: what the guest still holds).
"""
import mmap, sys, time

mib = int(next((a for a in sys.argv[1:] if a.isdigit()), "2048"))
n = mib << 20
for rep in range(2 if "--again" in sys.argv else 1):
    m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_HUGEPAGE)
    t = time.perf_counter()
    for off in range(0, n, 1 << 21):
        m[off] = 1
    dt = time.perf_counter() - t
    print(f"{'fresh' if rep == 0 else 'again'}: {mib} MiB touched in {dt:.3f} s = {n / dt / 1e9:.2f} GB/s")
    m.close()
