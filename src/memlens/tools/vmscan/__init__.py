# SPDX-License-Identifier: GPL-2.0-only
"""vmscan: page reclaim per interval — the book's vmscan.bt (which no longer loads on 6.1+:
mm_vmscan_writepage became mm_vmscan_write_folio, book issue #28) rebuilt on the counting
engine, with memory-cgroup and node reclaim beside it and the pages each reclaim freed.

Every measure is a pair of vmscan tracepoints (begin/end, the engine's latency pairs: the
begin stamps its thread, the end counts with the time since, with a log2 histogram in the
kernel) or one counted tracepoint:

  S-SLABms     mm_shrink_slab_start/end                  time shrinking slab caches
  D-RECLAIMms  mm_vmscan_direct_reclaim_begin/end        global direct reclaim (allocating
                                                         tasks below the min watermark)
  M-RECLAIMms  mm_vmscan_memcg_reclaim_begin/end         memory cgroup limit reclaim
               (+ memcg_softlimit_reclaim_begin/end in JSON: v1 soft limits, nested in
               kswapd's or direct reclaim, so counted apart)
  N-RECLAIMms  mm_vmscan_node_reclaim_begin/end          node reclaim (zone_reclaim_mode)
  KSWAPD       mm_vmscan_wakeup_kswapd                   wake-ups asked of kswapd (the
                                                         book's column); kswapd_wake, kswapd
                                                         actually starting a pass, in JSON
  WRITEPAGE    mm_vmscan_write_folio                     folios reclaim wrote (swap-outs;
               (mm_vmscan_writepage on older kernels:    reclaim no longer writes dirty
               whichever tracefs has)                    file folios)
  PGSTEAL      nr_reclaimed of the direct, memcg and node reclaim ends: pages reclaimed
               (kswapd's reclaim has no end event carrying it: /proc/vmstat pgsteal_kswapd)

One engine counts them all, summing nr_reclaimed where a probe has it (the reclaim ends;
the engine reads each probe's fields where its format puts them, and 0 where it has none).
A tracepoint this kernel lacks leaves its measure out (a stderr line, null in JSON, "-" in
the table); the tool fails (exit 4) only when every one is missing.
"""
from __future__ import annotations

import sys
import time

from memlens.core.countingtool import CountingCommand, CountSpec
from memlens.core.record import record

TYPE_CHECKING = False  # typing (with re and enum) is ~16 ms of the start on this VM
if TYPE_CHECKING:
    from typing import Any

CATEGORY = "vmscan"


@record(frozen=True)
class Pair:
    key: str        # JSON prefix: <key>_count, <key>_ns, <key>_max_ns, <key>_pages
    begin: str
    end: str
    title: str      # histogram title
    pages: bool     # the end carries nr_reclaimed


PAIRS = (
    Pair("shrink_slab", "mm_shrink_slab_start", "mm_shrink_slab_end", "slab shrinking",
         False),
    Pair("direct_reclaim", "mm_vmscan_direct_reclaim_begin", "mm_vmscan_direct_reclaim_end",
         "direct reclaim", True),
    Pair("memcg_reclaim", "mm_vmscan_memcg_reclaim_begin", "mm_vmscan_memcg_reclaim_end",
         "memory cgroup reclaim", True),
    Pair("memcg_softlimit_reclaim", "mm_vmscan_memcg_softlimit_reclaim_begin",
         "mm_vmscan_memcg_softlimit_reclaim_end", "memory cgroup soft-limit reclaim", True),
    Pair("node_reclaim", "mm_vmscan_node_reclaim_begin", "mm_vmscan_node_reclaim_end",
         "node reclaim", True),
)
# counted tracepoints -> JSON field
COUNTS = {"mm_vmscan_wakeup_kswapd": "kswapd_wakeups", "mm_vmscan_kswapd_wake": "kswapd_runs",
          "mm_vmscan_write_folio": "pages_written", "mm_vmscan_writepage": "pages_written"}
