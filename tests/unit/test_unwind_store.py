# SPDX-License-Identifier: GPL-2.0-only
"""The unwinder's user side (memlens.core.unwind.store) on fake maps, no BPF: the entries it
writes for real processes (this one and a child) against /proc/PID/maps and the tables
themselves as witnesses; one extent per file shared by every process; the memory bound;
what is freed when a process is gone; requests served by the loading thread."""
from __future__ import annotations

import mmap
import os
import struct
import subprocess
import time

import numpy as np
import pytest

from memlens.core.symbols import parse_maps
from memlens.core.unwind import cfi
from memlens.core.unwind.store import (
    FILE_KEY,
    FILE_VALUE,
    MAPPING_DTYPE,
    MAX_MAPS,
    NAME_DEPTH,
    NAME_LEN,
    PROC_HEADER,
    REQUEST_DTYPE,
    VMA_HEADER,
    UnwindStore,
    kernel_dev,
)
from memlens.core.unwind.tables import DiskCache, TableCache


class FakeRing:
    def __init__(self):
        self.pending: list = []

    def consume_fixed(self, dtype):
        out = np.array(self.pending, dtype=dtype)
        self.pending = []
        return out

    def consume_records(self):
        out, self.pending = self.pending, []
        return out


class FakeMap:
    def __init__(self, max_entries: int = 1, fd: int = -1):
        self.max_entries, self.fd = max_entries, fd
        self.entries: dict[bytes, bytes] = {}
        self.ring = FakeRing()

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        self.entries[bytes(key)] = bytes(value)

    def delete(self, key: bytes) -> bool:
        return self.entries.pop(bytes(key), None) is not None

    def ringbuf(self) -> FakeRing:
        return self.ring


class FakeObj:
    """The maps UnwindStore uses; the rows array is a memfd (mmapped as the real one)."""

    def __init__(self, rows: int):
        self.fd = os.memfd_create("unwind_rows")
        size = (rows * cfi.ROW_DTYPE.itemsize + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1)
        os.ftruncate(self.fd, size)
        self.maps = {"unwind_rows": FakeMap(rows, self.fd), "unwind_procs": FakeMap(),
                     "unwind_files": FakeMap(), "unwind_requests": FakeMap(),
                     "unwind_vmas": FakeMap(), "unwind_gen": FakeMap()}

    def map(self, name: str) -> FakeMap:
        return self.maps[name]

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def cache(tmp_path):
    return TableCache(disk=DiskCache(str(tmp_path / "cache")))


@pytest.fixture
def child():
    p = subprocess.Popen(["sleep", "60"])
    try:
        # until the exec is done and the dynamic loader has mapped libc (sleep's maps
        # without libc yet once, under load: the exec is done before ld.so's work)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(f"/proc/{p.pid}/maps") as f:
                if "/libc.so" in f.read():
                    break
            time.sleep(0.001)
        yield p
    finally:
        p.kill()
        p.wait()


def make_store(cache, rows: int = 1 << 21):
    obj = FakeObj(rows)
    store = UnwindStore(obj, cache)
    return obj, store


def entry(obj: FakeObj, pid: int):
    raw = obj.maps["unwind_procs"].entries[pid.to_bytes(4, "little")]
    exe_ino, n, _ = PROC_HEADER.unpack_from(raw)
    maps = np.frombuffer(raw, MAPPING_DTYPE, count=MAX_MAPS, offset=PROC_HEADER.size)[:n]
    return exe_ino, maps


def exec_mappings(pid: int):
    with open(f"/proc/{pid}/maps") as f:
        return [m for m in parse_maps(f.read()) if "x" in m.perms]


def libc_mapping(pid: int):
    return next(m for m in exec_mappings(pid) if "/libc.so" in m.path)


