# SPDX-License-Identifier: GPL-2.0-only
"""The engine's hand-over (core/engine.py, engine.bpf.c): system-wide, a stack tool attaches
a program verified without the DWARF walk, says it is tracing, then loads the whole program
and hands every event over to it through a tail call.  Nothing may be counted twice or lost
across it, and once it is done stacks are walked whole.

Workload: tests/workloads/unwind_chain.c built without frame pointers, calling sbrk() 23
times at the bottom of its 8-deep chain: one process started before the tool and released
at its banner (before, during or after the hand-over), one started a second later (after
it; its own start-up's brk calls have its tables loaded by the time it is released).
Witness: the program's own count; the frame-pointer walk cannot reach the chain
(test_unwind.py proves it), so chain8..main in the second one's stack shows the walk ran."""
from __future__ import annotations

import re
import subprocess
import time

from tests import unwind_workloads
from tests.conftest import require
from tests.kernel.helpers import ToolRun

N = 23
WHOLE = [*unwind_workloads.CHAIN, "main"]


def _start(exe) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([str(exe), "brk", str(N)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    m = re.match(r"ready pid=(\d+)", proc.stdout.readline())
    assert m
    return proc, int(m.group(1))


def _go_and_end(proc: subprocess.Popen) -> None:
    proc.stdin.write("g")
    proc.stdin.flush()
    assert proc.stdout.readline().startswith(f"done n={N} ")
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0


def _names(stack: list[str]) -> list[str]:
    return [re.sub(r"\+0x.*", "", f) for f in stack]


def test_system_wide_counts_exact_across_the_hand_over():
    import shutil

    require(shutil.which("gcc") is not None, "gcc is needed to build the workloads")
    exe = unwind_workloads.build()["chain"]
    first, first_pid = _start(exe)
    second = None
    run = ToolRun("brkstack", "--json")
    try:
        run.wait_attached()
        _go_and_end(first)     # at the banner: the hand-over may not have happened yet
        time.sleep(1.0)        # it has now (the first poll, ~50 ms)
        second, second_pid = _start(exe)
        time.sleep(0.5)        # its start-up's brk calls asked for its tables
        _go_and_end(second)
        time.sleep(0.3)
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
        rc = run.stop()
    assert rc == 0, run.stderr
    run.assert_detached()
    entries = [e for r in run.records() if r["type"] == "report" for e in r["entries"]]
    # every call of the first counted once, whichever program counted it (it made no other
    # brk call while traced)
    assert sum(e["count"] for e in entries if e["pid"] == first_pid) == N, \
        [e for e in entries if e["pid"] == first_pid]
    chain = [e for e in entries if e["pid"] == second_pid and "chain8" in _names(e["stack"])]
    assert len(chain) == 1 and chain[0]["count"] == N, \
        [e["stack"] for e in entries if e["pid"] == second_pid]
    names = _names(chain[0]["stack"])
    at = names.index("chain8")
    assert names[at:at + len(WHOLE)] == WHOLE, chain[0]["stack"]
