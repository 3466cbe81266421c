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


def _links_and_events():
    """(the link kinds this process holds while attached, the events of CALLS getppid())."""
    import os

    from tests.kernel.helpers import fdinfo_links

    eng = Engine(parse_all([PROBE]), keys=(), trace=True)
    events, pid, _line, links = engine_run_on_child(
        eng, CHILD, inspect=lambda e: ([link.get("link_type") for link in
                                        fdinfo_links(os.getpid())],
                                       len(e.obj.raw_links), len(e.obj.links)))
    assert len(events) == CALLS and all(int(ev["tgid"]) == pid for ev in events)
    return links


def test_tracepoints_are_linked_by_their_format_id():
    """The engine attaches a tracepoint with the id its format file gave (no read of the
    id file, no libbpf probe for perf links): a perf link of its own and the perf event
    under it (raw_links, closed with the object), libbpf's links none."""
    from memlens.core import loader

    kinds, raw, libbpf_links = _links_and_events()
    assert loader._perf_links is True
    assert "perf" in kinds, kinds
    assert (raw, libbpf_links) == (2, 0)


def test_without_perf_links_libbpf_attaches(monkeypatch):
    """A kernel without perf links (before 5.15: BPF_LINK_CREATE says EINVAL): libbpf's own
    attach, for this tracepoint and every one after it; the same events."""
    import errno

    from memlens.core import libbpf, loader

    made = []

    def refused(prog_fd, perf_fd, cookie=0):
        made.append(perf_fd)
        return -errno.EINVAL

    monkeypatch.setattr(libbpf, "link_create_perf_event", refused)
    monkeypatch.setattr(loader, "_perf_links", None)
    _kinds, raw, libbpf_links = _links_and_events()
    assert loader._perf_links is False and len(made) == 1
    assert (raw, libbpf_links) == (0, 1)
    _kinds, raw, libbpf_links = _links_and_events()  # not tried again
    assert len(made) == 1 and (raw, libbpf_links) == (0, 1)


def test_perf_events_are_linked_here_too():
    """A software perf event per CPU, each linked by the engine's own perf link (loader.
    attach_perf_event: no libbpf probe first); the links gone with the engine."""
    import os

    from memlens.core import perf
    from tests.kernel.helpers import fdinfo_links

    def perf_links() -> int:
        return [link.get("link_type") for link in fdinfo_links(os.getpid())].count("perf")

    before = perf_links()
    eng = Engine(parse_all(["sw:page-faults"]), keys=("pid",))
    try:
        eng.start(pid=os.getpid())
        ncpu = len(perf.online_cpus())
        assert len(eng.obj.raw_links) == 2 * ncpu and eng.obj.links == []
        assert perf_links() == before + ncpu
    finally:
        eng.close()
    assert perf_links() == before
