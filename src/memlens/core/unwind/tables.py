# SPDX-License-Identifier: GPL-2.0-only
"""Unwind tables of ELF files, built once per build id.

    table = TableCache.shared().get("/lib/x86_64-linux-gnu/libc.so.6")
    table.rows          # cfi.ROW_DTYPE, sorted by pc (ELF virtual addresses)
    table.bias(map_start, map_pgoff)   # runtime address - ELF vaddr for one mapping

A library is mapped by many processes: its table is built the first time any of them is
seen, then found by build id (or, without one, by device, inode, size and mtime).  The
cache is bounded by the bytes its rows take.

Tables of files with a build id are also kept on disk (DiskCache: ~/.cache/memlens/unwind,
or $MEMLENS_CACHE_DIR/unwind; MEMLENS_CACHE_DIR=off disables it): building libc's takes
~90 ms, python3's ~200 ms, a 120 MB library's ~2 s, reading them back a millisecond, and a
tool tracing the whole system meets dozens of files at its start.
"""
from __future__ import annotations

import _thread
import bisect
import os
import stat
import struct
import sys
import time
from collections import OrderedDict

from memlens.core.lazy import np
from memlens.core.symbols import ElfError, ElfLayout, _Image, _open_buffer

TYPE_CHECKING = False
if TYPE_CHECKING:
    import numpy as np

# A table found in memory or in the disk cache is read, kept and copied into the BPF maps
# as bytes, without numpy (or cfi, whose row type is a numpy dtype): memleak -p reads its
# target's tables while its BPF object loads, and numpy's import there (~0.1-0.2 s of CPU)
# was longer than the load the attach waits for.  Building a table needs them (cfi).
ROW_SIZE = 8                    # cfi.ROW_DTYPE.itemsize
EM_X86_64 = 62
SHF_COMPRESSED = 0x800
U32_MAX = 0xFFFFFFFF
# CFI larger than this is reduced by a child process into the disk cache: building a 6 MB
# .eh_frame takes ~90 MB of Python memory at its peak, which a long-running tracer would
# keep (its allocator does not give it back); the child's goes with it
CHILD_BUILD_BYTES = 1 << 20


class UnwindTable:
    """path; build_id; raw: the rows (cfi.ROW_DTYPE's layout, sorted by pc) as bytes, and
    `rows` the same as an array; segs: PT_LOAD (p_offset, p_vaddr, p_filesz) sorted by
    offset (for the load bias); fdes, programs, unsupported, build_s, source; exec_seg:
    (p_offset, p_filesz, p_vaddr) of PF_X; key: the cache's, ("bid", build id) or
    ("file", file_key())."""

    def __init__(self, path: str, build_id: bytes | None, rows, segs: list[tuple[int, int, int]],
                 fdes: int = 0, programs: int = 0, unsupported: int = 0, build_s: float = 0.0,
                 source: str = ".eh_frame", exec_seg: tuple[int, int, int] | None = None,
                 key: tuple = ()):
        self.path, self.build_id = path, build_id
        self.raw = bytes(rows) if isinstance(rows, (bytes, bytearray, memoryview)) \
            else rows.tobytes()
        self._rows = None
        self.segs = segs
        self.fdes, self.programs, self.unsupported = fdes, programs, unsupported
        self.build_s, self.source, self.exec_seg, self.key = build_s, source, exec_seg, key

    @property
    def rows(self) -> np.ndarray:
        if self._rows is None:
            from . import cfi

            self._rows = np.frombuffer(self.raw, cfi.ROW_DTYPE)
        return self._rows

    @property
    def count(self) -> int:
        return len(self.raw) // ROW_SIZE

    @property
    def nbytes(self) -> int:
        return len(self.raw)

    @property
    def seg_offset(self) -> np.ndarray:
        return np.array([s[0] for s in self.segs], np.uint64)

    @property
    def seg_vaddr(self) -> np.ndarray:
        return np.array([s[1] for s in self.segs], np.uint64)

    @property
    def seg_filesz(self) -> np.ndarray:
        return np.array([s[2] for s in self.segs], np.uint64)

    def bias(self, map_start: int, map_pgoff: int) -> int | None:
        """runtime address - ELF vaddr for a mapping of the file at `map_pgoff`
        (symbols.py's formula: vaddr = ip - start + pgoff - seg.p_offset + seg.p_vaddr)."""
        if not self.segs:
            return None
        i = bisect.bisect_right([s[0] for s in self.segs], map_pgoff) - 1
        if i < 0 or map_pgoff >= self.segs[i][0] + max(self.segs[i][2], 1):
            # a mapping of a page the segment rounds down to (p_offset not page aligned)
            i = max(i, 0)
        return map_start - map_pgoff + self.segs[i][0] - self.segs[i][1]


