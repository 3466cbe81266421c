# SPDX-License-Identifier: GPL-2.0-only
"""The engine's in-kernel filter agrees with its Python reference (tpformat.evaluate) on
real records: the workload's madvise calls are traced once unfiltered, and for each filter
the events the kernel let through must be exactly those the reference accepts."""
from __future__ import annotations

import re
import subprocess

import pytest

from memlens.core import tpformat
from tests.conftest import build_workload
from tests.kernel.helpers import ToolRun

HUGE, OTHER = 7, 5  # MADV_HUGEPAGE calls; rounds of NORMAL, DONTNEED, NOHUGEPAGE


def _traced(*filter_args: str) -> list[dict]:
    wl = subprocess.Popen([str(build_workload("madvise_mix")), str(HUGE), str(OTHER)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pid = int(re.match(r"ready pid=(\d+)", wl.stdout.readline()).group(1))
    run = ToolRun("trace", "--json", "-p", str(pid), "t:syscalls:sys_enter_madvise",
                  *filter_args)
    try:
        run.wait_attached()
        wl.stdin.write("g")
        wl.stdin.flush()
        assert wl.stdout.readline().startswith("done"), "workload failed"
        wl.stdin.close()
        wl.wait(10)
    finally:
        if wl.poll() is None:
            wl.kill()
    import time

    time.sleep(0.3)  # let the ring drain
    assert run.stop() == 0, run.stderr
    run.assert_detached()
    events = [r for r in run.records() if r["type"] == "event"]
    assert all(e["pid"] == pid and e["comm"] == "madvise_mix" for e in events)
    return events


def _raw(fmt, fields: dict) -> bytes:
    """Rebuild a record from decoded fields, for the Python reference."""
    buf = bytearray(fmt.size)
    for f in fmt.user_fields():
        v = fields.get(f.name)
        if isinstance(v, int):
            width = f.size
            buf[f.offset:f.offset + width] = (v & ((1 << (8 * width)) - 1)).to_bytes(
                width, "little")
    return bytes(buf)


@pytest.fixture(scope="module")
def unfiltered():
    events = _traced()
    behaviors = sorted(e["fields"]["behavior"] for e in events)
    assert behaviors.count(14) == HUGE and len(events) == HUGE + 3 * OTHER, behaviors
    return events


@pytest.mark.parametrize("expr", [
    "behavior == MADV_HUGEPAGE",
    "behavior >= 4 && behavior != 15",
    "behavior < 4",
    "behavior & 0x4",
    "len_in > 0x100000 && behavior <= MADV_DONTNEED",
    "behavior == -1",
])
def test_kernel_filter_matches_the_python_reference(unfiltered, expr):
    fmt = tpformat.read_format("syscalls", "sys_enter_madvise")
    terms = tpformat.parse_filter(expr, fmt)
    expected = sorted(e["fields"]["behavior"] for e in unfiltered
                      if tpformat.evaluate(terms, _raw(fmt, e["fields"])))
    got = sorted(e["fields"]["behavior"] for e in _traced(expr))
    assert got == expected, expr


def test_a_probe_filter_applies_to_its_probe_only():
    """Two tracepoints in one program: the filter of sys_enter_madvise (MADV_HUGEPAGE) does
    not touch sys_exit_madvise, which counts every call."""
    from memlens.core.engine import Engine
    from memlens.core.probespec import parse_all

    wl = subprocess.Popen([str(build_workload("madvise_mix")), str(HUGE), str(OTHER)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pid = int(re.match(r"ready pid=(\d+)", wl.stdout.readline()).group(1))
    enter, leave = "t:syscalls:sys_enter_madvise", "t:syscalls:sys_exit_madvise"
    eng = Engine(parse_all([enter, leave]), keys=("probe", "pid"),
                 probe_filters={enter: "behavior == MADV_HUGEPAGE"})
    try:
        eng.start(pid=pid)
        wl.stdin.write("g")
        wl.stdin.flush()
        assert wl.stdout.readline().startswith("done")
        wl.stdin.close()
        wl.wait(10)
        counts = {e.parts["probe"]: e.count for e in eng.collect() if e.parts["pid"] == pid}
    finally:
        eng.close()
        if wl.poll() is None:
            wl.kill()
    assert counts == {enter: HUGE, leave: HUGE + 3 * OTHER}


def test_a_field_not_on_an_8_byte_boundary_is_read_where_it_is():
    """sched_process_exec's `pid` is a 4-byte field at offset 12: the key and a filter must
    read it there (a mask that cleared low bits read offset 8, the filename's data_loc)."""
    from memlens.core import tpformat
    from memlens.core.engine import Engine
    from memlens.core.probespec import parse_all

    fmt = tpformat.read_format("sched", "sched_process_exec")
    assert fmt.field("pid").offset % 8 != 0, "the test needs an unaligned field"
    eng = Engine(parse_all(["t:sched:sched_process_exec"]), keys=("field",), field="pid")
    try:
        eng.start()
        pids = []
        for _ in range(3):
            p = subprocess.Popen(["/bin/true"])
            p.wait()
            pids.append(p.pid)
        counts = {e.parts["field"]: e.count for e in eng.collect()}
    finally:
        eng.close()
    for pid in pids:
        assert counts.get(pid) == 1, (pids, counts)
