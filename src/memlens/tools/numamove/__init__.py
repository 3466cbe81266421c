# SPDX-License-Identifier: GPL-2.0-only
"""numamove: page migrations per interval by reason — NUMA balancing, compaction, demotion,
mbind/move_pages, contiguous-range allocation … — with the pages moved, the pages that
failed and the time spent migrating, summed exactly in nanoseconds.

The book's numamove.bt and libbpf-tools' numamove hook migrate_misplaced_page (or _folio)
with a kprobe/kretprobe (fentry/fexit in libbpf-tools): NUMA balancing only, and the time
added per call in whole milliseconds, so sub-millisecond migrations sum to 0 ms
(ANCHORS.md §1.14).  Here, on the counting engine, from the migration tracepoints every
migration passes through (migrate_pages() in mm/migrate.c, whatever the reason):

  migrate:mm_migrate_pages        at the end of each migrate_pages() call: succeeded and
                                  failed (pages), mode, and `reason` (enum migrate_reason)
  migrate:mm_migrate_pages_start  at its start (mode, reason), since Linux 5.13 ("mm: cma:
                                  add trace events for CMA alloc perf testing")

One engine in trace mode streams both events (64-byte records) and user space adds them
up by the end's `reason`: every end counts its pages, whether or not its start was seen,
and the time of a call is the end's kernel timestamp (bpf_ktime_get_ns) minus its thread's
start's, added in exact nanoseconds.  Counting in the kernel (the engine keyed by the
`reason` field, latency pairs for the time) is the better shape, at NUMA-balancing rates
especially, but today's engine cannot do it: it reads a 4-byte field at offset 60 from
offset 56 (`mode`), its pairs drop ends whose start came before tracing, and it sums one
field per map (see README.md, "Engine").  Where the kernel has no start event, the
TIME_MS column is "-" and nothing else changes.

Reason names come from the running kernel's BTF (enum migrate_reason: MR_COMPACTION ->
"compaction"), else from the tracepoint's own print format.
"""
from __future__ import annotations

import re
import time
from typing import Any

from memlens.core.countingtool import CountingCommand, CountSpec
from memlens.core.session import positive_float, positive_int

END = "t:migrate:mm_migrate_pages"
START = "t:migrate:mm_migrate_pages_start"

EXAMPLES = """\
examples:
  memlens numamove                 # migrations by reason, every second (libbpf-tools)
  memlens numamove 5 12            # every 5 s, 12 times
  memlens numamove -p 1234         # migrations done in PID 1234 (NUMA balancing faults)
  memlens numamove --json -d 30    # one JSON "report" per interval, then a "summary"

output (`memlens numamove 1 4` while `echo 1 > /proc/sys/vm/compact_memory` runs, one node):
  TIME     REASON              CALLS   MIGRATED   FAILED    TIME_MS
  11:30:06 -                       0          0        0      0.000
  11:30:07 compaction             42       3958       34     20.201
  11:30:08 -                       0          0        0      0.000

REASON    enum migrate_reason, from the kernel's BTF: compaction, numa_misplaced (NUMA
          balancing), demotion (memory tiering), syscall (move_pages, migrate_pages,
          cpuset), mempolicy_mbind, contig_range (CMA, gigantic pages), memory_failure,
          memory_hotplug, longterm_pin, damon
CALLS     migrate_pages() calls (one per batch of pages)
MIGRATED  pages moved (a THP counts its base pages)
FAILED    pages that could not be moved
TIME_MS   time inside migrate_pages(), summed in ns and shown in ms (3 decimals)
An interval without migrations prints one "-" row, so the clock keeps ticking.
"""

SPEC = CountSpec(
    name="numamove",
    what="page migrations by reason",
    summary="Page migrations by reason (NUMA balancing, compaction, demotion, ...): pages "
            "moved, failed, time (numamove).",
    probes=(END,),
    keys=("field",),
    unit="migrated_pages",
    epilog=EXAMPLES,
)

_SYMBOLIC = re.compile(r"__print_symbolic\(REC->reason,(.*?)\)\s*$", re.S)
_PAIR = re.compile(r"\{\s*(-?\d+)\s*,\s*\"([^\"]+)\"\s*\}")