class NoTable(Exception):
    """The file has no usable call frame information (not x86-64, no .eh_frame, above
    4 GiB); the unwinder follows frame pointers in it."""


def build_table(path: str, buf=None) -> UnwindTable:
    from . import cfi

    t0 = time.perf_counter()
    buf = _open_buffer(path) if buf is None else buf
    img = _Image(buf, path)
    machine = struct.unpack_from(img.bo + "H", buf, 18)[0]
    if machine != EM_X86_64 or img.bo != "<":
        raise NoTable(f"{path}: not x86-64")
    sections = []
    source = []
    for name, is_eh in ((".eh_frame", True), (".debug_frame", False)):
        sh = img.section(name)
        if sh is None or int(sh["flags"]) & SHF_COMPRESSED or int(sh["type"]) == 8:
            continue
        off, size = int(sh["offset"]), int(sh["size"])
        if off + size > len(buf):
            continue
        sections.append((bytes(buf[off:off + size]), int(sh["addr"]), is_eh))
        source.append(name)
    if not sections:
        raise NoTable(f"{path}: no .eh_frame or .debug_frame")
    try:
        built = cfi.build_rows(sections)
    except (cfi.CfiError, IndexError, struct.error, ValueError) as e:
        raise NoTable(f"{path}: call frame information unreadable: {e}") from e
    loads = img.loads
    if len(loads) and int((loads["vaddr"] + loads["memsz"]).max()) > U32_MAX:
        raise NoTable(f"{path}: addresses above 4 GiB")
    segs = [(int(seg["offset"]), int(seg["vaddr"]), int(seg["filesz"]), int(seg["memsz"]),
             int(seg["flags"])) for seg in loads]
    return UnwindTable(path, img.build_id(), built.rows, [seg[:3] for seg in segs],
                       built.fdes, built.programs, built.unsupported,
                       time.perf_counter() - t0, "+".join(source), exec_segment(segs))


PF_X = 1


def exec_segment(loads: list[tuple]) -> tuple[int, int, int] | None:
    """(p_offset, p_filesz, p_vaddr) of the first executable PT_LOAD; loads: (offset,
    vaddr, filesz, memsz, flags) as ElfLayout's."""
    for off, vaddr, filesz, _memsz, flags in loads:
        if flags & PF_X:
            return off, filesz, vaddr
    return None


class DiskCache:
    """Rows by build id in files `<build id>.rows` (a file without one: by device, inode,
    size and mtime): a header (magic, version, rows, FDEs, programs, unsupported), then
    the rows.  Used only when the directory is ours and no one
    else can write to it (the rows steer reads of traced processes' memory); bounded to
    `max_bytes`, the least recently used files removed first."""

    MAGIC = b"MLUW"
    VERSION = 1
    HEADER = struct.Struct("<4sIIIII")

    def __init__(self, root: str | None = None, max_bytes: int = 512 << 20):
        self.max_bytes = max_bytes
        self.dir = root if root is not None else self.default_dir()
        self.writes = 0

    @staticmethod
    def default_dir() -> str | None:
        env = os.environ.get("MEMLENS_CACHE_DIR")
        if env is not None:
            return None if env.lower() in ("", "0", "off", "no") else \
                os.path.join(env, "unwind")
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
            os.path.expanduser("~"), ".cache")
        return os.path.join(base, "memlens", "unwind")

    def _usable(self, create: bool) -> bool:
        if self.dir is None:
            return False
        try:
            if create:
                os.makedirs(self.dir, mode=0o700, exist_ok=True)
            st = os.stat(self.dir)
        except OSError:
            return False
        return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
                and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))

    def writable(self) -> bool:
        return self._usable(True)

    def _path(self, key: bytes | tuple) -> str:
        name = key.hex() if isinstance(key, bytes) else "file-" + "-".join(
            f"{int(k):x}" for k in key)
        return os.path.join(self.dir or "", f"{name}.rows")

    def load(self, key: bytes | tuple) -> tuple[bytes, int, int, int] | None:
        """(rows as bytes, FDEs, programs, unsupported) or None; key: a build id or
        file_key()."""
        if not self._usable(False):
            return None
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                    return None
                data = f.read()
        except OSError:
            return None
        h = self.HEADER
        if len(data) < h.size:
            return None
        magic, version, n, fdes, programs, unsupported = h.unpack_from(data)
        if magic != self.MAGIC or version != self.VERSION \
                or len(data) != h.size + n * ROW_SIZE:
            return None
        try:
            os.utime(path)  # recently used: kept when the cache is pruned
        except OSError:
            pass
        return data[h.size:], fdes, programs, unsupported

    def store(self, table: UnwindTable, key: bytes | tuple) -> None:
        if not self._usable(True):
            return
        head = self.HEADER.pack(self.MAGIC, self.VERSION, table.count, table.fdes,
                                table.programs, table.unsupported)
        import tempfile  # (with shutil, ~4 ms: only to write a table built)

        try:
            fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(head)
                f.write(table.raw)
            os.replace(tmp, self._path(key))
        except OSError:
            return
        self.writes += 1
        self._prune()

    def _prune(self) -> None:
        try:
            entries = [e for e in os.scandir(self.dir) if e.name.endswith(".rows")]
        except OSError:
            return
        total = sum(e.stat().st_size for e in entries)
        for e in sorted(entries, key=lambda e: e.stat().st_mtime):
            if total <= self.max_bytes:
                break
            try:
                total -= e.stat().st_size
                os.unlink(e.path)
            except OSError:
                pass


