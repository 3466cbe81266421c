# SPDX-License-Identifier: GPL-2.0-only
"""The unwinding test programs (tests/workloads/unwind_*.c), built without frame pointers:
`unwind_chain` (the 8-deep chain in one executable) and `unwind_chain_split` (chain5..chain8
in libunwind_levels.so).  Compiled once into tests/workloads/bin, rebuilt when a source is
newer."""
from __future__ import annotations

import subprocess
from pathlib import Path

WORKLOADS = Path(__file__).resolve().parent / "workloads"
BIN = WORKLOADS / "bin"
CHAIN = [f"chain{i}" for i in range(8, 0, -1)]  # leaf first: chain8 ... chain1
NOFP = ["-O2", "-g", "-fomit-frame-pointer", "-momit-leaf-frame-pointer"]
SOURCES = [WORKLOADS / "unwind_chain.c", WORKLOADS / "unwind_levels.c",
           WORKLOADS / "unwind_levels.h"]


def _stale(out: Path) -> bool:
    return not out.exists() or out.stat().st_mtime < max(s.stat().st_mtime for s in SOURCES)


def build() -> dict[str, Path]:
    """{"chain": executable, "split": executable, "lib": the shared library, "dlopen": the
    split one loading the library with dlopen after its gate, "chain_fp": the chain built
    with frame pointers (the baseline of bench/bench_unwind.py), "chain_fp_notables": the
    chain with frame pointers and no unwind tables of its own (the crt files' FDEs only):
    the walk takes its frames by frame pointer}."""
    BIN.mkdir(parents=True, exist_ok=True)
    chain, split, lib = BIN / "unwind_chain", BIN / "unwind_chain_split", \
        BIN / "libunwind_levels.so"
    chain_fp = BIN / "unwind_chain_fp"
    inc = f"-I{WORKLOADS}"
    if _stale(chain):
        subprocess.run(["gcc", *NOFP, inc, "-o", str(chain), str(SOURCES[0]), str(SOURCES[1])],
                       check=True)
    if _stale(chain_fp):
        subprocess.run(["gcc", "-O2", "-g", "-fno-omit-frame-pointer",
                        "-mno-omit-leaf-frame-pointer", inc, "-o", str(chain_fp),
                        str(SOURCES[0]), str(SOURCES[1])], check=True)
    if _stale(lib):
        subprocess.run(["gcc", *NOFP, "-fPIC", "-shared", "-o", str(lib), str(SOURCES[1])],
                       check=True)
    if _stale(split) or split.stat().st_mtime < lib.stat().st_mtime:
        subprocess.run(["gcc", *NOFP, inc, "-o", str(split), str(SOURCES[0]), f"-L{BIN}",
                        "-lunwind_levels", "-Wl,-rpath,$ORIGIN"], check=True)
    notables = BIN / "unwind_chain_fp_notables"
    if _stale(notables):
        # (no -g: gcc would put the tables in .debug_frame instead)
        subprocess.run(["gcc", "-O2", "-fno-omit-frame-pointer",
                        "-mno-omit-leaf-frame-pointer", "-fno-asynchronous-unwind-tables",
                        "-fno-unwind-tables", inc, "-o", str(notables), str(SOURCES[0]),
                        str(SOURCES[1])], check=True)
    dl = BIN / "unwind_chain_dlopen"
    if _stale(dl):
        subprocess.run(["gcc", *NOFP, inc, "-DUNWIND_DLOPEN", "-o", str(dl), str(SOURCES[0]),
                        "-ldl", "-Wl,-rpath,$ORIGIN"], check=True)
    return {"chain": chain, "split": split, "lib": lib, "dlopen": dl, "chain_fp": chain_fp,
            "chain_fp_notables": notables}