# pages reclaimed: softlimit reclaim runs inside kswapd's or direct reclaim, whose
# nr_reclaimed already includes its pages
PGSTEAL_FROM = ("direct_reclaim", "memcg_reclaim", "node_reclaim")
MEASURES = (*(p.key for p in PAIRS), "kswapd_wakeups", "kswapd_runs", "pages_written")

EXAMPLES = """\
examples:
  memlens vmscan                 # a row every second until Ctrl-C, histograms at the end
  memlens vmscan -T 5 12         # every 5 s, 12 rows, with a TIME column
  memlens vmscan --hist 10       # latency histograms after every 10 s row too
  memlens vmscan --cgroup /sys/fs/cgroup/memory/batch -d 60 --json
  memlens vmscan -p 1234         # reclaim done by PID 1234 only (kswapd is a process too)

output (a process reading 128 MiB of files in a 32 MiB memory cgroup):
  TIME     S-SLABms D-RECLAIMms M-RECLAIMms N-RECLAIMms KSWAPD WRITEPAGE PGSTEAL
  14:02:11     0.00        0.00        5.74        0.00      0         0   57856

S-SLABms, D-, M-, N-RECLAIMms: milliseconds spent in slab shrinking, direct, memory-cgroup
and node reclaim in the interval (summed over tasks; slab shrinking also runs inside the
others).  KSWAPD: kswapd wake-ups.  WRITEPAGE: folios reclaim wrote out (swap).  PGSTEAL:
pages reclaimed by direct, memcg and node reclaim.  "-": this kernel lacks the tracepoint.
At exit (and per interval with --hist): log2 latency histograms in microseconds.
"""

SPEC = CountSpec(
    positional_interval=True, default_interval=1.0,
    name="vmscan",
    what="page reclaim (vmscan)",
    summary="Page reclaim per interval: slab, direct, memcg and node reclaim time, kswapd "
            "wake-ups, pages written and reclaimed (vmscan.bt).",
    probes=tuple(f"t:{CATEGORY}:{n}" for p in PAIRS for n in (p.begin, p.end))
    + tuple(f"t:{CATEGORY}:{n}" for n in COUNTS),
    keys=("probe",),
    epilog=EXAMPLES,
)


def _tracepoints(hook) -> list[str]:
    """The tracepoint names a registry hook stands for (one, or AllOf several)."""
    hooks = getattr(hook, "hooks", None) or (hook,)
    return [h.name for h in hooks]


def survey() -> tuple[list[str], list[dict[str, str]]]:
    """(vmscan tracepoints to attach, missing measures) from the registry's declaration of
    what vmscan needs, probed against this kernel: each need's first available hook."""
    from memlens import registry

    tool = registry.find("vmscan")
    have: list[str] = []
    missing: list[dict[str, str]] = []
    for need in tool.needs:
        for hook in need.hooks:
            ok, _ = hook.probe()
            if ok:
                have.extend(_tracepoints(hook))
                break
        else:
            why = "; ".join(f"{h.label}: {h.probe()[1]}" for h in need.hooks)
            missing.append({"measure": need.what, "reason": why})
    return have, missing


