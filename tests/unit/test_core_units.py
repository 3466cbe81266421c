# SPDX-License-Identifier: GPL-2.0-only
"""Core pieces that need no privileges: BTF-derived record layouts, CLI dispatch and exit
codes, capability parsing, cgroup path formatting."""
from __future__ import annotations

import ctypes
import subprocess

import numpy as np
import pytest

from memlens.core import privileges
from memlens.core.loader import BpfObject
from memlens.core.session import positive_float, positive_int
from memlens.tools.oomkill import cgroup_path
from tests.conftest import memlens_cmd


def test_record_layout_comes_from_the_objects_btf():
    # GIVEN the compiled oomkill object (opening parses ELF+BTF, no privileges needed)
    with BpfObject.open("tools/oomkill/oomkill.bpf.o") as obj:
        # WHEN the shared struct is translated
        dt = obj.struct_dtype("oom_event")
        ct = obj.struct_ctype("oom_event")
        # THEN both match the C layout of oomkill.h
        assert dt.itemsize == ctypes.sizeof(ct) == 624 + 8 + 2 * 32 * 8
        assert dt.fields["trigger_pid"][0] == np.dtype("<u4") and dt.fields["trigger_pid"][1] == 8
        assert dt.fields["victim_comm"][0] == np.dtype("S16")
        assert dt.fields["cgroup"][0] == np.dtype(("S64", (8,)))
        assert ct.victim_comm.offset == dt.fields["victim_comm"][1]
        assert ct.cgroup.offset == dt.fields["cgroup"][1]
        assert "targ_cgroup_v1_memcg" in obj.rodata
        # the whole programs and their twins attached first system wide (core/handover.py)
        assert set(obj.programs()) == {"mark_victim_raw", "mark_victim_raw_handing",
                                       "mark_victim_tp", "mark_victim_tp_handing"}


@pytest.mark.parametrize("obj_path,struct", [("tools/oomkill/oomkill.bpf.o", "oom_event"),
                                             ("core/engine.bpf.o", "engine_event"),
                                             ("tools/mmapsnoop/mmapsnoop.bpf.o", "mmap_event")])
def test_member_offsets_and_sizes_match_the_whole_type(obj_path, struct):
    """BpfObject.member_offset and struct_size (one level of BTF read, for the start-up)
    agree with the whole type made from BTF."""
    with BpfObject.open(obj_path) as obj:
        dt = obj.struct_dtype(struct)
        assert obj.struct_size(struct) == dt.itemsize
        for name in dt.names:
            assert obj.member_offset(struct, name) == dt.fields[name][1], name
        with pytest.raises(Exception, match="no member nope"):
            obj.member_offset(struct, "nope")


def test_cgroup_path_from_leaf_first_names():
    assert cgroup_path([b"envm", b""], 2, False) == "/envm"
    assert cgroup_path([b"c", b"b", b"a", b""], 4, False) == "/a/b/c"
    assert cgroup_path([b""], 1, False) == "/"
    assert cgroup_path([b"h", b"g"], 2, True) == ".../g/h"


def test_capability_parsing():
    root_caps = (1 << 41) - 1
    assert privileges.can_trace(root_caps)
    assert privileges.can_trace(1 << 38 | 1 << 39)       # CAP_PERFMON + CAP_BPF
    assert not privileges.can_trace(1 << 39)              # CAP_BPF alone
    assert not privileges.can_trace(0)


