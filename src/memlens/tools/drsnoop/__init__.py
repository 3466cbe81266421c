# SPDX-License-Identifier: GPL-2.0-only
"""drsnoop: one line per reclaim episode a task had to do itself, with its latency and the
pages it reclaimed — BCC's drsnoop (direct reclaim: an allocation found free memory below
the zone's min watermark) plus memory-cgroup limit reclaim (a charge found the task's
cgroup at its limit: in containers, the reclaim that hurts), each named by the task's
memory cgroup, and node reclaim (zone_reclaim_mode).

Kernel side: the counting engine's trace mode over latency pairs of vmscan tracepoints
(`mm_vmscan_{direct,memcg,node}_reclaim_begin` stamps the thread, the `_end` streams one
record with the time since, nr_reclaimed, the begin's order and gfp_flags, and the task's
UID and memory cgroup, read in the kernel at the end).  -p, -t and --cgroup filter in the
kernel; -u and -n as the lines are printed.

BCC reads vm_stat (free pages) at the begin through /proc/kallsyms for -v; the engine has
no way to read a kernel variable, so -e/-v shows MemFree from /proc/meminfo as the line is
printed (within ~50 ms of the episode's end).
"""
from __future__ import annotations

import sys
import time

from memlens.core.record import record
from memlens.core.session import add_common_options, check_pid_exists, positive_int
from memlens.errors import UsageError
from memlens.output.table import escape

TYPE_CHECKING = False  # typing costs ~4 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    import argparse
    from typing import Any

CATEGORY = "vmscan"




@record(frozen=True)
class Kind:
    name: str   # the RECLAIM column and JSON's "reclaim"
    begin: str  # the tracepoints
    end: str


KINDS = (
    Kind("direct", "mm_vmscan_direct_reclaim_begin", "mm_vmscan_direct_reclaim_end"),
    Kind("memcg", "mm_vmscan_memcg_reclaim_begin", "mm_vmscan_memcg_reclaim_end"),
    Kind("node", "mm_vmscan_node_reclaim_begin", "mm_vmscan_node_reclaim_end"),
)

EXAMPLES = """\
examples:
  memlens drsnoop              # trace every direct and memory-cgroup reclaim
  memlens drsnoop -T           # include timestamps (seconds since the first episode)
  memlens drsnoop -U           # include UID
  memlens drsnoop -p 181       # only PID 181
  memlens drsnoop -t 123       # only TID 123
  memlens drsnoop -u 1000      # only UID 1000
  memlens drsnoop -d 10        # trace for 10 seconds only
  memlens drsnoop -n main      # only process names containing "main"
  memlens drsnoop -e           # with free memory (FREE(KB))
  memlens drsnoop --cgroup /sys/fs/cgroup/memory/batch --json

output (a process reading files in a 32 MiB memory cgroup):
  COMM           PID     LAT(ms) PAGES RECLAIM
  reclaim_cache  5021       0.03   512 memcg /mlt_drsnoop_4990
  summond        17496    104.84    40 direct

LAT(ms) is the episode's latency, PAGES the pages it reclaimed.  RECLAIM says which
reclaim: direct (global memory low), memcg with the task's memory cgroup (v1 memory
hierarchy or v2, relative to its mount; cut at the left to fit 79 columns, whole in
--json), or node.  JSON events also carry the allocation's order and gfp_flags.
"""


def survey() -> tuple[list[Kind], list[dict[str, str]]]:
    """(reclaim kinds this kernel has both tracepoints of, missing kinds with why), from
    the registry's declaration of what drsnoop needs, probed against this kernel."""
    from memlens import registry

    have: set[str] = set()
    why: dict[str, str] = {}
    for need in registry.find("drsnoop").needs:
        names = set()
        for hook in need.hooks:
            parts = getattr(hook, "hooks", None) or (hook,)
            names |= {h.name for h in parts}
            if hook.probe()[0]:
                have |= {h.name for h in parts}
                break
        else:
            reason = "; ".join(f"{h.label}: {h.probe()[1]}" for h in need.hooks)
            why.update(dict.fromkeys(names, f"{need.what}: {reason}"))
    kinds = [k for k in KINDS if k.begin in have and k.end in have]
    missing = [{"reclaim": k.name, "reason": why.get(k.end) or why.get(k.begin)
                or "not declared in the registry"} for k in KINDS if k not in kinds]
    return kinds, missing


