# SPDX-License-Identifier: GPL-2.0-only
"""The engine's trace mode: one record per hit in its events ring, sized by ring_size= (the
tools' --ring-size), read as a list of rows or as one array.  Witness: a child that calls
getppid() a known number of times, the engine filtered to it in the kernel."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from memlens.core.engine import Engine
from memlens.core.probespec import parse_all
from tests.kernel.helpers import engine_run_on_child

CALLS = 23
PROBE = "t:syscalls:sys_enter_getppid"
CHILD = f"""
import os, sys
sys.stdin.read(1)
for _ in range({CALLS}):
    os.getppid()
print("done", flush=True)
"""


def _traced(**engine_args) -> tuple[Engine, list]:
    """(the engine, still open; every record of the child's getppid calls)."""
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    eng = Engine(parse_all([PROBE]), keys=(), trace=True, **engine_args)
    try:
        eng.start(pid=child.pid)
        child.stdin.write("g")
        child.stdin.flush()
        assert child.stdout.readline() == "done\n"
        child.wait(10)
        time.sleep(0.05)
        got = []
        for _ in range(3):
            batch = eng.poll(0.05)
            got.extend(batch)
    except BaseException:
        eng.close()
        raise
    finally:
        if child.poll() is None:
            child.kill()
    for ev in got:
        assert int(ev["tgid"]) == child.pid
    return eng, got


@pytest.mark.parametrize("ring", [None, 1 << 16])
def test_ring_size_sizes_the_events_ring(ring):
    eng, events = _traced(ring_size=ring)
    try:
        size = eng.obj.map("events").max_entries
        assert size == (ring or 4096 * 1024)  # None: engine.bpf.c's own size
        assert len(events) == CALLS
        assert eng.total_lost() == {}
    finally:
        eng.close()


def test_event_array_gives_one_array_without_the_begin_record():
    """event_array=True: poll() returns the records as one numpy array.  What streams is
    engine_event's head and this run's record, not the whole struct: no begin record
    without a latency pair, and the record's own size, not data[]'s 512 bytes."""
    import numpy as np

    eng = Engine(parse_all([PROBE]), keys=(), trace=True, event_array=True)
    batch, pid, _line, full = engine_run_on_child(
        eng, CHILD, wait=0.05, inspect=lambda e: e.obj.struct_dtype("engine_event"))
    assert isinstance(batch, np.ndarray) and len(batch) == CALLS
    assert (batch["tgid"] == pid).all()
    assert "begin_data" not in batch.dtype.names
    record = eng.formats[0].size  # the tracepoint's record, from its format file
    head = full.fields["data"][1]
    assert batch.dtype.itemsize == head + ((record + 7) & ~7) < full.itemsize // 4, (
        batch.dtype.itemsize, head, record)
    assert (batch["size"] == record).all()
    assert eng.decode_event(batch[0])["probe"] == PROBE
