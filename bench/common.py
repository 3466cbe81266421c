# SPDX-License-Identifier: GPL-2.0-only
"""What the benchmarks share: how to run memlens, and how a bench hands its figures to the
report (`python -m bench` writes docs/BENCHMARKS.md from them).

A bench prints its own table for a reader, and calls emit_result() for each figure the
report's summary uses: one JSON object a line in the file named by $BENCH_RESULTS (set by
`python -m bench`; unset when a bench runs alone, and then nothing is written)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def memlens_argv(*args: str) -> list[str]:
    """The command line a user runs: the venv's `memlens` script (its interpreter start,
    site and imports included in every figure), else this interpreter's -m memlens."""
    script = ROOT / ".venv" / "bin" / "memlens"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "memlens", *args]


def emit_result(bench: str, figures: dict) -> None:
    path = os.environ.get("BENCH_RESULTS")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"bench": bench, **figures}) + "\n")
