# SPDX-License-Identifier: GPL-2.0-only
"""slabratetop against a program that opens and closes 23 TCP sockets and 23 pipes
(tests/workloads/slab_loop.c): `slabratetop -p PID` names the caches socket() allocates
from — sock_inode_cache and TCP, both unmergeable (their /sys/kernel/slab entries are
directories, no symlinks, so the name the kernel reports is theirs) — with 23 allocations
each, and the two kmalloc()s of pipe() (GFP_KERNEL_ACCOUNT, served by kmalloc-cg-192 and
kmalloc-cg-1k: the size class and the type the gfp bits pick, caches /proc/slabinfo lists)
23 times each.

Witness: bpftrace counting the same tracepoints for the same PID at the same time
(`@[str(args->name)] = count()` on kmem:kmem_cache_alloc, `@[args->bytes_alloc] = count()`
on kmem:kmalloc): every cache's count and every kmalloc size's count must be equal.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from tests.conftest import build_workload, require
from tests.kernel.helpers import ToolRun

N = 23
BT_PROG = r"""
BEGIN { printf("READY\n"); }
tracepoint:kmem:kmem_cache_alloc /pid == $1/ { @c[str(args->name)] = count(); }
tracepoint:kmem:kmalloc /pid == $1/ { @k[args->bytes_alloc] = count(); }
"""


class Bpftrace:
    """bpftrace in the background, ready once its BEGIN printed (every probe attached).
    Its output goes to a file: with a pipe, bpftrace 0.17 here did not end on SIGINT."""

    def __init__(self, prog: str, *params: str):
        self.out = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(["bpftrace", "-e", prog, *params], stdout=self.out,
                                     stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.proc.poll() is None:
            if "READY" in self.text():
                return
            time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        raise AssertionError(f"bpftrace did not start: {self.text()}")

    def text(self) -> str:
        self.out.seek(0)
        return self.out.read()

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=20)
        text = self.text()
        self.out.close()
        return text


def _workload():
    w = subprocess.Popen([str(build_workload("slab_loop")), str(N)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert w.stdout.readline().startswith("READY")
    return w


def _go(w) -> None:
    w.stdin.write("go\n")
    w.stdin.flush()
    assert w.stdout.readline().strip() == f"DONE {N}"


def _finish(w) -> None:
    if w.poll() is None:
        w.stdin.close()
        try:
            w.wait(timeout=5)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()


def _size_name(n: int) -> str:
    from memlens.tools.slabratetop import size_name

    return size_name(n)


def test_sockets_against_bpftrace():
    require(shutil.which("bpftrace") is not None, "needs bpftrace (the witness)")
    for cache in ("sock_inode_cache", "TCP"):
        path = f"/sys/kernel/slab/{cache}"
        require(os.path.isdir(path) and not os.path.islink(path),
                f"{cache} is merged with another cache here: its allocations carry another "
                "name")
    w = _workload()
    run = bt = None
    try:
        run = ToolRun("slabratetop", "--json", "-p", str(w.pid), "60")
        run.wait_attached()
        bt = Bpftrace(BT_PROG, str(w.pid))
        _go(w)
        time.sleep(0.2)
        witness = bt.stop()
        bt = None
        assert run.stop() == 0, run.stderr
    finally:
        _finish(w)
        if bt is not None:
            bt.proc.kill()
        if run is not None and run.proc.poll() is None:
            run.stop()
    recs = run.records()
    assert not [r for r in recs if r["type"] == "lost"], recs
    caches: dict[str, int] = {}
    for rec in recs:
        if rec["type"] == "report":
            for e in rec["entries"]:
                caches[e["cache"]] = caches.get(e["cache"], 0) + e["allocs"]
    summary = next(r for r in recs if r["type"] == "summary")
    assert {c["cache"]: c["allocs"] for c in summary["caches"]} == caches
    assert caches["sock_inode_cache"] == N
    assert caches["TCP"] == N
    assert caches["inode_cache"] == N   # pipe inodes
    assert caches["kmalloc-cg-192"] == N and caches["kmalloc-cg-1k"] == N
    with open("/proc/slabinfo") as f:
        slabinfo = f.read()
    for name in caches:  # every name we print is a cache the kernel lists
        assert re.search(rf"^{re.escape(name)} ", slabinfo, re.M), name
    # the witness: every named cache and every kmalloc size, the same counts
    bt_caches = {m[0]: int(m[1]) for m in re.findall(r"^@c\[(.*)\]: (\d+)$", witness, re.M)}
    bt_sizes = {int(m[0]): int(m[1]) for m in re.findall(r"^@k\[(\d+)\]: (\d+)$", witness, re.M)}
    named = {k: v for k, v in caches.items()
             if not re.match(r"^(kmalloc-|dma-kmalloc-)", k)}
    assert named == bt_caches, (named, bt_caches)
    ours_by_size: dict[str, int] = {}
    for k, v in caches.items():  # per size, whatever the type (bpftrace keys by size)
        if k not in named:
            size = re.sub(r"^(dma-)?kmalloc-(cg-|rcl-|large-)?", "", k)
            ours_by_size[size] = ours_by_size.get(size, 0) + v
    assert ours_by_size == {_size_name(s): n for s, n in bt_sizes.items()}
    assert summary["hooks"][0] == "tracepoint kmem:kmem_cache_alloc"
    print(f"\nslabratetop -p: {caches}\nbpftrace: {bt_caches} kmalloc {bt_sizes}")


def test_text_top_rows_sorted():
    """BCC's screen with -C (no clearing): loadavg line, CACHE ALLOCS BYTES, at most -r
    rows, sorted by -s count; `interval count` ends the run by itself."""
    w = _workload()
    try:
        run = ToolRun("slabratetop", "-C", "-r", "3", "-s", "count", "-p", str(w.pid), "1", "2")
        run.wait_attached()
        _go(w)
        assert run.wait(timeout=15) == 0, run.stderr
    finally:
        _finish(w)
    lines = run.stdout.splitlines()
    heads = [i for i, ln in enumerate(lines) if ln.split() == ["CACHE", "ALLOCS", "BYTES"]]
    assert len(heads) == 2, lines  # two reports, then the count ends it
    for i in heads:
        assert "loadavg:" in lines[i - 2]
    blocks = [lines[heads[0] + 1:heads[1] - 3], lines[heads[1] + 1:]]
    rows = [ln.split() for b in blocks for ln in b if ln.strip()]
    assert rows, lines
    for b in blocks:
        counts = [int(ln.split()[1]) for ln in b if ln.strip()]
        assert len(counts) <= 3
        assert counts == sorted(counts, reverse=True)
    # a file per socket and two per pipe: filp leads by count (lsm_file_cache ties, with
    # fewer bytes)
    assert ["filp", str(3 * N)] in [r[:2] for r in rows], lines
    assert all(len(ln) < 80 for ln in lines)


def test_kmalloc_names():
    from memlens.tools.slabratetop import size_name, sort_rows

    assert [size_name(n) for n in (8, 96, 192, 1024, 8192, 16384, 1 << 21)] == \
        ["8", "96", "192", "1k", "8k", "16k", "2M"]
    rows = [{"cache": "a", "allocs": 1, "bytes": 10}, {"cache": "b", "allocs": 5, "bytes": 5}]
    assert [r["cache"] for r in sort_rows(rows, "size")] == ["a", "b"]
    assert [r["cache"] for r in sort_rows(rows, "count")] == ["b", "a"]
    assert [r["cache"] for r in sort_rows(rows[::-1], "name")] == ["a", "b"]


def test_a_kernel_without_the_cache_name_is_exit_4(monkeypatch):
    """A kernel before 6.1 (no cache name in kmem:kmem_cache_alloc): no hook serves (a kprobe
    would have to read the cache's struct through its argument, which the engine cannot),
    so slabratetop exits 4 naming the tracepoint and its missing field, before loading."""
    import argparse

    import pytest

    from memlens.core import hooks
    from memlens.errors import KernelLacks
    from memlens.tools.slabratetop import SlabratetopTool

    monkeypatch.setattr(hooks.Tracepoint, "probe", lambda self: (False, "no field 'name'"))
    tool = SlabratetopTool(argparse.Namespace(pid=None, cgroup=None))
    with pytest.raises(KernelLacks) as err:
        tool.start()
    assert err.value.exit_code == 4 and "kmem:kmem_cache_alloc" in str(err.value)
    assert "no field 'name'" in str(err.value)
    assert tool.engines == []