def test_each_table_written_bumps_the_generation(cache):
    """The kernel side's per-CPU row cache takes a slot only of the current generation of
    the tables (memlens.bpf.h): each table's rows written bump it, so a slot made from an
    extent since freed and given to another file is not taken."""
    obj, store = make_store(cache)
    try:
        gen = obj.maps["unwind_gen"].entries
        assert not gen  # nothing written: 0, no slot taken
        assert store.load_process(os.getpid())
        first = int.from_bytes(gen[b"\0" * 4], "little")
        assert first == len(store._extents) > 0
        ext = store._extents[next(iter(store._extents))]
        # a table freed and its rows written again (another file, the same extent)
        ext.procs.clear()
        store.collect_garbage(need_room=True)
        assert store.load_process(os.getpid())
        assert int.from_bytes(gen[b"\0" * 4], "little") > first
    finally:
        store.close()
        obj.close()


def test_rows_written_through_windows_that_do_not_stay_mapped(cache):
    """Each table's rows are written through a mapping of the pages its extent covers, made
    for the write only: the whole array mapped for the run (16 MiB, all its pages mapped at
    once by the kernel) counted in the tool's RSS.  The file itself is the witness: every
    extent's bytes (most start mid-page) are its table's rows, and no mapping of the
    array is left."""
    obj, store = make_store(cache)
    try:
        assert store.load_process(os.getpid())
        assert len(store._extents) >= 2
        by_key = {}
        for m in exec_mappings(os.getpid()):
            t = cache.get(m.path) if m.path.startswith("/") else None
            if t is not None:
                by_key[t.key] = t
        unaligned = 0
        for key, ext in store._extents.items():
            size = ext.count * cfi.ROW_DTYPE.itemsize
            raw = os.pread(obj.fd, size, ext.start * cfi.ROW_DTYPE.itemsize)
            assert raw == by_key[key].rows.tobytes()
            unaligned += bool(ext.start * cfi.ROW_DTYPE.itemsize % mmap.PAGESIZE)
        assert unaligned  # a window's offset into its first page was exercised
        with open("/proc/self/maps") as f:
            assert "unwind_rows" not in f.read()
    finally:
        store.close()
        obj.close()


def test_entry_of_this_process(cache):
    obj, store = make_store(cache)
    try:
        assert store.load_process(os.getpid())
        exe_ino, maps = entry(obj, os.getpid())
        assert exe_ino == os.stat("/proc/self/exe").st_ino
        mine = exec_mappings(os.getpid())
        assert len(maps) == min(len(mine), MAX_MAPS)
        assert (maps["start"][1:] > maps["start"][:-1]).all()  # u64: [vsyscall] last
        m = libc_mapping(os.getpid())
        (row,) = maps[maps["start"] == m.start]
        table = cache.get(m.path)
        assert int(row["end"]) == m.end
        assert int(row["bias"]) == table.bias(m.start, m.pgoff)
        start, count = int(row["row_start"]), int(row["row_count"])
        assert count == len(table.rows)
        assert (store.read_rows(start, count) == table.rows).all()
        # libc is published by device and inode for the kernel side's vma lookups
        st = os.stat(m.path)
        key = FILE_KEY.pack(st.st_ino, kernel_dev(st.st_dev), 0)
        seg_start, seg_end, delta, fstart, fcount, fvaddr = FILE_VALUE.unpack(
            obj.maps["unwind_files"].entries[key])
        off, filesz, vaddr = table.exec_seg
        assert (fstart, fcount) == (start, count)
        assert seg_start <= m.pgoff < seg_end and delta == off - vaddr and fvaddr == vaddr
        # the kernel side's bias from the vma equals the entry's
        assert m.start - m.pgoff + delta == int(row["bias"])
    finally:
        store.close()
        obj.close()


def test_a_file_mapped_by_two_processes_has_one_extent(cache, child):
    obj, store = make_store(cache)
    try:
        assert store.load_process(os.getpid()) and store.load_process(child.pid)
        _, mine = entry(obj, os.getpid())
        _, theirs = entry(obj, child.pid)
        a = mine[mine["start"] == libc_mapping(os.getpid()).start][0]
        b = theirs[theirs["start"] == libc_mapping(child.pid).start][0]
        assert (a["row_start"], a["row_count"]) == (b["row_start"], b["row_count"])
        used = store.stats()["rows_used"]
        assert store.load_process(child.pid)  # again: nothing new
        assert store.stats()["rows_used"] == used
    finally:
        store.close()
        obj.close()