def test_argument_types_reject_nonsense():
    import argparse

    assert positive_float("0.5") == 0.5
    assert positive_int("0x10") == 16
    for bad in ("0", "-1", "abc"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_float(bad)


@pytest.mark.parametrize("argv,code,needle", [
    (["nosuchtool"], 2, "unknown command"),
    (["oomkill", "--nope"], 2, "unrecognized arguments"),
    (["oomkill", "-d", "abc"], 2, "not a number"),
])
def test_cli_usage_errors_are_one_line_exit_2(argv, code, needle):
    r = subprocess.run(memlens_cmd(*argv), capture_output=True, text=True)
    assert r.returncode == code
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_help_lists_every_command_and_tool_help_has_examples():
    r = subprocess.run(memlens_cmd("--help"), capture_output=True, text=True)
    assert r.returncode == 0
    for name in ("check", "doctor", "top", "pmap", "oomkill", "memleak", "mmapsnoop", "brkstack"):
        assert f"  {name} " in r.stdout
    r = subprocess.run(memlens_cmd("oomkill", "--help"), capture_output=True, text=True)
    assert r.returncode == 0 and "examples:" in r.stdout and "memlens oomkill --json" in r.stdout


def test_libbpf_debug_lines_never_reach_python_warnings_do():
    # core/libbpf._debug_filter: a native print function in front of the Python callback
    import os

    from memlens.core import libbpf as L

    if os.uname().machine != "x86_64":
        pytest.skip("the native filter is x86-64 code; elsewhere the callback gets all")
    heard = []

    @L.PRINT_FN
    def cb(level, fmt, va):
        heard.append((level, fmt))
        return 7

    native = L._debug_filter(ctypes.cast(cb, ctypes.c_void_p).value)
    assert native is not None
    printer = ctypes.cast(ctypes.c_void_p(native), L.PRINT_FN)
    assert printer(L.LIBBPF_DEBUG, b"debug %d", None) == 0
    assert printer(L.LIBBPF_WARN, b"warn", None) == 7
    assert printer(L.LIBBPF_INFO, b"info", None) == 7
    assert heard == [(L.LIBBPF_WARN, b"warn"), (L.LIBBPF_INFO, b"info")]


def test_memory_headroom_is_the_nearest_of_memavailable_and_the_memcg_limit(tmp_path):
    from memlens.core import kernel

    (tmp_path / "meminfo").write_text("MemTotal: 4000000 kB\nMemAvailable: 2000000 kB\n")
    proc = tmp_path / "self"
    proc.mkdir()
    root = tmp_path / "cg"
    v1 = root / "memory" / "box"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(str(64 << 20))
    (v1 / "memory.usage_in_bytes").write_text(str(20 << 20))
    (proc / "cgroup").write_text("5:memory:/box\n0::/user.slice\n")
    args = dict(proc_self=str(proc), cgroup_root=str(root), meminfo=str(tmp_path / "meminfo"))
    assert kernel.memory_headroom(**args) == 44 << 20            # v1 limit nearer
    v2 = root / "user.slice"
    v2.mkdir()
    (v2 / "memory.max").write_text(str(30 << 20) + "\n")
    (v2 / "memory.current").write_text(str(10 << 20))
    assert kernel.memory_headroom(**args) == 20 << 20            # v2 nearer still
    (v2 / "memory.max").write_text("max\n")
    (v1 / "memory.limit_in_bytes").write_text(str(1 << 50))
    assert kernel.memory_headroom(**args) == 2000000 * 1024      # no limit: MemAvailable


def test_maps_are_preallocated_where_the_kernel_refuses_allocating_ones(monkeypatch):
    """A kernel that refuses hash maps without preallocation in tracing programs (before
    6.1): the flag is cleared from the maps the object declares that way (unwind_procs),
    and not set on the others."""
    from memlens.core import loader

    monkeypatch.setattr(loader, "hash_maps_may_allocate", lambda: False)
    obj = loader.BpfObject.open("core/engine.bpf.o")
    try:
        assert obj.map_spec("unwind_procs")[4] & loader.BPF_F_NO_PREALLOC
        obj.allocate_on_insert("unwind_procs", "counts", "stacks")
        assert [obj.map_spec(n)[4] for n in ("unwind_procs", "counts", "stacks")] == [0, 0, 0]
    finally:
        obj.close()
    monkeypatch.setattr(loader, "hash_maps_may_allocate", lambda: True)
    obj = loader.BpfObject.open("core/engine.bpf.o")
    try:
        obj.allocate_on_insert("unwind_procs", "counts", "stacks")
        assert [obj.map_spec(n)[4] for n in ("unwind_procs", "counts", "stacks")] == [1, 1, 1]
    finally:
        obj.close()


def test_losses_seen_in_user_space_are_reported_and_totalled_once():
    from memlens.core.drops import Losses

    losses = Losses()
    losses.count("events", "left in the ring", 5)
    losses.count("events", "left in the ring", 0)
    assert losses.new() == [{"type": "lost", "what": "events", "reason": "left in the ring",
                             "count": 5, "total": 5}]
    assert losses.new() == []
    losses.count("events", "left in the ring", 2)
    assert [r["count"] for r in losses.new()] == [2]
    assert losses.totals() == {"events": 7}


def test_losses_of_a_full_map_carry_the_hint_of_its_option():
    """A kind of loss with a hint (the option sizing the map that was full) carries it in
    each of its records; the others carry none.  The drops map as recorded from the kernel:
    per-CPU u64 counters by index (2 = stack map full, 4 = map full, 0 = ring full)."""
    import struct

    from memlens.core.drops import Losses

    per_cpu = {2: (3, 4), 0: (1, 0)}

    class Drops:
        def lookup(self, key: bytes) -> bytes:
            return struct.pack("<2Q", *per_cpu.get(int.from_bytes(key, "little"), (0, 0)))

    class Obj:
        def has_map(self, name: str) -> bool:
            return name == "drops"

        def map(self, name: str) -> Drops:
            return Drops()

    losses = Losses(Obj(), hints={2: "raise --stack-storage-size, now 16",
                                  4: "raise --max-keys, now 10240"})
    assert losses.new() == [
        {"type": "lost", "what": "events", "reason": "ring buffer full", "count": 1,
         "total": 1},
        {"type": "lost", "what": "stacks", "reason": "stack map full", "count": 7,
         "total": 7, "hint": "raise --stack-storage-size, now 16"}]


def test_heap_trim_gives_freed_heap_pages_back():
    """glibc keeps freed heap pages once its mmap threshold has risen (a large block freed
    first): fifty 1 MiB blocks freed but for the last stay in the RSS until heap.trim().
    In a child: a clean heap, and the trim's once-a-second bound starts afresh."""
    import subprocess
    import sys

    child = r"""
import sys
from memlens.core import heap

def rss_anon_kb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("RssAnon:"))

big = bytearray(8 << 20); del big          # glibc's mmap threshold rises to 8 MiB
blocks = [bytearray(1 << 20) for _ in range(50)]   # now from the heap, touched
keep = blocks[-1]; del blocks                        # the top block keeps the heap's end
before = rss_anon_kb()
heap.trim()
after = rss_anon_kb()
heap.trim()                                          # within a second: not again
print(before, after)
"""
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                         check=True).stdout.split()
    before, after = int(out[0]), int(out[1])
    assert before - after > 30_000, (before, after)
