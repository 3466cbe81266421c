# SPDX-License-Identifier: GPL-2.0-only
"""The dynamic linker's cache (/etc/ld.so.cache), read as `ldconfig -p` prints it.

A u: probe names a library (`u:libc:malloc`): without a process to look in, the library
is the linker cache's.  `ldconfig -p` answered that before, at the cost of importing
subprocess (with re, enum, locale, signal, threading: ~8 ms on this VM) and running it
(~2 ms): most of `trace u:libc:malloc`'s time to its banner beyond an engine tool's.  No
library reads the file (ctypes.util.find_library runs ldconfig itself), and its format is
small and stable: glibc's "new" format (glibc-ld.so.cache1.1, the only one written since
glibc 2.32), alone or after the old one (ld.so-1.7.0, compat files before that).  Another
format (musl has no cache) gives None, and the caller falls back to `ldconfig -p`.

Layout (glibc's sysdeps/generic/dl-cache.h): a 48-byte header -- magic, version, nlibs,
len_strings, flags, padding, extension_offset, unused -- then nlibs entries of 24 bytes
(flags, key, value, osversion, hwcap), then the strings; key and value are offsets of a
library's name and path from the start of the new header (only the path is read here).
"""
from __future__ import annotations

import struct

PATH = "/etc/ld.so.cache"
OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"
_OLD_ENTRY = 12          # flags, key, value
_NEW_HEADER = struct.Struct("<20sII")   # magic+version, nlibs, len_strings
_NEW_HEADER_SIZE = 48
_NEW_ENTRY = struct.Struct("<iIIIQ")    # flags, key, value, osversion, hwcap


def _new_header_offset(data: bytes) -> int | None:
    if data.startswith(NEW_MAGIC):
        return 0
    if data.startswith(OLD_MAGIC) and len(data) >= 16:
        # the old format's entries, then the new header at the next 8-byte boundary
        nlibs = struct.unpack_from("<I", data, 12)[0]
        off = 16 + nlibs * _OLD_ENTRY
        off = (off + 7) & ~7
        if data[off:off + len(NEW_MAGIC)] == NEW_MAGIC:
            return off
    return None


def paths(data: bytes) -> list[str] | None:
    """The path of each library in the cache's order (ldconfig -p's), or None where `data`
    is not a cache in a format known here (or is cut short)."""
    base = _new_header_offset(data)
    if base is None or len(data) < base + _NEW_HEADER_SIZE:
        return None
    _, nlibs, _ = _NEW_HEADER.unpack_from(data, base)
    if data[base + 28] & 3 not in (0, 2):  # flags: written big-endian (0: not said)
        return None
    first = base + _NEW_HEADER_SIZE
    end = first + nlibs * _NEW_ENTRY.size
    if len(data) < end:
        return None
    out = []
    find = data.find
    for _, _, value, _, _ in _NEW_ENTRY.iter_unpack(data[first:end]):
        at = base + value
        stop = find(b"\0", at)
        if stop < 0:
            return None
        out.append(data[at:stop].decode("utf-8", "surrogateescape"))
    return out


def read(path: str = PATH) -> list[str] | None:
    """paths() of the cache file; None where it cannot be read or is not understood."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return paths(data)
