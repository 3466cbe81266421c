# SPDX-License-Identifier: GPL-2.0-only
"""core/ldcache: the linker's cache file read as `ldconfig -p` lists it (the witness: this
machine's own cache and ldconfig), the compat layout (old entries, then the new header),
and what it must refuse (another format, a file cut short) so that the caller falls back
to `ldconfig -p`; probespec's library name test beside it."""
from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from memlens.core import ldcache, probespec


def ldconfig_paths() -> list[str]:
    exe = shutil.which("ldconfig") or "/sbin/ldconfig"
    out = subprocess.run([exe, "-p"], capture_output=True, text=True, check=True).stdout
    return [line.rpartition("=>")[2].strip() for line in out.splitlines() if "=>" in line]


def test_this_machines_cache_reads_as_ldconfig_lists_it():
    mine = ldcache.read()
    assert mine is not None, "this machine's /etc/ld.so.cache is not in a known format"
    assert mine == ldconfig_paths()
    assert len(mine) > 10


def test_find_library_takes_ldconfigs_first_match():
    want = next(p for p in ldconfig_paths()
                if probespec.names_library(p, "libc") and p.endswith(".so.6"))
    assert probespec.find_library("c") == want
    assert probespec.find_library("libc") == want


def synthesized(paths: list[str], compat: bool) -> bytes:
    """A cache in glibc's new layout (after an old one if `compat`), holding `paths`."""
    strings = b""
    offs = []
    for p in paths:
        name = p.rpartition("/")[2].encode()
        offs.append((len(strings), len(strings) + len(name) + 1))
        strings += name + b"\0" + p.encode() + b"\0"
    header = struct.pack("<20sIIB3sI12s", ldcache.NEW_MAGIC, len(paths), len(strings), 0,
                         b"\0" * 3, 0, b"\0" * 12)
    assert len(header) == 48
    table = len(header) + 24 * len(paths)
    entries = b"".join(struct.pack("<iIIIQ", 0x303, table + k, table + v, 0, 0)
                       for k, v in offs)
    new = header + entries + strings
    if not compat:
        return new
    old = ldcache.OLD_MAGIC + b"\0" + struct.pack("<I", 3) + b"\0" * (12 * 3)
    old += b"\0" * (-len(old) % 8)
    return old + new


@pytest.mark.parametrize("compat", [False, True], ids=["new", "old+new"])
def test_synthesized_caches(compat):
    paths = ["/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/libc.so.6", "/opt/é/libm.so.6"]
    assert ldcache.paths(synthesized(paths, compat)) == paths


def test_unknown_or_cut_short_is_none():
    data = synthesized(["/lib/libc.so.6"], False)
    assert ldcache.paths(b"musl has no cache") is None
    assert ldcache.paths(b"") is None
    assert ldcache.paths(data[:40]) is None          # header cut
    assert ldcache.paths(data[:60]) is None          # entries cut
    assert ldcache.paths(data[:-1].rstrip(b"\0")) is None  # last string unterminated
    assert ldcache.read("/nonexistent/ld.so.cache") is None
    big = bytearray(data)
    big[28] = 1  # the header's flags: written for a big-endian machine
    assert ldcache.paths(bytes(big)) is None


@pytest.mark.parametrize("path,stem,ok", [
    ("/lib/x86_64-linux-gnu/libc.so.6", "libc", True),
    ("/lib/libc-2.31.so", "libc", True),
    ("/usr/lib/libc.so", "libc", True),
    ("/lib/x86_64-linux-gnu/libcrypt.so.1", "libc", False),
    ("/lib/x86_64-linux-gnu/libc.so.6 (deleted)", "libc", True),
    ("libc.so.6", "libc", False),                   # not a path
    ("/opt/libc.so.6/libz.so", "libc", False),      # the directory, not the file
    ("/lib/libpthread.so.0", "libpthread", True),
])
def test_names_library(path, stem, ok):
    assert probespec.names_library(path, stem) is ok
