# SPDX-License-Identifier: GPL-2.0-only
"""A tool's biggest map made from the command line's first step, in a thread, while the
tool's modules import and its object opens.

memleak -p's `allocs` (1M entries, as BCC's and libbpf-tools' memleak) is a hash of 2^20
buckets that the kernel allocates and initializes when the map is made: 14-15 ms of a CPU
here however its entries are allocated.  Its planning thread made it beside the object's
open and configuration, and the main thread still waited 3-8 ms for it before the load
(bench/launch_ab.py, marks around premake_maps).  Started at the command line's first step
(cli._main, from the registry's `early_maps`), it is made before the main thread needs it.

A map is made here only as the tool makes it by default (the registry's EarlyMap: type,
sizes, entries; BPF_F_NO_PREALLOC where the kernel lets tracing programs insert into such
maps, loader.hash_maps_may_allocate), only when the command line has one of its `when`
options, and only where its memory fits well (kernel.maps_fit, EARLY_ROOM beyond it: near a
memory cgroup's limit the tool makes its maps one at a time itself).  The tool takes it
with take() (BpfObject.premake_maps checks it is as configured, else makes it again);
whatever no one took is closed by close_unclaimed() when an object loads.
A failure (no privileges: EPERM) is an fd of -errno: taken as not made.
"""
from __future__ import annotations

import _thread
import os

EARLY_ROOM = 256 << 20  # memory left beyond kernel.maps_fit's margin (as uprobewarm's)

_made: dict[str, tuple[tuple, int]] = {}  # name -> (map spec, fd or -errno)
_done = None   # background.Flag, set once the thread has made every map
_lock = _thread.allocate_lock()
_taken: set[str] = set()
_closed = False  # close_unclaimed() was called: what is made after it is closed at once


def _has_option(words, opt: str) -> bool:
    """`opt` among the words: alone, or with its value glued (`-p123`, `--pid=123`)."""
    for w in words:
        if w == opt:
            return True
        if opt.startswith("--"):
            if w.startswith(opt + "="):
                return True
        elif w.startswith(opt) and not w.startswith("--"):
            return True
    return False


def wanted(early_maps, words) -> list:
    """The EarlyMaps among `early_maps` whose `when` options the command line has."""
    return [m for m in early_maps if any(_has_option(words, opt) for opt in m.when)]


def start_for(early_maps, words) -> bool:
    """Start making the wanted maps (see wanted()) in a thread; False where nothing was
    started (none wanted, one already started, or their memory does not fit well)."""
    global _done
    maps = wanted(early_maps, words)
    if not maps or _done is not None:
        return False
    from memlens.core import kernel

    if not kernel.maps_fit(sum(kernel.hash_buckets_bytes(m.max_entries) for m in maps)
                           + EARLY_ROOM):
        return False
    from memlens.core.background import Flag

    _done = Flag()
    _thread.start_new_thread(_make, (maps, _done))
    return True


def make(m) -> tuple[tuple, int]:
    """An EarlyMap made now, as its tool configures it: (its map_create spec, the fd or
    -errno).  The start's thread makes the registry's; a tool whose options size it
    otherwise makes its own with it (registry's declaration, record.replace)."""
    from memlens.core import libbpf as L
    from memlens.core.loader import BPF_F_NO_PREALLOC, hash_maps_may_allocate, map_create

    mtype = getattr(L, f"BPF_MAP_TYPE_{m.kind.upper()}")
    flags = BPF_F_NO_PREALLOC if m.on_insert and hash_maps_may_allocate() else 0
    spec = (mtype, m.key_size, m.value_size, m.max_entries, flags, m.name)
    return spec, map_create(*spec)


def _make(maps, done) -> None:
    try:
        for m in maps:
            spec, fd = make(m)
            with _lock:
                if _closed and fd >= 0:
                    os.close(fd)  # close_unclaimed() came meanwhile: no one will take it
                else:
                    _made[m.name] = (spec, fd)
    except Exception:  # only a head start: the tool makes its maps itself
        pass
    finally:
        done.set()


def take(name: str, timeout: float = 60.0) -> tuple[tuple, int] | None:
    """The map made at the start: (its spec, its fd), the fd now the caller's; None if none
    was asked for, or it could not be made (its -errno closed nothing)."""
    if _done is None or name in _taken:
        return None
    _taken.add(name)
    _done.wait(timeout)
    with _lock:
        made = _made.pop(name, None)
    if made is None or made[1] < 0:
        return None
    return made


def close_unclaimed() -> None:
    """Close the maps made at the start that no one took, and those still being made once
    they are (an object is loading: its tool made its maps without them)."""
    global _closed
    with _lock:
        _closed = True
        left = list(_made.values())
        _made.clear()
    for _, fd in left:
        if fd >= 0:
            os.close(fd)
