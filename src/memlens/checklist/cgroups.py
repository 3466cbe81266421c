# SPDX-License-Identifier: GPL-2.0-only
"""Memory cgroups, v1 and v2: limits, usage, OOM and reclaim counters.

The hierarchies are found from the mount table (never assumed): a `cgroup` mount with the
`memory` option is v1 (this development machine: /sys/fs/cgroup/memory); a `cgroup2` mount
whose root `cgroup.controllers` lists `memory` is v2 (the default since systemd 247 / most
distributions).  Both may exist at once, in which case the controller is on exactly one.

v1 files (Documentation/admin-guide/cgroup-v1/memory.rst): memory.limit_in_bytes,
memory.usage_in_bytes, memory.max_usage_in_bytes, memory.failcnt, memory.memsw.* (only with
swap accounting), memory.oom_control (`oom_kill` line since 4.13), memory.stat.
v2 files (cgroup-v2.rst): memory.current, memory.max, memory.high, memory.swap.current,
memory.swap.max, memory.events (`oom_kill` since 4.13, `oom_group_kill` since 5.12),
memory.stat (pgscan/pgsteal), memory.pressure.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from memlens.checklist import procfs

# v1 reports "no limit" as PAGE_COUNTER_MAX pages rounded to the page size: LONG_MAX rounded
# down, 9223372036854771712 on 4 KiB pages.  Anything that large is "unlimited".
V1_UNLIMITED_FLOOR = 1 << 62


@dataclass
class MemCgroup:
    """One memory cgroup; byte fields are None when the kernel has no such file."""
    version: int
    path: str                       # path inside the hierarchy, "/" for the root
    usage_bytes: int | None = None
    limit_bytes: int | None = None  # None = unlimited or unavailable (see limit_known)
    limit_known: bool = False
    high_bytes: int | None = None   # v2 memory.high
    max_usage_bytes: int | None = None   # v1 memory.max_usage_in_bytes (peak)
    swap_usage_bytes: int | None = None
    swap_limit_bytes: int | None = None
    failcnt: int | None = None      # v1: times usage hit the limit
    oom_kill: int | None = None     # processes OOM-killed in this cgroup
    oom: int | None = None          # v2 events "oom": times the OOM killer was invoked
    under_oom: int | None = None    # v1 memory.oom_control
    events: dict[str, int] = field(default_factory=dict)  # v2 memory.events as read
    pgscan: int | None = None       # v2 memory.stat reclaim counters
    pgsteal: int | None = None
    pgmajfault: int | None = None
    workingset_refault: int | None = None
    nr_procs: int | None = None

    def to_json(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "events"}
        d["events"] = dict(self.events)
        return d


def _int_file(dirpath: str, name: str) -> int | None:
    try:
        with open(os.path.join(dirpath, name)) as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return -1  # caller maps to unlimited
    try:
        return int(text)
    except ValueError:
        return None


def _kv_file(dirpath: str, name: str) -> dict[str, int] | None:
    try:
        with open(os.path.join(dirpath, name)) as f:
            return procfs.parse_keyvalue(f.read())
    except OSError:
        return None


def _count_procs(dirpath: str) -> int | None:
    try:
        with open(os.path.join(dirpath, "cgroup.procs")) as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


def hierarchies() -> list[tuple[int, str]]:
    """(version, real directory) of each memory-controller hierarchy, v1 first."""
    out: list[tuple[int, str]] = []
    seen: set[str] = set()
    for m in procfs.read_mounts():
        real = procfs.path(m.target)
        if real in seen:
            continue
        if m.fstype == "cgroup" and "memory" in m.options:
            out.append((1, real))
            seen.add(real)
        elif m.fstype == "cgroup2":
            try:
                with open(os.path.join(real, "cgroup.controllers")) as f:
                    controllers = f.read().split()
            except OSError:
                continue
            if "memory" in controllers:
                out.append((2, real))
                seen.add(real)
    return out


def read_v1(base: str, rel: str) -> MemCgroup:
    d = os.path.join(base, rel.lstrip("/"))
    cg = MemCgroup(version=1, path=rel or "/")
    cg.usage_bytes = _int_file(d, "memory.usage_in_bytes")
    limit = _int_file(d, "memory.limit_in_bytes")
    cg.limit_known = limit is not None
    cg.limit_bytes = limit if limit is not None and limit < V1_UNLIMITED_FLOOR else None
    cg.max_usage_bytes = _int_file(d, "memory.max_usage_in_bytes")
    cg.failcnt = _int_file(d, "memory.failcnt")
    # memsw = memory + swap; present only with swap accounting (swapaccount=1 / CONFIG_MEMCG_SWAP)
    memsw = _int_file(d, "memory.memsw.usage_in_bytes")
    if memsw is not None and cg.usage_bytes is not None:
        cg.swap_usage_bytes = max(0, memsw - cg.usage_bytes)
    memsw_limit = _int_file(d, "memory.memsw.limit_in_bytes")
    if memsw_limit is not None and memsw_limit < V1_UNLIMITED_FLOOR:
        cg.swap_limit_bytes = memsw_limit  # memory+swap limit, as v1 defines it
    oc = _kv_file(d, "memory.oom_control")
    if oc is not None:
        cg.oom_kill = oc.get("oom_kill")     # since 4.13
        cg.under_oom = oc.get("under_oom")
    st = _kv_file(d, "memory.stat")
    if st is not None:
        cg.pgmajfault = st.get("pgmajfault")
        if "workingset_refault_anon" in st or "workingset_refault_file" in st:
            cg.workingset_refault = (st.get("workingset_refault_anon", 0)
                                     + st.get("workingset_refault_file", 0))
        elif "workingset_refault" in st:     # before 5.9 there was one counter
            cg.workingset_refault = st["workingset_refault"]
    cg.nr_procs = _count_procs(d)
    return cg


def read_v2(base: str, rel: str) -> MemCgroup:
    d = os.path.join(base, rel.lstrip("/"))
    cg = MemCgroup(version=2, path=rel or "/")
    cg.usage_bytes = _int_file(d, "memory.current")
    limit = _int_file(d, "memory.max")
    cg.limit_known = limit is not None
    cg.limit_bytes = limit if limit is not None and limit >= 0 else None
    high = _int_file(d, "memory.high")
    cg.high_bytes = high if high is not None and high >= 0 else None
    cg.max_usage_bytes = _int_file(d, "memory.peak")  # since 5.19
    cg.swap_usage_bytes = _int_file(d, "memory.swap.current")
    swap_max = _int_file(d, "memory.swap.max")
    cg.swap_limit_bytes = swap_max if swap_max is not None and swap_max >= 0 else None
    ev = _kv_file(d, "memory.events")
    if ev is not None:
        cg.events = ev
        cg.oom = ev.get("oom")
        cg.oom_kill = ev.get("oom_kill")
        cg.failcnt = ev.get("max")   # times usage was about to go over memory.max
    st = _kv_file(d, "memory.stat")
    if st is not None:
        cg.pgmajfault = st.get("pgmajfault")
        cg.pgscan = st.get("pgscan")
        cg.pgsteal = st.get("pgsteal")
        if "workingset_refault_anon" in st or "workingset_refault_file" in st:
            cg.workingset_refault = (st.get("workingset_refault_anon", 0)
                                     + st.get("workingset_refault_file", 0))
        elif "workingset_refault" in st:
            cg.workingset_refault = st["workingset_refault"]
    cg.nr_procs = _count_procs(d)
    return cg


def walk(base: str, max_depth: int = 6) -> list[str]:
    """Relative cgroup paths under `base` ("/" first), breadth-first, bounded depth."""
    out = ["/"]
    frontier = [""]
    for _ in range(max_depth):
        nxt = []
        for rel in frontier:
            try:
                entries = os.scandir(os.path.join(base, rel.lstrip("/")))
            except OSError:
                continue
            with entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        child = f"{rel}/{e.name}"
                        out.append(child)
                        nxt.append(child)
        frontier = nxt
    return out


def read_all() -> list[MemCgroup]:
    out: list[MemCgroup] = []
    for version, base in hierarchies():
        reader = read_v1 if version == 1 else read_v2
        for rel in walk(base):
            out.append(reader(base, rel))
    return out