def cfi_bytes(img: _Image) -> int:
    sh = img.section(".eh_frame")
    return int(sh["size"]) if sh is not None else 0


def file_key(path: str) -> tuple:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class TableCache:
    """Tables by build id (else by file identity), least recently used dropped beyond
    `max_bytes` of rows.  Files without a table are remembered too (no retry per process).
    Kept small: a table's rows live on in the BPF maps once loaded, and come back from the
    disk cache in milliseconds (a tool tracing the whole system meets hundreds of files)."""

    _shared: TableCache | None = None

    def __init__(self, max_bytes: int = 16 << 20, disk: DiskCache | None = None,
                 child_builds: bool = True):
        self.max_bytes = max_bytes
        self.child_builds = child_builds
        self.disk = disk if disk is not None else DiskCache()
        self._tables: OrderedDict[object, UnwindTable | None] = OrderedDict()
        self._by_file: dict[tuple, object] = {}
        self._bytes = 0
        self._lock = _thread.allocate_lock()
        self.reasons: dict[str, str] = {}   # path -> why it has no table

    @classmethod
    def shared(cls) -> TableCache:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def get(self, path: str) -> UnwindTable | None:
        try:
            fkey = file_key(path)
        except OSError as e:
            self.reasons[path] = str(e)
            return None
        with self._lock:
            key = self._by_file.get(fkey)
            if key is not None and key in self._tables:
                self._tables.move_to_end(key)
                return self._tables[key]
        try:
            buf = _open_buffer(path)
        except (OSError, ValueError) as e:
            self.reasons[path] = str(e)
            return None
        try:
            img_bid = ElfLayout(buf, path).build_id()
        except ElfError as e:
            self.reasons[path] = str(e)
            return None
        key = ("bid", img_bid) if img_bid else ("file", fkey)
        with self._lock:
            if key in self._tables:
                self._by_file[fkey] = key
                self._tables.move_to_end(key)
                return self._tables[key]
        try:
            dkey = img_bid or fkey
            table: UnwindTable | None = self._from_disk(path, buf, dkey, img_bid)
            if table is None and self.child_builds and self.disk.writable() \
                    and cfi_bytes(_Image(buf, path)) > CHILD_BUILD_BYTES:
                import subprocess

                built = subprocess.run([sys.executable, "-m", "memlens.core.unwind.tables",
                                        path, str(self.disk.dir)], capture_output=True,
                                       timeout=300)
                if built.returncode == 0:
                    table = self._from_disk(path, buf, dkey, img_bid)
            if table is None:
                table = build_table(path, buf)
                self.disk.store(table, dkey)
        except (NoTable, ElfError) as e:
            self.reasons[path] = str(e)
            table = None
        if table is not None:
            table.key = key
        with self._lock:
            self._by_file[fkey] = key
            if len(self._by_file) > 16384:  # file identities: a run over many binaries
                self._by_file.clear()
                self._by_file[fkey] = key
            self._tables[key] = table
            self._bytes += table.nbytes if table is not None else 0
            while self._bytes > self.max_bytes and len(self._tables) > 1:
                _, old = self._tables.popitem(last=False)
                self._bytes -= old.nbytes if old is not None else 0
        return table

    def _from_disk(self, path: str, buf, key, build_id: bytes | None) -> UnwindTable | None:
        got = self.disk.load(key)
        if got is None:
            return None
        t0 = time.perf_counter()
        loads = ElfLayout(buf, path).loads
        rows, fdes, programs, unsupported = got
        return UnwindTable(path, build_id, rows, [seg[:3] for seg in loads], fdes, programs,
                           unsupported, time.perf_counter() - t0, "disk cache",
                           exec_segment(loads))

    @property
    def nbytes(self) -> int:
        return self._bytes


def _main(argv: list[str]) -> int:
    """`python -m memlens.core.unwind.tables ELF DIR`: build its table into the disk cache
    DIR (the child TableCache.get runs for a large file)."""
    cache = TableCache(child_builds=False, disk=DiskCache(argv[1]))
    return 0 if cache.get(argv[0]) is not None else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
