# SPDX-License-Identifier: GPL-2.0-only
"""compactsnoop: one line per memory-compaction episode of a zone — who compacted, which
node and zone, for which allocation order, sync or async, how long it took, how it ended
and how many pages it moved (BCC's compactsnoop, by Wenbo Zhang).

From the compaction tracepoints alone, on the counting engine's event mode:

  compaction:mm_compaction_begin / mm_compaction_end   a latency pair: the end arrives with
        the time since its thread's begin and the begin's record (scanner positions); the
        end's `status` is an enum compact_result, named from the kernel's BTF
  compaction:mm_compaction_suitable (ret == COMPACT_CONTINUE, filtered in the kernel)
        the order (and node, zone index) compaction was asked for: compact_zone() checks
        the zone right before it begins.  Whole-zone compaction (/proc/sys/vm/compact_memory,
        /sys/devices/system/node/nodeN/compact, proactive compaction) has no order and no
        such check: its ORDER is -1, as in BCC
  compaction:mm_compaction_migratepages   pages migrated (and not) per migrate_pages() call
        inside the episode, summed per episode

The zone comes from the episode's own `zone_start` pfn, looked up in /proc/zoneinfo, so the
node and zone names are the kernel's on every architecture (BCC keeps an x86/ppc table).
BCC reads the zone from a raw tracepoint's `struct zone *` (and, with -e, watermarks and
the fragmentation index at compaction_suitable through a kretprobe); see README.md for what
-e shows here.
"""
from __future__ import annotations

import time
from collections import OrderedDict

from memlens.core.session import add_common_options, check_pid_exists
from memlens.output.eventlines import EventLines

TYPE_CHECKING = False  # typing costs ~4 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    import argparse
    from typing import Any

CAT = "compaction"
BEGIN, END = f"t:{CAT}:mm_compaction_begin", f"t:{CAT}:mm_compaction_end"
SUITABLE, MIGRATE = f"t:{CAT}:mm_compaction_suitable", f"t:{CAT}:mm_compaction_migratepages"
PER_THREAD_LIMIT = 4096  # threads whose suitable/migrate records wait for an end

EXAMPLES = """\
examples:
  memlens compactsnoop             # every compaction episode, system wide
  memlens compactsnoop -T          # with a time column (seconds since the first)
  memlens compactsnoop -p 181      # only PID 181 (kcompactd0 is a PID too)
  memlens compactsnoop -d 10       # for 10 seconds
  memlens compactsnoop -K          # with the kernel stack that ended each episode
  memlens compactsnoop -e          # with watermarks, free pages, fragmentation index and
                                   # pages migrated
  memlens compactsnoop --json      # one JSON object per episode

output (`echo 1 > /proc/sys/vm/compact_memory`, this machine):
  COMM           PID    NODE ZONE         ORDER MODE      LAT(ms) STATUS
  sh             31945  0    ZONE_DMA     -1    SYNC        0.040 complete
  sh             31945  0    ZONE_DMA32   -1    SYNC        7.179 complete
  sh             31945  0    ZONE_NORMAL  -1    SYNC      131.255 complete

  ORDER: the allocation order compaction works for; -1: the whole zone (compact_memory,
  a node's compact file, proactive compaction).  MODE: SYNC (sync or sync-light
  migration: the tracepoint says only sync or not) or ASYNC.  STATUS: the kernel's
  enum compact_result without COMPACT_ (complete: the scanners met; success: a page of
  the order is free; partial_skipped, contended, ...).
"""


def status_names() -> dict[int, str]:
    """enum compact_result from the kernel's BTF: {5: "COMPACT_COMPLETE", ...} ({} if the
    kernel's BTF lacks it: numbers are shown)."""
    from memlens.core import btfenum
    from memlens.errors import KernelLacks

    try:
        members = btfenum.enum_members(enum="compact_result")
    except (KernelLacks, OSError):
        return {}
    return {v: k for k, v in members.items()}


class Zone:
    __slots__ = ("node", "idx", "name", "start_pfn", "spanned", "present", "free", "min",
                 "low", "high")

    def __init__(self, node: int, idx: int, name: str):
        self.node, self.idx, self.name = node, idx, name
        self.start_pfn = self.spanned = self.present = self.free = 0
        self.min = self.low = self.high = 0

    @property
    def label(self) -> str:
        return f"ZONE_{self.name.upper()}"


