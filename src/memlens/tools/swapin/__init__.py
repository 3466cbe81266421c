# SPDX-License-Identifier: GPL-2.0-only
"""swapin: pages swapped in (and out) by process, with the major faults that waited on
them — BCC's swapin (`COMM PID COUNT` per interval, from a kprobe on swap_readpage /
swap_read_folio) rebuilt on the counting engine from what this kernel offers, plus the
swap-outs its users asked for (BCC #4171).

Where the swap-ins come from, best first (declared in the registry; `memlens doctor`
shows the choice):
  1. tracepoint memcg:count_memcg_events (recent kernels; 6.18 here): one record each
     time a memory cgroup counter moves, `item` saying which counter (a value of enum
     vm_event_item, read from the kernel's BTF: core/btfenum.py) and `val` by how much.
     PSWPIN moves once per folio read from swap, by its pages, in the context of the task
     that reads it; PSWPOUT once per folio written, in the context of the task that
     reclaims.  So the swap-ins and the swap-outs are one tracepoint with two filters,
     which the engine cannot hold as two probes (one filter per object): it counts by the
     `item` field, filtered to the range between the two values (the whole filter runs in
     the kernel), and summing `val`; the two items become two columns here (anything else
     in the range is dropped).
  2. kprobe swap_read_folio (its name since commit c9bdf768dd93), then swap_readpage: one
     count per call, as BCC counts; no swap-outs (the SWAPOUT column is empty).
Major faults come from the perf software event: each is a fault that waited for a read
(a swap-in, or a page-cache miss of a file mapping), as /proc/PID/stat's majflt counts them.
The time each one waited — "who is blocked on swap-ins, and how long" — is a latency pair in
the engine: the clock starts at the fault's entry (x86's exceptions:page_fault_user, or
_kernel for a fault on a user address taken in a system call) and stops at the major-fault
perf event, which the kernel raises when it accounts the finished fault (mm_account_fault,
after any retry that waited for the read).  A minor fault's entry is overwritten by the
thread's next fault, so it costs one map update and no row.
"""
from __future__ import annotations

import time

from memlens.core.countingtool import CountingCommand, CountSpec, Plan
from memlens.core.hooks import Kprobe, Tracepoint

TYPE_CHECKING = False  # typing (with re and enum) is ~16 ms of the start on this VM
if TYPE_CHECKING:
    from typing import Any

MEMCG = Tracepoint("memcg", "count_memcg_events", fields=("item", "val"))
SWAP_READ_FOLIO = Kprobe("swap_read_folio")
SWAP_READPAGE = Kprobe("swap_readpage")

SWAPIN_ITEM, SWAPOUT_ITEM = "PSWPIN", "PSWPOUT"  # enum vm_event_item members

PLANS = {
    MEMCG: Plan(("t:memcg:count_memcg_events",)),
    SWAP_READ_FOLIO: Plan(("k:swap_read_folio",)),
    SWAP_READPAGE: Plan(("k:swap_readpage",)),
}
COLUMNS = ("swapin_pages", "swapout_pages", "major_faults", "major_wait_ns")
FAULT_ENTRIES = ("t:exceptions:page_fault_user", "t:exceptions:page_fault_kernel")

EXAMPLES = """\
examples:
  memlens swapin                  # pages swapped in/out by process, until Ctrl-C
  memlens swapin 1 10             # every second, 10 times (BCC: swapin 1 10)
  memlens swapin -T 5             # every 5 s, with a TIME column
  memlens swapin -p 1234 --json   # PID 1234 only; one JSON "report" per interval/at exit
  memlens swapin --cgroup /sys/fs/cgroup/memory/batch -d 30

output (a program filling 64 MiB in a 32 MiB memory cgroup, then reading it back):
  COMM                 PID      COUNT    SWAPOUT   MAJFLT   WAIT_MS   MAX_MS
  swap_reread        22847      16424      16413     2075    2346.6   575.90

COUNT    pages swapped in by the process (BCC's column), readahead included
SWAPOUT  pages swapped out by the process: reclaim writes them, so they count for the task
         that reclaimed (a process growing against its cgroup's limit: itself; global memory
         pressure: kswapd or whichever process was allocating), not the pages' owner
MAJFLT   major faults: faults that waited for a read, from swap (one per readahead
         cluster: page-cluster=3 reads 8 pages at once) or from a file (page-cache miss)
WAIT_MS  time the process's threads spent in those major faults, entry to completion (the
         read they waited for included), summed; MAX_MS the longest one.  "-" where the
         kernel lacks the fault-entry tracepoints (non-x86)
Rows are sorted by COUNT, largest last.  BCC's -T *hides* its time line; here -T adds a
TIME column as in the other memlens tools.
"""

SPEC = CountSpec(
    positional_interval=True,
    name="swapin",
    what="swap-ins and swap-outs by process",
    summary="Pages swapped in and out by process, with the major faults that waited "
            "(BCC swapin).",
    keys=("pid", "comm"),
    unit="swapin_pages",
    plans=PLANS,
    epilog=EXAMPLES,
)