def reason_names() -> dict[int, str]:
    """{value: name} of enum migrate_reason: from BTF (MR_NUMA_MISPLACED ->
    "numa_misplaced"), else from the tracepoint's print format, which names them too."""
    from memlens.core import btfenum
    from memlens.errors import KernelLacks

    try:
        members = btfenum.enum_members(None, "migrate_reason")
    except (KernelLacks, OSError):
        members = {}
    names = {v: k.removeprefix("MR_").lower() for k, v in members.items() if k != "MR_TYPES"}
    if names:
        return names
    try:
        from memlens.core import kernel

        root = kernel.tracefs_path()
        with open(f"{root}/events/migrate/mm_migrate_pages/format") as f:
            text = f.read()
    except (OSError, TypeError):
        return {}
    fmt = text.split("print fmt:", 1)[-1]
    m = _SYMBOLIC.search(fmt.strip())
    body = m.group(1) if m else fmt.rsplit("REC->reason", 1)[-1]
    return {int(v): n for v, n in _PAIR.findall(body)}


class NumamoveTool:
    """The runner protocol (core/runner.py) over one engine in trace mode on both migrate
    tracepoints: each end record gives its reason and pages (every end counts, whether or
    not its start was seen); the time is the end's kernel timestamp minus its thread's
    start's (the ring buffer keeps one thread's records in order)."""

    name = "numamove"
    STALE_NS = 60 * 1_000_000_000  # a start whose end never came (the thread died)

    def __init__(self, args, timed: bool) -> None:
        from memlens.core.engine import Engine
        from memlens.core.probespec import parse_all

        self.args, self.timed = args, timed
        self.engine = Engine(parse_all([START, END] if timed else [END]), keys=(),
                             trace=True)
        self.end_probe = 1 if timed else 0
        self.names = reason_names()
        pid = getattr(args, "pid", None)
        self.what = SPEC.what + (f" for PID {pid}" if pid else "")
        self._starts: dict[int, int] = {}       # tid -> start timestamp (ns)
        self._rows: dict[int, dict[str, Any]] = {}  # reason -> row, since the last report
        self._layout: dict[str, tuple[int, int, bool]] = {}
        self.totals: dict[int, dict[str, int]] = {}
        self.events = 0

    def start(self) -> None:
        from memlens.core.privileges import require_tracing_privileges
        from memlens.core.session import check_pid_exists

        require_tracing_privileges(self.name)
        pid = getattr(self.args, "pid", None)
        check_pid_exists(pid)
        self.engine.start(pid=pid, cgroup=getattr(self.args, "cgroup", None))
        fmt = self.engine.formats[self.end_probe]
        for name in ("succeeded", "failed", "reason"):
            f = fmt.field(name)
            self._layout[name] = (f.offset, f.size, f.signed)

    def poll(self, timeout: float) -> list[dict]:
        self._add(self.engine.poll(timeout))
        return self.engine.lost()

    def _field(self, data: bytes, name: str) -> int:
        off, size, signed = self._layout[name]
        return int.from_bytes(data[off:off + size], "little", signed=signed)

    def _add(self, events) -> None:
        for ev in events:
            self.events += 1
            tid, ts = int(ev["tid"]), int(ev["ts_ns"])
            if int(ev["probe"]) != self.end_probe:
                self._starts[tid] = ts
                if len(self._starts) > 4096:
                    self._starts = {t: s for t, s in self._starts.items()
                                    if ts - s < self.STALE_NS}
                continue
            data = bytes(ev["data"][:int(ev["size"])])
            reason = self._field(data, "reason")
            row = self._row(reason)
            row["calls"] += 1
            row["migrated_pages"] += self._field(data, "succeeded")
            row["failed_pages"] += self._field(data, "failed")
            began = self._starts.pop(tid, None)
            if self.timed and began is not None and ts >= began:
                ns = ts - began
                row["time_ns"] += ns
                row["timed_calls"] += 1
                row["max_ns"] = max(row["max_ns"], ns)

    def _row(self, reason: int) -> dict[str, Any]:
        r = self._rows.get(reason)
        if r is None:
            timed = 0 if self.timed else None
            r = self._rows[reason] = {"reason": self.reason_name(reason),
                                      "reason_value": reason, "calls": 0,
                                      "migrated_pages": 0, "failed_pages": 0,
                                      "time_ns": timed, "timed_calls": timed, "max_ns": timed}
        return r

    def reason_name(self, value: int) -> str:
        return self.names.get(value, f"reason#{value}")

    def report(self, final: bool) -> list[dict]:
        self._add(self.engine.poll(0))
        entries = sorted(self._rows.values(), key=lambda r: (-r["migrated_pages"], r["reason"]))
        self._rows = {}
        for r in entries:
            t = self.totals.setdefault(r["reason_value"], {
                "calls": 0, "migrated_pages": 0, "failed_pages": 0, "time_ns": 0,
                "timed_calls": 0, "max_ns": 0})
            for k in ("calls", "migrated_pages", "failed_pages", "time_ns", "timed_calls"):
                t[k] += r[k] or 0
            t["max_ns"] = max(t["max_ns"], r["max_ns"] or 0)
        return [*self.engine.lost(),
                {"type": "report", "time": time.strftime("%H:%M:%S"),
                 "timestamp": time.time(), "final": final,
                 "interval_s": getattr(self.args, "interval", None),
                 "timed": self.timed, "entries": entries}]

    def summary(self) -> list[dict]:
        by_reason = [{"reason": self.reason_name(k), "reason_value": k, **v}
                     for k, v in sorted(self.totals.items(),
                                        key=lambda kv: -kv[1]["migrated_pages"])]
        if not self.timed:
            for r in by_reason:
                r["time_ns"] = r["timed_calls"] = r["max_ns"] = None
        tot = self.totals.values()
        return [{"type": "summary",
                 "migrated_pages": sum(v["migrated_pages"] for v in tot),
                 "failed_pages": sum(v["failed_pages"] for v in tot),
                 "calls": sum(v["calls"] for v in tot),
                 "time_ns": sum(v["time_ns"] for v in tot) if self.timed else None,
                 "by_reason": by_reason, "lost": self.engine.total_lost(),
                 "probes": [p.text for p in self.engine.probes]}]

    def close(self) -> None:
        self.engine.close()


