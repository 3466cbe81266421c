# SPDX-License-Identifier: GPL-2.0-only
"""A load without a minimal BTF makes one in the background (bpftool gen min_core_btf); the
next load relocates against it instead of all of vmlinux BTF, and counts exactly as before.
Witness: a child calling getppid() a known number of times."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from memlens.core import btfcache
from memlens.core.engine import Engine
from memlens.core.loader import BpfObject, object_path
from memlens.core.probespec import parse_all

CALLS = 23
CHILD = f"""
import os, sys
sys.stdin.read(1)
for _ in range({CALLS}):
    os.getppid()
print("done", flush=True)
"""

pytestmark = pytest.mark.skipif(shutil.which("bpftool") is None,
                                reason="bpftool (Debian: bpftool) makes the minimal BTF")


def _count_getppid() -> tuple[int, str | None]:
    """(the child's getppid calls counted, the custom BTF the engine's object used)."""
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    eng = Engine(parse_all(["t:syscalls:sys_enter_getppid"]), keys=("pid",))
    try:
        eng.start(pid=child.pid)
        used = eng.obj.custom_btf
        child.stdin.write("g")
        child.stdin.flush()
        assert child.stdout.readline() == "done\n"
        child.wait(10)
        entries = eng.collect()
    finally:
        eng.close()
        if child.poll() is None:
            child.kill()
    return sum(e.count for e in entries if e.parts["pid"] == child.pid), used


def test_the_next_load_uses_the_minimal_btf_and_counts_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMLENS_CACHE_DIR", str(tmp_path))
    path = object_path("core/engine.bpf.o")
    assert btfcache.cached(path) is None
    count, used = _count_getppid()
    assert (count, used) == (CALLS, None)
    deadline = time.monotonic() + 30  # bpftool runs in the background
    while btfcache.cached(path) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    made = btfcache.cached(path)
    assert made is not None, os.listdir(tmp_path / "btf")
    # the minimal BTF is small: the types and fields engine.bpf.o's relocations touch
    assert 0 < os.path.getsize(made) < os.path.getsize("/sys/kernel/btf/vmlinux") // 100
    count, used = _count_getppid()
    assert (count, used) == (CALLS, made)


def test_libbpf_does_not_read_vmlinux_btf_with_it(tmp_path, monkeypatch):
    """libbpf's own log says 'loading kernel BTF' for a load without the file, and not for
    one with it (the file made here by bpftool, as the background step makes it)."""
    from memlens.core import libbpf as L

    monkeypatch.setenv("MEMLENS_CACHE_DIR", str(tmp_path))
    L.keep_debug_lines(True)  # libbpf's debug lines kept (and on stderr)
    monkeypatch.setattr(btfcache, "build_in_background", lambda path: False)
    path = object_path("core/engine.bpf.o")

    def load() -> tuple[str | None, bool]:
        obj = BpfObject(path)
        try:
            for prog in ("count_perf", "count_uprobe", "count_usdt", "count_kprobe"):
                obj.set_autoload(prog, False)
            obj.set_max_entries("unwind_rows", 1)
            L.take_logs()
            obj.load()
            logs = L.take_logs(L.LIBBPF_DEBUG)
            return obj.custom_btf, any("loading kernel BTF" in m for m in logs)
        finally:
            obj.close()

    try:
        assert load() == (None, True)
        made = tmp_path / "btf" / btfcache.key(path)
        made.parent.mkdir(mode=0o700)
        subprocess.run(["bpftool", "gen", "min_core_btf", "/sys/kernel/btf/vmlinux",
                        str(made), path], check=True, capture_output=True)
        assert load() == (str(made), False)
    finally:
        L.keep_debug_lines(False)
