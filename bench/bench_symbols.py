# SPDX-License-Identifier: GPL-2.0-only
"""Symbolizer timings for the README: libc symbol-table load and 10k lookups.

    .venv/bin/python bench/bench_symbols.py [path-to-elf]

Target: loading libc's symbols (with the libc6-dbg .symtab when installed) in < 10 ms.
For comparison, pyelftools needs 209 ms (.dynsym) / 595 ms (debug .symtab) on this machine
(BPF-PYTHON.md §4).
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np

from memlens.core.symbols import ElfSymbols, KernelSymbolizer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import emit_result

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """(first, median of the rest) in ms, and the last result."""
    times, res = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        res = fn()
        times.append((time.perf_counter() - t) * 1e3)
    return times[0], statistics.median(times[1:] or times), res


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else LIBC
    loads = {}
    for find_debug in (True, False):
        first, med, syms = timed(lambda fd=find_debug: ElfSymbols(path, find_debug=fd), 21)
        loads[find_debug] = med
        print(f"load {path} [{syms.source}]: {len(syms)} functions, "
              f"first {first:.2f} ms, median {med:.2f} ms")
    peers = peer_pyelftools(path)
    syms = ElfSymbols(path)
    rng = np.random.default_rng(1)
    lo, hi = int(syms.addrs[0]), int(syms.ends[-1])
    addrs = rng.integers(lo, hi, 10_000, dtype=np.uint64)
    _, med, (idx, _off) = timed(lambda: syms.lookup(addrs), 11)
    print(f"10k lookups (searchsorted + size check): {med:.2f} ms, "
          f"{int((idx >= 0).sum())} inside a symbol")

    def with_names():
        syms._names.clear()
        i, _ = syms.lookup(addrs)
        return [syms.name(int(k)) for k in i if k >= 0]

    _, med, _ = timed(with_names, 11)
    print(f"10k lookups + name decoding (cold name cache): {med:.2f} ms")
    emit_result("symbols", {"load_ms": round(loads[True], 2),
                            "load_dynsym_ms": round(loads[False], 2),
                            "peer_load_ms": peers.get(".symtab"),
                            "peer_load_dynsym_ms": peers.get(".dynsym"),
                            "lookups_per_s": round(10_000 / (med / 1e3)),
                            "resolved": int((idx >= 0).sum()), "of": 10_000})
    first, med, k = timed(KernelSymbolizer, 5)
    print(f"/proc/kallsyms: {len(k)} text symbols, available={k.available}, "
          f"first {first:.1f} ms, median {med:.1f} ms")
    t = time.perf_counter()
    with open("/proc/kallsyms", "rb") as f:
        f.read()
    ms = (time.perf_counter() - t) * 1e3
    print(f"  of which the kernel producing /proc/kallsyms: {ms:.1f} ms")


def peer_pyelftools(path: str) -> dict[str, float]:
    """The peer, same run: pyelftools reading the same tables (function symbols only);
    its median load time (ms) per section."""
    out: dict[str, float] = {}
    try:
        from elftools.elf.elffile import ELFFile
    except ImportError:
        print("pyelftools not installed (pip install pyelftools): no peer figure")
        return out
    ours = ElfSymbols(path)
    files = [(path, ".dynsym")]
    source = str(ours.source or "")
    if source.startswith("debug:"):  # "debug:/usr/lib/debug/.build-id/...debug+dynsym"
        files.insert(0, (source[len("debug:"):].split("+")[0], ".symtab"))

    def load(p: str, section: str) -> int:
        with open(p, "rb") as f:
            sec = ELFFile(f).get_section_by_name(section)
            return sum(1 for s in sec.iter_symbols() if s["st_info"]["type"] in
                       ("STT_FUNC", "STT_GNU_IFUNC") and s["st_value"])

    for p, section in files:
        if not os.path.exists(p):
            continue
        _, med, n = timed(lambda p=p, section=section: load(p, section), 3)
        _, ours_med, _ = timed(lambda s=section: ElfSymbols(path, find_debug=s == ".symtab"), 11)
        print(f"peer pyelftools {section} of {p}: {n} function symbols, median {med:.1f} ms "
              f"= {med / ours_med:.0f}x ours ({ours_med:.2f} ms)")
        out[section] = round(med, 1)
    return out


if __name__ == "__main__":
    main()
