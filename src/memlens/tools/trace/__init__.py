# SPDX-License-Identifier: GPL-2.0-only
"""trace: one line per event, with the tracepoint's fields decoded from its format file,
and a filter on fields evaluated in the kernel — BCC's `trace` for tracepoints, perf
events and uprobes, on the counting engine's event mode.

The filter runs in the BPF program (core/engine.bpf.c), so rare events among frequent ones
(MADV_HUGEPAGE among every madvise) cost no ring-buffer record and no Python time.
"""
from __future__ import annotations

import time

from memlens.core.session import TargetExit, add_common_options, check_pid_exists, positive_int
from memlens.errors import UsageError
from memlens.output.sinks import EventBatch, group_rows

TYPE_CHECKING = False  # typing costs ~7 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    import argparse
    from typing import Any

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


GATHER_S = 0.02


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
        self.stacks = bool(keys)
        # a poll's events as one array: integer fields decoded by columns (TraceBatch).
        # The ring: ringsize.default_ring_bytes for an 864-byte engine_event was its cap
        # (0.2 s at 250k/s would be 44 MB): RING_DEFAULT_MAX
        from memlens.core.ringsize import RING_DEFAULT_MAX

        self.engine = Engine(probes, keys=keys, filter=args.filter, trace=True,
                             stack_unwind=getattr(args, "stack_unwind", "auto"),
                             ring_size=getattr(args, "ring_size", None) or RING_DEFAULT_MAX,
                             event_array=True)
        shown = args.probe + (f" '{args.filter}'" if args.filter else "")
        self.what = shown + (f" for PID {args.pid}" if args.pid else "")
        self.printed = 0
        self.done = False  # -M events printed
        self.target = TargetExit(None)
        self.header_done = False
        self.start_ns = 0
        self.last_read = 0.0

    def start(self) -> None:
        from memlens.core.privileges import require_tracing_privileges

        require_tracing_privileges("trace")
        check_pid_exists(self.args.pid)
        self.target = TargetExit(self.args.pid)
        self.engine.start(pid=self.args.pid, cgroup=self.args.cgroup)
        self.start_ns = time.monotonic_ns()

    def poll(self, timeout: float):
        # Reads at least GATHER_S apart: the engine wakes on the first event in its ring,
        # and a steady stream read as it trickles in costs a poll's fixed price (loss
        # counters, epoll, numpy set-up) every few events.  After a quiet spell the last
        # read is old: the first event is read, and shown, as soon as it comes.
        wait = min(self.last_read + GATHER_S - time.monotonic(), timeout)
        if wait > 0:
            time.sleep(wait)
            timeout -= wait
        events = self.engine.poll(max(timeout, 0.0))
        if len(events):
            self.last_read = time.monotonic()
        if self.done:
            events = events[:0]
        elif self.args.max_events:
            events = events[:self.args.max_events - self.printed]
        self.printed += len(events)
        if self.args.max_events and self.printed >= self.args.max_events:
            self.done = True
        if self.stacks:
            # stacks are resolved one event at a time
            return [self._event(ev) for ev in events] + self._lost()
        return TraceBatch(events, self.engine, self._lost())

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


def escape(text: str) -> str:
    # output.table imported at the first event: its dataclass costs ~15 ms of start-up
    from memlens.output.table import escape

    return escape(text)


