# SPDX-License-Identifier: GPL-2.0-only
"""trace: one line per event, with the tracepoint's fields decoded from its format file,
and a filter on fields evaluated in the kernel — BCC's `trace` for tracepoints, perf
events and uprobes, on the counting engine's event mode.

The filter runs in the BPF program (core/engine.bpf.c), so rare events among frequent ones
(MADV_HUGEPAGE among every madvise) cost no ring-buffer record and no Python time.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from memlens.core.session import TargetExit, add_common_options, check_pid_exists, positive_int
from memlens.errors import UsageError
from memlens.output.table import escape

EXAMPLES = """\
examples:
  memlens trace t:syscalls:sys_enter_madvise 'behavior == MADV_HUGEPAGE'
                                   # who asks for transparent huge pages (the book's
                                   # `trace hugepage_madvise`, without kprobes)
  memlens trace t:syscalls:sys_enter_mmap 'flags & MAP_HUGETLB && len >= 0x200000'
  memlens trace -p 1234 't:syscalls:sys_enter_m*map'   # PID 1234's mmap/munmap calls
  memlens trace t:oom:mark_victim -t                   # each OOM victim, timestamped
  memlens trace -U t:syscalls:sys_enter_brk -M 10      # 10 brk() calls with user stacks
  memlens trace --json t:kmem:kmalloc 'bytes_alloc > 65536'

output:
  Tracing t:syscalls:sys_enter_madvise... Hit Ctrl-C to end.
  PID     TID     COMM            FUNC                   FIELDS
  20211   20211   madvise_mix     sys_enter_madvise      start=0x7f... len_in=2097152 behavior=14

Filter: FIELD OP CONST terms joined by && (at most 4); OP is == != < <= > >= or & (bit
test); CONST is a number or a known constant (MADV_*, MAP_*, PROT_*).  A kernel function
(`trace hugepage_madvise`) needs kprobes: where the kernel has none, the error names the
tracepoint and filter that answer the same question.
"""


class TraceTool:
    def __init__(self, args: argparse.Namespace):
        from memlens.core.engine import Engine
        from memlens.core.probespec import parse_all

        self.args = args
        self.name = "trace"
        probes = parse_all([args.probe], args.pid)
        keys: tuple[str, ...] = ()
        if args.user_stack:
            keys += ("ustack",)
        if args.kernel_stack:
            keys += ("kstack",)
        self.engine = Engine(probes, keys=keys, filter=args.filter, trace=True)
        shown = args.probe + (f" '{args.filter}'" if args.filter else "")
        self.what = shown + (f" for PID {args.pid}" if args.pid else "")
        self.printed = 0
        self.done = False  # -M events printed
        self.target = TargetExit(None)
        self.header_done = False
        self.start_ns = 0

    def start(self) -> None:
        from memlens.core.privileges import require_tracing_privileges

        require_tracing_privileges("trace")
        check_pid_exists(self.args.pid)
        self.target = TargetExit(self.args.pid)
        self.engine.start(pid=self.args.pid, cgroup=self.args.cgroup)
        self.start_ns = time.monotonic_ns()

    def poll(self, timeout: float) -> list[dict]:
        out: list[dict] = []
        for ev in self.engine.poll(timeout):
            if self.done:
                break
            out.append(self._event(ev))
            self.printed += 1
            if self.args.max_events and self.printed >= self.args.max_events:
                self.done = True
        out.extend(self._lost())
        return out

    def _lost(self) -> list[dict]:
        return [*self.engine.lost()]

    @property
    def finished(self) -> bool:
        """-M events printed, or -p's process exited (its events are read first: the
        runner polls once more before the end)."""
        return self.done or self.target.exited()

    @property
    def finish_reason(self) -> str | None:
        return None if self.done else self.target.reason

    def _event(self, ev) -> dict[str, Any]:
        from memlens.core.stackresolve import strip_tracing_frames

        rec: dict[str, Any] = {"type": "event", **self.engine.decode_event(ev)}
        res = self.engine.resolver
        if self.args.user_stack:
            h = int(ev["ustack"])
            rec["user_stack"] = [str(f) for f in res.user_frames(rec["pid"], h or -1)]
        if self.args.kernel_stack:
            h = int(ev["kstack"])
            rec["kernel_stack"] = [str(f) for f in strip_tracing_frames(
                res.kernel_frames(h))] if h else []
        return rec

    def report(self, final: bool) -> list[dict]:
        return self._lost()

    def summary(self) -> list[dict]:
        return [{"type": "summary", "events": self.printed,
                 "lost": self.engine.total_lost(),
                 "probes": [p.text for p in self.engine.probes],
                 "filter": self.args.filter}]

    def close(self) -> None:
        self.target.close()
        self.engine.close()


def _value(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and (v > 0xFFFFFF or v < -0xFFFFFF):
        return hex(v) if v > 0 else str(v)
    if isinstance(v, str):
        return escape(v)
    return str(v)


class TextRenderer:
    """BCC trace's columns: PID TID COMM FUNC, then the fields as name=value."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.header = False

    def __call__(self, rec: dict) -> None:
        if rec.get("type") != "event":
            return
        lines = []
        if not self.header:
            self.header = True
            ts = "TIME     " if self.args.timestamp else ""
            lines.append(f"{ts}{'PID':<7} {'TID':<7} {'COMM':<15} {'FUNC':<22} FIELDS")
        func = rec["probe"].rsplit(":", 1)[-1]
        ts = time.strftime("%H:%M:%S ") if self.args.timestamp else ""
        # __syscall_nr repeats what FUNC says; JSON keeps it
        fields = " ".join(f"{k}={_value(v)}" for k, v in rec.get("fields", {}).items()
                          if k != "__syscall_nr")
        lines.append(f"{ts}{rec['pid']:<7} {rec['tid']:<7} {rec['comm']:<15} {func:<22} "
                     f"{fields}".rstrip())
        for key in ("kernel_stack", "user_stack"):
            lines.extend(f"        {escape(f)}" for f in rec.get(key, ()))
        print("\n".join(lines), flush=True)


class TraceCommand:
    name = "trace"
    summary = "One line per event with its fields decoded, filtered in the kernel (BCC trace)."
    epilog = EXAMPLES

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from memlens.output.sinks import add_output_options

        add_common_options(parser, json=False)
        parser.add_argument("probe", metavar="PROBE",
                            help="t:CATEGORY:EVENT (wildcards), sw:EVENT, u:LIB:FUNC, "
                                 "usdt:LIB:PROVIDER:NAME")
        parser.add_argument("filter", nargs="?", metavar="FILTER",
                            help="'FIELD OP CONST [&& ...]', evaluated in the kernel")
        parser.add_argument("-M", "--max-events", type=positive_int, metavar="N",
                            help="stop after N events")
        parser.add_argument("-t", "--timestamp", action="store_true",
                            help="print the time of each event")
        parser.add_argument("-U", "--user-stack", action="store_true",
                            help="print the user stack of each event")
        parser.add_argument("-K", "--kernel-stack", action="store_true",
                            help="print the kernel stack of each event")
        add_output_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        from memlens.core.lazy import prefetch_numpy
        from memlens.core.runner import run_cli
        from memlens.output.sinks import make_sink

        if args.filter is not None and not args.filter.strip():
            raise UsageError("empty filter")
        from memlens.core.countingtool import prepare_tracing

        prepare_tracing("trace", [args.probe])
        prefetch_numpy()
        tool = TraceTool(args)
        return run_cli(tool, args, make_sink(args, TextRenderer(args)))


COMMAND = TraceCommand()
