# SPDX-License-Identifier: GPL-2.0-only
"""memlens beside other tracers: a tracepoint memlens watches still counts for everyone
else.  A BPF program attached to a tracepoint decides by its return value whether the
kernel hands the hit on to the perf events on that tracepoint; memlens's programs returned
0, and `perf stat -e syscalls:sys_enter_getppid` counted 0 of 100000 calls while `memlens
count` watched the same tracepoint.  Witness: perf stat of the same command, without and
with the tool attached — the counts must be equal (and, for getppid, exactly the calls the
program makes)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import build_workload, require
from tests.kernel.helpers import ToolRun

CALLS = 20000


def _perf_count(event: str, argv: list[str]) -> int:
    """perf stat's count of `event` over the command (its stdin: a gate byte, then EOF)."""
    r = subprocess.run(["perf", "stat", "-x,", "--no-big-num", "-e", event, "--", *argv],
                       input="g", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if event in ln]
    assert lines, r.stderr
    return int(lines[0].split(",")[0])


@pytest.mark.parametrize("event, workload, tool", [
    # the counting engine's tracepoint program
    ("syscalls:sys_enter_getppid", ["syscall_loop", str(CALLS), "raw"],
     ["count", "t:syscalls:sys_enter_getppid"]),
    # a tool with BPF of its own
    ("syscalls:sys_enter_mmap", ["mmap_burst", str(CALLS)], ["mmapsnoop"]),
])
def test_perf_stat_counts_a_tracepoint_memlens_watches(event, workload, tool):
    require(shutil.which("perf") is not None, "needs perf (linux-perf) as a witness")
    argv = [str(build_workload(workload[0])), *workload[1:]]
    alone = _perf_count(event, argv)
    run = ToolRun(*tool)
    try:
        run.wait_attached()
        beside = _perf_count(event, argv)
        assert run.stop() == 0, run.stderr
    finally:
        run.stop(timeout=10)
    if event.endswith("getppid"):
        assert alone == CALLS, alone  # nothing but the loop calls getppid
    else:
        assert alone >= CALLS, alone  # the loop's and the loader's mmaps
    assert beside == alone, (beside, alone, tool)
