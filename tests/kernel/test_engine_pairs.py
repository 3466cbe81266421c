# SPDX-License-Identifier: GPL-2.0-only
"""Latency pairs in the engine: a begin tracepoint stamps its thread, the end counts the time
since.  Witness: a child that sleeps a known number of times for a known time, measuring
each sleep itself with CLOCK_MONOTONIC."""
from __future__ import annotations

import subprocess
import sys

from memlens.core.engine import Engine
from memlens.core.probespec import parse_all
from tests.kernel.helpers import engine_run_on_child

SLEEPS, SLEEP_S = 23, 0.01
BEGIN = "t:syscalls:sys_enter_clock_nanosleep"
END = "t:syscalls:sys_exit_clock_nanosleep"
CHILD = f"""
import os, sys, time
sys.stdin.read(1)
total = 0
for _ in range({SLEEPS}):
    t = time.monotonic_ns()
    time.sleep({SLEEP_S})
    total += time.monotonic_ns() - t
print(total, flush=True)
"""


def _child() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def test_pair_counts_each_sleep_with_its_time_and_histogram():
    child = _child()
    eng = Engine(parse_all([BEGIN, END]), keys=("probe", "pid"), pairs={END: BEGIN}, hist=True,
                 hist_unit="nsecs")
    try:
        eng.start(pid=child.pid)
        child.stdin.write("g")
        child.stdin.flush()
        witness_ns = int(child.stdout.readline())
        child.wait(10)
        (entry,) = [e for e in eng.collect() if e.parts["pid"] == child.pid]
        hists = eng.histograms()
    finally:
        eng.close()
        if child.poll() is None:
            child.kill()
    assert entry.parts["probe"] == END and entry.count == SLEEPS
    # the kernel's time sits inside the child's own (which adds Python's call overhead)
    assert 0.9 * witness_ns <= entry.time_ns <= witness_ns, (entry.time_ns, witness_ns)
    assert SLEEP_S * 1e9 <= entry.max_ns <= witness_ns
    buckets = hists[END]
    assert sum(buckets) == SLEEPS
    # 10 ms lies in [2**23, 2**24) ns: every sleep in that bucket or the next (a late wake)
    assert buckets[23] + buckets[24] == SLEEPS, {i: n for i, n in enumerate(buckets) if n}


def test_trace_mode_gives_each_end_its_latency_and_its_begin_fields():
    eng = Engine(parse_all([BEGIN, END]), keys=(), pairs={END: BEGIN}, trace=True)
    raw, pid, _line, _ = engine_run_on_child(eng, CHILD, settle=0.1)
    events = [eng.decode_event(ev) for ev in raw]
    mine = [e for e in events if e["pid"] == pid]
    assert len(mine) == SLEEPS
    for e in mine:
        assert e["probe"] == END and e["fields"]["ret"] == 0
        assert SLEEP_S * 1e9 <= e["latency_ns"] < 1e9
        # the begin's record came along: CPython 3.11 sleeps with
        # clock_nanosleep(CLOCK_MONOTONIC=1, TIMER_ABSTIME=1, deadline, NULL)
        assert e["begin_fields"]["which_clock"] == 1 and e["begin_fields"]["flags"] == 1
        assert e["begin_fields"]["rmtp"] == 0


STEPS = """
import sys, time
for line in sys.stdin:
    t = time.monotonic_ns()
    time.sleep(float(line))
    print(time.monotonic_ns() - t, flush=True)
"""


def test_max_is_the_longest_since_the_last_collect_not_since_the_key_was_made():
    """A 200 ms sleep, a collect, then three 5 ms sleeps: the second collect's max is one
    of the short sleeps (the kernel restarts a value's max at each read epoch), and a key
    with no timed end since the last read reports no max."""
    child = subprocess.Popen([sys.executable, "-c", STEPS], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    eng = Engine(parse_all([BEGIN, END]), keys=("pid",), pairs={END: BEGIN})
    try:
        eng.start(pid=child.pid)

        def sleep(s: float) -> int:
            child.stdin.write(f"{s}\n")
            child.stdin.flush()
            return int(child.stdout.readline())

        long_ns = sleep(0.2)
        (first,) = eng.collect()
        short_ns = [sleep(0.005) for _ in range(3)]
        (second,) = eng.collect()
        child.stdin.close()
        child.wait(10)
        later = eng.collect()
    finally:
        eng.close()
        if child.poll() is None:
            child.kill()
    # (lower bounds with slack: Python's time.sleep computes its absolute deadline before
    # the system call, so the kernel's enter-to-exit time can be a few us short of it)
    assert first.count == 1 and 0.19e9 <= first.max_ns <= long_ns, (first, long_ns)
    assert second.count == 3, second
    assert 0.004e9 <= second.max_ns <= max(short_ns) < 0.1e9, (second, short_ns)
    assert all(e.max_ns == 0 for e in later), later  # exit: no sleep since the last read


ADDS_CHILD = """
import os, sys
sys.stdin.read(1)
me = os.getpid()
os.getpgid(me)           # before the begin: not added
os.getppid()             # begin
for _ in range(5):
    os.getpgid(me)       # added: 5 hits, its own pid each
os.getsid(0)             # end
os.getppid()             # a second pair, nothing added
os.getsid(0)
print("done", flush=True)
"""


def test_adds_sum_into_their_threads_open_pair_and_come_with_its_end():
    """adds={probe: end}: the probe's hits between its thread's begin and end are counted
    and their sum fields summed in the kernel, and come with the end's event, not as events
    of their own; hits before the begin are not added, and a new begin starts at zero."""
    begin, end = "t:syscalls:sys_enter_getppid", "t:syscalls:sys_enter_getsid"
    add = "t:syscalls:sys_enter_getpgid"
    eng = Engine(parse_all([begin, add, end]), keys=(), trace=True, pairs={end: begin},
                 adds={add: end}, sum_field="pid")
    raw, pid, line, _ = engine_run_on_child(eng, ADDS_CHILD)
    assert line.strip() == "done"
    events = [eng.decode_event(ev) for ev in raw]
    mine = [e for e in events if e["pid"] == pid]
    # only the two ends stream: the getpgid hits were added, the begins stamped
    assert [e["probe"] for e in mine] == [end, end], mine
    assert [e["added"] for e in mine] == [{"count": 5, "sum": 5 * pid, "sum2": 0},
                                          {"count": 0, "sum": 0, "sum2": 0}], mine