def read_zoneinfo(path: str = "/proc/zoneinfo") -> list[Zone]:
    """Every zone of every node, in the kernel's order (idx: the zone's index in its node,
    what the tracepoints' `idx` field says), with start pfn, span, free pages and the
    watermarks as the kernel prints them (boost included)."""
    zones: list[Zone] = []
    cur: Zone | None = None
    with open(path) as f:
        for line in f:
            if line.startswith("Node "):
                head, _, name = line.partition(", zone")
                node = int(head.split()[1].rstrip(","))
                idx = sum(1 for z in zones if z.node == node)
                cur = Zone(node, idx, name.strip())
                zones.append(cur)
                continue
            if cur is None:
                continue
            parts = line.split()
            if len(parts) < 2:
                continue
            if parts[0] == "pages" and parts[1] == "free":
                cur.free = int(parts[2])
            elif parts[0] in ("min", "low", "high", "spanned", "present") and \
                    parts[1].isdigit():
                setattr(cur, parts[0], int(parts[1]))
            elif parts[0] == "start_pfn:":
                cur.start_pfn = int(parts[1])
    return zones


def read_buddyinfo(path: str = "/proc/buddyinfo") -> dict[tuple[int, str], list[int]]:
    """{(node, zone name): free blocks per order}."""
    out = {}
    with open(path) as f:
        for line in f:
            head, _, rest = line.partition(", zone")
            parts = rest.split()
            if not parts:
                continue
            out[(int(head.split()[1]), parts[0])] = [int(x) for x in parts[1:]]
    return out


