# SPDX-License-Identifier: GPL-2.0-only
"""`memlens check`: the memory checklist an operator runs before any tracing.

One section per classic tool (dmesg for OOMs, swapon + vmstat si/so, free, vmstat, ps/top by
RSS, /proc/pressure, memory cgroups, `sar -B`, `perf stat -e LLC-*`), each with the figures
those tools print and one finding: ok / warn / crit (or unavailable), the reason, and the
memlens command to run next.

API for the main job (`memlens` with no arguments):

    from memlens.checklist.check import run_checklist
    run_checklist(out=sys.stdout, json_mode=False, interval=1.0, top=10, pss=False) -> int

prints every section (text, < 80 columns; or NDJSON: one {"type": "report", "section": ...}
object per section then one {"type": "summary"}) and returns 0.  Findings are information,
not failures: a machine that has OOM-killed still completes the checklist with exit 0.
`interval` is the window (seconds) of the rate sections (vmstat rates, sar -B, LLC).
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from memlens.checklist import cgroups, figures, kmsg, perfcache, procfs, procs
from memlens.checklist.units import human_bytes as hb
from memlens.checklist.units import percent
from memlens.errors import UsageError

LEVELS = ("ok", "unavailable", "warn", "crit")


@dataclass
class Finding:
    level: str          # ok / warn / crit / unavailable
    reason: str
    next: str | None = None

    def to_json(self) -> dict:
        return {"level": self.level, "reason": self.reason, "next": self.next}


@dataclass
class Section:
    name: str                 # JSON "section"
    title: str                # text heading
    data: dict
    lines: list[str]          # text figures, each < 78 columns
    finding: Finding


# --- sections --------------------------------------------------------------------------------

def section_oom() -> Section:
    vm = procfs.read_vmstat() or {}
    counter = vm.get("oom_kill")  # /proc/vmstat oom_kill: since 4.13
    try:
        kills = kmsg.oom_kills()
    except kmsg.KmsgUnavailable as e:
        reason = f"kernel log unreadable: {e}"
        if counter is not None:
            reason += f"; /proc/vmstat counts {counter} OOM kill(s) since boot"
        level = "unavailable" if not counter else "crit"
        return Section("oom", "OOM kills (kernel log since boot)",
                       {"kills": [], "oom_kill_counter": counter, "error": str(e)}, [],
                       Finding(level, reason, "memlens oomkill"))
    boot = kmsg.boot_time()
    lines = []
    for k in kills[-8:]:
        when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(boot + k.ts_us / 1e6))
                if boot else f"{k.ts_us / 1e6:.0f}s after boot")
        rss = (k.anon_rss_bytes or 0) + (k.file_rss_bytes or 0) + (k.shmem_rss_bytes or 0)
        lines.append(f"{when}  pid {k.pid} ({k.comm[:15]}) rss {hb(rss)}")
        lines.append(f"    cgroup {(k.task_memcg or '?')[:34]}  "
                     f"{(k.constraint or '?').replace('CONSTRAINT_', '')}"
                     f"{'  by ' + k.trigger_comm[:15] if k.trigger_comm else ''}")
    if len(kills) > 8:
        lines.insert(0, f"({len(kills) - 8} earlier kill(s) not shown; see --json)")
    missing = (counter - len(kills)) if counter is not None and counter > len(kills) else 0
    data = {"kills": [k.to_json(boot) for k in kills], "count": len(kills),
            "oom_kill_counter": counter, "not_in_log": missing}
    if not kills and not missing:
        f = Finding("ok", "no OOM kill since boot", None)
    else:
        recent = [k for k in kills if boot and time.time() - (boot + k.ts_us / 1e6) < 3600]
        level = "crit" if recent else "warn"
        last = kills[-1] if kills else None
        reason = f"{len(kills) + missing} OOM kill(s) since boot"
        if last:
            reason += f", last {last.comm} in {last.task_memcg or '?'}"
        if missing:
            reason += f" ({missing} rotated out of the log)"
        f = Finding(level, reason, "memlens oomkill")
    return Section("oom", "OOM kills (kernel log since boot)", data, lines, f)


def section_swap(rates: dict | None, mi: dict[str, int]) -> Section:
    devs = procfs.read_swaps()
    total = mi.get("SwapTotal", 0)
    used = total - mi.get("SwapFree", 0)
    data: dict = {"devices": [d.__dict__ for d in devs] if devs is not None else None,
                  "total_bytes": total, "used_bytes": used,
                  "swap_cached_bytes": mi.get("SwapCached"),
                  "swap_in_pages_per_s": None, "swap_out_pages_per_s": None}
    lines = []
    for d in devs or []:
        lines.append(f"{d.filename[:30]:30} {d.type:9} {hb(d.size_bytes):>7} used "
                     f"{hb(d.used_bytes):>7} prio {d.priority}")
    if rates:
        page = procfs.PAGESIZE / 1024
        si = rates["si_kib_s"] / page if rates.get("si_kib_s") is not None else None
        so = rates["so_kib_s"] / page if rates.get("so_kib_s") is not None else None
        data["swap_in_pages_per_s"], data["swap_out_pages_per_s"] = si, so
        lines.append(f"swap-in {si or 0:.1f} pages/s   swap-out {so or 0:.1f} pages/s"
                     f"   used {hb(used)} of {hb(total)}")
    if devs is None:
        f = Finding("unavailable", "/proc/swaps unreadable")
    elif not devs:
        f = Finding("ok", "no swap configured: anonymous memory cannot be paged out,"
                          " pressure ends in OOM kills", None)
    else:
        pct = percent(used, total) or 0
        si = data["swap_in_pages_per_s"] or 0
        if pct > 90:
            f = Finding("crit", f"swap {pct:.0f}% used", "memlens top -s swap")
        elif si > 0:
            f = Finding("warn", f"swapping in {si:.0f} pages/s: tasks wait on swap-ins",
                        "memlens top -s swap")
        elif pct > 50:
            f = Finding("warn", f"swap {pct:.0f}% used", "memlens top -s swap")
        else:
            f = Finding("ok", f"swap {pct:.0f}% used, no swap-ins")
    return Section("swap", "Swap devices and activity (swapon, vmstat si/so)", data, lines, f)


def section_free(mi: dict[str, int]) -> Section:
    fig = figures.free_figures(mi)
    lines = [f"{'':5}{'total':>10}{'used':>10}{'free':>10}{'shared':>10}"
             f"{'buff/cache':>11}{'available':>10}",
             f"{'Mem:':5}{hb(fig['total_bytes']):>10}{hb(fig['used_bytes']):>10}"
             f"{hb(fig['free_bytes']):>10}{hb(fig['shared_bytes']):>10}"
             f"{hb(fig['buff_cache_bytes']):>11}{hb(fig['available_bytes']):>10}",
             f"{'Swap:':5}{hb(fig['swap_total_bytes']):>10}{hb(fig['swap_used_bytes']):>10}"
             f"{hb(fig['swap_free_bytes']):>10}"]
    avail = percent(fig["available_bytes"], fig["total_bytes"]) or 0
    if "MemAvailable" not in mi:
        f = Finding("warn", "kernel has no MemAvailable (< 3.14): available = free")
    elif avail < 5:
        f = Finding("crit", f"only {avail:.1f}% of memory available", "memlens top")
    elif avail < 15:
        f = Finding("warn", f"{avail:.0f}% of memory available", "memlens top")
    else:
        f = Finding("ok", f"{avail:.0f}% of memory available")
    return Section("free", "Memory (free: procps 4 definitions)", fig, lines, f)


def section_vmstat(mi: dict[str, int], rates: dict | None) -> Section:
    st = procfs.read_stat()
    mem = figures.vmstat_memory(mi, st)
    data = dict(mem)
    data.update(rates or {})
    r = rates or {}

    def i(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    lines = [" r  b    swpd    free    buff   cache   si   so    bi    bo    in    cs",
             f"{i(mem['r']):>2} {i(mem['b']):>2} {hb(mem['swpd_bytes']):>7} "
             f"{hb(mem['free_bytes']):>7} {hb(mem['buff_bytes']):>7} "
             f"{hb(mem['cache_bytes']):>7} {i(r.get('si_kib_s')):>4} {i(r.get('so_kib_s')):>4}"
             f" {i(r.get('bi_kib_s')):>5} {i(r.get('bo_kib_s')):>5} {i(r.get('in_s')):>5}"
             f" {i(r.get('cs_s')):>5}"]
    blocked = mem["b"] or 0
    if r.get("so_kib_s"):
        f = Finding("warn", f"swapping out {r['so_kib_s']:.0f} KiB/s", "memlens top -s swap")
    elif blocked > 2 * (procfs.read_text("proc/cpuinfo") or "").count("processor"):
        f = Finding("warn", f"{blocked} tasks blocked in D state", "memlens top -s majflt")
    else:
        f = Finding("ok", f"{mem['r']} runnable, {blocked} blocked, no swap-out")
    return Section("vmstat", "vmstat (procs, memory, swap, io, system)", data, lines, f)


def section_processes(mi: dict[str, int], top: int, pss: bool) -> Section:
    plist = procs.top_by_rss(top, with_pss=pss)
    total = mi.get("MemTotal", 0)
    hdr = f"{'PID':>7} {'VSZ':>7} {'RSS':>7} {'%MEM':>5} {'SWAP':>6}"
    if pss:
        hdr += f" {'PSS':>6} {'USS':>6}"
    hdr += " COMMAND"
    lines = [hdr]
    for p in plist:
        row = (f"{p.pid:>7} {hb(p.vsz_bytes):>7} {hb(p.rss_bytes):>7} "
               f"{percent(p.rss_bytes, total) or 0:>5.1f} {hb(p.swap_bytes):>6}")
        if pss:
            row += f" {hb(p.pss_bytes):>6} {hb(p.uss_bytes):>6}"
        width = 77 - len(row)
        lines.append(f"{row} {(p.comm)[:width]}")
    data = {"processes": [p.to_json() for p in plist], "mem_total_bytes": total,
            "pss_requested": pss}
    if plist:
        big = plist[0]
        pct = percent(big.rss_bytes, total) or 0
        if pct > 50:
            f = Finding("warn", f"{big.comm} ({big.pid}) holds {pct:.0f}% of RAM",
                        f"memlens pmap {big.pid}; memlens memleak -p {big.pid}")
        else:
            f = Finding("ok", f"largest: {big.comm} ({big.pid}) {hb(big.rss_bytes)} RSS",
                        f"memlens pmap {big.pid}")
    else:
        f = Finding("unavailable", "no process readable in /proc")
    return Section("processes", f"Top {top} processes by RSS (ps -eo vsz,rss)", data, lines, f)


def section_psi() -> Section:
    psi = procfs.read_pressure("memory")
    if psi is None:
        return Section("psi", "Memory pressure (PSI)", {"available": False}, [],
                       Finding("unavailable", "no /proc/pressure/memory (kernel < 4.20 or "
                               "CONFIG_PSI off / psi=0)"))
    lines = [f"{'':5}{'avg10':>8}{'avg60':>8}{'avg300':>8}{'total':>14}"]
    data: dict = {"available": True}
    for kind in ("some", "full"):
        v = psi.get(kind)
        if v is None:
            data[kind] = None
            continue
        data[kind] = {"avg10_percent": v.get("avg10"), "avg60_percent": v.get("avg60"),
                      "avg300_percent": v.get("avg300"), "total_us": int(v.get("total", 0))}
        lines.append(f"{kind:5}{v.get('avg10', 0):>8.2f}{v.get('avg60', 0):>8.2f}"
                     f"{v.get('avg300', 0):>8.2f}{int(v.get('total', 0)):>12}us")
    some10 = (psi.get("some") or {}).get("avg10", 0)
    full10 = (psi.get("full") or {}).get("avg10", 0)
    if full10 >= 5:
        f = Finding("crit", f"all tasks stalled on memory {full10:.1f}% of the last 10 s",
                    "memlens top -s majflt")
    elif some10 >= 5:
        f = Finding("warn", f"some task stalled on memory {some10:.1f}% of the last 10 s",
                    "memlens top -s majflt")
    else:
        f = Finding("ok", f"stalls on memory: some {some10:.2f}%, full {full10:.2f}% (10 s)")
    return Section("psi", "Memory pressure (PSI, /proc/pressure/memory)", data, lines, f)


def section_cgroups(max_rows: int = 8) -> Section:
    cgs = cgroups.read_all()
    if not cgs:
        return Section("cgroups", "Memory cgroups", {"cgroups": [], "hierarchies": []}, [],
                       Finding("unavailable", "no memory cgroup hierarchy mounted"))
    # the interesting ones: limited, OOM-ed or hitting the limit, then the biggest
    def score(c: cgroups.MemCgroup) -> tuple:
        return (bool(c.oom_kill), c.limit_bytes is not None, c.usage_bytes or 0)
    shown = sorted((c for c in cgs if c.path != "/"), key=score, reverse=True)[:max_rows]
    lines = [f"{'v':1} {'usage':>7} {'limit':>7} {'%':>4} {'failcnt':>7} {'oom_kill':>8} PATH"]
    for c in shown:
        pct = percent(c.usage_bytes, c.limit_bytes)
        lines.append(f"{c.version} {hb(c.usage_bytes):>7} "
                     f"{hb(c.limit_bytes) if c.limit_bytes else 'max':>7} "
                     f"{'-' if pct is None else f'{pct:.0f}':>4} "
                     f"{'-' if c.failcnt is None else c.failcnt:>7} "
                     f"{'-' if c.oom_kill is None else c.oom_kill:>8} {_cut(c.path, 34)}")
    if len(cgs) - 1 > len(shown):
        lines.append(f"({len(cgs) - 1 - len(shown)} more cgroup(s); see --json)")
    data = {"hierarchies": [{"version": v, "path": p} for v, p in cgroups.hierarchies()],
            "cgroups": [c.to_json() for c in cgs]}
    oomed = [c for c in cgs if c.oom_kill and c.path != "/"]
    near = [c for c in cgs if c.limit_bytes and c.usage_bytes is not None
            and c.usage_bytes > 0.9 * c.limit_bytes]
    if oomed:
        c = max(oomed, key=lambda c: c.oom_kill or 0)
        f = Finding("warn", f"{len(oomed)} cgroup(s) had OOM kills, most in {c.path}"
                            f" ({c.oom_kill})", f"memlens oomkill --cgroup {c.path}")
    elif near:
        c = near[0]
        f = Finding("warn", f"{c.path} at {percent(c.usage_bytes, c.limit_bytes):.0f}% of its"
                            " limit", f"memlens oomkill --cgroup {c.path}")
    else:
        limited = sum(1 for c in cgs if c.limit_bytes)
        f = Finding("ok", f"{len(cgs)} cgroup(s), {limited} with a limit, no OOM kills")
    return Section("cgroups", "Memory cgroups (limits, usage, OOM, reclaim)", data, lines, f)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def section_paging(sar: dict | None) -> Section:
    if sar is None:
        return Section("paging", "Paging (sar -B)", {}, [],
                       Finding("unavailable", "/proc/vmstat or /proc/uptime unreadable"))
    hdr = " ".join(f"{c:>9}" for c in figures.SAR_B_COLUMNS[:4])
    row1 = " ".join(f"{sar[k]:>9.2f}" for k in figures.SAR_KEYS[:4])
    hdr2 = " ".join(f"{c:>9}" for c in figures.SAR_B_COLUMNS[4:])
    row2 = " ".join(f"{sar[k]:>9.2f}" for k in figures.SAR_KEYS[4:])
    lines = [hdr, row1, hdr2, row2]
    scanned_d = sar["pgscand_per_s"]
    if sar["majflt_per_s"] > 100:
        f = Finding("warn", f"{sar['majflt_per_s']:.0f} major faults/s (disk reads)",
                    "memlens top -s majflt")
    elif scanned_d > 0:
        f = Finding("warn", f"direct reclaim scanning {scanned_d:.0f} pages/s: allocations"
                            " stall", "memlens top -s majflt")
    elif sar["pgscank_per_s"] > 0 and sar["vmeff_percent"] < 30:
        f = Finding("warn", f"kswapd reclaim efficiency {sar['vmeff_percent']:.0f}%",
                    "memlens top")
    else:
        f = Finding("ok", f"{sar['fault_per_s']:.0f} faults/s, no direct reclaim"
                          f" over {sar['interval_s']:.2f} s")
    return Section("paging", "Paging rates (sar -B)", sar, lines, f)


def section_llc(result: dict | None, reason: str | None) -> Section:
    if result is None:
        return Section("llc", "Last-level cache (perf stat -e LLC-loads,LLC-load-misses)",
                       {"available": False, "reason": reason}, [],
                       Finding("unavailable", reason or "unknown"))
    lines = [f"LLC loads {result['llc_loads']}  misses {result['llc_load_misses']}"
             f"  over {result['interval_s']:.2f} s"]
    mp = result["miss_percent"]
    f = (Finding("warn", f"LLC miss ratio {mp:.0f}%", "memlens top -s minflt")
         if mp is not None and mp > 50 else
         Finding("ok", "LLC miss ratio " + ("-" if mp is None else f"{mp:.1f}%")))
    return Section("llc", "Last-level cache (perf stat -e LLC-*)", {"available": True, **result},
                   lines, f)


# --- running ---------------------------------------------------------------------------------

def collect(interval: float = 1.0, top: int = 10, pss: bool = False) -> list[Section]:
    """Every section; the rate sections share one window of `interval` seconds."""
    a = figures.take_sample()
    t0 = time.monotonic()
    mi = procfs.read_meminfo() or {}
    instant: list[Callable[[], Section]] = [
        section_oom,
        lambda: section_free(mi),
        lambda: section_processes(mi, top, pss),
        section_psi,
        section_cgroups,
    ]
    done = {}
    for fn in instant:
        s = _guard(fn)
        done[s.name] = s
    pmc_reason = perfcache.probe()
    llc = None
    left = max(0.0, interval - (time.monotonic() - t0))
    if pmc_reason is None:
        try:
            llc = perfcache.measure(left)
        except perfcache.PmcUnavailable as e:
            pmc_reason = str(e)
    else:
        time.sleep(left)
    b = figures.take_sample()
    rates = figures.vmstat_rates(a, b) if a and b else None
    sar = figures.sar_paging(a, b) if a and b else None
    mi = procfs.read_meminfo() or mi
    order = [done["oom"],
             _guard(lambda: section_swap(rates, mi)),
             done["free"],
             _guard(lambda: section_vmstat(mi, rates)),
             done["processes"], done["psi"], done["cgroups"],
             _guard(lambda: section_paging(sar)),
             _guard(lambda: section_llc(llc, pmc_reason))]
    return order


def _guard(fn: Callable[[], Section]) -> Section:
    """A section that breaks on an odd kernel says so; it never takes the checklist down."""
    try:
        return fn()
    except Exception as e:
        name = getattr(fn, "__name__", "section").removeprefix("section_")
        return Section(name, name, {"error": repr(e)}, [],
                       Finding("unavailable", f"could not read: {e!r}"))


def render_text(sections: list[Section], out: TextIO) -> None:
    for s in sections:
        out.write(f"\n== {s.title} ==\n")
        for line in s.lines:
            out.write(f"  {line}\n")
        f = s.finding
        tag = {"ok": "ok", "warn": "WARN", "crit": "CRIT", "unavailable": "n/a"}[f.level]
        text = f"  -> {tag}: {f.reason}"
        out.write(_wrap(text, 79, "       ") + "\n")
        if f.next:
            out.write(f"     next: {f.next}\n")
    worst = max((s.finding.level for s in sections), key=LEVELS.index)
    counts = {lv: sum(1 for s in sections if s.finding.level == lv) for lv in LEVELS}
    out.write(f"\nchecklist: {counts['ok']} ok, {counts['warn']} warn, {counts['crit']} crit,"
              f" {counts['unavailable']} unavailable (worst: {worst})\n")


def _wrap(text: str, width: int, indent: str) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width, subsequent_indent=indent,
                                   break_long_words=False)) or text


def render_json(sections: list[Section], out: TextIO) -> None:
    for s in sections:
        rec = {"type": "report", "section": s.name, **s.data, "finding": s.finding.to_json()}
        out.write(json.dumps(rec, default=str) + "\n")
    worst = max((s.finding.level for s in sections), key=LEVELS.index)
    out.write(json.dumps({"type": "summary", "worst": worst,
                          "findings": {s.name: s.finding.level for s in sections}}) + "\n")


def run_checklist(out: TextIO = sys.stdout, json_mode: bool = False, interval: float = 1.0,
                  top: int = 10, pss: bool = False) -> int:
    sections = collect(interval=interval, top=top, pss=pss)
    (render_json if json_mode else render_text)(sections, out)
    out.flush()
    return 0


class _Check:
    name = "check"
    summary = ("the memory checklist: OOMs, swap, vmstat, free, top RSS, PSI, cgroups, sar -B,"
               " LLC")
    description = (
        "The memory checklist, from /proc and /sys only (no BPF): what dmesg, swapon, vmstat,\n"
        "free, ps, /proc/pressure, the memory cgroups, sar -B and perf stat would tell you,\n"
        "each section with a finding (ok / warn / crit) and the memlens command to run next.")
    epilog = """examples:
  memlens check                 # every section; rates over 1 second
  memlens check --interval 5    # vmstat / sar -B / LLC rates over 5 seconds
  memlens check --pss -n 20     # top 20 processes with PSS and USS (reads smaps)
  memlens check --json | jq -c 'select(.section=="oom") | .kills[]'
  MEMLENS_ROOT=/host memlens check   # a host's /proc and /sys mounted under /host
"""

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true",
                            help="NDJSON: one {type: report, section: ...} object per line")
        parser.add_argument("-i", "--interval", type=float, default=1.0, metavar="SECONDS",
                            help="window of the rate sections (default 1)")
        parser.add_argument("-n", "--top", type=int, default=10, metavar="N",
                            help="processes to list by RSS (default 10)")
        parser.add_argument("--pss", action="store_true",
                            help="add PSS and USS per process (reads smaps; slower)")

    def run(self, args) -> int:
        if not 0 < args.interval <= 3600:
            raise UsageError(f"--interval must be in (0, 3600] seconds, not {args.interval}")
        if not 0 < args.top <= 10000:
            raise UsageError(f"--top must be in [1, 10000], not {args.top}")
        return run_checklist(sys.stdout, json_mode=args.json, interval=args.interval,
                             top=args.top, pss=args.pss)


COMMAND = _Check()
