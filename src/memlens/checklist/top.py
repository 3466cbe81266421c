# SPDX-License-Identifier: GPL-2.0-only
"""`memlens top`: a live view of memory, paging, pressure and the processes behind them.

Like top(1) sorted by memory, plus what top lacks: per-process RSS growth, fault rates and
swap movement between refreshes, next to the system's `sar -B` rates and PSI.  Everything
comes from /proc counters (no BPF): /proc/PID/stat minflt/majflt (fields 10, 12) and rss,
/proc/PID/status VmSwap, /proc/vmstat, /proc/meminfo, /proc/pressure/memory.

On a terminal: a rich screen redrawn every --delay seconds; keys are read in cbreak mode
(one key, no Enter): r g f m s w choose the sort, q quits.  On anything else (a pipe, a file,
a test) it prints one plain block per interval and stops after --iterations.
"""
from __future__ import annotations

import json
import os
import select
import sys
import time
from dataclasses import dataclass

from memlens.checklist import figures, procfs, procs
from memlens.checklist.units import human_bytes as hb
from memlens.checklist.units import percent
from memlens.errors import UsageError

# key -> (sort name, column title); the sort names are also the --sort choices
SORTS = {
    "r": ("rss", "RSS"),
    "g": ("growth", "dRSS/s"),
    "f": ("minflt", "MINFLT/s"),
    "m": ("majflt", "MAJFLT/s"),
    "s": ("swap", "SWAP"),
    "w": ("swapin", "SWPIN/s"),
}
SORT_NAMES = [v[0] for v in SORTS.values()]


@dataclass
class ProcRate:
    pid: int
    comm: str
    rss_bytes: int
    swap_bytes: int | None
    growth_bytes_per_s: float      # RSS change per second since the last refresh
    minflt_per_s: float
    majflt_per_s: float
    swapin_bytes_per_s: float      # VmSwap decrease per second: pages coming back from swap

    def key(self, sort: str) -> float:
        return {"rss": self.rss_bytes, "growth": self.growth_bytes_per_s,
                "minflt": self.minflt_per_s, "majflt": self.majflt_per_s,
                "swap": self.swap_bytes or 0, "swapin": self.swapin_bytes_per_s}[sort]


@dataclass
class Frame:
    """One refresh: system figures and per-process rates over `interval_s`."""
    time: float
    interval_s: float
    free: dict
    sar: dict | None
    swap_rates: dict | None
    psi: dict | None
    procs: list[ProcRate]
    nprocs: int


class Sampler:
    """Keeps the previous readings so each frame shows rates over the last interval."""

    def __init__(self) -> None:
        self.prev_sample = figures.take_sample()
        self.prev_t = time.monotonic()
        self.prev_procs = {p.pid: p for p in procs.snapshot()}

    def frame(self) -> Frame:
        now = time.monotonic()
        dt = max(now - self.prev_t, 1e-3)
        sample = figures.take_sample()
        cur = {p.pid: p for p in procs.snapshot()}
        rates: list[ProcRate] = []
        for pid, p in cur.items():
            old = self.prev_procs.get(pid)
            if old is not None and (p.minflt < old.minflt or p.majflt < old.majflt):
                old = None  # a reused PID: its counters restarted from zero
            growth = (p.rss_bytes - old.rss_bytes) / dt if old else 0.0
            minflt = (p.minflt - old.minflt) / dt if old else 0.0
            majflt = (p.majflt - old.majflt) / dt if old else 0.0
            swapin = 0.0
            if old and old.swap_bytes is not None and p.swap_bytes is not None:
                swapin = max(0, old.swap_bytes - p.swap_bytes) / dt
            rates.append(ProcRate(pid, p.comm, p.rss_bytes, p.swap_bytes, growth, minflt,
                                  majflt, swapin))
        sar = swap_rates = None
        if self.prev_sample and sample:
            sar = figures.sar_paging(self.prev_sample, sample)
            swap_rates = figures.vmstat_rates(self.prev_sample, sample)
        mi = procfs.read_meminfo() or {}
        frame = Frame(time.time(), dt, figures.free_figures(mi), sar, swap_rates,
                      procfs.read_pressure("memory"), rates, len(cur))
        self.prev_sample, self.prev_t, self.prev_procs = sample, now, cur
        return frame


def top_rows(frame: Frame, sort: str, n: int) -> list[ProcRate]:
    return sorted(frame.procs, key=lambda p: (p.key(sort), p.rss_bytes), reverse=True)[:n]


# --- plain output (non-terminal) -------------------------------------------------------------

