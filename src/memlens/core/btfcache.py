# SPDX-License-Identifier: GPL-2.0-only
"""A minimal kernel BTF per BPF object, for libbpf's CO-RE relocations.

libbpf relocates an object's field accesses against the running kernel's BTF: by default it
parses all of /sys/kernel/btf/vmlinux (5.5 MB here), which was most of every tool's load
(30-140 ms of a 60-150 ms load, bench/bench_launch.py --phases).  Given `btf_custom_path`
it relocates against that file instead, and `bpftool gen min_core_btf` writes one holding
only the types and fields the object's relocations touch (1.6 KB for engine.bpf.o): the
load is then the kernel's verifier and the maps (8-16 ms).

The file is made once per boot and object, in the background after a load without it
(`bpftool` in its own session: the next run uses it); without bpftool, or without a cache
directory of our own, every load parses vmlinux as before.  The kernel's BTF changes only
with a reboot (the key holds the boot id), the object's with a rebuild (its size, mtime and
inode).  The file steers where the BPF programs read kernel memory: it is used only from a
directory this user owns that no one else can write to (as core/unwind's disk cache).

Objects with tp_btf/fentry programs still need vmlinux BTF (their attach points): libbpf
loads it for those whatever this says.
"""
from __future__ import annotations

import os
import stat

SUBDIR = "btf"


def cache_dir() -> str | None:
    """$MEMLENS_CACHE_DIR/btf (off: "", 0, off, no), else $XDG_CACHE_HOME or ~/.cache."""
    env = os.environ.get("MEMLENS_CACHE_DIR")
    if env is not None:
        return None if env.lower() in ("", "0", "off", "no") else os.path.join(env, SUBDIR)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "memlens", SUBDIR)


def owned_dir(path: str) -> bool:
    """A directory of this user's that no one else can write to."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


_boot_id: list[str | None] = []  # read once a process (it was read three times a start)


def boot_id() -> str | None:
    """This boot's id: cached answers about the running kernel are kept under it."""
    if not _boot_id:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _boot_id.append(f.read().strip())
        except OSError:
            _boot_id.append(None)
    return _boot_id[0]


def key(obj_path: str) -> str | None:
    """The cache file's name for this object on this boot, None if either is unknown."""
    boot = boot_id()
    try:
        st = os.stat(obj_path)
    except OSError:
        return None
    if boot is None:
        return None
    return f"{_owner(obj_path)}-{boot}-{st.st_size}-{st.st_mtime_ns}-{st.st_ino}.btf"


def _owner(obj_path: str) -> str:
    """The object's name and where it is installed: two trees or venvs of memlens keep a
    file each (by name alone each one's build removed the other's as stale).  The place
    by a 32-bit FNV-1a of its directory (zlib.crc32's import and realpath's lstat of each
    component were ~0.2 ms of every start)."""
    h = 0x811C9DC5
    for b in os.path.dirname(os.path.abspath(obj_path)).encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return f"{os.path.basename(obj_path).removesuffix('.o')}-{h:08x}"


def cached(obj_path: str) -> str | None:
    """The minimal BTF made for this object on this boot, if there is one to trust."""
    d, k = cache_dir(), key(obj_path)
    if d is None or k is None or not owned_dir(d):
        return None
    path = os.path.join(d, k)
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or not st.st_size:
        return None
    return path


def _bpftool() -> str | None:
    dirs = os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/sbin", "/usr/local/sbin"]
    for d in dirs:
        p = os.path.join(d or ".", "bpftool")
        if os.access(p, os.X_OK) and os.path.isfile(p):
            return p
    return None


def build_in_background(obj_path: str) -> bool:
    """Start making this object's minimal BTF for the next runs (bpftool in a session of its
    own, written to a temporary name then renamed: a reader never sees half a file).
    Returns whether it was started."""
    d, k = cache_dir(), key(obj_path)
    tool = _bpftool()
    if d is None or k is None or tool is None or not os.path.exists("/sys/kernel/btf/vmlinux"):
        return False
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
    except OSError:
        return False
    if not owned_dir(d):
        return False
    final = os.path.join(d, k)
    tmp = f"{final}.{os.getpid()}.tmp"
    # this object's files of old boots and builds go (the glob, $4, is left unquoted), not
    # this one's: another run may have made it meanwhile and a third be opening it (a
    # start-up then failed: "failed to parse target BTF: -2")
    stale = os.path.join(d, _owner(obj_path) + "-*.btf")
    script = ('for f in $4; do [ "$f" = "$3" ] || rm -f -- "$f"; done 2>/dev/null; '
              '"$0" gen min_core_btf /sys/kernel/btf/vmlinux "$2" "$1" >/dev/null 2>&1 '
              '&& mv -f -- "$2" "$3" || rm -f -- "$2"')
    try:
        # sh backgrounds the work and exits at once (reaped here); the work goes on in its
        # own session, past this tool's end and out of reach of the terminal's Ctrl-C
        pid = os.posix_spawn("/bin/sh", ["sh", "-c", f"({script}) &", tool, obj_path, tmp,
                                         final, stale],
                             {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, setsid=True)
        os.waitpid(pid, 0)
    except OSError:
        return False
    return True