class _Source:
    """One engine and how its entries become columns of the rows."""

    def __init__(self, engine, column: str | None = None,
                 items: dict[int, str] | None = None, weight: str = "count"):
        self.engine = engine
        self.column = column          # every entry counts here...
        self.items = items or {}      # ...or by the `item` field: value -> column
        self.weight = weight          # "count" (events) or "sum" (the summed field)


class SwapinTool:
    """The runner protocol (core/runner.py) over one engine per kind of probe: the swap
    tracepoint (a filter, a field key and a sum) and the major-fault perf event cannot be
    one engine (the engine's field key is the address for perf events)."""

    name = "swapin"

    def __init__(self, args, hook) -> None:
        from memlens.core.engine import Engine
        from memlens.core.probespec import parse_all

        self.args, self.hook = args, hook
        pid = getattr(args, "pid", None)
        max_keys = getattr(args, "max_keys", 10240)
        self.sources: list[_Source] = []
        self.items: dict[str, int] = {}
        if hook == MEMCG:
            from memlens.core import btfenum as vmevents

            self.items = vmevents.values(SWAPIN_ITEM, SWAPOUT_ITEM)
            lo, hi = min(self.items.values()), max(self.items.values())
            eng = Engine(parse_all(["t:memcg:count_memcg_events"]), keys=("pid", "comm",
                         "field"), field="item", sum_field="val",
                         filter=f"item >= {lo} && item <= {hi}", max_keys=max_keys)
            self.sources.append(_Source(eng, items={
                self.items[SWAPIN_ITEM]: "swapin_pages",
                self.items[SWAPOUT_ITEM]: "swapout_pages"}, weight="sum"))
        else:
            probe = PLANS[hook].probes[0]
            eng = Engine(parse_all([probe], pid), keys=("pid", "comm"), max_keys=max_keys)
            self.sources.append(_Source(eng, column="swapin_pages"))
        from memlens import registry

        # the registry's second need: optional, its column is empty without it
        self.has_major = any(h.probe()[0] for h in registry.hooks_of(self.name, 1))
        self.has_wait = False
        if self.has_major:
            # every major fault, as /proc/PID/stat's majflt counts them: swap-ins of
            # private file mappings' COW pages (libc's data, RELRO) happen in file-backed
            # mappings, so "anonymous mappings only" would miss some of the waits
            probes = ["sw:major-faults"]
            pairs = None
            self.has_wait = any(h.probe()[0] for h in registry.hooks_of(self.name, 2))
            if self.has_wait:
                entries = [t for t in FAULT_ENTRIES
                           if Tracepoint(*t[2:].split(":")).probe()[0]]
                probes = [*entries, "sw:major-faults"]
                pairs = {"sw:major-faults": tuple(entries)}
            # count_unstarted: a fault that began before tracing still counts, untimed
            eng = Engine(parse_all(probes), keys=("pid", "comm"), max_keys=max_keys,
                         pairs=pairs, count_unstarted=True)
            self.sources.append(_Source(eng, column="major_faults"))
        self.has_swapout = hook == MEMCG
        self.what = SPEC.what + (f" for PID {pid}" if pid else "")
        self.totals = dict.fromkeys(COLUMNS, 0)
        self.wait_max_ns = 0
        self.timed = 0  # major faults whose entry was seen (the others began before us)
        self.rows_seen = 0
        self.swappers: dict[tuple, None] = {}  # (pid, comm) that swapped, oldest first

    def start(self) -> None:
        from memlens.core.privileges import require_tracing_privileges
        from memlens.core.session import TargetExit, check_pid_exists

        require_tracing_privileges(self.name)
        pid = getattr(self.args, "pid", None)
        check_pid_exists(pid)
        self.target = TargetExit(pid)  # -p: end with the final report when it exits
        for src in self.sources:
            src.engine.start(pid=pid, cgroup=getattr(self.args, "cgroup", None))

    @property
    def finished(self) -> bool:
        target = getattr(self, "target", None)
        return target is not None and target.exited()

    @property
    def finish_reason(self) -> str:
        return self.target.reason

    def poll(self, timeout: float) -> list[dict]:
        out: list[dict] = []
        for i, src in enumerate(self.sources):
            src.engine.poll(timeout if i == 0 else 0.0)
            out.extend(src.engine.lost())
        return out

    def report(self, final: bool) -> list[dict]:
        rows: dict[tuple, dict[str, Any]] = {}
        for src in self.sources:
            for e in src.engine.collect():
                col = src.column or src.items.get(int(e.parts.get("field", -1)))
                if col is None:
                    continue  # another counter inside the filtered range
                key = (e.parts["pid"], e.parts["comm"])
                row = rows.get(key)
                if row is None:
                    row = rows[key] = {"pid": key[0], "comm": key[1],
                                       "swapin_pages": 0,
                                       "swapout_pages": 0 if self.has_swapout else None,
                                       "major_faults": 0 if self.has_major else None,
                                       "major_wait_ns": 0 if self.has_wait else None,
                                       "major_wait_max_ns": 0 if self.has_wait else None}
                row[col] += e.sum if src.weight == "sum" else e.count
                if col == "major_faults" and self.has_wait:
                    row["major_wait_ns"] += e.time_ns
                    row["major_wait_max_ns"] = max(row["major_wait_max_ns"], e.max_ns)
                    row["_timed"] = row.get("_timed", 0) + e.timed
        # a process is listed once it has swapped (then also in intervals where it only
        # waited); with -a or -p whenever it had a major fault
        for k, r in rows.items():
            if r["swapin_pages"] or r["swapout_pages"]:
                self.swappers[k] = None
                if len(self.swappers) > 65536:
                    self.swappers.pop(next(iter(self.swappers)))
        if not (getattr(self.args, "all", False) or getattr(self.args, "pid", None)):
            rows = {k: r for k, r in rows.items() if k in self.swappers}
        entries = sorted(rows.values(), key=lambda r: (r["swapin_pages"],
                                                       r["swapout_pages"] or 0,
                                                       r["major_faults"] or 0, r["pid"]))
        self.rows_seen += len(entries)
        for r in entries:  # the timed faults of the rows shown: the summary's totals
            self.timed += r.pop("_timed", 0)
            self.wait_max_ns = max(self.wait_max_ns, r["major_wait_max_ns"] or 0)
        for col in COLUMNS:
            self.totals[col] += sum(r[col] or 0 for r in entries)
        lost = [rec for src in self.sources for rec in src.engine.lost()]
        rec = {"type": "report", "time": time.strftime("%H:%M:%S"), "timestamp": time.time(),
               "final": final, "interval_s": getattr(self.args, "interval", None),
               "entries": entries}
        return [*lost, rec]

    def summary(self) -> list[dict]:
        lost: dict[str, int] = {}
        for src in self.sources:
            for k, v in src.engine.total_lost().items():
                lost[k] = lost.get(k, 0) + v
        rec: dict[str, Any] = {"type": "summary", **self.totals, "keys": self.rows_seen,
                               "lost": lost, "hook": self.hook.label,
                               "probes": [p.text for s in self.sources
                                          for p in s.engine.probes]}
        if not self.has_swapout:
            rec["swapout_pages"] = None
        if not self.has_major:
            rec["major_faults"] = None
        if self.has_wait:
            rec["major_wait_max_ns"] = self.wait_max_ns
            rec["major_faults_timed"] = self.timed
        else:
            rec["major_wait_ns"] = None
        if self.items:
            rec["vm_event_items"] = self.items
        return [rec]

    def close(self) -> None:
        target = getattr(self, "target", None)
        if target is not None:
            target.close()
        for src in self.sources:
            src.engine.close()


