# SPDX-License-Identifier: GPL-2.0-only
"""A 200,000-call burst (tests/workloads/mmap_burst: anonymous mmap+munmap pairs as fast as
they go, nothing else mapped after "ready"): for mmapsnoop and trace, in text and in JSON,
the calls shown plus the calls counted lost equal the calls made, exactly.

Not a test of zero loss (the bench measures that, bench/bench_events.py): with the default
ring the burst usually arrives whole, and a 64 KiB ring forces losses, which must then be
counted to the call.  The program's own count is the witness; strace would slow it 50x."""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.conftest import build_workload
from tests.kernel.helpers import ToolRun

N = 200_000
LOST_RE = re.compile(r"memlens: lost (\d+) events \(ring buffer full\)")


class Burst:
    def __init__(self, n: int):
        self.proc = subprocess.Popen([str(build_workload("mmap_burst")), str(n)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        m = re.match(r"ready pid=(\d+)", self.proc.stdout.readline())
        assert m
        self.pid = int(m.group(1))

    def run(self) -> int:
        """Make the calls; the count the program reports."""
        self.proc.stdin.write("g")
        self.proc.stdin.flush()
        m = re.match(r"done calls=(\d+) ", self.proc.stdout.readline())
        assert m
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0
        return int(m.group(1))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


TOOLS = {"mmapsnoop": [], "trace": ["t:syscalls:sys_exit_mmap"]}


@pytest.mark.parametrize("ring", [None, "64K"], ids=["default-ring", "64K-ring"])
@pytest.mark.parametrize("json_out", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("tool", list(TOOLS))
def test_shown_plus_counted_lost_equals_made(tool, json_out, ring):
    burst = Burst(N)
    args = [tool, "-p", str(burst.pid), *(["--json"] if json_out else []),
            *(["--ring-size", ring] if ring else []), *TOOLS[tool]]
    run = ToolRun(*args)
    try:
        run.wait_attached()
        made = burst.run()
    finally:
        burst.kill()
    # -p: the tool ends by itself once the program has exited, after a last read
    assert run.wait(timeout=120) == 0, run.stderr
    assert made == N
    if json_out:
        records = [json.loads(line) for line in run.stdout.splitlines()]
        shown = sum(1 for r in records if r["type"] == "event")
        lost = sum(r["count"] for r in records
                   if r["type"] == "lost" and r["what"] == "events")
        summary = [r for r in records if r["type"] == "summary"]
        assert summary and summary[-1]["events"] == shown
        assert summary[-1]["lost"].get("events", 0) == lost
        pids = {r["pid"] for r in records if r["type"] == "event"}
        assert pids <= {burst.pid}
    else:
        rows = run.stdout.splitlines()
        shown = len(rows) - 1 if rows else 0  # the header
        assert all(str(burst.pid) in row.split()[:2] for row in rows[1:])
        lost = sum(int(m.group(1)) for m in LOST_RE.finditer(run.stderr))
    assert shown + lost == made, (shown, lost, run.stderr[-500:])
    if ring:
        assert lost > 0  # 64 KiB cannot hold a burst: the accounting was exercised


def test_records_left_in_the_ring_at_the_end_are_counted_lost():
    """The drain after a stop is bounded in time; what it leaves in the ring is released
    and counted lost (Engine.drop_unread), so that events read + kernel drops + unread =
    calls made, exactly, even when nothing was read at all."""
    from memlens.core.engine import Engine
    from memlens.core.probespec import parse_all

    burst = Burst(N)
    eng = Engine(parse_all(["t:syscalls:sys_exit_mmap"]), keys=(), trace=True,
                 ring_size=1 << 20)
    try:
        eng.start(pid=burst.pid)
        made = burst.run()
        read = len(eng.poll(0))  # one bounded batch read, the rest left in the ring
        unread = eng.drop_unread()
        lost = {r["reason"]: r["count"] for r in eng.lost() if r["what"] == "events"}
        assert eng.drop_unread() == 0  # released: the ring is empty
    finally:
        burst.kill()
        eng.close()
    assert made == N and read > 0 and unread > 0, (read, unread)
    assert lost.get("ring buffer full", 0) > 0  # 1 MiB cannot hold the burst
    assert read + sum(lost.values()) == made, (read, lost)
    assert lost[next(k for k in lost if k.startswith("still in the ring"))] == unread
