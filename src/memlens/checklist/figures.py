# SPDX-License-Identifier: GPL-2.0-only
"""The figures the classic tools print, computed from parsed /proc exactly as they compute them.

- free_figures():   procps-ng 4.0.2 `free` (library/meminfo.c meminfo_read_failed)
- vmstat_memory():  procps-ng 4.0.2 `vmstat` memory/swap columns
- vmstat_rates():   vmstat's si/so/bi/bo/in/cs between two samples
- sar_paging():     sysstat 12.6 `sar -B` (rd_stats.c read_vmstat_paging,
                    pr_stats.c print_paging_stats)
"""
from __future__ import annotations

from dataclasses import dataclass

from memlens.checklist import procfs


def free_figures(mi: dict[str, int]) -> dict[str, int | None]:
    """Mimics procps-ng 4.0.2 free (bytes, what `free -b` prints).

    used = total - available (procps >= 4.0.0; 3.3.x used total - free - buffers - cache);
    available falls back to free before 3.14 (no MemAvailable) and inside containers where
    MemAvailable > MemTotal; buff/cache = Buffers + Cached + SReclaimable.
    """
    total = mi.get("MemTotal", 0)
    free = mi.get("MemFree", 0)
    available = mi.get("MemAvailable", 0)
    if available == 0 or available > total:
        available = free
    used = total - available
    if used < 0:
        used = total - free
    cached = mi.get("Cached", 0) + mi.get("SReclaimable", 0)  # SReclaimable: since 2.6.19
    swap_total = mi.get("SwapTotal", 0)
    swap_free = mi.get("SwapFree", 0)
    return {
        "total_bytes": total,
        "used_bytes": used,
        "free_bytes": free,
        "shared_bytes": mi.get("Shmem", 0),  # since 2.6.32
        "buffers_bytes": mi.get("Buffers", 0),
        "cache_bytes": cached,
        "buff_cache_bytes": mi.get("Buffers", 0) + cached,
        "available_bytes": available,
        "available_is_estimate": "MemAvailable" in mi,
        "swap_total_bytes": swap_total,
        "swap_used_bytes": swap_total - swap_free if swap_free < swap_total else 0,
        "swap_free_bytes": swap_free,
    }


def vmstat_memory(mi: dict[str, int], st: dict[str, int] | None) -> dict[str, int | None]:
    """Mimics procps-ng 4.0.2 vmstat's procs and memory columns (bytes, not KiB)."""
    fig = free_figures(mi)
    return {
        "r": st.get("procs_running") if st else None,
        "b": st.get("procs_blocked") if st else None,
        "swpd_bytes": fig["swap_used_bytes"],
        "free_bytes": fig["free_bytes"],
        "buff_bytes": fig["buffers_bytes"],
        "cache_bytes": fig["cache_bytes"],   # vmstat's cache includes SReclaimable too
    }


@dataclass
class Sample:
    """What one rate sample needs: /proc/vmstat, /proc/stat and the uptime clock."""
    uptime_s: float
    vmstat: dict[str, int]
    stat: dict[str, int]


def take_sample() -> Sample | None:
    up = procfs.read_uptime()
    vm = procfs.read_vmstat()
    if up is None or vm is None:
        return None
    return Sample(up, vm, procfs.read_stat() or {})


def _delta(a: dict[str, int], b: dict[str, int], key: str) -> int | None:
    if key not in a or key not in b:
        return None
    return b[key] - a[key]


def vmstat_rates(a: Sample, b: Sample) -> dict[str, float | None]:
    """vmstat's si/so (KiB/s swapped in/out), bi/bo (KiB/s paged in/out), in, cs per second.

    pswpin/pswpout count pages, pgpgin/pgpgout are already KiB (mm/vmstat.c reports
    PGPGIN in KiB); vmstat converts pages with the page size.
    """
    dt = b.uptime_s - a.uptime_s
    if dt <= 0:
        return {k: None for k in ("si_kib_s", "so_kib_s", "bi_kib_s", "bo_kib_s", "in_s", "cs_s")}

    def rate(d: int | None, scale: float = 1.0) -> float | None:
        return None if d is None else d * scale / dt

    page_kib = procfs.PAGESIZE / 1024
    return {
        "si_kib_s": rate(_delta(a.vmstat, b.vmstat, "pswpin"), page_kib),
        "so_kib_s": rate(_delta(a.vmstat, b.vmstat, "pswpout"), page_kib),
        "bi_kib_s": rate(_delta(a.vmstat, b.vmstat, "pgpgin")),
        "bo_kib_s": rate(_delta(a.vmstat, b.vmstat, "pgpgout")),
        "in_s": rate(_delta(a.stat, b.stat, "intr")),
        "cs_s": rate(_delta(a.stat, b.stat, "ctxt")),
    }


