# SPDX-License-Identifier: GPL-2.0-only
"""Symbolization of user and kernel addresses.

User addresses go through a snapshot of /proc/PID/maps and the ELF symbol table of the mapped
file; kernel addresses through /proc/kallsyms.

Why our own ELF reader and not pyelftools: measured on this machine (BPF-PYTHON.md §4),
pyelftools takes 209 ms to load the `.dynsym` of libc.so.6 and 595 ms for the `.symtab` of the
libc6-dbg debug file, because it builds one Python object per symbol.  A tool resolving stacks
of dozens of processes cannot pay that per library.  Here the symbol table is read straight
from an mmap into a numpy structured array (`np.frombuffer`), filtered, sorted and searched
with `np.searchsorted`; names stay as offsets into the string table and are decoded only for
the frames actually printed.  Loading libc with its debug file takes ~2 ms (bench/bench_symbols.py).

Address translation for PIE executables and shared libraries (and, equally, non-PIE ones):

    elf_vaddr = ip - map_start + map_pgoff - seg.p_offset + seg.p_vaddr

where `seg` is the PT_LOAD segment holding that file offset.  For return addresses (every
frame of a stack but the first) we look up `ip - 1`, since the return address may already be
the first byte of the next function (calls to noreturn functions end a function), but report
the offset from `ip` like BCC does.
"""
from __future__ import annotations

import _thread
import ctypes
import functools
import os
import struct
import zlib
from array import array
from bisect import bisect_right
from collections import OrderedDict, namedtuple
from collections.abc import Sequence

from memlens.core.elf import (  # noqa: F401  (re-exported: the struct readers' home)
    ET_DYN,
    ET_EXEC,
    NT_GNU_BUILD_ID,
    PT_LOAD,
    SHN_LORESERVE,
    SHN_UNDEF,
    SHT_DYNSYM,
    SHT_NOBITS,
    SHT_NOTE,
    SHT_SYMTAB,
    STB_GLOBAL,
    STB_LOCAL,
    STB_WEAK,
    STT_FUNC,
    STT_GNU_IFUNC,
    ElfError,
    ElfLayout,
    _open_buffer,
    function_names,
)
from memlens.core.lazy import np
from memlens.core.stacks import Frame, MapInfo

TYPE_CHECKING = False
if TYPE_CHECKING:
    import numpy as np

DEBUG_ROOT = "/usr/lib/debug"
# Debug directories searched before DEBUG_ROOT (colon-separated, as gdb's
# debug-file-directory): debug files unpacked elsewhere (a -dbgsym .deb extracted by hand, a
# build tree's `objcopy --only-keep-debug` output, a container image's /usr/lib/debug).
DEBUG_DIR_ENV = "MEMLENS_DEBUG_DIR"


def debug_roots(env: dict | None = None) -> tuple[str, ...]:
    """The debug directories searched, in order: $MEMLENS_DEBUG_DIR's, then /usr/lib/debug."""
    extra = (os.environ if env is None else env).get(DEBUG_DIR_ENV, "")
    roots = [d for d in extra.split(":") if d]
    return tuple(dict.fromkeys([*roots, DEBUG_ROOT]))
# Keep the string table as a copy below this size (no fd held); above it keep the mmap, as a
# copy of a big C++ binary's mangled-name table would cost more memory than it saves fds.
_STRTAB_COPY_LIMIT = 16 << 20
# frames a process's symbolizer keeps by address (resolve()), emptied when full and after
# each batch of stacks by callers that keep stacks themselves (forget_frames): the stacks
# of one process share most frames
FRAME_CACHE_MAX = 8192


def _dtypes(bo: str):
    sym = np.dtype([("name", bo + "u4"), ("info", "u1"), ("other", "u1"), ("shndx", bo + "u2"),
                    ("value", bo + "u8"), ("size", bo + "u8")])
    shdr = np.dtype([("name", bo + "u4"), ("type", bo + "u4"), ("flags", bo + "u8"),
                     ("addr", bo + "u8"), ("offset", bo + "u8"), ("size", bo + "u8"),
                     ("link", bo + "u4"), ("info", bo + "u4"), ("addralign", bo + "u8"),
                     ("entsize", bo + "u8")])
    phdr = np.dtype([("type", bo + "u4"), ("flags", bo + "u4"), ("offset", bo + "u8"),
                     ("vaddr", bo + "u8"), ("paddr", bo + "u8"), ("filesz", bo + "u8"),
                     ("memsz", bo + "u8"), ("align", bo + "u8")])
    return sym, shdr, phdr


_DT: dict[str, tuple] = {}  # byte order -> (sym, shdr, phdr) dtypes, made at first use:
# this module is imported without numpy (function_names, parse_maps: memleak -p's start)


def _cstr(buf, off: int) -> bytes:
    end = buf.find(b"\0", off)
    return bytes(buf[off:end if end >= 0 else len(buf)])


