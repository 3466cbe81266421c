# SPDX-License-Identifier: GPL-2.0-only
"""ELF64 files read with struct alone: headers, segments, notes, function symbols by name.

What the paths before a tool's banner need (memleak -p's plan, a u: probe's function, the
unwind tables' disk cache): symbols.py's symbolizers read whole symbol tables into numpy
arrays, and importing numpy (~60-100 ms of CPU here) or even symbols.py (threading,
collections, bisect, ctypes: ~3 ms) there was what the attach waited for.
"""
from __future__ import annotations

import mmap
import os
import struct

# --- ELF constants (elf.h) ---------------------------------------------------------------
ET_EXEC, ET_DYN = 2, 3
PT_LOAD = 1
SHT_SYMTAB, SHT_NOTE, SHT_DYNSYM, SHT_NOBITS = 2, 7, 11, 8
STT_FUNC, STT_GNU_IFUNC = 2, 10
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
SHN_UNDEF, SHN_LORESERVE = 0, 0xFF00
NT_GNU_BUILD_ID = 3


class ElfError(Exception):
    """Not an ELF64 file we can read (32-bit, truncated, not ELF)."""


class ElfLayout:
    """An ELF64 file's headers read with struct, without numpy (_Image's arrays need it):
    what the paths before a tool's banner need (memleak -p's plan, the unwind tables'
    disk cache).  bo; e_type; machine; phdrs: (type, flags, offset, vaddr, paddr, filesz,
    memsz, align); loads: PT_LOAD (offset, vaddr, filesz, memsz, flags) sorted by offset;
    shdrs: (name, type, flags, addr, offset, size, link, info, addralign, entsize)."""

    def __init__(self, buf, path: str):
        self.buf, self.path = buf, path
        n = len(buf)
        if n < 64 or bytes(buf[:4]) != b"\x7fELF":
            raise ElfError(f"{path}: not an ELF file")
        if buf[4] != 2:
            raise ElfError(f"{path}: not ELF64")
        bo = self.bo = "<" if buf[5] == 1 else ">"
        (self.e_type, self.machine, _ver, _entry, phoff, shoff, _flags, _ehsize, phentsize,
         phnum, shentsize, shnum, _shstrndx) = struct.unpack_from(bo + "HHIQQQIHHHHHH", buf, 16)
        self.phdrs: list[tuple] = []
        if phoff and phnum and phentsize == 56 and phoff + phnum * 56 <= n:
            self.phdrs = list(struct.iter_unpack(bo + "IIQQQQQQ",
                                                 buf[phoff:phoff + phnum * 56]))
        self.loads = sorted((p[2], p[3], p[5], p[6], p[1]) for p in self.phdrs
                            if p[0] == PT_LOAD)
        self.shdrs: list[tuple] = []
        if shoff and shentsize == 64:
            if shnum == 0 and shoff + 64 <= n:  # extended numbering: the count in shdr[0]
                shnum = struct.unpack_from(bo + "Q", buf, shoff + 32)[0]
            if shoff + shnum * 64 <= n:
                self.shdrs = list(struct.iter_unpack(bo + "IIQQQQIIQQ",
                                                     buf[shoff:shoff + shnum * 64]))

    def build_id(self) -> bytes | None:
        """GNU build id from any SHT_NOTE section (or PT_NOTE segment when sections are
        gone), as _Image.build_id."""
        spans = [(sh[4], sh[5]) for sh in self.shdrs if sh[1] == SHT_NOTE]
        if not spans:
            spans = [(ph[2], ph[5]) for ph in self.phdrs if ph[0] == 4]  # PT_NOTE
        buf, bo = self.buf, self.bo
        for off, size in spans:
            end = min(off + size, len(buf))
            while off + 12 <= end:
                namesz, descsz, ntype = struct.unpack_from(bo + "III", buf, off)
                name_off = off + 12
                desc_off = name_off + ((namesz + 3) & ~3)
                if ntype == NT_GNU_BUILD_ID and bytes(buf[name_off:name_off + namesz]) \
                        .rstrip(b"\0") == b"GNU":
                    return bytes(buf[desc_off:desc_off + descsz])
                off = desc_off + ((descsz + 3) & ~3)
        return None


