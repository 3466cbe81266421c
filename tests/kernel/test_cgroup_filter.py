# SPDX-License-Identifier: GPL-2.0-only
"""--cgroup (memlens.bpf.h's filter, shared by every tool): tasks in the cgroup or below it
are traced, others are not.  Three identical workloads: in the cgroup, in a child cgroup,
outside; mmapsnoop and brkstack must see exactly the first two."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import build_workload
from tests.kernel.helpers import ToolRun, memory_cgroup

MMAP_CALLS = 30  # tests/workloads/mmap_named.c: 23 file maps, 5 anonymous, 2 failing


def _start(argv: list[str], cg: Path | None) -> subprocess.Popen:
    join = (lambda: (cg / "cgroup.procs").write_text("0")) if cg else None
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            preexec_fn=join)


def _go_and_wait(procs: list[subprocess.Popen]) -> None:
    """Release mmap_named workloads together, then wait for each to finish its calls."""
    for p in procs:
        p.stdin.write("g")
        p.stdin.flush()
    for p in procs:
        for line in p.stdout:
            if line.strip() == "done":
                break
        p.stdin.close()
        assert p.wait(timeout=20) == 0


def test_mmapsnoop_cgroup_includes_descendants_only(tmp_path: Path):
    with memory_cgroup("mlt_cgf", limit="1G") as cg:
        child = cg / "inner"
        child.mkdir()
        try:
            procs = {}
            for name, where in (("top", cg), ("inner", child), ("outside", None)):
                d = tmp_path / name
                d.mkdir()
                p = _start([str(build_workload("mmap_named")), str(d)], where)
                m = re.match(r"ready pid=(\d+)", p.stdout.readline())
                procs[name] = (p, int(m.group(1)))
            run = ToolRun("mmapsnoop", "--json", "--cgroup", str(cg))
            run.wait_attached()
            _go_and_wait([p for p, _ in procs.values()])
            assert run.stop() == 0, run.stderr
        finally:
            child.rmdir()
    events = [r for r in run.records() if r["type"] == "event"]
    by_pid = {}
    for ev in events:
        by_pid[ev["pid"]] = by_pid.get(ev["pid"], 0) + 1
    assert by_pid.get(procs["top"][1]) == MMAP_CALLS
    assert by_pid.get(procs["inner"][1]) == MMAP_CALLS
    assert procs["outside"][1] not in by_pid
    # nothing else on the machine leaked through the filter
    assert set(by_pid) == {procs["top"][1], procs["inner"][1]}


def test_brkstack_cgroup_filter_v1_path_relative_form():
    """--cgroup also accepts the path inside the memory hierarchy (/name)."""
    with memory_cgroup("mlt_cgb", limit="1G") as cg:
        inside = _start([str(build_workload("brk_levels"))], cg)
        outside = _start([str(build_workload("brk_levels"))], None)
        for p in (inside, outside):
            p.stdout.readline()
        run = ToolRun("brkstack", "--json", "--cgroup", "/" + cg.name)
        run.wait_attached()
        for p in (inside, outside):
            p.stdin.write("g\n")
            p.stdin.flush()
        for p in (inside, outside):
            p.stdin.close()
            p.wait(timeout=20)
        assert run.stop() == 0, run.stderr
    entries = [e for r in run.records() if r["type"] == "report" for e in r["entries"]]
    counts = {}
    for e in entries:
        counts[e["pid"]] = counts.get(e["pid"], 0) + e["count"]
    assert counts == {inside.pid: 23}


def _cgroup2_root() -> Path | None:
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[2] == "cgroup2":
                return Path(parts[1])
    return None


def test_cgroup_v2_filter(tmp_path: Path):
    """The v2 (default hierarchy) path of the filter: this machine keeps memory on v1 but
    mounts a cgroup2 hierarchy too, and tasks can be moved into its groups."""
    import pytest

    root = _cgroup2_root()
    if root is None:
        pytest.skip("no cgroup2 hierarchy mounted")
    cg = root / f"mlt_cgv2_{tmp_path.name[-8:]}"
    cg.mkdir()
    try:
        procs = []
        for name, where in (("in", cg), ("out", None)):
            d = tmp_path / name
            d.mkdir()
            p = _start([str(build_workload("mmap_named")), str(d)], where)
            procs.append((p, int(re.match(r"ready pid=(\d+)", p.stdout.readline()).group(1))))
        run = ToolRun("mmapsnoop", "--json", "--cgroup", str(cg))
        run.wait_attached()
        _go_and_wait([p for p, _ in procs])
        assert run.stop() == 0, run.stderr
    finally:
        cg.rmdir()
    pids = [r["pid"] for r in run.records() if r["type"] == "event"]
    assert pids.count(procs[0][1]) == MMAP_CALLS and set(pids) == {procs[0][1]}