def _value(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and (v > 0xFFFFFF or v < -0xFFFFFF):
        return hex(v) if v > 0 else str(v)
    if isinstance(v, str):
        return escape(v)
    return str(v)


class TraceBatch(EventBatch):
    """One poll's trace events as columns.  The tracepoint's fields are read by numpy, a
    column per field, for every probe whose fields are all plain integers (syscalls, most
    of kmem, oom...): the record's own decoder (core/tpformat.py) reads the first event of
    each probe and must agree, and says which fields are bools.  Probes with strings or
    arrays are decoded per event, as before."""

    def __init__(self, ev, engine, extra=()):
        from memlens.core import tpformat
        from memlens.core.lazy import np

        super().__init__(extra)
        self.n = n = len(ev)
        if not n:
            return
        self.engine = engine
        for col in ("ts_ns", "tgid", "tid", "comm", "cpu", "uid", "cgroup", "probe",
                    "latency_ns"):
            setattr(self, col, ev[col].tolist())
        self.fields: list[dict | None] = [None] * n   # per event, when decoded one by one
        self.columns: dict[int, tuple[list[int], list[str], list[list]]] = {}
        probe = ev["probe"]
        sizes = ev["size"]
        for p in set(self.probe):
            fmt = engine.formats.get(p)
            if fmt is None:
                continue
            rows = np.flatnonzero((probe == p) & (sizes > 0))
            if not len(rows):
                continue
            cols = tpformat.field_columns(fmt, ev["data"][rows], sizes[rows])
            if cols is not None:
                self.columns[p] = (rows.tolist(), *cols)
            else:
                for i in rows.tolist():
                    self.fields[i] = _decode(fmt, ev[i])
        self._ev = ev
        self._pos: dict[int, int] | None = None

    def _field_values(self, i: int) -> dict | None:
        """Event i's tracepoint fields (None: the event has none)."""
        if self.fields[i] is not None:
            return self.fields[i]
        cols = self.columns.get(self.probe[i])
        if cols is None:
            return None
        if self._pos is None:
            self._pos = {r: k for rows, _, _ in self.columns.values()
                         for k, r in enumerate(rows)}
        k = self._pos.get(i)
        if k is None:
            return None
        _, names, values = cols
        return {name: vals[k] for name, vals in zip(names, values)}

    def record(self, i: int) -> dict[str, Any]:
        rec = {"type": "event", **self._common(i)}
        fields = self._field_values(i)
        if fields is not None:
            rec["fields"] = fields
        if self.latency_ns[i]:  # not made by trace (no latency pairs): the engine's decode
            rec = {"type": "event", **self.engine.decode_event(self._ev[i])}
        return rec

    def _common(self, i: int) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns[i], "pid": self.tgid[i], "tid": self.tid[i],
                "comm": _comm(self.comm[i]), "cpu": self.cpu[i], "uid": self.uid[i],
                "cgroup_id": self.cgroup[i], "probe": self._probe_text(self.probe[i])}

    def _probe_text(self, n: int) -> str:
        p = self.engine.probe_by_id.get(n)
        return p.text if p else f"probe#{n}"

    def _groups(self, parts: tuple[str, ...]) -> tuple[list[int], list[int]]:
        """Events grouped by the columns `parts` (see sinks.group_rows)."""
        from memlens.core.lazy import np

        ev = self._ev
        cols = [ev[p] for p in parts if p != "comm"]
        if "comm" in parts:
            comm = np.ascontiguousarray(ev["comm"]).view("<u8").reshape(self.n, -1)
            cols += [comm[:, k] for k in range(comm.shape[1])]
        return group_rows(cols)

    def _fields_json(self) -> list[str]:
        """Each event's `,"fields":{...}` (or "")."""
        from memlens.output.ndjson import json_line

        out = [""] * self.n
        for i, f in enumerate(self.fields):
            if f is not None:
                line = json_line({"type": "event", "fields": f})
                out[i] = "," + line[len('{"type":"event",'):-2]
        for rows, names, values in self.columns.values():
            # a field the same in every event of the batch (a syscall's number) is written
            # into the template; the rest fill it per event
            parts, varying = [], []
            for n, v in zip(names, values):
                jv = _json_values(v)
                if len(set(jv)) == 1:
                    parts.append(f'"{n}":{jv[0]}'.replace("%", "%%"))
                else:
                    parts.append(f'"{n}":%s')
                    varying.append(jv)
            tmpl = ',"fields":{' + ",".join(parts) + "}"
            if not varying:
                for r in rows:
                    out[r] = tmpl
            elif len(varying) == 1:
                pre, post = tmpl.split("%s")
                pre, post = pre.replace("%%", "%"), post.replace("%%", "%")
                for r, v in zip(rows, varying[0]):
                    out[r] = f"{pre}{v}{post}"
            else:
                for r, vals in zip(rows, zip(*varying)):
                    out[r] = tmpl % vals
        return out

    def ndjson(self) -> str:
        from memlens.output.ndjson import json_line, json_str

        if any(self.latency_ns):
            return "".join([json_line(self.record(i)) for i in range(self.n)])
        group_of, first = self._groups(("tgid", "tid", "comm", "cpu", "uid", "cgroup",
                                        "probe"))
        middle = [f',"pid":{self.tgid[i]},"tid":{self.tid[i]},'
                  f'"comm":{json_str(_comm(self.comm[i]))},"cpu":{self.cpu[i]},'
                  f'"uid":{self.uid[i]},"cgroup_id":{self.cgroup[i]},'
                  f'"probe":{json_str(self._probe_text(self.probe[i]))}' for i in first]
        return "".join([f'{{"type":"event","ts_ns":{ts}{middle[g]}{fj}}}\n'
                        for ts, g, fj in zip(self.ts_ns, group_of, self._fields_json())])

    def text_fields(self) -> list[str]:
        """Each event's FIELDS column (__syscall_nr left out: FUNC says it)."""
        out = [""] * self.n
        for i, f in enumerate(self.fields):
            if f is not None:
                out[i] = " ".join(f"{k}={_value(v)}" for k, v in f.items()
                                  if k != "__syscall_nr")
        for rows, names, values in self.columns.values():
            cells = [_text_cells(n, v) for n, v in zip(names, values) if n != "__syscall_nr"]
            if len(cells) == 1:
                for r, cell in zip(rows, cells[0]):
                    out[r] = cell
            elif cells:
                for r, parts in zip(rows, zip(*cells)):
                    out[r] = " ".join(parts)
        return out

    def text(self, timestamp: str) -> list[str]:
        """Each event's line (TextRenderer's columns), `timestamp` first."""
        group_of, first = self._groups(("tgid", "tid", "comm", "probe"))
        prefix = [f"{timestamp}{self.tgid[i]:<7} {self.tid[i]:<7} {_comm(self.comm[i]):<15} "
                  f"{self._probe_text(self.probe[i]).rsplit(':', 1)[-1]:<22} " for i in first]
        return [prefix[g] + f if f else prefix[g].rstrip()
                for g, f in zip(group_of, self.text_fields())]