class SwapinCommand(CountingCommand):
    def add_spec_arguments(self, parser) -> None:
        parser.add_argument("-T", "--time", action="store_true",
                            help="include a time column (HH:MM:SS) in every row")
        parser.add_argument("-a", "--all", action="store_true",
                            help="also list processes that had major faults but no swap "
                                 "activity (file page-cache misses, or waits on another "
                                 "task's swap read)")


    def make_tool(self, args) -> SwapinTool:
        from memlens import registry
        from memlens.core.hooks import choose

        return SwapinTool(args, choose(registry.hooks_of(self.name), self.name))

    def renderer(self, args):
        return Renderer(interval=args.interval is not None, time_col=args.time)


class Renderer:
    """BCC's columns (COMM PID COUNT), then SWAPOUT and MAJFLT.  Every interval starts with
    its time and the header, as BCC prints it; with -T each row carries its time instead
    and the header is printed once.  An empty report at exit after intervals prints
    nothing (its interval was not complete)."""

    HEAD = (f"{'COMM':<16} {'PID':>7} {'COUNT':>10} {'SWAPOUT':>10} {'MAJFLT':>8} "
            f"{'WAIT_MS':>9} {'MAX_MS':>8}")

    def __init__(self, interval: bool, time_col: bool = False):
        self.interval, self.time_col = interval, time_col
        self.header_done = False

    def __call__(self, rec: dict) -> None:
        from memlens.output.table import escape

        if rec.get("type") != "report":
            return
        entries = rec["entries"]
        if self.interval and rec.get("final") and not entries:
            return
        out = []
        if self.time_col:
            if not self.header_done:
                out.append(f"{'TIME':<8} {self.HEAD}")
        else:
            if self.interval:
                out.append(f"\n[{rec['time']}]")
            out.append(self.HEAD)
        self.header_done = True
        for e in entries:
            line = (f"{escape(str(e['comm']))[:16]:<16} {e['pid']:>7} "
                    f"{e['swapin_pages']:>10} {_num(e['swapout_pages']):>10} "
                    f"{_num(e['major_faults']):>8} {_ms(e['major_wait_ns'], 1):>9} "
                    f"{_ms(e['major_wait_max_ns'], 2):>8}")
            out.append((f"{rec['time']:<8} " if self.time_col else "") + line)
        if out:
            print("\n".join(out), flush=True)


def _num(v) -> str:
    return "-" if v is None else str(v)


def _ms(ns, digits: int) -> str:
    return "-" if ns is None else f"{ns / 1e6:.{digits}f}"


COMMAND = SwapinCommand(SPEC)
