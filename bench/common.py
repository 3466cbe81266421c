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


def vm_hwm_mb(pid: int) -> float | None:
    """The process's peak RSS so far (VmHWM), in MB; None once it is gone.

    Not wait4's ru_maxrss: a child started by vfork (Python's subprocess) carries its
    parent's peak RSS across exec (the kernel keeps the larger of the two), so a tool started
    by a bench that has read a large output "peaks" at the bench's size."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


class PeakRss:
    """VmHWM of a running process, read every `period` seconds by a thread: the value is
    its peak RSS up to the last read before it exited."""

    def __init__(self, pid: int, period: float = 0.02):
        import threading

        self.pid, self.period, self.mb = pid, period, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            mb = vm_hwm_mb(self.pid)
            if mb is None:
                return
            self.mb = max(self.mb, mb)
            self._stop.wait(self.period)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.mb