def _text_cells(name: str, col: list) -> list[str]:
    """name=value for each value of an integer column, as _value writes them (hex above
    0xffffff)."""
    pre = f"{name}="
    if col and isinstance(col[0], bool):
        return [f"{pre}{v}" for v in col]
    return [pre + (hex(v) if v > 0xFFFFFF else str(v)) for v in col]


def _comm(raw: bytes) -> str:
    from memlens.output.table import comm_str

    return comm_str(raw)


def _decode(fmt, ev) -> dict:
    from memlens.core import tpformat

    return tpformat.decode(fmt, bytes(ev["data"][:int(ev["size"])]))


def _json_values(col: list) -> list[str]:
    if col and isinstance(col[0], bool):
        return ["true" if v else "false" for v in col]
    return col  # ints: %s writes them as json does


class TextRenderer:
    """BCC trace's columns: PID TID COMM FUNC, then the fields as name=value."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.header = False

    def many(self, batch: TraceBatch) -> str:
        """A poll's lines as one string (the sink writes it at once)."""
        lines = []
        if not self.header:
            self.header = True
            ts = "TIME     " if self.args.timestamp else ""
            lines.append(f"{ts}{'PID':<7} {'TID':<7} {'COMM':<15} {'FUNC':<22} FIELDS")
        lines += batch.text(time.strftime("%H:%M:%S ") if self.args.timestamp else "")
        lines.append("")
        return "\n".join(lines)

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
        from memlens.core.unwind import add_stack_unwind_option

        add_stack_unwind_option(parser)
        from memlens.core.ringsize import HOLD_S, RATE, RING_DEFAULT_MAX, ring_size_arg

        parser.add_argument("--ring-size", type=ring_size_arg, metavar="BYTES",
                            help="the event ring buffer's size (K/M/G suffixes; a power of "
                                 f"two); default {HOLD_S:g} s of events at {RATE // 1000}k/s, "
                                 f"at most {RING_DEFAULT_MAX >> 20}M (an event is 88 "
                                 "bytes and its record: ~70k sys_exit_mmap events)")
        add_output_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        # numpy is not prefetched: it is needed at the first poll, after the banner, and a
        # thread importing it during the load makes libbpf's log callbacks wait for the GIL
        from memlens.core.runner import run_cli
        from memlens.output.sinks import make_sink

        if args.filter is not None and not args.filter.strip():
            raise UsageError("empty filter")
        from memlens.core.probespec import prepare_tracing

        prepare_tracing("trace", [args.probe])
        tool = TraceTool(args)
        return run_cli(tool, args, make_sink(args, TextRenderer(args)))


COMMAND = TraceCommand()