class VmscanTool:
    """The runner protocol over one engine: times, histograms and counts of the pairs and
    counted tracepoints, and pages reclaimed (nr_reclaimed summed at the reclaim ends)."""

    name = "vmscan"

    def __init__(self, args, tracepoints: list[str], missing: list[dict[str, str]]):
        from memlens.core.engine import Engine
        from memlens.core.probespec import parse_all

        self.args = args
        self.missing = missing
        have = set(tracepoints)
        self.pairs = [p for p in PAIRS if p.begin in have and p.end in have]
        self.counted = [n for n in COUNTS if n in have]
        if not self.pairs and not self.counted:
            from memlens.errors import KernelLacks

            raise KernelLacks("vmscan: this kernel has none of the vmscan tracepoints: "
                              + "; ".join(f"{m['measure']}: {m['reason']}" for m in missing))
        tp = lambda n: f"t:{CATEGORY}:{n}"  # noqa: E731
        specs = [tp(n) for p in self.pairs for n in (p.begin, p.end)]
        specs += [tp(n) for n in self.counted]
        self.engine = Engine(parse_all(specs), keys=("probe",),
                             pairs={tp(p.end): tp(p.begin) for p in self.pairs},
                             sum_field="nr_reclaimed" if any(p.pages for p in self.pairs)
                             else None,
                             hist=True, hist_unit="usecs",
                             # an episode in flight at attach: its pages count, untimed
                             count_unstarted=True,
                             max_keys=getattr(args, "max_keys", 10240))
        self.measure_of = {tp(p.end): p.key for p in self.pairs}
        self.measure_of.update({tp(n): COUNTS[n] for n in self.counted})
        self.present = set(self.measure_of.values())
        pid = getattr(args, "pid", None)
        self.what = SPEC.what + (f" for PID {pid}" if pid else "")
        if getattr(args, "cgroup", None):
            self.what += f" in cgroup {args.cgroup}"
        self.totals = self._blank()
        self.run_hists: dict[str, list[int]] = {}
        self.final_drained = False
        self.reports = 0

    def start(self) -> None:
        from memlens.core.privileges import require_tracing_privileges
        from memlens.core.session import check_pid_exists

        require_tracing_privileges(self.name)
        pid = getattr(self.args, "pid", None)
        check_pid_exists(pid)
        self.engine.start(pid=pid, cgroup=getattr(self.args, "cgroup", None))

    def poll(self, timeout: float) -> list[dict]:
        self.engine.poll(timeout)
        return self.engine.lost()

    def _blank(self) -> dict[str, Any]:
        """Every field of a row: 0 where the tracepoint is here, None where it is not."""
        row: dict[str, Any] = {}
        for p in PAIRS:
            here = p.key in self.present
            row[f"{p.key}_count"] = 0 if here else None
            row[f"{p.key}_ns"] = 0 if here else None
            row[f"{p.key}_max_ns"] = 0 if here else None
            if p.pages:
                row[f"{p.key}_pages"] = 0 if here else None
        for name in ("kswapd_wakeups", "kswapd_runs", "pages_written"):
            row[name] = 0 if name in self.present else None
        here = [k for k in PGSTEAL_FROM if k in self.present]
        row["pages_reclaimed"] = 0 if here else None
        return row

    def _drain_hists(self) -> dict[str, list[int]]:
        """The kernel's histograms since the last drain, {measure: log2 usecs buckets}
        (trailing empty buckets left out), added to the run's."""
        out = {}
        for probe, buckets in self.engine.histograms().items():
            key = self.measure_of[probe]
            last = max((i for i, n in enumerate(buckets) if n), default=-1)
            if last < 0:
                continue
            out[key] = buckets[:last + 1]
            run = self.run_hists.setdefault(key, [])
            run.extend([0] * (last + 1 - len(run)))
            for i, n in enumerate(out[key]):
                run[i] += n
        return out

    def report(self, final: bool) -> list[dict]:
        row = self._blank()
        for e in self.engine.collect():
            key = self.measure_of.get(e.parts["probe"])
            if key in COUNTS.values():
                row[key] += e.count
            elif key is not None:
                row[f"{key}_count"] += e.count
                row[f"{key}_ns"] += e.time_ns
                row[f"{key}_max_ns"] = max(row[f"{key}_max_ns"], e.max_ns)
                if f"{key}_pages" in row:
                    row[f"{key}_pages"] += e.sum
                    if key in PGSTEAL_FROM:
                        row["pages_reclaimed"] += e.sum
        for k, v in row.items():
            if v is not None:
                self.totals[k] = (max(self.totals[k], v) if k.endswith("_max_ns")
                                  else self.totals[k] + v)
        rec: dict[str, Any] = {"type": "report", "time": time.strftime("%H:%M:%S"),
                               "timestamp": time.time(), "final": final,
                               "interval_s": getattr(self.args, "interval", None), **row}
        # the kernel's histograms are drained only per interval with --hist: otherwise the
        # last drain (at exit) holds the whole run
        if getattr(self.args, "hist", False) or final:
            hists = self._drain_hists()
            self.final_drained = final
            if getattr(self.args, "hist", False):
                rec["histogram_unit"] = "usecs"
                rec["histograms"] = hists
        self.reports += 1
        return [*self.engine.lost(), rec]

    def summary(self) -> list[dict]:
        if not self.final_drained:  # stopped by a row count: what the kernel still holds
            self._drain_hists()
        return [{"type": "summary", **self.totals, "reports": self.reports,
                 "histogram_unit": "usecs", "histograms": self.run_hists,
                 "missing": self.missing, "lost": self.engine.total_lost(),
                 "probes": [p.text for p in self.engine.probes]}]

    def close(self) -> None:
        self.engine.close()


