# SPDX-License-Identifier: GPL-2.0-only
"""The BPF unwinder's maps (bpf/include/memlens.bpf.h, MEMLENS_UNWIND) filled from user space.

    UnwindStore.configure(obj, "auto")     # before load: size the rows, switch the walk on
    obj.load()
    store = UnwindStore(obj)
    store.load_process(pid)                # a target known before attaching
    store.poll()                           # each tick: processes the kernel side asked for

`unwind_rows` is one array of 8-byte rows (cfi.ROW_DTYPE) mapped into this process: a file's
table is copied in once, as one extent, and every process mapping that file points at it.
`unwind_procs` gives each process its executable mappings (start, end, load bias, extent);
`unwind_files` gives each loaded file's extent by device and inode, for the kernel side to
find a mapping it does not know yet from the process's vma (a new process, exec, dlopen:
whole stacks at once wherever their files' tables are loaded, libc's for one).
Each mapping so found is sent once (`unwind_vmas`: process, range, file offset, device and
inode, and the file's path the first time): `mappings(pid)` gives them, with the maps this
store read, to the stack resolver, which so names the frames of a process gone before its
/proc/PID/maps could be read (a short command: `ls` lives a millisecond or two).
The kernel side asks (`unwind_requests`) for a process it meets without an entry, or whose
pc falls outside its known mappings (dlopen, exec); until its entry is written its stacks are
walked by frame pointers, counted as a fallback.  Requests are served by a thread of their
own: building a large library's table takes seconds (tables.py), and the tool's loop must
keep reading its maps meanwhile.

Memory is bounded: the rows array is sized at load (ROW_CAPACITY rows by default, 16 MiB),
extents of files no live process maps are freed when room is needed, and a file that still
does not fit is walked by frame pointers (counted in stats()).
"""
from __future__ import annotations

import _queue
import _thread
import mmap
import os
import struct
import time
from collections import OrderedDict

from memlens.core.lazy import np
from memlens.core.symbols import Mapping, parse_maps
from memlens.errors import MemlensError

from . import MODES, ROW_CAPACITY, choose, configure, kernel_support  # noqa: F401
from .tables import ROW_SIZE, TableCache, UnwindTable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    import numpy as np

# Nothing here imports numpy before a process's entry is written (load_process with its
# tables in memory or in the disk cache): memleak -p writes it before attaching, and
# numpy's import (~0.1-0.2 s of CPU) was then longer than the BPF load beside it.  numpy
# comes with the first poll (the requests ring) or a table built (cfi).

MAX_MAPS = 128                  # MEMLENS_UNWIND_MAX_MAPS
GC_S = 5.0                      # processes gone are forgotten this often (rows, entries)
REQUEST_NOT_LOADED, REQUEST_UNMAPPED = 1, 2
NOT_LOADED = 0xFFFFFFFF         # a mapping's row_start when its table is past the bound

MAPPING = struct.Struct("<QQQII")    # start, end, bias, row_start, row_count
PROC_HEADER = struct.Struct("<QII")  # exe_ino, nmaps, pad
PROC_SIZE = PROC_HEADER.size + MAX_MAPS * MAPPING.size
_DTYPES = {  # numpy dtypes, made at first use (module __getattr__)
    "MAPPING_DTYPE": [("start", "<u8"), ("end", "<u8"), ("bias", "<u8"),
                      ("row_start", "<u4"), ("row_count", "<u4")],
    "REQUEST_DTYPE": [("tgid", "<u4"), ("reason", "<u4")],
}


def __getattr__(name: str):
    if name in _DTYPES:
        dt = globals()[name] = np.dtype(_DTYPES[name])
        return dt
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
FILE_KEY = struct.Struct("<QII")      # ino, kernel dev_t, pad
FILE_VALUE = struct.Struct("<QQqIIQ")  # seg_start, seg_end, delta, row_start, row_count,
                                       # vaddr
