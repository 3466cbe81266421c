# SPDX-License-Identifier: GPL-2.0-only
"""Unwind table build time and memory (memlens.core.unwind) for libc, python3 and a large
binary, as the README quotes them.

    .venv/bin/python bench/bench_unwind.py [ELF...]

For each file: the .eh_frame size, FDEs, distinct CFA programs run, rows (8 bytes each:
what the BPF maps hold), rows the unwinder cannot follow, the build time (median of 3),
and the peak Python memory while building (tracemalloc, a separate run: it slows Python).
The peer figure: `readelf --debug-dump=frames-interp` on the same file (C, no rows kept).
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
import tracemalloc

from memlens.core.unwind.tables import build_table

DEFAULT = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/bin/python3.11",
           "/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1", "/usr/bin/node"]


def main() -> None:
    paths = sys.argv[1:] or [p for p in DEFAULT if os.path.exists(p)]
    print(f"{'file':<28} {'size':>9} {'FDEs':>7} {'progs':>6} {'rows':>8} {'MB':>6} "
          f"{'unsup':>5} {'build ms':>9} {'peak MB':>8} {'readelf ms':>10}")
    for path in paths:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            table = build_table(path)
            times.append((time.perf_counter() - t) * 1e3)
        tracemalloc.start()
        build_table(path)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        readelf = float("nan")
        if shutil.which("readelf"):
            t = time.perf_counter()
            subprocess.run(["readelf", "--debug-dump=frames-interp", path],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            readelf = (time.perf_counter() - t) * 1e3
        size = os.path.getsize(path)
        print(f"{os.path.basename(path):<28} {size >> 20:>7}M {table.fdes:>7} "
              f"{table.programs:>6} {len(table.rows):>8} {table.nbytes / 1e6:>6.2f} "
              f"{table.unsupported:>5} {statistics.median(times):>9.0f} {peak / 1e6:>8.1f} "
              f"{readelf:>10.0f}", flush=True)


if __name__ == "__main__":
    main()