def fragmentation_index(free_blocks: list[int], order: int) -> int | None:
    """The kernel's __fragmentation_index (mm/vmstat.c), x1000: -1000 when a block of
    `order` is free (a request would succeed), towards 0 when memory is short, towards
    1000 when it is fragmented; None for order < 0 (whole-zone compaction)."""
    if order < 0 or order >= len(free_blocks):
        return None
    total = sum(free_blocks)
    if not total:
        return 0
    if any(n for n in free_blocks[order:]):
        return -1000
    free_pages = sum(n << o for o, n in enumerate(free_blocks))
    return 1000 - (1000 + free_pages * 1000 // (1 << order)) // total


class Episodes:
    """Joins the engine's records into episodes: per thread, the suitable check since the
    thread's previous end; the end (with its latency, and the migrate_pages() calls of the
    episode summed in the kernel: `added`) closes the episode.  One thread's records reach
    the ring in the order they happened."""

    def __init__(self, statuses: dict[int, str], zoneinfo: str = "/proc/zoneinfo"):
        self.statuses = statuses
        self.zoneinfo = zoneinfo
        self.zones: dict[int, Zone] = {}
        self._suitable: OrderedDict[int, tuple[int, int, int, int]] = OrderedDict()
        self._load_zones()

    def _load_zones(self) -> None:
        self.zones = {z.start_pfn: z for z in read_zoneinfo(self.zoneinfo) if z.spanned}

    def zone(self, start_pfn: int) -> Zone | None:
        z = self.zones.get(start_pfn)
        if z is None:  # memory hot-added, or a zone grown since: read again
            self._load_zones()
            z = self.zones.get(start_pfn)
        return z

    @staticmethod
    def _remember(table: OrderedDict, tid: int, value) -> None:
        table[tid] = value
        table.move_to_end(tid)
        if len(table) > PER_THREAD_LIMIT:
            table.popitem(last=False)

    def add(self, rec: dict[str, Any]) -> dict[str, Any] | None:
        probe, tid, f = rec["probe"], rec["tid"], rec.get("fields", {})
        if probe == SUITABLE:
            self._remember(self._suitable, tid, (rec["ts_ns"], int(f["nid"]), int(f["idx"]),
                                                 int(f["order"])))
            return None
        if probe != END or "latency_ns" not in rec:
            return None
        return self._episode(rec)

    def _episode(self, rec: dict[str, Any]) -> dict[str, Any]:
        f, tid = rec["fields"], rec["tid"]
        begin = rec.get("begin_fields", {})
        begin_ns = rec["ts_ns"] - rec["latency_ns"]
        zone = self.zone(int(f["zone_start"]))
        order = -1
        s = self._suitable.pop(tid, None)
        if s is not None and zone is not None and s[0] <= begin_ns and \
                (s[1], s[2]) == (zone.node, zone.idx):
            order = s[3]
        # the episode's migrate_pages() calls: their pages summed in the kernel, into the
        # thread's open pair (absent where the kernel lacks the migratepages tracepoint)
        added = rec.get("added") or {"count": 0, "sum": 0, "sum2": 0}
        status = int(f["status"])
        name = self.statuses.get(status)
        sync = bool(f["sync"])
        return {
            "type": "event", "ts_ns": rec["ts_ns"], "pid": rec["pid"], "tid": tid,
            "comm": rec["comm"],
            "node": zone.node if zone else None,
            "zone": zone.label if zone else f"pfn {int(f['zone_start']):#x}",
            "zone_idx": zone.idx if zone else None,
            "order": order, "mode": "SYNC" if sync else "ASYNC", "sync": sync,
            "latency_ns": rec["latency_ns"],
            "status": name.removeprefix("COMPACT_").lower() if name else str(status),
            "status_name": name, "status_raw": status,
            "nr_migrated": added["sum"], "nr_failed": added["sum2"],
            "migrate_calls": added["count"],
            "zone_start_pfn": int(f["zone_start"]), "zone_end_pfn": int(f["zone_end"]),
            "begin_migrate_pfn": begin.get("migrate_pfn"), "begin_free_pfn": begin.get("free_pfn"),
            "end_migrate_pfn": int(f["migrate_pfn"]), "end_free_pfn": int(f["free_pfn"]),
        }


class CompactsnoopTool:
    """compactsnoop for the runner (core/runner.py): one "event" record per episode."""

    name = "compactsnoop"

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.what = "compaction episodes" + (f" for PID {args.pid}" if args.pid else "")
        self.engine = None
        self.shown = self.migrated = self.failed = 0

    def start(self) -> None:
        from memlens import registry
        from memlens.core import kernel
        from memlens.core.engine import EPISODE_PENDING, EPISODE_RING_SIZE, Engine
        from memlens.core.hooks import choose
        from memlens.core.privileges import require_tracing_privileges
        from memlens.core.probespec import parse_all

        require_tracing_privileges("compactsnoop")
        check_pid_exists(self.args.pid)
        kernel.ensure_tracefs()
        # begin/end are needed (exit 4 names them); the order and the migrated pages are
        # shown where the kernel has their tracepoints
        choose(registry.hooks_of("compactsnoop", 0), "compactsnoop")
        specs = [BEGIN, END]
        filters = {}
        for need, spec in ((1, SUITABLE), (2, MIGRATE)):
            if any(h.probe()[0] for h in registry.hooks_of("compactsnoop", need)):
                specs.append(spec)
        if SUITABLE in specs:
            filters[SUITABLE] = "ret == COMPACT_CONTINUE"  # the zone will be compacted
        self.has_order, self.has_migrate = SUITABLE in specs, MIGRATE in specs
        keys = ("kstack",) if self.args.kernel_stack else ()
        # each migrate_pages() call of an episode is added to it in the kernel (its pages
        # summed): one event per episode, not one per call (~1000 in a compaction of a
        # 1 GiB zone: 3.8x bpftrace's cost per episode when each was streamed)
        migrate = {"adds": {MIGRATE: END}, "sum_field": "nr_migrated",
                   "sum2_field": "nr_failed"} if self.has_migrate else {}
        self.engine = Engine(parse_all(specs), keys=keys, trace=True, pairs={END: BEGIN},
                             probe_filters=filters,
                             ring_size=self.args.ring_size or EPISODE_RING_SIZE,
                             pending=EPISODE_PENDING, **migrate)
        self.episodes = Episodes(status_names())
        self.mono_to_wall = time.time() - time.monotonic()  # bpf_ktime_get_ns: monotonic
        self.engine.start(pid=self.args.pid, cgroup=self.args.cgroup)

    def poll(self, timeout: float) -> list[dict]:
        from memlens.core.stackresolve import strip_tracing_frames

        out: list[dict] = []
        extended = None
        for raw in self.engine.poll(timeout):
            rec = self.engine.decode_event(raw)
            ev = self.episodes.add(rec)
            if ev is None:
                continue
            ev = {"type": "event",
                  "timestamp": round(self.mono_to_wall + ev["ts_ns"] / 1e9, 6), **ev}
            if self.args.extended_fields:
                if extended is None:  # /proc read once per batch of episodes
                    extended = (read_zoneinfo(), read_buddyinfo())
                self._extend(ev, *extended)
            if self.args.kernel_stack:
                h = int(raw["kstack"])
                ev["kernel_stack"] = [str(fr) for fr in strip_tracing_frames(
                    self.engine.resolver.kernel_frames(h))] if h else []
            self.migrated += ev["nr_migrated"]
            self.failed += ev["nr_failed"]
            out.append(ev)
        self.shown += len(out)
        return out + self.engine.lost()

    @staticmethod
    def _extend(ev: dict, zones: list[Zone], buddy: dict) -> None:
        z = next((z for z in zones if z.start_pfn == ev["zone_start_pfn"] and z.spanned), None)
        if z is None:
            return
        blocks = buddy.get((z.node, z.name), [])
        ev.update(min_pages=z.min, low_pages=z.low, high_pages=z.high, free_pages=z.free,
                  fragindex=fragmentation_index(blocks, ev["order"]))

    def report(self, final: bool) -> list[dict]:
        return self.engine.lost()

    def summary(self) -> list[dict]:
        return [{"type": "summary", "episodes": self.shown, "nr_migrated": self.migrated,
                 "nr_failed": self.failed, "order_known": self.has_order,
                 "migrations_known": self.has_migrate, "lost": self.engine.total_lost(),
                 "hooks": [p.text for p in self.engine.probes]}]

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


class TextRenderer(EventLines):
    """BCC's columns: [TIME(s)] COMM PID NODE ZONE ORDER MODE [FRAGIDX MIN LOW HIGH FREE
    MIGRATED] LAT(ms) STATUS, and the kernel stack under each line with -K."""

    def header(self) -> str:
        ts = f"{'TIME(s)':<14} " if self.args.timestamp else ""
        ext = ""
        if self.args.extended_fields:
            ext = " ".join(f"{c:<8}" for c in ("FRAGIDX", "MIN", "LOW", "HIGH", "FREE",
                                               "MIGRATED")) + " "
        return (f"{ts}{'COMM':<14} {'PID':<6} {'NODE':<4} {'ZONE':<12} {'ORDER':<5} "
                f"{'MODE':<7} {ext}{'LAT(ms)':>9} STATUS")

    def lines(self, ev: dict[str, Any]) -> str:
        from memlens.output.table import escape

        ts = self.time_cell(ev)
        node = "?" if ev["node"] is None else ev["node"]
        ext = ""
        if self.args.extended_fields:
            fi = ev.get("fragindex")
            cells = ["-" if fi is None else f"{fi / 1000:.3f}"]
            cells += [str(ev.get(k, "-")) for k in ("min_pages", "low_pages", "high_pages",
                                                    "free_pages", "nr_migrated")]
            ext = " ".join(f"{c:<8}" for c in cells) + " "
        line = (f"{ts}{escape(ev['comm'])[:14]:<14} {ev['pid']:<6} {node!s:<4} "
                f"{ev['zone']:<12} {ev['order']:<5} {ev['mode']:<7} {ext}"
                f"{ev['latency_ns'] / 1e6:9.3f} {ev['status']}")
        out = [line]
        if self.args.kernel_stack:
            out += [f"\t{escape(fr)}" for fr in ev.get("kernel_stack", [])] + [""]
        return "\n".join(out)


class CompactsnoopCommand:
    name = "compactsnoop"
    summary = "Trace memory compaction per zone: order, mode, latency, status (BCC)."
    epilog = EXAMPLES

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from memlens.output.sinks import add_output_options

        add_common_options(parser, json=False)
        from memlens.core.engine import EPISODE_RING_SIZE
        from memlens.core.ringsize import add_ring_size_option

        add_ring_size_option(parser, EPISODE_RING_SIZE, "episodes")
        add_output_options(parser)
        parser.add_argument("-T", "--timestamp", action="store_true",
                            help="include a time column (seconds since the first episode)")
        parser.add_argument("-K", "--kernel-stack", action="store_true",
                            help="print the kernel stack that ended each episode")
        parser.add_argument("-e", "--extended_fields", "--extended-fields",
                            dest="extended_fields", action="store_true",
                            help="show the zone's fragmentation index for the order, "
                                 "watermarks, free pages (read from /proc as each episode "
                                 "is reported) and pages migrated")

    def run(self, args: argparse.Namespace) -> int:
        from memlens.core.probespec import prepare_tracing
        from memlens.core.runner import run_cli
        from memlens.output.sinks import make_sink

        prepare_tracing("compactsnoop", [BEGIN])
        return run_cli(CompactsnoopTool(args), args, make_sink(args, TextRenderer(args)))


COMMAND = CompactsnoopCommand()
