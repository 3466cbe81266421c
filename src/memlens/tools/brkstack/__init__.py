# SPDX-License-Identifier: GPL-2.0-only
"""brkstack: count brk() heap expansions by process and user stack.

The book's brkstack.bt (`@[ustack, comm] = count()` on syscalls:sys_enter_brk) and BCC's
`stackcount -U t:syscalls:sys_enter_brk`, with PID/cgroup filters, intervals, JSON,
folded output and an HTML flame graph.  Counting happens in the kernel; user space is told
once per new {process, stack, comm} so it can snapshot the process's memory map while the
process lives (see brkstack.bpf.c).

Stacks are walked with frame pointers: code built without them (stock glibc's sbrk/__brk,
which malloc calls) yields a one-frame stack.  See README.md.
"""
from __future__ import annotations

import argparse
import select
import sys
import time
from typing import Any

from memlens.core import kernel
from memlens.core.lazy import prefetch_numpy
from memlens.core.loader import BpfObject
from memlens.core.privileges import require_tracing_privileges
from memlens.core.session import (
    Session,
    add_common_options,
    configure_filters,
    positive_float,
    positive_int,
    report_lost,
)
from memlens.errors import KernelLacks, UsageError

WAIT_S = 0.05  # longest wait for a ring buffer wake-up: bounds signal/interval latency

EXAMPLES = """\
examples:
  memlens brkstack                 # count brk() by process and user stack until Ctrl-C
  memlens brkstack -p 1234         # only PID 1234
  memlens brkstack 5 3             # print (and reset) the counts every 5 s, 3 times
  memlens brkstack -d 10 --folded > brk.folded   # flamegraph.pl input
  memlens brkstack -d 10 --html brk.html          # self-contained flame graph
  memlens brkstack --json -p 1234  # one "report" object per interval and at exit

output (a test program built with -fno-omit-frame-pointer, this machine):
  Tracing brk() calls by user stack... Hit Ctrl-C to end.
  ^C
    grow_heap_level3+0x1a [brk_levels]
    grow_heap_level2+0x9 [brk_levels]
    grow_heap_level1+0x9 [brk_levels]
    main+0xa7 [brk_levels]
    __libc_start_call_main+0x7a [libc.so.6]
      brk_levels [16012]
      23

  Frames are printed leaf first, then `comm [pid]`, then the number of brk() calls,
  as BCC's stackcount prints them; stacks are sorted by count, largest last.  Code
  built without frame pointers (Debian's glibc: malloc -> sbrk -> brk) gives a
  one-frame stack such as `brk+0x7 [libc.so.6]`.
"""