class NumamoveCommand(CountingCommand):
    def add_spec_arguments(self, parser) -> None:
        # libbpf-tools' numamove prints every second; BCC's interval [count] positionals
        parser.add_argument("interval_pos", nargs="?", type=positive_float, metavar="interval",
                            help="seconds between reports (default 1)")
        parser.add_argument("count_pos", nargs="?", type=positive_int, metavar="count",
                            help="stop after COUNT reports")

    def run(self, args) -> int:
        if args.interval_pos is not None:
            args.interval = args.interval_pos
        elif args.interval is None:
            args.interval = 1.0
        if args.count_pos is not None:
            args.count = args.count_pos
        return super().run(args)

    def probe_specs(self, args) -> list[str]:
        return [END]

    def make_tool(self, args) -> NumamoveTool:
        from memlens import registry
        from memlens.core.hooks import choose

        choose(registry.hooks_of(self.name, 0), self.name)  # exit 4 without migrate events
        timed = any(h.probe()[0] for h in registry.hooks_of(self.name, 1))
        if not timed:
            from memlens.core.countingtool import write_stderr

            write_stderr(f"memlens {self.name}: no tracepoint {START[2:]} here: "
                         "no TIME_MS column")
        return NumamoveTool(args, timed)

    def renderer(self, args):
        return Renderer()


class Renderer:
    """One header, then a row per reason and interval, each with its time (libbpf-tools'
    numamove prints `TIME NUMA_migrations NUMA_migrations_ms` every second).  A quiet
    interval prints one "-" row; a final partial interval prints only if it has rows."""

    HEAD = (f"{'TIME':<8} {'REASON':<16} {'CALLS':>8} {'MIGRATED':>10} {'FAILED':>8} "
            f"{'TIME_MS':>10}")

    def __init__(self) -> None:
        self.header_done = False

    def __call__(self, rec: dict) -> None:
        if rec.get("type") != "report":
            return
        entries = rec["entries"]
        if rec.get("final") and not entries and self.header_done:
            return
        out = []
        if not self.header_done:
            out.append(self.HEAD)
            self.header_done = True
        if not entries:
            out.append(f"{rec['time']:<8} {'-':<16} {0:>8} {0:>10} {0:>8} "
                       f"{_ms(0 if rec.get('timed') else None):>10}")
        for e in entries:
            out.append(f"{rec['time']:<8} {e['reason'][:16]:<16} {e['calls']:>8} "
                       f"{e['migrated_pages']:>10} {e['failed_pages']:>8} "
                       f"{_ms(e['time_ns']):>10}")
        print("\n".join(out), flush=True)


def _ms(ns: int | None) -> str:
    if ns is None:
        return "-"
    return f"{ns // 1_000_000}.{ns % 1_000_000 // 1000:03d}"


COMMAND = NumamoveCommand(SPEC)