class _Image:
    """One parsed ELF64 image: headers, sections, PT_LOADs, notes.  Works on mmap or bytes."""

    def __init__(self, buf, path: str):
        self.buf = buf
        self.path = path
        if len(buf) < 64 or bytes(buf[:4]) != b"\x7fELF":
            raise ElfError(f"{path}: not an ELF file")
        if buf[4] != 2:
            raise ElfError(f"{path}: not ELF64")
        self.bo = "<" if buf[5] == 1 else ">"
        if self.bo not in _DT:
            _DT[self.bo] = _dtypes(self.bo)
        self.sym_dt, shdr_dt, phdr_dt = _DT[self.bo]
        (self.e_type, _mach, _ver, _entry, e_phoff, e_shoff, _flags, _ehsize, e_phentsize,
         e_phnum, e_shentsize, e_shnum, e_shstrndx) = struct.unpack_from(
            self.bo + "HHIQQQIHHHHHH", buf, 16)
        n = len(buf)
        self.phdrs = np.zeros(0, phdr_dt)
        if e_phoff and e_phnum and e_phentsize == phdr_dt.itemsize \
                and e_phoff + e_phnum * 56 <= n:
            self.phdrs = np.frombuffer(buf, phdr_dt, count=e_phnum, offset=e_phoff)
        self.shdrs = np.zeros(0, shdr_dt)
        if e_shoff and e_shentsize == shdr_dt.itemsize:
            if e_shnum == 0 and e_shoff + 64 <= n:  # extended numbering: count in shdr[0].size
                e_shnum = int(np.frombuffer(buf, shdr_dt, count=1, offset=e_shoff)["size"][0])
            if e_shoff + e_shnum * 64 <= n:
                self.shdrs = np.frombuffer(buf, shdr_dt, count=e_shnum, offset=e_shoff)
        self.shstrndx = e_shstrndx if e_shstrndx < len(self.shdrs) else 0xFFFF
        loads = self.phdrs[self.phdrs["type"] == PT_LOAD] if len(self.phdrs) else self.phdrs
        self.loads = loads[np.argsort(loads["offset"], kind="stable")] if len(loads) else loads

    def section_name(self, i: int) -> str:
        if self.shstrndx == 0xFFFF:
            return ""
        strsec = self.shdrs[self.shstrndx]
        off = int(strsec["offset"]) + int(self.shdrs[i]["name"])
        return _cstr(self.buf, off).decode("utf-8", "replace")

    def section(self, name: str):
        for i in range(len(self.shdrs)):
            if self.section_name(i) == name:
                return self.shdrs[i]
        return None

    def section_bytes(self, sh) -> bytes:
        if int(sh["type"]) == SHT_NOBITS:
            return b""
        o, s = int(sh["offset"]), int(sh["size"])
        return bytes(self.buf[o:o + s])

    def build_id(self) -> bytes | None:
        """GNU build id from any SHT_NOTE section (or PT_NOTE segment when sections are gone)."""
        spans = [(int(s["offset"]), int(s["size"])) for s in self.shdrs
                 if int(s["type"]) == SHT_NOTE]
        if not spans:
            spans = [(int(p["offset"]), int(p["filesz"])) for p in self.phdrs
                     if int(p["type"]) == 4]  # PT_NOTE
        for off, size in spans:
            end = min(off + size, len(self.buf))
            while off + 12 <= end:
                namesz, descsz, ntype = struct.unpack_from(self.bo + "III", self.buf, off)
                name_off = off + 12
                desc_off = name_off + ((namesz + 3) & ~3)
                if ntype == NT_GNU_BUILD_ID and bytes(self.buf[name_off:name_off + namesz]) \
                        .rstrip(b"\0") == b"GNU":
                    return bytes(self.buf[desc_off:desc_off + descsz])
                off = desc_off + ((descsz + 3) & ~3)
        return None

    def debuglink(self) -> tuple[str, int] | None:
        sh = self.section(".gnu_debuglink")
        if sh is None:
            return None
        data = self.section_bytes(sh)
        nul = data.find(b"\0")
        if nul <= 0:
            return None
        crc_off = (nul + 4) & ~3
        crc = struct.unpack_from(self.bo + "I", data, crc_off)[0] if crc_off + 4 <= len(data) else 0
        return data[:nul].decode("utf-8", "replace"), crc

    def func_symbols(self, sh_type: int):
        """(symbols array of STT_FUNC/IFUNC defined, non-zero, strtab section) or None."""
        for sh in self.shdrs:
            if int(sh["type"]) != sh_type:
                continue
            off, size = int(sh["offset"]), int(sh["size"])
            if off + size > len(self.buf) or int(sh["link"]) >= len(self.shdrs):
                return None
            syms = np.frombuffer(self.buf, self.sym_dt, count=size // 24, offset=off)
            typ = syms["info"] & 0xF
            keep = (((typ == STT_FUNC) | (typ == STT_GNU_IFUNC)) & (syms["shndx"] != SHN_UNDEF)
                    & (syms["value"] != 0))
            return syms[keep], self.shdrs[int(sh["link"])]
        return None


class ElfSymbols:
    """Function symbols of one ELF file (plus its debug file), sorted, for vectorised lookups.

    Attributes: `path`, `build_id` (bytes or None), `is_pie` (ET_DYN), `source` (which tables
    were used: e.g. "symtab", "dynsym", "debug:/usr/lib/debug/...+dynsym"), `addrs`/`ends`
    (uint64 arrays, ELF virtual addresses; `ends` of size-0 symbols is the next symbol start),
    `approx` (bool array: size-0 symbols).
    """

    def __init__(self, path: str, buf=None, *, find_debug: bool = True,
                 debug_root: str | Sequence[str] | None = None):
        self.path = path
        self._names: dict[int, str] = {}
        buf = _open_buffer(path) if buf is None else buf
        img = _Image(buf, path)
        self.build_id = img.build_id()
        self.is_pie = img.e_type == ET_DYN
        # PT_LOAD segments sorted by file offset: offset, vaddr, filesz (for the PIE formula)
        self.seg_offset = img.loads["offset"].astype(np.uint64)
        self.seg_vaddr = img.loads["vaddr"].astype(np.uint64)
        self.seg_filesz = img.loads["filesz"].astype(np.uint64)
        self.seg_align = np.maximum(img.loads["align"].astype(np.uint64), np.uint64(1))
        self._segments: list[tuple[int, int, int]] | None = None  # vaddr_of's, at first use

        tables = []  # (image, syms, strtab shdr)
        symtab = img.func_symbols(SHT_SYMTAB)
        sources = []
        dbg_img = None
        if symtab is None and find_debug:
            # A stripped binary (Debian libc): the full .symtab lives in the -dbg package.
            dbg_path = self._find_debug_file(img, debug_root)
            if dbg_path:
                try:
                    dbg_img = _Image(_open_buffer(dbg_path), dbg_path)
                    dsym = dbg_img.func_symbols(SHT_SYMTAB)
                    if dsym is not None:
                        tables.append((dbg_img, *dsym))
                        sources.append("debug:" + dbg_path)
                except (OSError, ElfError, ValueError):
                    pass
        if symtab is not None:
            tables.append((img, *symtab))
            sources.append("symtab")
        else:
            # No .symtab in the file itself: merge .dynsym too (it may name exports the debug
            # file lacks, and it is all there is without a debug file).
            dynsym = img.func_symbols(SHT_DYNSYM)
            if dynsym is not None:
                tables.append((img, *dynsym))
                sources.append("dynsym")
        self.source = "+".join(sources) or "none"
        self._build(tables)

    @staticmethod
    def _find_debug_file(img: _Image, debug_root: str | Sequence[str] | None) -> str | None:
        """gdb's search: <root>/.build-id/xx/yyyy.debug in each root, then .gnu_debuglink's
        name beside the file, in its .debug/, and under each root's copy of its directory.
        `debug_root`: one directory or several; None: debug_roots()."""
        roots = debug_roots() if debug_root is None else (
            (debug_root,) if isinstance(debug_root, str) else tuple(debug_root))
        bid = img.build_id()
        if bid and len(bid) >= 2:
            h = bid.hex()
            for root in roots:
                cand = os.path.join(root, ".build-id", h[:2], h[2:] + ".debug")
                if os.path.exists(cand):
                    return cand
        link = img.debuglink()
        if link:
            name, crc = link
            d = os.path.dirname(os.path.realpath(img.path))
            for cand in (os.path.join(d, name), os.path.join(d, ".debug", name),
                         *(os.path.join(root, d.lstrip("/"), name) for root in roots)):
                if os.path.isfile(cand) and cand != img.path:
                    try:
                        dimg = _Image(_open_buffer(cand), cand)
                    except (OSError, ElfError, ValueError):
                        continue
                    dbid = dimg.build_id()
                    if bid and dbid:
                        if dbid == bid:
                            return cand
                        continue
                    # No build ids to compare: the debuglink CRC is a plain CRC-32 of the file.
                    if zlib.crc32(dimg.buf) == crc:
                        return cand
        return None

    def _build(self, tables) -> None:
        values, sizes, names, ranks, tabidx, secend = [], [], [], [], [], []
        self._strtabs = []
        for t, (img, syms, strsh) in enumerate(tables):
            so, ss = int(strsh["offset"]), int(strsh["size"])
            if ss <= _STRTAB_COPY_LIMIT:
                strtab = bytes(img.buf[so:so + ss])
            else:
                strtab = memoryview(img.buf)[so:so + ss]
            self._strtabs.append(strtab)
            st = np.frombuffer(strtab, np.uint8) if ss else np.zeros(1, np.uint8)
            no = syms["name"].astype(np.int64)
            # Among aliases at one address pick what a user recognises: a sized symbol first,
            # then fewest leading underscores (malloc over __libc_malloc), then GLOBAL over WEAK
            # over LOCAL (fork is WEAK, __libc_fork GLOBAL: the underscores decide first).
            c0 = st[np.minimum(no, len(st) - 1)] == 95
            c1 = st[np.minimum(no + 1, len(st) - 1)] == 95
            unders = c0.astype(np.int64) + (c0 & c1)
            bind = (syms["info"] >> 4).astype(np.int64)
            bind_rank = np.where(bind == STB_GLOBAL, 0, np.where(bind == STB_WEAK, 1, 2))
            rank = (syms["size"] == 0).astype(np.int64) * 100 + unders * 10 + bind_rank + t * 3
            # end of the containing section bounds size-0 symbols
            shn = syms["shndx"].astype(np.int64)
            se = np.full(len(syms), np.iinfo(np.uint64).max, np.uint64)
            if len(img.shdrs):
                ok = shn < len(img.shdrs)
                sh = img.shdrs[np.where(ok, shn, 0)]
                se = np.where(ok, sh["addr"] + sh["size"], se).astype(np.uint64)
            values.append(syms["value"].astype(np.uint64))
            sizes.append(syms["size"].astype(np.uint64))
            names.append(no)
            ranks.append(rank)
            tabidx.append(np.full(len(syms), t, np.int16))
            secend.append(se)
        if not values:
            self.addrs = np.zeros(0, np.uint64)
            self.ends = np.zeros(0, np.uint64)
            self.approx = np.zeros(0, bool)
            self._name_off = np.zeros(0, np.int64)
            self._tab = np.zeros(0, np.int16)
            return
        v = np.concatenate(values)
        s = np.concatenate(sizes)
        r = np.concatenate(ranks)
        order = np.lexsort((r, v))            # by address, best alias first
        v, s = v[order], s[order]
        first = np.ones(len(v), bool)
        first[1:] = v[1:] != v[:-1]           # keep one symbol per address
        keep = order[first]
        self.addrs = v[first]
        size = s[first]
        nxt = np.empty_like(self.addrs)
        nxt[:-1] = self.addrs[1:]
        if len(nxt):
            nxt[-1] = np.iinfo(np.uint64).max
        secend_all = np.concatenate(secend)[keep]
        self.approx = size == 0
        self.ends = np.where(self.approx, np.minimum(nxt, np.maximum(secend_all, self.addrs)),
                             self.addrs + size)
        self._name_off = np.concatenate(names)[keep]
        self._tab = np.concatenate(tabidx)[keep]

    def __len__(self) -> int:
        return len(self.addrs)

    def name(self, i: int) -> str:
        """Symbol name of entry i (decoded from the string table on first use)."""
        n = self._names.get(i)
        if n is None:
            strtab = self._strtabs[int(self._tab[i])]
            n = _cstr(strtab, int(self._name_off[i])).decode("utf-8", "replace")
            # debug files name versioned symbols "memcpy@@GLIBC_2.14"; show what nm -D shows
            at = n.find("@")
            if at > 0:
                n = n[:at]
            self._names[i] = n
        return n

    def address_of(self, name: str) -> int | None:
        """ELF vaddr of a symbol by name (linear; for tests and tools that attach by name)."""
        for i in range(len(self.addrs)):
            if self.name(i) == name:
                return int(self.addrs[i])
        return None

    def lookup(self, vaddrs) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised: index of the containing symbol (-1 if none) and offset, per vaddr."""
        va = np.asarray(vaddrs, dtype=np.uint64)
        if not len(self.addrs):
            return np.full(va.shape, -1, np.int64), np.zeros(va.shape, np.uint64)
        idx = np.searchsorted(self.addrs, va, side="right").astype(np.int64) - 1
        safe = np.maximum(idx, 0)
        hit = (idx >= 0) & (va < self.ends[safe])
        idx = np.where(hit, idx, -1)
        off = np.where(hit, va - self.addrs[safe], np.uint64(0))
        return idx, off

    def lookup_one(self, va: int) -> tuple[int, int]:
        """lookup() of one vaddr: (index or -1, offset), without the vectorised form's
        numpy set-up (~40 us a call, whatever the count: most calls resolve a few
        frames, the others of their stack being known already)."""
        i = int(self.addrs.searchsorted(va, side="right")) - 1
        if i < 0 or va >= int(self.ends[i]):
            return -1, 0
        return i, va - int(self.addrs[i])

    def vaddr_of(self, file_off: int) -> int:
        """file_offset_to_vaddr() of one offset (same rule, same wrap-around)."""
        segs = self._segments
        if segs is None:
            segs = self._segments = list(zip(self._segment_starts().tolist(),
                                             self.seg_offset.tolist(),
                                             self.seg_vaddr.tolist()))
        if not segs:
            return file_off  # no program headers: as file_offset_to_vaddr
        seg = segs[0]
        for cand in segs:
            if cand[0] > file_off:
                break
            seg = cand
        return (file_off - seg[1] + seg[2]) & 0xFFFF_FFFF_FFFF_FFFF

    def _segment_starts(self) -> np.ndarray:
        """Each PT_LOAD's page-aligned file offset: the segment of an offset is the last
        one starting at or below it (mappings start on a page boundary, so the first bytes
        of a mapping can precede the segment's p_offset)."""
        return self.seg_offset - self.seg_offset % np.minimum(self.seg_align, np.uint64(4096))

    def file_offset_to_vaddr(self, file_off) -> np.ndarray:
        """The PIE/shared-library formula: file offset -> ELF vaddr, through the PT_LOADs."""
        fo = np.asarray(file_off, dtype=np.uint64)
        if not len(self.seg_offset):
            return fo  # no program headers (a debug-only file): identity is the best guess
        starts = self._segment_starts()
        si = np.maximum(np.searchsorted(starts, fo, side="right").astype(np.int64) - 1, 0)
        return fo - self.seg_offset[si] + self.seg_vaddr[si]


# --- demangling --------------------------------------------------------------------------

class _Demangler:
    def __init__(self):
        self._fn = None
        self._free = None
        try:
            try:
                lib = ctypes.CDLL("libstdc++.so.6")
            except OSError:  # find_library runs ldconfig: only when the usual name fails
                from ctypes.util import find_library

                lib = ctypes.CDLL(find_library("stdc++") or "libstdc++.so.6")
            # getattr: inside a class body `lib.__cxa_demangle` would be name-mangled
            fn = getattr(lib, "__cxa_demangle")
            fn.restype = ctypes.c_void_p
            fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.POINTER(ctypes.c_int)]
            libc = ctypes.CDLL(None)
            libc.free.argtypes = [ctypes.c_void_p]
            self._fn, self._free = fn, libc.free
        except (OSError, AttributeError):
            pass

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one process-wide instance
    def __call__(self, name: str) -> str:
        if self._fn is None or not name.startswith("_Z"):
            return name
        status = ctypes.c_int(0)
        p = self._fn(name.encode(), None, None, ctypes.byref(status))
        if not p or status.value != 0:
            return name
        try:
            return ctypes.string_at(p).decode("utf-8", "replace")
        finally:
            self._free(p)


_demangler: _Demangler | None = None


def demangle(name: str) -> str:
    """C++ demangling via libstdc++'s __cxa_demangle (ctypes); returns `name` unchanged when
    it is not mangled or libstdc++ is absent."""
    global _demangler
    if not name.startswith("_Z"):
        return name
    if _demangler is None:
        _demangler = _Demangler()
    return _demangler(name)


# --- cache shared by all processes ------------------------------------------------------

class SymbolCache:
    """Parsed ElfSymbols shared across processes: by (dev, inode, size, mtime) of the opened
    file, and by build id, so the libc mapped by 500 PIDs (even from different container
    paths) is parsed once.  LRU-bounded; thread-safe."""

    def __init__(self, max_entries: int = 512, *, find_debug: bool = True,
                 debug_root: str | Sequence[str] | None = None):
        self.max_entries = max_entries
        self.find_debug = find_debug
        # None: $MEMLENS_DEBUG_DIR's directories, then /usr/lib/debug (read once, here)
        self.debug_root = debug_roots() if debug_root is None else debug_root
        self._by_key: OrderedDict = OrderedDict()
        self._by_bid: dict[bytes, ElfSymbols] = {}
        self._lock = _thread.allocate_lock()
        self.loads = 0   # files actually parsed (for tests and stats)

    def get(self, path: str) -> ElfSymbols | None:
        """ElfSymbols for the file at `path`, or None if it cannot be read as ELF64."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._by_key.get(key, False)
            if hit is not False:
                self._by_key.move_to_end(key)
                return hit
        try:
            buf = _open_buffer(path)
            img_bid = _Image(buf, path).build_id()
            with self._lock:
                same = self._by_bid.get(img_bid) if img_bid else None
            syms = same or ElfSymbols(path, buf, find_debug=self.find_debug,
                                      debug_root=self.debug_root)
            if same is None:
                self.loads += 1
        except (OSError, ElfError, ValueError, struct.error):
            syms = None
        with self._lock:
            self._by_key[key] = syms
            if syms is not None and syms.build_id:
                self._by_bid[syms.build_id] = syms
            while len(self._by_key) > self.max_entries:
                _, old = self._by_key.popitem(last=False)
                if old is not None and old.build_id and self._by_bid.get(old.build_id) is old \
                        and not any(v is old for v in self._by_key.values()):
                    del self._by_bid[old.build_id]
        return syms

    def clear(self) -> None:
        with self._lock:
            self._by_key.clear()
            self._by_bid.clear()


_default_cache: SymbolCache | None = None


def default_cache() -> SymbolCache:
    """The process-wide SymbolCache used when none is passed."""
    global _default_cache
    if _default_cache is None:
        _default_cache = SymbolCache()
    return _default_cache


# --- /proc/PID/maps ------------------------------------------------------------------------

# collections.namedtuple, not typing.NamedTuple: typing's import (~5 ms) was on memleak -p's
# way to its banner (the planning thread reads the allocator's symbols with this module)
#   start, end, perms, pgoff, inode: int, str, int, int
#   path: str      as shown in maps, without " (deleted)"; "" for anonymous
#   deleted: bool
Mapping = namedtuple("Mapping", "start end perms pgoff inode path deleted")


def parse_maps(text: str) -> list[Mapping]:
    """Parse /proc/PID/maps text (paths may contain spaces)."""
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        lo, hi = parts[0].split("-")
        path = parts[5] if len(parts) > 5 else ""
        deleted = path.endswith(" (deleted)")
        if deleted:
            path = path[:-len(" (deleted)")]
        out.append(Mapping(int(lo, 16), int(hi, 16), parts[1], int(parts[2], 16),
                           int(parts[4]), path, deleted))
    return out


class PerfMap:
    """/tmp/perf-PID.map written by JITs (V8, LuaJIT, Java agents): `START SIZE name`, hex."""

    def __init__(self, path: str):
        self.path = path
        starts, sizes, names = [], [], []
        with open(path, "rb") as f:
            for line in f:
                parts = line.rstrip(b"\n").split(None, 2)
                if len(parts) < 3:
                    continue
                try:
                    starts.append(int(parts[0], 16))
                    sizes.append(int(parts[1], 16))
                except ValueError:
                    continue
                names.append(parts[2].decode("utf-8", "replace"))
        s = np.array(starts, np.uint64)
        order = np.argsort(s, kind="stable")   # later lines win on equal starts? keep first
        self.starts = s[order]
        self.ends = self.starts + np.array(sizes, np.uint64)[order]
        self.names = [names[i] for i in order]

    def lookup(self, addrs) -> tuple[np.ndarray, np.ndarray]:
        a = np.asarray(addrs, np.uint64)
        if not len(self.starts):
            return np.full(a.shape, -1, np.int64), np.zeros(a.shape, np.uint64)
        idx = np.searchsorted(self.starts, a, side="right").astype(np.int64) - 1
        safe = np.maximum(idx, 0)
        hit = (idx >= 0) & (a < self.ends[safe])
        return np.where(hit, idx, -1), np.where(hit, a - self.starts[safe], np.uint64(0))


def _nspid(pid: int, proc: str) -> int:
    """The PID as the process sees it in its own PID namespace (JITs name their map by it)."""
    try:
        with open(f"{proc}/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return pid


class _LazyElf:
    """An image held as bytes, its symbols read at the first use (None if unreadable)."""

    def __init__(self, name: str, data: bytes):
        self.name, self.data = name, data
        self.syms: ElfSymbols | None = None
        self.done = False

    def get(self) -> ElfSymbols | None:
        if not self.done:
            self.done = True
            try:
                self.syms = ElfSymbols(self.name, self.data, find_debug=False)
            except (ElfError, ValueError, OverflowError):
                self.syms = None
            self.data = b""
        return self.syms


#   display: str            basename shown in frames
#   open_path: str | None   path to read the ELF from later (lazy)
#   syms: ElfSymbols | _LazyElf | None  loaded already (eagerly, when only /proc/PID/*
#                           could reach it), or the vdso's image to parse at first use
_Module = namedtuple("_Module", "display open_path syms")


class ProcessSymbolizer:
    """Resolves user addresses of one process through a snapshot of its /proc/PID/maps.

    The snapshot is taken at construction, so frames of a process that has exited since are
    still resolved (as long as its files are still readable; files reachable only through the
    process — another mount namespace, deleted — are loaded right away for that reason).
    """

    def __init__(self, pid: int, cache: SymbolCache | None = None, *, proc: str = "/proc",
                 demangle: bool = True):
        self.pid = pid
        self.proc = proc
        self.cache = cache or default_cache()
        self.demangle = demangle
        self.refresh()

    def refresh(self) -> None:
        """Re-read /proc/PID/maps (after mmap/dlopen/exec).  Raises ProcessLookupError if the
        process is gone (the previous snapshot is then kept)."""
        try:
            with open(f"{self.proc}/{self.pid}/maps") as f:
                text = f.read()
        except FileNotFoundError as e:
            raise ProcessLookupError(f"process {self.pid} not found") from e
        self._set_maps(parse_maps(text))

    @classmethod
    def from_maps(cls, pid: int, maps: Sequence[Mapping], cache: SymbolCache | None = None,
                  *, proc: str = "/proc", demangle: bool = True) -> ProcessSymbolizer:
        """A symbolizer over mappings known otherwise than by reading /proc/PID/maps now
        (the unwinder's record of a process gone since: core/unwind/store.py)."""
        self = cls.__new__(cls)
        self.pid, self.proc = pid, proc
        self.cache = cache or default_cache()
        self.demangle = demangle
        self._set_maps(sorted(maps))
        return self

    def _set_maps(self, maps: list[Mapping]) -> None:
        self.maps = maps
        # the bounds as arrays at the first lookup: a snapshot is taken without numpy
        # (memleak -p takes one before its banner, so that a target gone right after it
        # keeps its frames; numpy's import there delayed the banner ~0.1-0.2 s)
        self._bounds: tuple[np.ndarray, np.ndarray] | None = None
        self._frame_cache: dict[tuple[int, bool], Frame] = {}  # see resolve()
        self._bound_list: tuple[array, array] | None = None
        self._modules: dict[tuple[str, bool, int], _Module] = {}
        self._mod_of: list[_Module | None] = []
        for m in maps:
            if not m.path or m.path.startswith("["):
                mod = None
                if m.path == "[vdso]":
                    mod = self._vdso(m)
            else:
                k = (m.path, m.deleted, m.inode)
                mod = self._modules.get(k)
                if mod is None:
                    mod = self._modules[k] = self._locate(m)
            self._mod_of.append(mod)
        # perf map: the JIT writes it under its own root and its own (namespace) pid
        ns = _nspid(self.pid, self.proc)
        cands = [f"{self.proc}/{self.pid}/root/tmp/perf-{ns}.map", f"/tmp/perf-{self.pid}.map"]
        self._perf_path = next((c for c in cands if os.path.exists(c)), cands[-1])
        self._perf: PerfMap | None = None
        self._perf_mtime = None

    @property
    def _starts(self) -> np.ndarray:
        return self._arrays()[0]

    @property
    def _ends(self) -> np.ndarray:
        return self._arrays()[1]

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._bounds is None:
            self._bounds = (np.array([m.start for m in self.maps], np.uint64),
                            np.array([m.end for m in self.maps], np.uint64))
        return self._bounds

    def _locate(self, m: Mapping) -> _Module:
        display = os.path.basename(m.path)
        root_path = f"{self.proc}/{self.pid}/root{m.path}"

        def same_file(p: str) -> bool:
            try:
                return os.stat(p).st_ino == m.inode
            except OSError:
                return False

        if not m.deleted and same_file(m.path):
            return _Module(display, m.path, None)       # readable after exit: stay lazy
        # Another mount namespace (bpftrace #968) or a deleted/replaced file: only reachable
        # through the live process, so parse it now.
        cands = []
        if not m.deleted:
            cands.append(root_path)
        cands.append(f"{self.proc}/{self.pid}/map_files/{m.start:x}-{m.end:x}")  # needs root
        if m.deleted:
            cands.append(root_path)
        for c in cands:
            if os.path.exists(c) and (same_file(c) or not m.deleted):
                syms = self.cache.get(c)
                if syms is not None:
                    return _Module(display, c, syms)
        # Fall back to the plain path even if the inode differs (e.g. overlayfs reports
        # another inode), unless the file was deleted: then its name now means another file.
        return _Module(display, None if m.deleted else m.path, None)

    def _vdso(self, m: Mapping) -> _Module | None:
        try:
            with open(f"{self.proc}/{self.pid}/mem", "rb") as f:
                f.seek(m.start)
                data = f.read(m.end - m.start)
            # its image copied now (it is the process's), parsed at the first frame in it
            return _Module("vdso", None, _LazyElf("[vdso]", data))
        except (OSError, ValueError, OverflowError):
            return _Module("vdso", None, None)

    def _syms(self, mod: _Module) -> ElfSymbols | None:
        if isinstance(mod.syms, _LazyElf):
            return mod.syms.get()
        if mod.syms is not None or mod.open_path is None:
            return mod.syms
        return self.cache.get(mod.open_path)

    def _perfmap(self) -> PerfMap | None:
        try:
            mt = os.stat(self._perf_path).st_mtime_ns
        except OSError:
            return self._perf
        if self._perf is None or mt != self._perf_mtime:
            try:
                self._perf, self._perf_mtime = PerfMap(self._perf_path), mt
            except OSError:
                pass
        return self._perf

    def resolve(self, addrs: Sequence[int] | np.ndarray,
                return_address: bool | Sequence[bool] | np.ndarray = False) -> list[Frame]:
        """Frames for runtime addresses.  `return_address` (scalar or per address): look up
        ip-1 (the call instruction) but report the offset from ip.

        Frames are kept per address (the snapshot's mappings fix them; a Frame is
        immutable): the stacks of one process share most of their frames (a shell's
        `execute_command_internal+0x773` in every stack), and a report of 10k stacks of
        ~25 frames resolved each anew spent ~250 us a stack in numpy's per-call set-up.
        Frames of JIT code (the perf map, rewritten as the JIT goes) are not kept."""
        a = np.asarray(addrs, dtype=np.uint64).reshape(-1).tolist()
        n = len(a)
        if isinstance(return_address, (bool, np.bool_)):
            ret = [bool(return_address)] * n
        else:
            ret = np.broadcast_to(np.asarray(return_address, bool), (n,)).tolist()
        cache = self._frame_cache
        frames: list[Frame | None] = [cache.get((x, r)) for x, r in zip(a, ret)]
        todo = [i for i, f in enumerate(frames) if f is None]
        if not todo:
            return frames  # type: ignore[return-value]
        if len(cache) + len(todo) > FRAME_CACHE_MAX:
            cache.clear()
        got = self._resolve_uncached([a[i] for i in todo], [ret[i] for i in todo])
        for i, (f, keep) in zip(todo, got):
            frames[i] = f
            if keep:
                cache[(a[i], ret[i])] = f
        return frames  # type: ignore[return-value]

    def forget_frames(self) -> None:
        """Drop the frames kept by address (resolve()): a caller that keeps what it
        resolved (core/stackresolve) empties them after each batch of stacks, so that
        they do not outlive the stacks that hold them."""
        self._frame_cache.clear()

    def _resolve_uncached(self, a: list[int], ret: list[bool]) -> list[tuple[Frame, bool]]:
        """(frame, whether it may be kept) for each address, one at a time: after the
        cache, a call has a few addresses, and numpy's vectorised lookups cost ~40 us a
        call in set-up alone."""
        starts, ends = self._bound_lists()
        out: list[tuple[Frame, bool]] = []
        infos: dict[int, tuple[MapInfo, ElfSymbols | None]] = {}  # by mapping, this call
        perf: list[PerfMap | None] = []  # the perf map, looked for once a call
        for x, r in zip(a, ret):
            q = (x - r) & 0xFFFF_FFFF_FFFF_FFFF  # the address actually looked up
            m_idx = bisect_right(starts, q) - 1
            mod = self._mod_of[m_idx] if m_idx >= 0 and q < ends[m_idx] else None
            if mod is None:
                if not perf:
                    perf.append(self._perfmap())
                out.append((self._jit_frame(perf[0], x, q, r), False))
                continue
            m = self.maps[m_idx]
            # the mapping (file, build id, start, limit, offset) and the address's offset
            # in the file: what symbolizes a frame later, elsewhere (pprof, the debug file)
            got = infos.get(m_idx)
            if got is None:
                syms = self._syms(mod)  # the symbol cache stats the file: once a call
                build_id = syms.build_id if syms is not None else None
                got = infos[m_idx] = (MapInfo(mod.open_path or m.path, m.start, m.end,
                                              m.pgoff, build_id), syms)
            info, syms = got
            shift = m.pgoff - m.start
            k = -1
            if syms is not None:
                k, off = syms.lookup_one(syms.vaddr_of(q + shift))
            if k < 0:
                out.append((Frame(x, None, 0, mod.display, file_offset=x + shift,
                                  mapping=info), True))
                continue
            name = syms.name(k)
            if self.demangle:
                name = demangle(name)
            out.append((Frame(x, name, off + r, mod.display, bool(syms.approx[k]),
                              file_offset=x + shift, mapping=info), True))
        return out

    def _jit_frame(self, pm: PerfMap | None, x: int, q: int, r: bool) -> Frame:
        """An address in no file's mapping: the JIT's perf map names it, if it has one."""
        if pm is not None:
            idx, off = pm.lookup(np.array([q], np.uint64))
            if idx[0] >= 0:
                return Frame(x, pm.names[int(idx[0])], int(off[0]) + r,
                             os.path.basename(self._perf_path), True)
        return Frame(x, None, 0, None)

    def _bound_lists(self) -> tuple[array, array]:
        # arrays of u64, not lists: 8 bytes a mapping instead of ~40, in every process's
        # symbolizer (a list each was ~12 MB more of faults under churn)
        if self._bound_list is None:
            self._bound_list = (array("Q", [m.start for m in self.maps]),
                                array("Q", [m.end for m in self.maps]))
        return self._bound_list

    def resolve_stack(self, ips: Sequence[int] | np.ndarray) -> list[Frame]:
        """A stack as BPF records it, leaf first: the first IP is exact, the rest are return
        addresses."""
        n = len(ips)
        return self.resolve(ips, [False] + [True] * (n - 1) if n else [])

    def lines(self, frames: Sequence[Frame],
              return_address: bool | Sequence[bool] | np.ndarray = False) -> list[Frame]:
        """Add `source` (file:line) to frames with llvm-symbolizer (slow, optional; the
        `--lines` path).  `return_address` as for resolve()."""
        ret = np.broadcast_to(np.asarray(return_address, bool), (len(frames),))
        out = []
        for fr, r in zip(frames, ret):
            src = self._line_of(fr.addr - int(r)) if fr.module else None
            out.append(fr._replace(source=src) if src else fr)
        return out

    def _line_of(self, q: int) -> str | None:
        i = int(np.searchsorted(self._starts, np.uint64(q), side="right")) - 1
        if i < 0 or q >= int(self._ends[i]) or self._mod_of[i] is None:
            return None
        mod = self._mod_of[i]
        syms = self._syms(mod)
        path = mod.open_path or (syms.path if syms else None)
        if syms is None or path is None:
            return None
        m = self.maps[i]
        va = int(syms.file_offset_to_vaddr(np.uint64(q - m.start + m.pgoff)))
        return LineSymbolizer.shared().lookup(path, va)


# --- file:line through llvm-symbolizer ----------------------------------------------------

class LineSymbolizer:
    """A long-running `llvm-symbolizer --output-style=JSON` (one request per line).  Optional:
    ~50 µs per address, and it finds debug files by build id by itself."""

    _shared: LineSymbolizer | None = None

    def __init__(self, exe: str | None = None):
        # shutil, subprocess (and json below): imported here, not with the module, which
        # memleak -p imports on its way to attaching (~10 ms with ctypes.util)
        import shutil
        import subprocess

        exe = exe or next((shutil.which(e) for e in ("llvm-symbolizer-19", "llvm-symbolizer")
                           if shutil.which(e)), None)
        if exe is None:
            raise FileNotFoundError("llvm-symbolizer not found (apt-get install llvm-19)")
        self._p = subprocess.Popen([exe, "--output-style=JSON", "--no-inlines"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self._lock = _thread.allocate_lock()
        self._memo: dict[tuple[str, int], str | None] = {}

    @classmethod
    def shared(cls) -> LineSymbolizer:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def lookup(self, path: str, vaddr: int) -> str | None:
        """"file:line" for an ELF vaddr of `path`, or None."""
        key = (path, vaddr)
        if key in self._memo:
            return self._memo[key]
        with self._lock:
            assert self._p.stdin and self._p.stdout
            self._p.stdin.write(f'CODE "{path}" {vaddr:#x}\n')
            self._p.stdin.flush()
            line = self._p.stdout.readline()
        import json

        res = None
        try:
            for s in json.loads(line).get("Symbol", []):
                if s.get("FileName") and s.get("Line"):
                    res = f"{os.path.basename(s['FileName'])}:{s['Line']}"
                    break
        except (ValueError, AttributeError):
            pass
        self._memo[key] = res
        return res

    def close(self) -> None:
        if self._p.poll() is None:
            self._p.stdin.close()  # type: ignore[union-attr]
            self._p.wait(timeout=5)


# --- kernel ---------------------------------------------------------------------------------

def _hex8(w: np.ndarray) -> np.ndarray:
    """8 ASCII hex digits packed big-endian in a uint64 -> their 32-bit value (SWAR)."""
    u = np.uint64
    # '0'-'9' = 0x3X, 'a'-'f' = 0x6X, 'A'-'F' = 0x4X: low nibble, +9 when bit 6 is set
    v = (w & u(0x0F0F0F0F0F0F0F0F)) + u(9) * ((w >> u(6)) & u(0x0101010101010101))
    v = (v | (v >> u(4))) & u(0x00FF00FF00FF00FF)
    v = (v | (v >> u(8))) & u(0x0000FFFF0000FFFF)
    return (v | (v >> u(16))) & u(0xFFFFFFFF)


def _parse_hex16(data: bytes, starts: np.ndarray) -> np.ndarray:
    """Parse the 16-hex-digit field at each offset of `starts` in `data`, vectorised.

    A per-line int(x, 16) costs ~40 ms for kallsyms' 120k text lines; gathering the two
    8-byte words of each field through a byte-strided uint64 view and decoding them with
    bit tricks costs well under a millisecond."""
    if len(data) < 16 or not len(starts):
        return np.zeros(len(starts), np.uint64)
    words = np.ndarray(shape=(len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))
    # byteswap so the first digit is the most significant byte (x86 is little-endian)
    hi = _hex8(words[starts].byteswap())
    lo = _hex8(words[starts + 8].byteswap())
    return (hi << np.uint64(32)) | lo


class KernelSymbolizer:
    """Kernel addresses through /proc/kallsyms (text symbols t/T/w/W).

    `available` is False when every address reads as 0 (not root, or kptr_restrict): kernel
    stacks must then be reported as unavailable, not as garbage.  Use `KernelSymbolizer.get()`
    for the process-wide instance (loading parses ~120k lines in a few ms with numpy).
    """

    _instance: KernelSymbolizer | None = None
    _ilock = _thread.allocate_lock()
    # kallsyms has no sizes; past the last symbol of a run accept at most this far.
    MAX_LAST_SIZE = 1 << 20

    def __init__(self, path: str = "/proc/kallsyms"):
        self.path = path
        with open(path, "rb") as f:
            data = f.read()
        self._data = data
        buf = np.frombuffer(data, np.uint8)
        nl = np.flatnonzero(buf == 10)
        if len(buf) and buf[-1] != 10:
            nl = np.append(nl, len(buf))
        line_start = np.concatenate(([0], nl[:-1] + 1)) if len(nl) else np.zeros(0, np.int64)
        line_end = nl
        # Address width: 16 hex digits on 64-bit; taken from the first line's first space.
        width = data.find(b" ")
        ok = (line_end - line_start) > width + 3
        line_start, line_end = line_start[ok], line_end[ok]
        typ = buf[line_start + width + 1]
        text = (typ == ord("t")) | (typ == ord("T")) | (typ == ord("w")) | (typ == ord("W"))
        line_start, line_end = line_start[text], line_end[text]
        addr = _parse_hex16(data, line_start) if width == 16 else np.array(
            [int(data[i:i + width], 16) for i in line_start.tolist()], np.uint64)
        self.available = bool(len(addr)) and bool(np.any(addr != 0))
        order = np.argsort(addr, kind="stable")
        self.addrs = addr[order]
        self._name_start = (line_start + width + 3)[order]
        self._name_end = line_end[order]
        nxt = np.empty_like(self.addrs)
        nxt[:-1] = self.addrs[1:]
        if len(nxt):
            nxt[-1] = self.addrs[-1] + np.uint64(self.MAX_LAST_SIZE)
        self.ends = np.minimum(nxt, self.addrs + np.uint64(self.MAX_LAST_SIZE))
        self._names: dict[int, tuple[str, str | None]] = {}

    @classmethod
    def get(cls) -> KernelSymbolizer:
        with cls._ilock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __len__(self) -> int:
        return len(self.addrs)

    def _name(self, i: int) -> tuple[str, str | None]:
        r = self._names.get(i)
        if r is None:
            raw = self._data[int(self._name_start[i]):int(self._name_end[i])].decode(
                "utf-8", "replace")
            name, _, mod = raw.partition("\t")
            mod = mod.strip().strip("[]") or None
            r = self._names[i] = (name.strip(), mod)
        return r

    def address_of(self, name: str) -> int | None:
        """First address of a text symbol by name (linear scan; for tests)."""
        for i in range(len(self.addrs)):
            if self._name(i)[0] == name:
                return int(self.addrs[i])
        return None

    def resolve(self, addrs, return_address: bool | Sequence[bool] | np.ndarray = False
                ) -> list[Frame]:
        """Frames for kernel addresses; unresolved ones (or all, when unavailable) print as
        `0xffff... [unknown]`."""
        a = np.asarray(addrs, dtype=np.uint64).reshape(-1)
        ret = np.broadcast_to(np.asarray(return_address, bool), a.shape)
        q = a - ret.astype(np.uint64)
        if not self.available or not len(self.addrs):
            return [Frame(int(x), None, 0, None) for x in a]
        idx = np.searchsorted(self.addrs, q, side="right").astype(np.int64) - 1
        safe = np.maximum(idx, 0)
        hit = (idx >= 0) & (q < self.ends[safe])
        out = []
        for j in range(len(a)):
            if not hit[j]:
                out.append(Frame(int(a[j]), None, 0, None))
                continue
            name, mod = self._name(int(idx[j]))
            out.append(Frame(int(a[j]), name, int(q[j] - self.addrs[idx[j]]) + int(ret[j]),
                             mod, True))
        return out

    def resolve_stack(self, ips) -> list[Frame]:
        """Leaf-first kernel stack: first IP exact, the rest return addresses."""
        ret = np.ones(len(ips), bool)
        if len(ips):
            ret[0] = False
        return self.resolve(ips, ret)
