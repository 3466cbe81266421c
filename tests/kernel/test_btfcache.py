# SPDX-License-Identifier: GPL-2.0-only
"""A load without a minimal BTF makes one in the background (bpftool gen min_core_btf); the
next load relocates against it instead of all of vmlinux BTF, and counts exactly as before.
Witness: a child calling getppid() a known number of times."""
from __future__ import annotations

import json
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


def _user_stacks_of_getppid(tmp_path) -> tuple[dict[tuple, int], int]:
    """The child's getppid() calls counted by user stack (frames as text), and the
    verified size of the engine's programs (bytes, from bpftool)."""
    # alive until its stacks are read (their symbols are read from the live process)
    child = subprocess.Popen([sys.executable, "-c", CHILD + "sys.stdin.read(1)\n"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    eng = Engine(parse_all(["t:syscalls:sys_enter_getppid"]), keys=("pid", "ustack"),
                 stack_unwind="fp")
    try:
        eng.start(pid=child.pid)
        xlated = 0
        for name in eng.obj.programs():
            if eng.obj.autoload(name):
                info = subprocess.run(["bpftool", "prog", "show", "id",
                                       str(_prog_id(eng.obj.prog_fd(name))), "--json"],
                                      capture_output=True, text=True, check=True).stdout
                xlated += json.loads(info)["bytes_xlated"]
        child.stdin.write("g")
        child.stdin.flush()
        assert child.stdout.readline() == "done\n"
        entries = eng.collect()
        child.stdin.close()
        child.wait(10)
    finally:
        eng.close()
        if child.poll() is None:
            child.kill()
    stacks = {tuple(str(f) for f in e.parts["ustack"]): e.count for e in entries
              if e.parts["pid"] == child.pid}
    return stacks, xlated


def _prog_id(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return int(next(line.split()[1] for line in f if line.startswith("prog_id:")))


def test_stack_store_without_bpf_loop_runs_its_rolled_loops_and_keeps_the_same_stacks(
        tmp_path, monkeypatch):
    """A kernel without bpf_loop (before 5.17): its BTF synthesized from this kernel's, the
    enumerator BPF_FUNC_loop renamed, so that libbpf's CO-RE test of the helper (in the
    stack store's memlens_stack_commit) finds none.  The engine's programs then hash and
    clear the frames with rolled loops (the verifier keeps other code: the programs'
    verified size differs), and the child's getppid() calls are counted under the same
    user stacks, CALLS in all, as with bpf_loop."""
    monkeypatch.setenv("MEMLENS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(btfcache, "build_in_background", lambda path: False)
    with_loop, size_with = _user_stacks_of_getppid(tmp_path)
    path = object_path("core/engine.bpf.o")
    made = tmp_path / "min.btf"
    subprocess.run(["bpftool", "gen", "min_core_btf", "/sys/kernel/btf/vmlinux", str(made),
                    path], check=True, capture_output=True)
    data = made.read_bytes()
    assert data.count(b"\0BPF_FUNC_loop\0") == 1, "the min BTF lacks the helper's enumerator"
    os.makedirs(tmp_path / "cache" / "btf", mode=0o700)
    (tmp_path / "cache" / "btf" / btfcache.key(path)).write_bytes(
        data.replace(b"\0BPF_FUNC_loop\0", b"\0BPF_FUNC_lOOp\0"))
    without_loop, size_without = _user_stacks_of_getppid(tmp_path)
    assert sum(with_loop.values()) == CALLS, with_loop
    assert without_loop == with_loop
    assert size_without != size_with