def test_a_gone_process_frees_what_only_it_used(cache, child):
    obj, store = make_store(cache)
    try:
        store.load_process(os.getpid())
        before = store.stats()
        store.load_process(child.pid)
        sleep_path = next(m.path for m in exec_mappings(child.pid) if m.path.endswith("sleep"))
        grew = store.stats()["rows_used"] - before["rows_used"]
        assert grew == len(cache.get(sleep_path).rows)   # only sleep's own table is new
        child.kill()
        child.wait()
        assert store.collect_garbage() == grew
        assert child.pid.to_bytes(4, "little") not in obj.maps["unwind_procs"].entries
        st = os.stat(sleep_path)
        assert FILE_KEY.pack(st.st_ino, kernel_dev(st.st_dev), 0) \
            not in obj.maps["unwind_files"].entries
        assert store.stats()["rows_used"] == before["rows_used"]
        # the freed rows are reused
        store.load_process(os.getpid())
        assert store.stats()["rows_used"] == before["rows_used"]
    finally:
        store.close()
        obj.close()


def test_memory_bound(cache):
    libc = libc_mapping(os.getpid())
    n = len(cache.get(libc.path).rows)
    obj, store = make_store(cache, rows=n - 1)   # everything but libc may fit
    try:
        assert store.load_process(os.getpid())
        _, maps = entry(obj, os.getpid())
        (row,) = maps[maps["start"] == libc.start]
        assert int(row["row_count"]) == 0           # walked by frame pointers,
        assert int(row["row_start"]) == 0xFFFFFFFF  # and counted as a fallback
        assert libc.path in store.files_not_fitting
        assert store.stats()["rows_used"] <= n - 1
    finally:
        store.close()
        obj.close()


def test_load_file_is_kept_for_a_command_to_come(cache):
    obj, store = make_store(cache)
    try:
        path = libc_mapping(os.getpid()).path
        assert store.load_file(path)
        assert store.collect_garbage() == 0          # no process uses it: still kept
        st = os.stat(path)
        assert FILE_KEY.pack(st.st_ino, kernel_dev(st.st_dev), 0) \
            in obj.maps["unwind_files"].entries
    finally:
        store.close()
        obj.close()


def test_requests_are_served_by_the_loading_thread(cache, child):
    obj, store = make_store(cache)
    try:
        ring = obj.maps["unwind_requests"].ring
        ring.pending = [(child.pid, 1), (child.pid, 2), (999_999_999, 1)]
        assert store.poll() == 2                     # the same process once
        assert store.wait_idle(30)
        assert child.pid.to_bytes(4, "little") in obj.maps["unwind_procs"].entries
        assert store.poll() == 0
    finally:
        store.close()
        obj.close()
    assert REQUEST_DTYPE.itemsize == 8 and struct.calcsize("<QII") == PROC_HEADER.size


def test_stack_unwind_choice(monkeypatch):
    """--stack-unwind: fp never walks with tables; auto does where the kernel can and
    quietly not where it cannot; dwarf there is exit 4 naming what is missing."""
    from memlens.core import unwind as store  # choose() lives there, without numpy
    from memlens.errors import KernelLacks, UsageError

    monkeypatch.setattr(store, "kernel_support", lambda: (True, ""))
    assert store.choose("auto") and store.choose("dwarf") and not store.choose("fp")
    monkeypatch.setattr(store, "kernel_support",
                        lambda: (False, "the kernel lacks the BPF helper bpf_loop (5.17)"))
    assert not store.choose("auto") and not store.choose("fp")
    with pytest.raises(KernelLacks, match="bpf_loop"):
        store.choose("dwarf")
    with pytest.raises(UsageError):
        store.choose("frames")