def tgid_of(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    raise UsageError(f"no thread with TID {tid}")


def mem_free_kb() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemFree:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class DrsnoopTool:
    name = "drsnoop"

    def __init__(self, args: argparse.Namespace, kinds: list[Kind],
                 missing: list[dict[str, str]]):
        from memlens.core.engine import EPISODE_PENDING, EPISODE_RING_SIZE, Engine
        from memlens.core.probespec import parse_all

        if not kinds:
            from memlens.errors import KernelLacks

            raise KernelLacks("drsnoop: this kernel has no reclaim tracepoints: "
                              + "; ".join(m["reason"] for m in missing))
        self.args, self.kinds, self.missing = args, kinds, missing
        tp = lambda n: f"t:{CATEGORY}:{n}"  # noqa: E731
        self.kind_of = {tp(k.end): k.name for k in kinds}
        specs = [tp(n) for k in kinds for n in (k.begin, k.end)]
        self.engine = Engine(parse_all(specs), keys=(), trace=True,
                             pairs={tp(k.end): tp(k.begin) for k in kinds},
                             ring_size=args.ring_size or EPISODE_RING_SIZE,
                             pending=EPISODE_PENDING)
        # -t trumps -p (BCC): the kernel keeps that thread (and its process) only
        self.pid = tgid_of(args.tid) if args.tid else args.pid
        who = (f" for TID {args.tid}" if args.tid else
               f" for PID {args.pid}" if args.pid else "")
        self.what = "direct and memory cgroup reclaim" + who
        if getattr(args, "cgroup", None):
            self.what += f" in cgroup {args.cgroup}"
        self.first_ns = 0
        self.printed = 0
        self.by_kind = {k.name: 0 for k in kinds}

    def start(self) -> None:
        from memlens.core.privileges import require_tracing_privileges

        require_tracing_privileges(self.name)
        check_pid_exists(self.pid)
        self.engine.start(pid=self.pid, cgroup=getattr(self.args, "cgroup", None),
                          tid=self.args.tid)

    def poll(self, timeout: float) -> list[dict]:
        evs = self.engine.poll(timeout)
        out: list[dict] = []
        if evs:
            free = mem_free_kb() if self.args.extended else None
            for ev in evs:
                rec = self._event(ev, free)
                if rec is not None:
                    out.append(rec)
        out.extend(self.engine.lost())
        return out

    def _event(self, ev, free_kb: int | None) -> dict[str, Any] | None:
        d = self.engine.decode_event(ev)
        a = self.args
        if a.name and a.name not in d["comm"]:
            return None
        uid = d["uid"]
        if a.uid is not None and uid != a.uid:
            return None
        if not self.first_ns:
            self.first_ns = d["ts_ns"]
        kind = self.kind_of.get(d["probe"], "?")
        begin = d.get("begin_fields") or {}
        rec: dict[str, Any] = {
            "type": "event", "time": time.strftime("%H:%M:%S"),
            "time_s": (d["ts_ns"] - self.first_ns) / 1e9, "ts_ns": d["ts_ns"],
            "pid": d["pid"], "tid": d["tid"], "comm": d["comm"], "uid": uid,
            "reclaim": kind, "cgroup": self.engine.cgroup_path(d["cgroup_id"]),
            "latency_ns": d["latency_ns"],
            "pages_reclaimed": (d.get("fields") or {}).get("nr_reclaimed"),
            "order": begin.get("order"), "gfp_flags": begin.get("gfp_flags"),
        }
        if "nid" in begin:
            rec["nid"] = begin["nid"]
        if a.extended:
            rec["free_kb"] = free_kb
        self.printed += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        return rec

    def report(self, final: bool) -> list[dict]:
        return self.engine.lost()

    def summary(self) -> list[dict]:
        return [{"type": "summary", "events": self.printed, "by_reclaim": self.by_kind,
                 "missing": self.missing, "lost": self.engine.total_lost(),
                 "probes": [p.text for p in self.engine.probes]}]

    def close(self) -> None:
        self.engine.close()


class Renderer:
    """BCC's columns (TIME(s) with -T, UID with -U, COMM, PID or TID, LAT(ms), PAGES,
    FREE(KB) with -e), then RECLAIM: direct, node, or memcg and the task's cgroup."""

    def __init__(self, args: argparse.Namespace, line: int = 79):
        self.args, self.line = args, line
        self.header = False

    def prefix_width(self) -> int:
        a = self.args
        return ((14 if a.timestamp else 0) + (6 if a.print_uid else 0) + 36
                + (10 if a.extended else 0))

    def __call__(self, rec: dict) -> None:
        if rec.get("type") != "event":
            return
        a = self.args
        lines = []
        if not self.header:
            self.header = True
            head = (f"{'TIME(s)':<14}" if a.timestamp else "") + \
                   (f"{'UID':<6}" if a.print_uid else "") + \
                   f"{'COMM':<14} {'TID' if a.tid else 'PID':<6} {'LAT(ms)':>8} {'PAGES':>5}" + \
                   (f"{'FREE(KB)':>10}" if a.extended else "") + " RECLAIM"
            lines.append(head)
        s = f"{rec['time_s']:<14.9f}" if a.timestamp else ""
        if a.print_uid:
            s += f"{rec['uid']:<6}"
        who = rec["tid"] if a.tid else rec["pid"]
        pages = rec["pages_reclaimed"]
        s += (f"{escape(rec['comm'])[:14]:<14} {who:<6} {rec['latency_ns'] / 1e6:>8.2f} "
              f"{'-' if pages is None else pages:>5}")
        if a.extended:
            free = rec.get("free_kb")
            s += f"{'-' if free is None else free:>10}"
        s += " " + self.reclaim_cell(rec, self.line - len(s) - 1)
        lines.append(s)
        print("\n".join(lines), flush=True)

    @staticmethod
    def reclaim_cell(rec: dict, room: int) -> str:
        if rec["reclaim"] != "memcg":
            return rec["reclaim"]
        path = escape(rec.get("cgroup") or "?")
        room = max(room - len("memcg "), 12)
        if len(path) > room:
            path = "..." + path[-(room - 3):]
        return f"memcg {path}"


class DrsnoopCommand:
    name = "drsnoop"
    summary = ("Trace direct and memory-cgroup reclaim: latency, pages reclaimed, the "
               "task's cgroup (BCC drsnoop).")
    epilog = EXAMPLES

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from memlens.output.sinks import add_output_options

        add_common_options(parser, json=False)
        parser.add_argument("-T", "--timestamp", action="store_true",
                            help="include timestamp on output (seconds since the first "
                                 "episode)")
        parser.add_argument("-U", "--print-uid", action="store_true",
                            help="print UID column")
        parser.add_argument("-t", "--tid", type=positive_int, metavar="TID",
                            help="trace this TID only (trumps -p)")
        parser.add_argument("-u", "--uid", type=int, metavar="UID",
                            help="trace this UID only")
        parser.add_argument("-n", "--name", metavar="NAME",
                            help="only print process names containing this name")
        parser.add_argument("-e", "--extended", "-v", "--verbose", action="store_true",
                            dest="extended",
                            help="show free memory, FREE(KB) (MemFree as the line is "
                                 "printed)")
        from memlens.core.engine import EPISODE_RING_SIZE
        from memlens.core.ringsize import add_ring_size_option

        add_ring_size_option(parser, EPISODE_RING_SIZE, "episodes")
        add_output_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        from memlens.core.probespec import prepare_tracing
        from memlens.core.runner import run_cli
        from memlens.output.sinks import make_sink

        prepare_tracing(self.name, [f"t:{CATEGORY}:{KINDS[0].begin}"])
        kinds, missing = survey()
        for m in missing:
            print(f"memlens drsnoop: no {m['reclaim']} reclaim here ({m['reason']}): its "
                  "episodes are not shown", file=sys.stderr, flush=True)
        tool = DrsnoopTool(args, kinds, missing)
        return run_cli(tool, args, make_sink(args, Renderer(args)))


COMMAND = DrsnoopCommand()