# struct unwind_vma_rec: tgid, dev, ino, start, end, off, mm, depth, complete, then the
# path's components (leaf first) when depth > 0
VMA_HEADER = struct.Struct("<IIQQQQQII")
NAME_DEPTH, NAME_LEN = 16, 64   # MEMLENS_UNWIND_NAME_DEPTH, _LEN
MAX_VMA_PROCS = 4096            # processes whose mappings are kept (oldest dropped)
MAX_FILE_PATHS = 16384


def doctor_facts() -> dict[str, Any]:
    """What `memlens doctor` says of user stack unwinding: whether the kernel can, the
    memory each tool's tables may take, and the disk cache."""
    from .tables import DiskCache

    ok, why = kernel_support()
    disk = DiskCache()
    files, size = 0, 0
    if disk.dir and os.path.isdir(disk.dir):
        for e in os.scandir(disk.dir):
            if e.name.endswith(".rows"):
                files += 1
                size += e.stat().st_size
    return {"stack_unwind": "dwarf (.eh_frame tables)" if ok else f"fp only: {why}",
            "unwind_rows_bytes": ROW_CAPACITY * ROW_SIZE if ok else 0,
            "unwind_cache": {"dir": disk.dir, "files": files, "bytes": size,
                             "max_bytes": disk.max_bytes}}


def doctor_line(facts: dict[str, Any]) -> str:
    """doctor's text: `dwarf (.eh_frame tables), 16 MiB a tool; cache 12 files 9.8 MB`."""
    if not facts["unwind_rows_bytes"]:
        return facts["stack_unwind"]
    c = facts["unwind_cache"]
    cache = (f"cache {c['files']} files {c['bytes'] / 1e6:.1f} of {c['max_bytes'] >> 20} MB"
             if c["dir"] else "no disk cache")
    return f"{facts['stack_unwind']}, {facts['unwind_rows_bytes'] >> 20} MiB a tool; {cache}"


def _read_mounts(path: str = "/proc/self/mountinfo") -> list[tuple[int, str, str]]:
    """(kernel dev, root within the filesystem, mount point) of each mount."""
    out = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) < 5:
            continue
        major, minor = (int(x) for x in parts[2].split(":"))
        unesc = [p.encode().decode("unicode_escape") if "\\" in p else p
                 for p in parts[3:5]]
        out.append(((major << 20) | minor, unesc[0], unesc[1]))
    return out