class VmscanCommand(CountingCommand):
    def add_spec_arguments(self, parser) -> None:
        parser.add_argument("-T", "--time", action="store_true",
                            help="include a time column (HH:MM:SS) in every row")
        parser.add_argument("--hist", action="store_true",
                            help="print the latency histograms after every row too")


    def make_tool(self, args) -> VmscanTool:
        tracepoints, missing = survey()
        for m in missing:
            print(f"memlens vmscan: no {m['measure']} here ({m['reason']}): not measured",
                  file=sys.stderr, flush=True)
        return VmscanTool(args, tracepoints, missing)

    def renderer(self, args):
        return Renderer(time_col=args.time, hist=args.hist)


def _ms(ns) -> str:
    return "-" if ns is None else f"{ns / 1e6:.2f}"


def _n(v) -> str:
    return "-" if v is None else str(v)


class Renderer:
    """One row per interval (the book's columns, plus node reclaim and pages reclaimed);
    the histograms after the row with --hist, and the whole run's at exit."""

    COLUMNS = (("S-SLABms", 8), ("D-RECLAIMms", 11), ("M-RECLAIMms", 11),
               ("N-RECLAIMms", 11), ("KSWAPD", 6), ("WRITEPAGE", 9), ("PGSTEAL", 7))

    def __init__(self, time_col: bool = False, hist: bool = False):
        self.time_col, self.hist = time_col, hist
        self.header_done = False

    def header(self) -> str:
        head = " ".join(f"{name:>{w}}" for name, w in self.COLUMNS)
        return (f"{'TIME':<8} " if self.time_col else "") + head

    def __call__(self, rec: dict) -> None:
        kind = rec.get("type")
        if kind == "summary":
            _print_hists(rec.get("histograms") or {}, "whole run")
            return
        if kind != "report":
            return
        out = []
        if not self.header_done or self.hist:
            out.append(("\n" if self.header_done else "") + self.header())
            self.header_done = True
        cells = (_ms(rec["shrink_slab_ns"]), _ms(rec["direct_reclaim_ns"]),
                 _ms(rec["memcg_reclaim_ns"]), _ms(rec["node_reclaim_ns"]),
                 _n(rec["kswapd_wakeups"]), _n(rec["pages_written"]),
                 _n(rec["pages_reclaimed"]))
        line = " ".join(f"{c:>{w}}" for c, (_, w) in zip(cells, self.COLUMNS))
        out.append((f"{rec['time']:<8} " if self.time_col else "") + line)
        print("\n".join(out), flush=True)
        if self.hist and not rec.get("final"):
            _print_hists(rec.get("histograms") or {}, "interval")


def _print_hists(hists: dict[str, list[int]], scope: str) -> None:
    from memlens.output.hist import format_log2_hist

    titles = {p.key: p.title for p in PAIRS}
    for p in PAIRS:
        buckets = hists.get(p.key)
        text = format_log2_hist(buckets, "usecs") if buckets else ""
        if text:
            print(f"\n{titles[p.key]} latency ({scope}):\n{text}", end="", flush=True)


COMMAND = VmscanCommand(SPEC)