def test_choosing_the_walk_imports_no_numpy():
    """A run without the walk (-fp, or no user stack) decides and configures it without
    importing numpy (~0.1 s of start-up): the package's choose/configure are numpy-free."""
    import subprocess
    import sys

    code = ("import sys; from memlens.core import unwind; unwind.choose('fp'); "
            "print('numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_a_truncated_stack_ends_with_a_marker_frame():
    """The unwinder's mark (MEMLENS_STACK_TRUNCATED, last) becomes a [truncated stack]
    frame after the resolved ones, and is not itself an address left unsymbolized."""
    import ctypes

    from memlens.core.stackresolve import TRUNCATED, TRUNCATED_IP, StackResolver

    libc = ctypes.CDLL(None)
    ips = [ctypes.cast(libc.malloc, ctypes.c_void_p).value + 4,
           ctypes.cast(libc.free, ctypes.c_void_p).value + 4]

    class Stacks:
        def stack(self, stack_id):
            return [*ips, TRUNCATED_IP] if stack_id == 1 else list(ips)

    r = StackResolver(Stacks())
    marked, plain = r.user_frames(os.getpid(), 1), r.user_frames(os.getpid(), 2)
    assert [str(f) for f in marked[:-1]] == [str(f) for f in plain]
    assert str(marked[-1]) == TRUNCATED and len(marked) == 3
    assert r.lost_symbols == 0


def vma_record(pid: int, m, path: str | None, *, ino: int | None = None) -> bytes:
    """struct unwind_vma_rec as the kernel side sends it: the file's path (within its
    filesystem, leaf first) when `path` is given."""
    st = os.stat(m.path)
    parts = [p.encode() for p in reversed(path.strip("/").split("/"))] if path else []
    head = VMA_HEADER.pack(pid, kernel_dev(st.st_dev), st.st_ino if ino is None else ino,
                           m.start, m.end, m.pgoff, 0xffff888000000000, len(parts),
                           1 if path else 0)
    if not path:
        return head
    return head + b"".join(p.ljust(NAME_LEN, b"\0") for p in parts) + \
        bytes(NAME_LEN * (NAME_DEPTH - len(parts)))


def test_mappings_sent_by_the_kernel_side_outlive_the_process(cache, child):
    """The kernel side sends each mapping its walk met (a file's path the first time):
    mappings(pid) gives them back, placed under the file's mount and checked by inode, the
    process gone; and a stack of the gone process is named through them."""
    from memlens.core.stackresolve import StackResolver

    obj, store = make_store(cache)
    m = libc_mapping(child.pid)
    real = os.path.realpath(m.path)
    ring = obj.maps["unwind_vmas"].ring
    try:
        ring.pending = [vma_record(child.pid, m, real)]
        (got,) = store.mappings(child.pid)
        assert (got.start, got.end, got.pgoff, got.inode) == (m.start, m.end, m.pgoff,
                                                                m.inode)
        assert os.path.samefile(got.path, m.path)
        # the same file for another process: sent without its path, known by its inode
        ring.pending = [vma_record(4242, m, None)]
        assert [x.start for x in store.mappings(4242)] == [m.start]
        # a path whose inode is not the file's is not taken
        ring.pending = [vma_record(4243, m, "/etc/hostname", ino=m.inode + 1)]
        assert store.mappings(4243) == []
        # its table, for the next process running it, is loaded by the loading thread
        assert store.wait_idle()
        assert any(e.learned for e in store._extents.values())
        child.kill()
        child.wait()
        addr = m.start + 16
        res = StackResolver()
        (bare,) = res.resolve_user(child.pid, [addr])
        assert str(bare) == f"{addr:#x} [unknown]" and res.unsymbolized == 1
        res = StackResolver()
        res.mappings = store.mappings
        (f,) = res.resolve_user(child.pid, [addr])
        assert f.module == os.path.basename(m.path) and f.file_offset == m.pgoff + 16
        assert res.unsymbolized == 0
    finally:
        store.close()
        obj.close()