class BrkstackCommand:
    name = "brkstack"
    summary = "Count brk() heap expansions by process, comm and user stack."
    epilog = EXAMPLES

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_common_options(parser)
        parser.add_argument("interval", nargs="?", type=positive_float,
                            help="print a report every INTERVAL seconds (counts reset)")
        parser.add_argument("count", nargs="?", type=positive_int,
                            help="stop after COUNT reports")
        parser.add_argument("-f", "--folded", action="store_true",
                         help="folded stacks `comm;root;...;leaf COUNT` (flamegraph.pl input)")
        parser.add_argument("--html", metavar="FILE",
                            help="also write an HTML flame graph of the whole run to FILE")

    def run(self, args: argparse.Namespace) -> int:
        prefetch_numpy()  # overlaps the BPF load (see core/lazy.py)
        if args.json and args.folded:
            raise UsageError("--json and --folded are exclusive: choose one output format")
        require_tracing_privileges("brkstack")
        kernel.ensure_tracefs()
        if not kernel.tracepoint_exists("syscalls", "sys_enter_brk"):
            raise KernelLacks("brkstack needs the syscalls:sys_enter_brk tracepoint "
                              "(CONFIG_FTRACE_SYSCALLS); it is not in tracefs")
        from memlens.core.stackresolve import StackResolver
        from memlens.output.ndjson import JsonWriter

        writer = JsonWriter(sys.stdout) if args.json else None
        with BpfObject.open("tools/brkstack/brkstack.bpf.o") as obj:
            configure_filters(obj, args)
            obj.load()
            obj.attach_tracepoint("brk_enter", "syscalls", "sys_enter_brk")
            key_dtype = obj.struct_dtype("brk_key")
            seen_dtype = obj.struct_dtype("brk_seen")
            counts = obj.map("counts")
            ring = obj.map("seen").ringbuf()
            resolver = StackResolver(obj.map("stacks"))
            session = Session(duration=args.duration, interval=args.interval, count=args.count)
            what = f"brk() calls by user stack{f' for PID {args.pid}' if args.pid else ''}"
            session.banner(what)
            state = _State()

            # Wake up as soon as a "seen" record is committed rather than on a timer: most
            # brk() callers are short-lived (a shell command lives a few ms), and their
            # maps can only be read while they live.  The ring buffer fd is pollable; the
            # wait is bounded so signals, intervals and the duration are honoured.
            ep = select.epoll()
            ep.register(obj.map("seen").fd, select.EPOLLIN)
            comms: dict[int, bytes] = {}

            def drain() -> None:
                # Resolve as soon as a key appears: the process's maps are read now, while
                # it lives, and the frames are cached for every later report.
                for rec in ring.consume_fixed(seen_dtype):
                    pid, sid = int(rec["tgid"]), int(rec["user_stack_id"])
                    comm = bytes(rec["comm"])
                    if comms.setdefault(pid, comm) != comm:  # exec'd: a new program
                        comms[pid] = comm
                        resolver.forget(pid)
                    resolver.watch(pid)
                    resolver.user_frames(pid, sid)
                report_lost(session.new_drops(obj), writer)

            def poll() -> None:
                if not session.stopping:
                    ep.poll(WAIT_S)
                drain()

            def report(final: bool = False) -> None:
                drain()
                keys, vals = counts.items(key_dtype, "<u8")
                entries = state.deltas(keys, vals, resolver)
                self.emit(entries, args, writer, session, final)
                state.run_entries.extend(entries)

            session.run(poll, on_interval=report, poll_interval=0.001)
            ep.close()
            if not (args.interval and args.count and session.intervals_done >= args.count):
                report(final=True)
            if args.html:
                from memlens.output.flamegraph import write_html

                write_html(args.html, [([e["comm"]], e["names"], e["count"])
                                       for e in state.run_entries],
                           title="brk() calls by user stack", count_name="calls")
                print(f"memlens: wrote {args.html}", file=sys.stderr)
            if writer:
                writer.emit({"type": "summary", "brk_calls": sum(e["count"]
                                                                  for e in state.run_entries),
                             "stacks": len({(e["pid"], tuple(e["stack"]))
                                            for e in state.run_entries}),
                             "lost": session.total_drops(),
                             "hook": "tracepoint/syscalls/sys_enter_brk"})
        return 0

    @staticmethod
    def emit(entries: list[dict[str, Any]], args: argparse.Namespace, writer,
             session: Session, final: bool) -> None:
        if writer is not None:
            writer.emit({"type": "report", "time": time.strftime("%H:%M:%S"),
                         "timestamp": time.time(), "final": final,
                         "interval_s": args.interval,
                         "entries": [{k: e[k] for k in ("pid", "comm", "count", "stack")}
                                     for e in entries]})
            return
        if args.folded:
            from memlens.output.folded import write_folded

            # One block per report; flamegraph.pl (and read_folded) sum repeated stacks,
            # so the concatenation of interval blocks is the whole run.
            write_folded(sys.stdout, [([e["comm"]], e["names"], e["count"]) for e in entries])
            return
        print_stackcount(entries, interval=args.interval is not None)


class _State:
    """Counts are cumulative in the kernel; each report shows the increase since the last.

    Reading deltas instead of clearing the map between intervals loses no call that lands
    between the read and the clear."""

    def __init__(self) -> None:
        self.prev: dict[tuple[int, int, bytes], int] = {}
        self.run_entries: list[dict[str, Any]] = []

    def deltas(self, keys, vals, resolver) -> list[dict[str, Any]]:
        from memlens.output.table import comm_str

        entries = []
        for k, v in zip(keys, vals):
            key = (int(k["tgid"]), int(k["user_stack_id"]), bytes(k["comm"]))
            total = int(v)
            delta = total - self.prev.get(key, 0)
            self.prev[key] = total
            if delta <= 0:
                continue
            pid, sid, comm = key
            frames = resolver.user_frames(pid, sid)
            entries.append({"pid": pid, "comm": comm_str(comm), "count": delta,
                            "stack": [str(f) for f in frames],
                            "names": [f.name for f in frames]})
        entries.sort(key=lambda e: (e["count"], e["pid"], e["stack"]))
        return entries


def print_stackcount(entries: list[dict[str, Any]], interval: bool) -> None:
    """BCC stackcount's layout: frames indented, then `comm [pid]` and the count."""
    from memlens.output.table import escape

    out = []
    if interval:
        out.append(f"\n[{time.strftime('%H:%M:%S')}]")
    for e in entries:
        out.extend(f"  {escape(f)}" for f in e["stack"])
        out.append(f"    {e['comm']} [{e['pid']}]")
        out.append(f"    {e['count']}")
        out.append("")
    if not entries and interval:
        out.append("  (no brk() calls)")
    if out:
        print("\n".join(out), flush=True)


COMMAND = BrkstackCommand()