def _symbol_tables(elf: ElfLayout, sh_types: tuple[int, ...]):
    """(the table's type, its entries' bytes, its string section's offset and size) of each
    symbol table the file has, in the order given."""
    buf, shdrs = elf.buf, elf.shdrs
    for sh_type in sh_types:
        sh = next((h for h in shdrs if h[1] == sh_type), None)
        if sh is None:
            continue
        off, size, link = sh[4], sh[5], sh[6]
        if off + size > len(buf) or link >= len(shdrs):
            continue
        yield sh_type, buf[off:off + size // 24 * 24], shdrs[link][4], shdrs[link][5]


def _defined_functions(elf: ElfLayout, sh_types: tuple[int, ...]):
    """(file offset of the name, value, size) of each defined FUNC/IFUNC symbol with a
    value, the tables in the order given."""
    sym = struct.Struct(elf.bo + "IBBHQQ")
    for _type, table, so, _ssize in _symbol_tables(elf, sh_types):
        for name_off, info, _other, shndx, value, fsize in sym.iter_unpack(table):
            typ = info & 0xF
            if typ in (STT_FUNC, STT_GNU_IFUNC) and shndx != SHN_UNDEF and value:
                yield so + name_off, value, fsize


def _functions_named(elf: ElfLayout, name: bytes, sh_types: tuple[int, ...]):
    """As _defined_functions, only the symbols named `name` (or `name@version`), found by
    searching the bytes instead of unpacking every entry: each place in a table's string
    section where the name is followed by NUL or "@" (names share their tails: "malloc"
    may be the end of "__libc_malloc"), then the table's entries with that st_name, at
    entry boundaries.  ~0.05 ms for a libc name where the whole .dynsym took ~1.8 (a u:
    probe checked before its tool's banner).  (value, size, st_info, the table's type), in
    the tables' order and each table's."""
    bo = elf.bo
    sym = struct.Struct(bo + "IBBHQQ")
    for sh_type, table, so, ssize in _symbol_tables(elf, sh_types):
        strings = elf.buf[so:so + ssize]
        name_offs = []
        for tail in (b"\0", b"@"):
            i = strings.find(name + tail)
            while i >= 0:
                name_offs.append(i)
                i = strings.find(name + tail, i + 1)
        hits = []
        for n in name_offs:
            pattern = struct.pack(bo + "I", n)
            i = table.find(pattern)
            while i >= 0:
                if i % 24 == 0:
                    hits.append(i)
                i = table.find(pattern, i + 1)
        for i in sorted(hits):
            _name, info, _other, shndx, value, fsize = sym.unpack_from(table, i)
            if info & 0xF in (STT_FUNC, STT_GNU_IFUNC) and shndx != SHN_UNDEF and value:
                yield value, fsize, info, sh_type


def function_names(path: str) -> tuple[dict[str, tuple[int, int]], list[tuple[int, int, int]],
                                        mmap.mmap]:
    """Every named function of an ELF file, aliases included (ElfSymbols keeps one name per
    address): ({name without @version: (vaddr, size)}, PT_LOAD segments as (p_offset,
    p_vaddr, p_filesz) sorted by offset, the file mapped).  `.dynsym` is read last so
    exported names win.  For attaching probes by name.

    Read with struct, not numpy: memleak -p plans its probes with it while its BPF object
    loads, and importing numpy there (~0.1-0.2 s of CPU, ~16 MB) made the plan, not the
    kernel's verifier, what the attach waited for."""
    buf = _open_buffer(path)
    elf = ElfLayout(buf, path)
    n = len(buf)
    funcs: dict[str, tuple[int, int]] = {}
    for start, value, fsize in _defined_functions(elf, (SHT_SYMTAB, SHT_DYNSYM)):
        end = buf.find(b"\0", start)
        name = buf[start:end if end >= 0 else n].decode("utf-8", "replace")
        name = name.split("@", 1)[0]
        if name:
            funcs[name] = (value, fsize)
    return funcs, [seg[:3] for seg in elf.loads], buf


def _open_buffer(path: str):
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ElfError(f"{path}: empty")
        return mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)


def function_offset(path: str, name: str) -> int | None:
    """The file offset of function `name` (without @version) where libbpf would attach a
    uprobe by that name (.dynsym's symbol first, else .symtab's), or None."""
    return function_offsets(path, name)[0]


def sole_function_offset(path: str, name: str) -> int | None:
    """function_offset where the name is unambiguous (function_offsets), else None."""
    return function_offsets(path, name)[1]


def function_offsets(path: str, name: str) -> tuple[int | None, int | None]:
    """(offset, sole offset) of function `name` in one read of the file.  The offset is
    where libbpf would attach a uprobe by that name (the first FUNC or IFUNC symbol of
    .dynsym, else of .symtab; `name` or `name@version`), None where there is none.  The
    sole offset is the same where libbpf 1.1's attach by name lands on one symbol alone:
    None where that table has the name more than once (libbpf then refuses non-weak
    duplicates or picks among weak ones) or as an IFUNC (libbpf 1.1 skips those).  The
    engine attaches a sole offset itself (a uprobe_multi link) and leaves the others to
    libbpf's attach by name."""
    buf = _open_buffer(path)
    try:
        elf = ElfLayout(buf, path)
        found: list[tuple[int, int, int]] = []  # (table, value, info)
        for value, _size, info, table in _functions_named(elf, name.encode(),
                                                          (SHT_DYNSYM, SHT_SYMTAB)):
            if found and table != found[0][0]:
                break
            found.append((table, value, info))
        if not found:
            return None, None
        first = _file_offset(elf, found[0][1])
        sole = len(found) == 1 and found[0][2] & 0xF == STT_FUNC
        return first, first if sole else None
    finally:
        buf.close()


def _file_offset(elf: ElfLayout, vaddr: int) -> int | None:
    """The file offset of a virtual address through the PT_LOAD segments."""
    for seg_off, seg_vaddr, filesz, _memsz, _flags in elf.loads:
        if seg_vaddr <= vaddr < seg_vaddr + filesz:
            return vaddr - seg_vaddr + seg_off
    return None