def summary_lines(frame: Frame) -> list[str]:
    f = frame.free
    lines = [f"Memory: total {hb(f['total_bytes'])}  used {hb(f['used_bytes'])}  "
             f"free {hb(f['free_bytes'])}  buff/cache {hb(f['buff_cache_bytes'])}  "
             f"avail {hb(f['available_bytes'])}",
             f"Swap:   total {hb(f['swap_total_bytes'])}  used {hb(f['swap_used_bytes'])}  "
             f"free {hb(f['swap_free_bytes'])}"]
    s, r = frame.sar, frame.swap_rates or {}
    if s:
        page = procfs.PAGESIZE / 1024
        si = (r.get("si_kib_s") or 0) / page
        so = (r.get("so_kib_s") or 0) / page
        lines.append(f"Paging: fault/s {s['fault_per_s']:.0f}  majflt/s {s['majflt_per_s']:.0f}"
                     f"  pgscank/s {s['pgscank_per_s']:.0f}  pgscand/s {s['pgscand_per_s']:.0f}"
                     f"  %vmeff {s['vmeff_percent']:.0f}")
        lines.append(f"        pgfree/s {s['pgfree_per_s']:.0f}  pgsteal/s "
                     f"{s['pgsteal_per_s']:.0f}  swap-in/s {si:.0f}  swap-out/s {so:.0f}")
    if frame.psi is None:
        lines.append("Pressure: unavailable (no /proc/pressure/memory)")
    else:
        some = frame.psi.get("some") or {}
        full = frame.psi.get("full") or {}
        lines.append(f"Pressure: some {some.get('avg10', 0):.2f} {some.get('avg60', 0):.2f} "
                     f"{some.get('avg300', 0):.2f}  full {full.get('avg10', 0):.2f} "
                     f"{full.get('avg60', 0):.2f} {full.get('avg300', 0):.2f}"
                     "  (% avg10 avg60 avg300)")
    return lines


PROC_HEADER = (f"{'PID':>7} {'RSS':>7} {'dRSS/s':>7} {'MINFLT/s':>8} {'MAJFLT/s':>8} "
               f"{'SWAP':>6} {'SWPIN/s':>7} COMMAND")


def proc_line(p: ProcRate) -> str:
    sign = "+" if p.growth_bytes_per_s > 0 else ("-" if p.growth_bytes_per_s < 0 else "")
    growth = sign + hb(abs(p.growth_bytes_per_s)) if p.growth_bytes_per_s else "0"
    return (f"{p.pid:>7} {hb(p.rss_bytes):>7} {growth:>7} {p.minflt_per_s:>8.0f} "
            f"{p.majflt_per_s:>8.0f} {hb(p.swap_bytes):>6} "
            f"{hb(p.swapin_bytes_per_s) if p.swapin_bytes_per_s else '0':>7} {p.comm[:15]}")


def plain_block(frame: Frame, sort: str, n: int) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(frame.time))
    out = [f"memlens top - {stamp}  interval {frame.interval_s:.2f}s  "
           f"{frame.nprocs} processes  sorted by {sort}"]
    out += summary_lines(frame)
    out.append(f"Processes (top {n} by {sort}):")
    out.append(PROC_HEADER)
    out += [proc_line(p) for p in top_rows(frame, sort, n)]
    return "\n".join(out) + "\n"


def json_record(frame: Frame, sort: str, n: int) -> str:
    return json.dumps({"type": "report", "section": "top", "time_unix_s": round(frame.time, 3),
                       "interval_s": round(frame.interval_s, 3), "free": frame.free,
                       "paging": frame.sar, "swap_rates": frame.swap_rates, "psi": frame.psi,
                       "sort": sort,
                       "processes": [p.__dict__ for p in top_rows(frame, sort, n)]})


# --- live view (terminal) --------------------------------------------------------------------

def render_rich(frame: Frame, sort: str, n: int):
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    f = frame.free
    avail_pct = percent(f["available_bytes"], f["total_bytes"]) or 0
    mem = Table.grid(padding=(0, 2))
    for _ in range(6):
        mem.add_column(justify="right")
    mem.add_row("", "total", "used", "free", "buff/cache", "available")
    mem.add_row("Mem", hb(f["total_bytes"]), hb(f["used_bytes"]), hb(f["free_bytes"]),
                hb(f["buff_cache_bytes"]),
                Text(f"{hb(f['available_bytes'])} ({avail_pct:.0f}%)",
                     style="red" if avail_pct < 10 else ""))
    mem.add_row("Swap", hb(f["swap_total_bytes"]), hb(f["swap_used_bytes"]),
                hb(f["swap_free_bytes"]), "", "")
    rest = Text("\n".join(summary_lines(frame)[2:]))
    stamp = time.strftime("%H:%M:%S", time.localtime(frame.time))
    head = Panel(Group(mem, rest), title=f"memlens top - {stamp} - Memory, Paging, Pressure",
                 title_align="left")
    table = Table(title=f"Processes ({frame.nprocs}) sorted by {sort}", title_justify="left",
                  expand=False, box=None, header_style="bold")
    cols = [("PID", None), ("RSS", "rss"), ("dRSS/s", "growth"), ("MINFLT/s", "minflt"),
            ("MAJFLT/s", "majflt"), ("SWAP", "swap"), ("SWPIN/s", "swapin"), ("COMMAND", None)]
    for title, key in cols:
        table.add_column(title + (" v" if key == sort else ""),
                         justify="left" if title == "COMMAND" else "right",
                         style="bold cyan" if key == sort else None, no_wrap=True)
    for p in top_rows(frame, sort, n):
        table.add_row(*proc_line(p).split(None, 7))
    keys = Text("keys: " + "  ".join(f"{k}={v[0]}" for k, v in SORTS.items()) + "  q=quit",
                style="dim")
    return Group(head, table, keys)