SAR_B_COLUMNS = ("pgpgin/s", "pgpgout/s", "fault/s", "majflt/s", "pgfree/s",
                 "pgscank/s", "pgscand/s", "pgsteal/s", "%vmeff")


def sar_paging_counters(vm: dict[str, int]) -> dict[str, int]:
    """Mimics sysstat's read_vmstat_paging(): which /proc/vmstat lines feed `sar -B`.

    sysstat matches by prefix, and we do the same so the numbers agree:
    - pgsteal is the sum of *every* `pgsteal_*` line.  Since 5.x that includes both the
      per-reclaimer (kswapd/direct/khugepaged/proactive) and the per-type (anon/file)
      counters, so each reclaimed page is counted twice.  That is sysstat's figure.
    - pgscank sums lines starting `pgscan_kswapd` (the per-zone lines of pre-4.8 kernels).
    - pgscand sums lines starting `pgscan_direct`, which includes pgscan_direct_throttle.
    """
    c = {"pgpgin": vm.get("pgpgin", 0), "pgpgout": vm.get("pgpgout", 0),
         "pgfault": vm.get("pgfault", 0), "pgmajfault": vm.get("pgmajfault", 0),
         "pgfree": vm.get("pgfree", 0), "pgscan_kswapd": 0, "pgscan_direct": 0, "pgsteal": 0}
    for k, v in vm.items():
        if k.startswith("pgsteal_"):
            c["pgsteal"] += v
        elif k.startswith("pgscan_kswapd"):
            c["pgscan_kswapd"] += v
        elif k.startswith("pgscan_direct"):
            c["pgscan_direct"] += v
    return c


def sar_paging(a: Sample, b: Sample) -> dict[str, float]:
    """Mimics sysstat 12.6 print_paging_stats(): per-second rates and %vmeff.

    S_VALUE(m, n, itv) = (n - m) / itv * 100 with itv in 1/100 s (uptime based), i.e.
    delta / seconds; %vmeff = 100 * d(pgsteal) / (d(pgscan_kswapd) + d(pgscan_direct)),
    0.00 when nothing was scanned.  Keys are sar's columns in snake case with units.
    """
    ca, cb = sar_paging_counters(a.vmstat), sar_paging_counters(b.vmstat)
    # sar rounds its interval to hundredths of a second (jiffies-like "itv")
    itv_cs = round((b.uptime_s - a.uptime_s) * 100)
    if itv_cs <= 0:
        itv_cs = 1
    d = {k: cb[k] - ca[k] for k in ca}

    def s_value(n: int) -> float:
        return n / itv_cs * 100

    scanned = d["pgscan_kswapd"] + d["pgscan_direct"]
    out = {
        "pgpgin_kib_per_s": s_value(d["pgpgin"]),
        "pgpgout_kib_per_s": s_value(d["pgpgout"]),
        "fault_per_s": s_value(d["pgfault"]),
        "majflt_per_s": s_value(d["pgmajfault"]),
        "pgfree_per_s": s_value(d["pgfree"]),
        "pgscank_per_s": s_value(d["pgscan_kswapd"]),
        "pgscand_per_s": s_value(d["pgscan_direct"]),
        "pgsteal_per_s": s_value(d["pgsteal"]),
        "vmeff_percent": (d["pgsteal"] / scanned * 100) if scanned else 0.0,
        "interval_s": itv_cs / 100,
    }
    # sar prints two decimals; keep four so JSON shows no float noise (28.000000000000004)
    return {k: round(v, 4) for k, v in out.items()}


SAR_KEYS = ("pgpgin_kib_per_s", "pgpgout_kib_per_s", "fault_per_s", "majflt_per_s",
            "pgfree_per_s", "pgscank_per_s", "pgscand_per_s", "pgsteal_per_s", "vmeff_percent")
