# SPDX-License-Identifier: GPL-2.0-only
"""Per-process memory figures from /proc (what ps, top and smem print).

VSZ comes from /proc/PID/stat vsize like procps ps (`ps -eo pid,vsz,rss,comm`); RSS from
/proc/PID/status VmRSS (what ps 4 and psutil's statm show).  stat's rss field is only a
fallback: on 6.x it reads the per-CPU RSS counters without summing them
(percpu_counter_read_positive), so it lags the exact figure by up to a few hundred KiB
(seen here: 1664 kB in stat, 1836 kB in status and statm).  Swap from status VmSwap (2.6.34+);
fault counters from stat fields 10 and 12.  PSS and USS need smaps (smaps_rollup since 4.14)
and are read only on request: they cost a page-table walk per process.
"""
from __future__ import annotations

from dataclasses import dataclass

from memlens.checklist import procfs


@dataclass
class ProcMem:
    pid: int
    comm: str
    rss_bytes: int
    vsz_bytes: int
    minflt: int
    majflt: int
    swap_bytes: int | None = None     # None: kernel without VmSwap, or unreadable
    pss_bytes: int | None = None
    uss_bytes: int | None = None
    cmdline: str | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)


def read_proc(pid: int, with_swap: bool = True, with_pss: bool = False) -> ProcMem | None:
    st = procfs.read_pid_stat(pid)
    if st is None:
        return None
    p = ProcMem(pid=pid, comm=st.comm, rss_bytes=st.rss_pages * procfs.PAGESIZE,
                vsz_bytes=st.vsize_bytes, minflt=st.minflt, majflt=st.majflt)
    if with_swap:
        status = procfs.read_pid_status(pid)
        if status is not None:
            swap = status.get("VmSwap")
            p.swap_bytes = swap if isinstance(swap, int) else None
            rss = status.get("VmRSS")
            if isinstance(rss, int):
                p.rss_bytes = rss
    if with_pss:
        add_pss_uss(p)
    return p


def add_pss_uss(p: ProcMem) -> None:
    """PSS and USS (Private_Clean + Private_Dirty + Private_Hugetlb), as smem and psutil."""
    roll = procfs.read_pid_rollup(p.pid)
    if roll is None:
        return
    if "Pss" in roll:
        p.pss_bytes = roll["Pss"]
    p.uss_bytes = (roll.get("Private_Clean", 0) + roll.get("Private_Dirty", 0)
                   + roll.get("Private_Hugetlb", 0))


def snapshot(with_swap: bool = True) -> list[ProcMem]:
    """Every process with a user address space (kernel threads have VSZ 0 and are left out)."""
    out = []
    for pid in procfs.pids():
        p = read_proc(pid, with_swap=with_swap)
        if p is not None and p.vsz_bytes > 0:
            out.append(p)
    return out


def top_by_rss(n: int = 10, with_pss: bool = False) -> list[ProcMem]:
    procs = sorted(snapshot(), key=lambda p: p.rss_bytes, reverse=True)[:n]
    for p in procs:
        p.cmdline = procfs.read_pid_cmdline(p.pid)
        if with_pss:
            add_pss_uss(p)
    return procs
