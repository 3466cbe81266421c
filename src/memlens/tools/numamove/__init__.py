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

Counted in the kernel: keyed by the end's `reason`, summing `succeeded` and `failed`, and
the start -> end latency pair adds each call's time in exact nanoseconds.  Every end counts
its pages, also a call in flight when tracing started (counted, not timed).  Where the
kernel has no start event, the TIME_MS column is "-" and nothing else changes.

Reason names come from the running kernel's BTF (enum migrate_reason: MR_COMPACTION ->
"compaction"), else from the tracepoint's own print format.
"""
from __future__ import annotations

import time

from memlens.core.countingtool import CountingCommand, CountingTool, CountSpec, write_stderr
from memlens.core.record import replace

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
    positional_interval=True, default_interval=1.0,
    name="numamove",
    what="page migrations by reason",
    summary="Page migrations by reason (NUMA balancing, compaction, demotion, ...): pages "
            "moved, failed, time (numamove).",
    probes=(START, END),
    keys=("field",),
    field="reason",
    sum_field="succeeded",
    sum2_field="failed",
    pairs={END: START},
    count_unstarted=True,   # a call in flight at attach: its pages counted, its time not
    unit="migrated_pages",
    epilog=EXAMPLES,
)
# a kernel without mm_migrate_pages_start (before 5.13): no time
UNTIMED = replace(SPEC, probes=(END,), pairs=None, count_unstarted=False)

_SYMBOLIC = r"__print_symbolic\(REC->reason,(.*?)\)\s*$"
_PAIR = r"\{\s*(-?\d+)\s*,\s*\"([^\"]+)\"\s*\}"


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
    import re  # here: re (with enum) is ~8-14 ms of a start on this VM

    fmt = text.split("print fmt:", 1)[-1]
    m = re.search(_SYMBOLIC, fmt.strip(), re.S)
    body = m.group(1) if m else fmt.rsplit("REC->reason", 1)[-1]
    return {int(v): n for v, n in re.findall(_PAIR, body)}


class NumamoveTool(CountingTool):
    """The counting engine's rows by reason, named and summed over the run."""

    def __init__(self, spec: CountSpec, args) -> None:
        from memlens.core.probespec import parse_all

        super().__init__(spec, parse_all(list(spec.probes)), spec.keys, args,
                         field_name=spec.field, sum_field=spec.sum_field,
                         max_keys=args.max_keys)
        self.timed = bool(spec.pairs)
        self._names: dict[int, str] | None = None
        self.totals: dict[int, dict[str, int]] = {}

    @property
    def names(self) -> dict[int, str]:
        """{value: name} of the migrate reasons, read at the first report (vmlinux BTF
        parsed: ~10 ms that were before the banner)."""
        if self._names is None:
            self._names = reason_names()
        return self._names

    def reason_name(self, value: int) -> str:
        return self.names.get(value, f"reason#{value}")

    def report(self, final: bool) -> list[dict]:
        timed = 0 if self.timed else None
        entries = [{"reason": self.reason_name(e.parts["field"]),
                    "reason_value": e.parts["field"], "calls": e.count,
                    "migrated_pages": e.sum, "failed_pages": e.sum2,
                    "time_ns": e.time_ns if self.timed else None,
                    "max_ns": e.max_ns if self.timed else None,
                    "timed_calls": e.timed if self.timed else None}
                   for e in self.engine.collect()]
        entries.sort(key=lambda r: (-r["migrated_pages"], r["reason"]))
        for r in entries:
            t = self.totals.setdefault(r["reason_value"], {
                "calls": 0, "migrated_pages": 0, "failed_pages": 0, "time_ns": timed,
                "max_ns": timed, "timed_calls": timed})
            for k in ("calls", "migrated_pages", "failed_pages"):
                t[k] += r[k]
            if self.timed:
                t["time_ns"] += r["time_ns"]
                t["timed_calls"] += r["timed_calls"]
                t["max_ns"] = max(t["max_ns"], r["max_ns"])
        return [*self.lost(),
                {"type": "report", "time": time.strftime("%H:%M:%S"),
                 "timestamp": time.time(), "final": final,
                 "interval_s": getattr(self.args, "interval", None),
                 "timed": self.timed, "entries": entries}]

    def summary(self) -> list[dict]:
        by_reason = [{"reason": self.reason_name(k), "reason_value": k, **v}
                     for k, v in sorted(self.totals.items(),
                                        key=lambda kv: -kv[1]["migrated_pages"])]
        tot = self.totals.values()
        return [{"type": "summary",
                 "migrated_pages": sum(v["migrated_pages"] for v in tot),
                 "failed_pages": sum(v["failed_pages"] for v in tot),
                 "calls": sum(v["calls"] for v in tot),
                 "time_ns": sum(v["time_ns"] for v in tot) if self.timed else None,
                 "by_reason": by_reason, "lost": self.engine.total_lost(),
                 "probes": [p.text for p in self.engine.probes]}]


class NumamoveCommand(CountingCommand):
    def probe_specs(self, args) -> list[str]:
        return [END]

    def make_tool(self, args) -> NumamoveTool:
        from memlens import registry
        from memlens.core.hooks import choose

        choose(registry.hooks_of(self.name, 0), self.name)  # exit 4 without migrate events
        if any(h.probe()[0] for h in registry.hooks_of(self.name, 1)):
            return NumamoveTool(SPEC, args)
        write_stderr(f"memlens {self.name}: no tracepoint {START[2:]} here: no TIME_MS column")
        return NumamoveTool(UNTIMED, args)

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