def kernel_dev(st_dev: int) -> int:
    """The kernel's dev_t (MKDEV: major << 20 | minor) of a stat's st_dev, as the BPF side
    reads inode->i_sb->s_dev."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


class _Extent:
    __slots__ = ("start", "count", "procs", "files", "pinned", "learned")

    def __init__(self, start: int, count: int):
        self.start, self.count = start, count
        self.procs: set[int] = set()
        self.files: set[bytes] = set()   # unwind_files keys pointing at it
        self.pinned = False              # loaded for a command to come (load_file)
        self.learned = False             # a file met in the stacks of a process gone


class UnwindStore:
    """The unwinder's maps of one loaded BPF object."""

    @staticmethod
    def configure(obj, mode: str, rows: int = ROW_CAPACITY) -> bool:
        """Before load: switch the walk on (True) or leave the kernel's (False)."""
        return configure(obj, mode, rows)

    @staticmethod
    def default_cache() -> TableCache:
        """The tables a store made without one uses (shared by the process's stores)."""
        return TableCache.shared()

    def __init__(self, obj, cache: TableCache | None = None, proc: str = "/proc"):
        self.obj = obj
        self.proc = proc
        self.cache = cache or self.default_cache()
        self.rows_map = obj.map("unwind_rows")
        self.procs_map = obj.map("unwind_procs")
        self.files_map = obj.map("unwind_files")
        # the tables' generation, bumped after any rows are written: the kernel side's
        # per-CPU row cache takes no slot of an older one (an extent freed may be given to
        # another file)
        self._gen_map = obj.map("unwind_gen")
        self._gen = 0
        self._ring = obj.map("unwind_requests").ringbuf()
        self.capacity = self.rows_map.max_entries
        # The rows are written through a mapping of the pages an extent covers, made for
        # the write and unmapped after it (_write_rows): a BPF array's mmap maps all of
        # its pages at once (remap_vmalloc_range), so the whole 16 MiB array mapped for
        # the run counted 16 MiB in this process's RSS from the start (memleak -p's
        # peak 53 MB, of which 17 were this), for the ~0.5 MB libc's table takes.
        # table.key -> its extent (the rows are in the BPF array: no table kept here)
        self._extents: dict[tuple, _Extent] = {}
        self._free: list[list[int]] = [[0, self.capacity]]
        self._proc_extents: dict[int, set[tuple]] = {}
        self.processes_loaded = 0
        self.files_without_table: set[str] = set()
        self.files_not_fitting: set[str] = set()
        self.build_s = 0.0
        self._lock = _thread.allocate_lock()          # the allocator, the maps, the rows
        # a PID to load, or a file's path (a table for the next process that maps it)
        self._queue: _queue.SimpleQueue[int | str | None] = _queue.SimpleQueue()
        self._pending: set[int | str] = set()
        self._closing = False
        self._worker: Any = None  # a threading.Thread (threading imported with it)
        self._last_gc = time.monotonic()
        # mappings kept past their process: tgid -> start -> Mapping (what the kernel side
        # sent, what load_process read); a file's path by (kernel dev, inode)
        self._vma_ring = obj.map("unwind_vmas").ringbuf()
        self._vmas: OrderedDict[int, dict[int, Mapping]] = OrderedDict()
        self._file_paths: dict[tuple[int, int], str | None] = {}
        self._mounts: list[tuple[int, str, str]] | None = None
        self._vma_lock = _thread.allocate_lock()
        self.vmas_unnamed = 0   # mappings whose file could not be placed (stats)

    # -- rows allocation -------------------------------------------------------------------
    def _alloc(self, count: int) -> int | None:
        for i, (start, size) in enumerate(self._free):
            if size >= count:
                if size == count:
                    del self._free[i]
                else:
                    self._free[i] = [start + count, size - count]
                return start
        return None

    def _release(self, ext: _Extent) -> None:
        self._free.append([ext.start, ext.count])
        self._free.sort()
        merged: list[list[int]] = []
        for start, size in self._free:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1][1] += size
            else:
                merged.append([start, size])
        self._free = merged

    def _extent(self, table: UnwindTable) -> _Extent | None:
        ext = self._extents.get(table.key)
        if ext is not None:
            return ext
        n = table.count
        start = self._alloc(n)
        if start is None:
            self.collect_garbage(need_room=True)
            start = self._alloc(n)
            if start is None:
                self.files_not_fitting.add(table.path)
                return None
        self._write_rows(start, table.raw)
        self._gen = (self._gen + 1) & 0xFFFFFFFF or 1
        self._gen_map.update(b"\0" * 4, self._gen.to_bytes(8, "little"))
        ext = self._extents[table.key] = _Extent(start, n)
        return ext

    def _window(self, start: int, count: int) -> tuple[mmap.mmap, int]:
        """A shared mapping of the array's pages holding rows [start, start + count), and
        the byte offset of row `start` in it."""
        size = ROW_SIZE
        first = start * size
        base = first & ~(mmap.ALLOCATIONGRANULARITY - 1)
        end = (first + count * size + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1)
        mm = mmap.mmap(self.rows_map.fd, end - base, mmap.MAP_SHARED,
                       mmap.PROT_READ | mmap.PROT_WRITE, offset=base)
        return mm, first - base

    def _write_rows(self, start: int, raw: bytes) -> None:
        if not raw:
            return
        mm, at = self._window(start, len(raw) // ROW_SIZE)
        try:
            mm[at:at + len(raw)] = raw
        finally:
            mm.close()

    def read_rows(self, start: int, count: int) -> np.ndarray:
        """A copy of rows [start, start + count) as the kernel side reads them."""
        from . import cfi

        if count <= 0:
            return np.zeros(0, cfi.ROW_DTYPE)
        mm, at = self._window(start, count)
        try:
            return np.frombuffer(mm[at:at + count * ROW_SIZE], cfi.ROW_DTYPE).copy()
        finally:
            mm.close()

    def collect_garbage(self, need_room: bool = False) -> int:
        """Forget processes that are gone; free the extents no process uses (need_room:
        also those learned from processes gone, kept till then for the next process
        running the same program).  Returns the rows freed."""
        freed = 0
        for pid in [p for p in self._proc_extents if not os.path.exists(f"{self.proc}/{p}")]:
            self.forget(pid)
        for key, ext in list(self._extents.items()):
            if not ext.procs and not ext.pinned and (need_room or not ext.learned):
                for fkey in ext.files:
                    self.files_map.delete(fkey)
                self._release(ext)
                del self._extents[key]
                freed += ext.count
        return freed

    # -- processes -------------------------------------------------------------------------
    def forget(self, pid: int) -> None:
        self.procs_map.delete(pid.to_bytes(4, "little"))
        for key in self._proc_extents.pop(pid, set()):
            ext = self._extents.get(key)
            if ext is not None:
                ext.procs.discard(pid)

    def load_process(self, pid: int) -> bool:
        """Read the process's executable mappings and write its entry (tables built or
        found in the cache).  False when the process cannot be read (gone)."""
        with self._lock:
            if self._closing:
                return False
            return self._load_process(pid)

    def _load_process(self, pid: int) -> bool:
        try:
            with open(f"{self.proc}/{pid}/maps") as f:
                text = f.read()
            exe_ino = os.stat(f"{self.proc}/{pid}/exe").st_ino
        except OSError:
            return False
        if not text:
            return False  # a zombie
        t0 = time.perf_counter()
        entries = []
        used: set[int] = set()
        for m in parse_maps(text):
            if "x" not in m.perms:
                continue
            if m.path and not m.path.startswith("[") and not m.deleted:
                self._keep_mapping(pid, m)
            row_start = row_count = bias = 0
            if m.path and not m.path.startswith("["):
                path = self._open_path(pid, m)
                table = self.cache.get(path) if path else None
                if table is None:
                    self.files_without_table.add(m.path)
                else:
                    b = table.bias(m.start, m.pgoff)
                    ext = self._extent(table) if b is not None else None
                    if ext is None:
                        row_start = NOT_LOADED  # its frames by frame pointers, counted
                    else:
                        row_start, row_count, bias = ext.start, ext.count, b
                        ext.procs.add(pid)
                        used.add(table.key)
                        self._publish(table, ext, path)
            entries.append((m.start, m.end, bias & 0xFFFFFFFFFFFFFFFF, row_start, row_count))
        if len(entries) > MAX_MAPS:
            # keep the mappings with tables first: the others are walked by frame pointers
            # whether listed or not
            entries.sort(key=lambda e: e[4] == 0)
            entries = entries[:MAX_MAPS]
        entries.sort()
        value = (PROC_HEADER.pack(exe_ino, len(entries), 0)
                 + b"".join(MAPPING.pack(*e) for e in entries)
                 + bytes((MAX_MAPS - len(entries)) * MAPPING.size))
        old = self._proc_extents.get(pid, set())
        try:
            self.procs_map.update(pid.to_bytes(4, "little"), value)
        except MemlensError:
            self.collect_garbage()  # the map is full of processes gone since
            try:
                self.procs_map.update(pid.to_bytes(4, "little"), value)
            except MemlensError:
                return False
        for key in old - used:
            ext = self._extents.get(key)
            if ext is not None:
                ext.procs.discard(pid)
        self._proc_extents[pid] = used
        self.processes_loaded += 1
        self.build_s += time.perf_counter() - t0
        return True

    def _publish(self, table: UnwindTable, ext: _Extent, path: str) -> None:
        """The file's entry in unwind_files (by its device and inode), once."""
        if table.exec_seg is None:
            return
        try:
            st = os.stat(path)
        except OSError:
            return
        key = FILE_KEY.pack(st.st_ino, kernel_dev(st.st_dev), 0)
        if key in ext.files:
            return
        off, filesz, vaddr = table.exec_seg
        self.files_map.update(key, FILE_VALUE.pack(off & ~(mmap.PAGESIZE - 1), off + filesz,
                                                   off - vaddr, ext.start, ext.count, vaddr))
        ext.files.add(key)

    def load_file(self, path: str) -> bool:
        """A file's table, before any process maps it (a command about to run): its
        frames unwind from the command's first event.  Kept until close."""
        return self._add_file(path, pinned=True)

    def _add_file(self, path: str, pinned: bool) -> bool:
        """A file's table in the kernel's maps without a process: pinned (kept until
        close) or learned (freed when room is needed)."""
        with self._lock:
            if self._closing:
                return False
            table = self.cache.get(path)
            ext = self._extent(table) if table is not None else None
            if table is None or ext is None:
                return False
            if pinned:
                ext.pinned = True
            else:
                ext.learned = True
            self._publish(table, ext, path)
            return True

    def _open_path(self, pid: int, m) -> str | None:
        """A path that opens the mapped file itself (symbols.py's rules: the plain path when
        it is the same inode, else through the process's root or map_files)."""
        for cand in (m.path, f"{self.proc}/{pid}/root{m.path}",
                     f"{self.proc}/{pid}/map_files/{m.start:x}-{m.end:x}"):
            if m.deleted and cand == m.path:
                continue
            try:
                if os.stat(cand).st_ino == m.inode:
                    return cand
            except OSError:
                continue
        return None if m.deleted else m.path

    # -- mappings that outlive their process ----------------------------------------------
    def _keep_mapping(self, pid: int, m: Mapping) -> None:
        with self._vma_lock:
            maps = self._vmas.get(pid)
            if maps is None:
                if len(self._vmas) >= MAX_VMA_PROCS:
                    self._vmas.popitem(last=False)
                maps = self._vmas[pid] = {}
            elif maps.get(m.start) == m:
                return
            # an exec (a new mm) or an munmap+mmap: what it overlaps is gone
            for start in [a for a, o in maps.items() if o.start < m.end and m.start < o.end]:
                del maps[start]
            maps[m.start] = m

    def pids(self) -> set[int]:
        """The processes whose mappings are kept."""
        with self._vma_lock:
            return set(self._vmas)

    def forget_mappings(self, pid: int) -> None:
        """Drop the mappings kept of `pid` (its process gone and its last stacks reported:
        the engine says when), so a long run keeps what the live processes need."""
        with self._vma_lock:
            self._vmas.pop(pid, None)

    def _drain_vmas(self) -> None:
        for rec in self._vma_ring.consume_records():
            if len(rec) < VMA_HEADER.size:
                continue
            tgid, dev, ino, start, end, off, _mm, depth, complete = VMA_HEADER.unpack_from(rec)
            key = (dev, ino)
            if depth:
                names = [rec[VMA_HEADER.size + i * NAME_LEN:
                             VMA_HEADER.size + (i + 1) * NAME_LEN].split(b"\0", 1)[0]
                         for i in range(min(depth, NAME_DEPTH))]
                if len(self._file_paths) >= MAX_FILE_PATHS:
                    self._file_paths.clear()
                self._file_paths[key] = self._place(
                    dev, ino, "/" + "/".join(n.decode("utf-8", "surrogateescape")
                                             for n in reversed(names))) if complete else None
            path = self._file_paths.get(key)
            if path is None:
                self.vmas_unnamed += 1
                continue
            if depth:
                # met in a stack of a process with no entry (mostly a short command, gone
                # before it could be read): its table for the next one running it
                self._request(path)
            self._keep_mapping(tgid, Mapping(start, end, "r-xp", off, ino, path, False))

    def _place(self, dev: int, ino: int, rel: str) -> str | None:
        """The path of the file at `rel` in the filesystem of `dev`, as this process sees it:
        under each of that filesystem's mount points, checked by device and inode."""
        for again in (False, True):
            if self._mounts is None or again:
                self._mounts = _read_mounts()
            for mdev, root, point in self._mounts:
                if mdev != dev:
                    continue
                if root == "/":
                    cand = point.rstrip("/") + rel
                elif rel == root or rel.startswith(root + "/"):
                    cand = point.rstrip("/") + rel[len(root):]
                else:
                    continue
                try:
                    st = os.stat(cand)
                except OSError:
                    continue
                if st.st_ino == ino and kernel_dev(st.st_dev) == dev:
                    return cand
        return None

    def mappings(self, pid: int) -> list[Mapping]:
        """The file mappings known of `pid`, its process gone or not: those the kernel
        side met in its stacks and those load_process read (core/stackresolve uses them
        for frames that /proc/PID/maps could not place)."""
        self._drain_vmas()
        with self._vma_lock:
            return sorted(self._vmas.get(pid, {}).values())

    def poll(self) -> int:
        """Hand the processes the kernel side asked for to the loading thread; how many.
        Keeps the mappings the kernel side sent."""
        self._drain_vmas()
        recs = self._ring.consume_fixed(__getattr__("REQUEST_DTYPE"))
        return sum(self._request(int(pid)) for pid in dict.fromkeys(recs["tgid"].tolist()))

    def _request(self, what: int | str) -> bool:
        """Hand a PID (or a file's path) to the loading thread, once at a time."""
        if what in self._pending:
            return False
        self._pending.add(what)
        self._queue.put(what)
        if self._worker is None:
            import threading  # (~1 ms, with functools: not on -p's way to the banner)

            self._worker = threading.Thread(target=self._serve, name="memlens-unwind",
                                            daemon=True)
            self._worker.start()
        return True

    def learn_file(self, path: str) -> bool:
        """A file's table, for the processes to come that map it (freed when room is
        needed, not at the periodic collection)."""
        return self._add_file(path, pinned=False)

    def _serve(self) -> None:
        while True:
            pid = self._queue.get()
            if pid is None or self._closing:
                return
            try:
                if isinstance(pid, str):
                    self.learn_file(pid)
                else:
                    self.load_process(pid)
                self._maybe_gc()
            except (OSError, ValueError, MemlensError):
                pass  # a process that cannot be loaded (gone mid-way) stays on fp
            finally:
                self._pending.discard(pid)

    def _maybe_gc(self) -> None:
        """A long system-wide run meets thousands of short processes: their entries and
        the rows only they used go every GC_S, not only when the rows run out."""
        now = time.monotonic()
        if now - self._last_gc < GC_S:
            return
        with self._lock:
            if not self._closing:
                self.collect_garbage()
            self._last_gc = now

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Until every request handed over is served (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._pending

    def stats(self) -> dict[str, Any]:
        used = sum(e.count for e in self._extents.values())
        return {"rows_capacity": self.capacity, "rows_used": used,
                "bytes_capacity": self.capacity * ROW_SIZE,
                "tables": len(self._extents), "processes": len(self._proc_extents),
                "files_without_table": len(self.files_without_table),
                "files_not_fitting": len(self.files_not_fitting)}

    def close(self) -> None:
        self._closing = True
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()  # at most the table being built
            self._worker = None