class _Cbreak:
    """Terminal in cbreak mode (keys without Enter, no echo) for the `with` block."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved = None

    def __enter__(self) -> _Cbreak:
        import termios
        import tty

        try:
            self.saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        except termios.error:
            self.saved = None
        return self

    def __exit__(self, *exc: object) -> None:
        import termios

        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


def _read_key(fd: int, timeout: float) -> str | None:
    r, _, _ = select.select([fd], [], [], max(0.0, timeout))
    if not r:
        return None
    try:
        b = os.read(fd, 32)
    except OSError:
        return None
    return b.decode(errors="ignore")[:1] if b else "q"  # EOF on the tty: quit


def run_live(delay: float, iterations: int | None, sort: str, n: int) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    sampler = Sampler()
    fd = sys.stdin.fileno() if sys.stdin.isatty() else None
    rows = max(5, (console.size.height or 40) - 12) if n <= 0 else n
    done = 0
    first_wait = min(delay, 0.5)
    with _Cbreak(fd) if fd is not None else _nullctx(), \
            Live(console=console, auto_refresh=False, screen=True) as live:
        frame = None
        deadline = time.monotonic() + first_wait
        while True:
            key = _read_key(fd, deadline - time.monotonic()) if fd is not None else None
            if fd is None:
                time.sleep(max(0.0, deadline - time.monotonic()))
            if key:
                if key in ("q", "Q", "\x1b"):
                    return 0
                if key in SORTS:
                    sort = SORTS[key][0]
                    if frame is not None:
                        live.update(render_rich(frame, sort, rows), refresh=True)
                continue
            if time.monotonic() < deadline:
                continue
            frame = sampler.frame()
            live.update(render_rich(frame, sort, rows), refresh=True)
            done += 1
            if iterations is not None and done >= iterations:
                return 0
            deadline = time.monotonic() + delay


class _nullctx:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def run_plain(delay: float, iterations: int | None, sort: str, n: int, json_mode: bool) -> int:
    sampler = Sampler()
    done = 0
    time.sleep(min(delay, 0.5) if done == 0 else delay)
    while True:
        frame = sampler.frame()
        text = json_record(frame, sort, n) + "\n" if json_mode else plain_block(frame, sort, n)
        sys.stdout.write(text + ("" if json_mode else "\n"))
        sys.stdout.flush()
        done += 1
        if iterations is not None and done >= iterations:
            return 0
        time.sleep(delay)


class _Top:
    name = "top"
    summary = "live view: memory, paging, PSI and the processes with most RSS/faults"
    description = (
        "A live view of memory: free/swap, sar -B paging and reclaim rates, PSI, and the\n"
        "processes with the most RSS, RSS growth, page faults and swap-ins (/proc counters).\n"
        "Keys: r=rss g=growth f=minflt m=majflt s=swap w=swapin, q quits.  On a pipe it\n"
        "prints one plain block per interval.")
    epilog = """examples:
  memlens top                    # live, refresh every 2 s, sorted by RSS
  memlens top -s majflt -d 1     # who is page-faulting to disk, every second
  memlens top -n 3 -d 5 > log    # three plain blocks, five seconds apart
  memlens top --json -n 1 | jq '.processes[0]'
"""

    def add_arguments(self, parser) -> None:
        parser.add_argument("-d", "--delay", type=float, default=2.0, metavar="SECONDS",
                            help="seconds between refreshes (default 2)")
        parser.add_argument("-n", "--iterations", type=int, default=None, metavar="N",
                            help="stop after N refreshes (default: until q / Ctrl-C;"
                                 " 1 when output is not a terminal)")
        parser.add_argument("-s", "--sort", choices=SORT_NAMES, default="rss",
                            help="initial sort (default rss)")
        parser.add_argument("-p", "--processes", type=int, default=0, metavar="N",
                            help="process rows (default: fill the screen; 15 on a pipe)")
        parser.add_argument("--json", action="store_true",
                            help="NDJSON, one {type: report, section: top} per interval")

    def run(self, args) -> int:
        if not 0.1 <= args.delay <= 3600:
            raise UsageError(f"--delay must be between 0.1 and 3600 seconds, not {args.delay}")
        if args.iterations is not None and args.iterations < 1:
            raise UsageError(f"--iterations must be at least 1, not {args.iterations}")
        if args.processes < 0:
            raise UsageError("--processes must be >= 0")
        if sys.stdout.isatty() and not args.json:
            return run_live(args.delay, args.iterations, args.sort, args.processes)
        iterations = args.iterations if args.iterations is not None else 1
        return run_plain(args.delay, iterations, args.sort, args.processes or 15, args.json)


COMMAND = _Top()
