# SPDX-License-Identifier: GPL-2.0-only
"""A counting tool is a spec: what to probe, what to key by, how to print.  This module
turns a `CountSpec` into a command (options, --help, run) on the counting engine, the
runner and the sinks, so a new tool is a few dozen lines and no new BPF:

    SPEC = CountSpec(name="brkstack", what="brk() calls by user stack",
                     probes=("t:syscalls:sys_enter_brk",), keys=("pid", "comm", "ustack"),
                     layout="stacks", unit="calls", epilog=EXAMPLES)
    COMMAND = CountingCommand(SPEC)

Reports are "report" records whose entries are plain dicts: the key parts (pid, tid, comm,
cgroup, probe, the field by its name), "count" (and "sum"), and for stacks "stack" (frames
leaf first: kernel frames, then user frames) — the same entries feed text, --json,
--folded, --html, --pprof and, later, the Prometheus collector.
"""
from __future__ import annotations

import sys
import time

from memlens.core.record import factory, record
from memlens.core.session import (
    TargetExit,
    add_common_options,
    check_pid_exists,
    map_entries,
    positive_float,
    positive_int,
    stack_entries,
)
from memlens.errors import UsageError
from memlens.output.table import escape

TYPE_CHECKING = False  # typing costs ~4 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    import argparse
    from typing import Any

LAYOUTS = ("stacks", "table")
LOSS_EVERY_S = 1.0  # losses said between reports at most this often


@record
class Plan:
    """What to attach when a given hook is the one the kernel offers: the probes, and how
    their counts are shown side by side."""
    probes: tuple[str, ...]
    columns: dict[str, str] | None = None
    # probe -> index of the registry need it serves: a probe whose need has no hook here is
    # left out with its column (and one line on stderr) instead of failing the tool
    optional: dict[str, int] | None = None


@record
class CountSpec:
    name: str
    what: str                        # banner: "Tracing <what>... Hit Ctrl-C to end."
    summary: str = ""
    probes: tuple[str, ...] = ()     # fixed probes; empty: PROBE... on the command line
    keys: tuple[str, ...] = ("probe",)
    field: str | None = None         # tracepoint field (or "addr" of a perf event) as a key
    sum_field: str | None = None
    sum2_field: str | None = None    # a second summed field ("sum2" in entries)
    filter: str | None = None
    layout: str = "table"            # stacks: BCC stackcount blocks; table: columns
    unit: str = "count"              # what a count counts, in JSON summaries and flame graphs
    stack_options: bool = False      # -U/-K/-P (stackcount's flags)
    epilog: str = ""
    top: int | None = None           # rows per report (largest kept)
    # BCC's positional `interval [count]` beside -i/-n, and the interval when none is given
    # (vmscan and numamove print a row every second, as the book's tools do)
    positional_interval: bool = False
    default_interval: float | None = None
    # probe -> column: several probes counted side by side in one row (faults' minor and
    # major); "count" is then the sum of the columns, or the column named by count_column
    # when the others are parts of it (cache misses among faults)
    columns: dict[str, str] | None = None
    count_column: str | None = None
    file_fields: tuple[str, str] | None = None  # a tracepoint's (inode, device) fields
    vma_select: str | None = None    # perf events: count only file/anon/hugetlb mappings
    # latency pairs {end probe: begin probe}: ends count with the time since their begin
    # ("time_ns", "max_ns" in entries); hist: log2 histograms of those times per report
    pairs: dict[str, str] | None = None
    hist: bool = False
    hist_unit: str = "usecs"
    count_unstarted: bool = False    # ends whose begin came before tracing: counted, untimed
    probe_filters: dict[str, str] | None = None  # a filter for one probe only
    # hook -> plan: the registry declares the hooks (best first, doctor shows the choice);
    # the first the kernel offers decides which probes are attached
    plans: dict[Any, Plan] | None = None
    extra: dict[str, Any] = factory(dict)


class CountingTool:
    """The runner protocol (core/runner.py) around the engine, for one spec and its args."""

    def __init__(self, spec: CountSpec, probes: list, keys: tuple[str, ...], args, *,
                 field_name: str | None = None, sum_field: str | None = None,
                 filter: str | None = None, max_keys: int = 10240,
                 stack_storage: int | None = None):
        from memlens.core.engine import Engine

        if spec.columns and "probe" not in keys:
            keys = ("probe", *keys)
        self.spec, self.args = spec, args
        self.name = spec.name
        self.keys = keys
        self.field_name = field_name
        self.engine = Engine(probes, keys=keys, field=field_name, sum_field=sum_field,
                             filter=filter, max_keys=max_keys, stack_storage=stack_storage,
                             file_fields=spec.file_fields, vma_select=spec.vma_select,
                             probe_filters=spec.probe_filters, pairs=spec.pairs,
                             hist=spec.hist, hist_unit=spec.hist_unit,
                             sum2_field=spec.sum2_field,
                             stack_unwind=getattr(args, "stack_unwind", "auto"),
                             count_unstarted=spec.count_unstarted)
        self.engine.loss_hints = loss_hints(max_keys, self.engine.max_stacks, keys)
        self.what = spec.what + (f" for PID {args.pid}" if getattr(args, "pid", None) else "")
        self.total = 0
        self.entries_seen = 0
        self.column_totals: dict[str, int] = {}
        self.target = TargetExit(None)
        self._next_losses = 0.0

    def start(self) -> None:
        from memlens.core.privileges import require_tracing_privileges

        require_tracing_privileges(self.name)
        pid = getattr(self.args, "pid", None)
        check_pid_exists(pid)
        self.target = TargetExit(pid)  # before attaching: the PID is this process's
        self.engine.start(pid=pid, cgroup=getattr(self.args, "cgroup", None))

    @property
    def finished(self) -> bool:
        """-p's process has exited: the runner ends with the final report (and says so)."""
        return self.target.exited()

    @property
    def finish_reason(self) -> str:
        return self.target.reason

    def poll(self, timeout: float) -> list[dict]:
        """Between reports, losses are said at most once every LOSS_EVERY_S, summed (a
        full stack store lost stacks at every 50 ms poll: 25 lines a second); each report
        says what is left."""
        self.engine.poll(timeout)
        now = time.monotonic()
        if now < self._next_losses:
            return []
        self._next_losses = now + LOSS_EVERY_S
        return self.lost()

    def lost(self) -> list[dict]:
        """The engine's losses, and stacks printed unsymbolized (their process was gone
        before its memory map was read): counted by the engine's resolver."""
        return [*self.engine.lost()]

    def report(self, final: bool) -> list[dict]:
        entries = [self._entry(e) for e in self.engine.collect()]
        if self.spec.columns:
            entries = pivot_columns(entries, self.spec.columns, self.spec.count_column)
            for col in self.spec.columns.values():
                self.column_totals[col] = (self.column_totals.get(col, 0)
                                           + sum(e[col] for e in entries))
        self.total += sum(e["count"] for e in entries)
        self.entries_seen += len(entries)
        if self.spec.top and len(entries) > self.spec.top:
            entries = entries[-self.spec.top:]
        rec = {"type": "report", "time": time.strftime("%H:%M:%S"), "timestamp": time.time(),
               "final": final, "interval_s": getattr(self.args, "interval", None),
               "entries": entries}
        if self.spec.hist:
            # {end probe: log2 buckets in the unit}, trailing empty buckets left out
            rec["histogram_unit"] = self.spec.hist_unit
            rec["histograms"] = {k: v[:max((i for i, n in enumerate(v) if n), default=0) + 1]
                                 for k, v in self.engine.histograms().items()}
        return [*self.lost(), rec]

    def _entry(self, e) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in e.parts.items():
            if k == "field":
                out[self.field_name or "field"] = v
            elif k not in ("ustack", "kstack"):
                out[k] = v
        if "ustack" in e.parts or "kstack" in e.parts:
            kst, ust = e.parts.get("kstack", []), e.parts.get("ustack", [])
            out["stack"] = kst + (["--"] if kst and ust and self.args_delimited() else []) + ust
            if "kstack" in e.parts:
                out["kernel_stack"] = kst
            if "ustack" in e.parts:
                out["user_stack"] = ust
        out["count"] = e.count
        if self.engine.sum_field:
            out["sum"] = e.sum
        if self.engine.sum2_field:
            out["sum2"] = e.sum2
        if self.engine.pairs:
            out["time_ns"], out["max_ns"], out["timed"] = e.time_ns, e.max_ns, e.timed
        return out

    def args_delimited(self) -> bool:
        return bool(getattr(self.args, "delimited", False))

    def summary(self) -> list[dict]:
        rec = {"type": "summary", self.spec.unit: self.total, "keys": self.entries_seen,
               "lost": self.engine.total_lost(),
               "probes": [p.text for p in self.engine.probes]}
        for col, total in self.column_totals.items():
            rec.setdefault(col, total)
        return [rec]

    def close(self) -> None:
        self.target.close()
        self.engine.close()


def pivot_columns(entries: list[dict], columns: dict[str, str],
                  count_column: str | None = None) -> list[dict]:
    """Rows keyed by probe become one row per key with a column per probe (the probe's
    count under the column's name) and "count" their sum (or `count_column`'s value);
    largest last."""
    rows: dict[tuple, dict] = {}
    for e in entries:
        col = columns.get(e.get("probe", ""))
        if col is None:
            continue
        rest = {k: v for k, v in e.items() if k not in ("probe", "count", "sum", "sum2")}
        key = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in rest.items())
        row = rows.get(key)
        if row is None:
            row = rows[key] = {**rest, **dict.fromkeys(columns.values(), 0), "count": 0}
        row[col] += e["count"]
        if count_column is None or col == count_column:
            row["count"] += e["count"]
    return sorted(rows.values(), key=lambda r: (r["count"], str(r)))


class CountingCommand:
    """The CLI of a counting spec: options, examples, and run()."""

    def __init__(self, spec: CountSpec):
        self.spec = spec
        self.name = spec.name
        self.summary = spec.summary or spec.what
        self.epilog = spec.epilog

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from memlens.output.sinks import add_output_options

        spec = self.spec
        add_common_options(parser, json=False)
        parser.add_argument("-i", "--interval", type=positive_float, metavar="SECONDS",
                            help="print a report every SECONDS (counts since the last)")
        if spec.stack_options:
            parser.add_argument("-U", "--user-stacks-only", action="store_true",
                                help="user stacks only")
            parser.add_argument("-K", "--kernel-stacks-only", action="store_true",
                                help="kernel stacks only")
            parser.add_argument("-P", "--perpid", action="store_true",
                                help="a stack per process (`comm [pid]`)")
            parser.add_argument("--delimited", action="store_true",
                                help="a `--` line between the kernel and the user stack")
        if spec.stack_options or "ustack" in spec.keys:
            from memlens.core.unwind import add_stack_unwind_option

            add_stack_unwind_option(parser)
        if not spec.probes and not spec.plans:
            parser.add_argument("probes", nargs="+", metavar="PROBE",
                                help="t:CATEGORY:EVENT (wildcards), sw:EVENT[:PERIOD], "
                                     "u:LIB:FUNC, usdt:LIB:PROVIDER:NAME")
        parser.add_argument("-n", "--count", type=positive_int, metavar="N",
                            help="stop after N reports")
        parser.add_argument("--max-keys", type=map_entries, default=10240, metavar="N",
                            help="size of the in-kernel count table (default 10240); keys "
                                 "that find it full are counted as lost")
        if spec.stack_options or {"ustack", "kstack"} & set(spec.keys):
            add_stack_storage_option(parser)
        add_output_options(parser, folded=spec.layout == "stacks",
                           html=spec.layout == "stacks", pprof=spec.layout == "stacks")
        if spec.positional_interval:
            parser.add_argument("interval_pos", nargs="?", type=positive_float,
                                metavar="interval",
                                help="print a report every INTERVAL seconds"
                                + (f" (default {spec.default_interval:g})"
                                   if spec.default_interval else ""))
            parser.add_argument("count_pos", nargs="?", type=positive_int, metavar="count",
                                help="stop after COUNT reports")
        self.add_spec_arguments(parser)

    def add_spec_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Hook for a tool's own options (count's --by, trace's filter)."""

    def keys_for(self, args) -> tuple[str, ...]:
        keys = list(self.spec.keys)
        if self.spec.stack_options:
            if args.user_stacks_only and args.kernel_stacks_only:
                raise UsageError("-U and -K are exclusive: omit both for both stacks")
            keys = [k for k in keys if k not in ("ustack", "kstack")]
            if not args.kernel_stacks_only:
                keys.append("ustack")
            if not args.user_stacks_only:
                keys.append("kstack")
            if args.perpid:
                keys = ["pid", "comm", *keys]
        return tuple(dict.fromkeys(keys))

    def probe_specs(self, args) -> list[str]:
        if self.spec.plans:
            return list(self.plan().probes)
        return list(self.spec.probes) or list(args.probes)

    def plan(self) -> Plan:
        """The plan of the first declared hook this kernel offers (exit 4 naming them all)."""
        from memlens import registry
        from memlens.core.hooks import choose

        if not self.spec.plans:
            return Plan(tuple(self.spec.probes), self.spec.columns)
        if getattr(self, "_plan", None) is not None:
            return self._plan
        chosen = choose(registry.hooks_of(self.name), self.name)
        plan = self.spec.plans[chosen]
        for probe, need in (plan.optional or {}).items():
            hooks = registry.hooks_of(self.name, need)
            if not any(h.probe()[0] for h in hooks):
                column = (plan.columns or {}).get(probe, probe)
                write_stderr(f"memlens {self.name}: no {hooks[0].label} here: "
                             f"no {column} column")
                plan = Plan(tuple(p for p in plan.probes if p != probe),
                            {k: v for k, v in (plan.columns or {}).items() if k != probe})
        self._plan = plan
        return plan

    def make_tool(self, args) -> CountingTool:
        from memlens.core.probespec import parse_all
        from memlens.core.record import replace

        spec = self.spec
        if spec.plans:
            plan = self.plan()
            spec = replace(spec, probes=plan.probes, columns=plan.columns)
        self.active_spec = spec
        probes = parse_all(list(spec.probes) or list(args.probes), getattr(args, "pid", None))
        return CountingTool(spec, probes, self.keys_for(args), args,
                            field_name=spec.field, sum_field=spec.sum_field,
                            filter=spec.filter, max_keys=args.max_keys,
                            stack_storage=getattr(args, "stack_storage_size", None))

    def _columns(self) -> dict[str, str] | None:
        return getattr(self, "active_spec", self.spec).columns

    def renderer(self, args):
        if self.spec.layout == "stacks":
            return lambda rec: render_stacks(rec, interval=args.interval is not None,
                                             what=self.spec.unit,
                                             columns=tuple((self._columns() or {}).values()))
        return lambda rec: render_table(rec, interval=args.interval is not None)

    def run(self, args) -> int:
        # numpy is not prefetched here: the engine needs it only after the banner, and a
        # thread importing it during the load makes each of libbpf's ~200 log callbacks wait
        # for the GIL (measured: the load 52 -> 116 ms)
        from memlens.core.runner import run_cli
        from memlens.output.sinks import check_output_options, make_sink

        if getattr(args, "interval_pos", None) is not None:
            args.interval = args.interval_pos
        if args.interval is None and self.spec.default_interval:
            args.interval = self.spec.default_interval
        if getattr(args, "count_pos", None) is not None:
            args.count = args.count_pos
        check_output_options(args)
        from memlens.core import kernel
        from memlens.core.privileges import require_tracing_privileges

        require_tracing_privileges(self.name)
        if self.spec.plans:
            kernel.ensure_tracefs()  # hooks are probed through tracefs
        from memlens.core.probespec import prepare_tracing

        prepare_tracing(self.name, self.probe_specs(args))
        tool = self.make_tool(args)
        sink = make_sink(args, self.renderer(args), title=self.spec.what, unit=self.spec.unit)
        return run_cli(tool, args, sink)


def add_stack_storage_option(parser) -> None:
    """--stack-storage-size, for the tools whose counts may be keyed by stack."""
    parser.add_argument("--stack-storage-size", type=stack_entries, metavar="N",
                        help="stacks kept in the kernel until read (default 32768 where "
                             "the kernel allocates them as stored, 6.1+; else 10240, "
                             "allocated at the start); stacks that find it full are "
                             "counted as lost, their events kept")


def loss_hints(max_keys: int, stack_storage: int, keys: tuple[str, ...]) -> dict[int, str]:
    """What a user can do when the kernel's tables are full (core/drops: "map full",
    "stack map full"): the option sizing each, and its size in this run."""
    from memlens.core.drops import DROP_MAP_FULL, DROP_STACK_FULL

    hints = {DROP_MAP_FULL: f"raise --max-keys, now {max_keys}"}
    if {"ustack", "kstack"} & set(keys):
        hints[DROP_STACK_FULL] = f"raise --stack-storage-size, now {stack_storage}"
    return hints


def render_stacks(rec: dict, interval: bool, what: str = "events",
                  columns: tuple[str, ...] = ()) -> None:
    """BCC stackcount's layout: frames indented, then `comm [pid]`, then the count; largest
    last."""
    if rec.get("type") != "report":
        return
    out = []
    if interval:
        out.append(f"\n[{rec['time']}]")
    for e in rec["entries"]:
        out.extend(f"  {escape(f)}" for f in e.get("stack", []))
        if "pid" in e:
            out.append(f"    {e.get('comm', '')} [{e['pid']}]")
        elif "comm" in e:
            out.append(f"    {e['comm']}")
        extra = [f"{k} {v}" for k, v in e.items() if k in (columns or ())]
        out.append(f"    {e['count']}" + (f" ({', '.join(extra)})" if extra else ""))
        out.append("")
    if not rec["entries"] and interval:
        out.append(f"  (no {what})")
    if out:
        print("\n".join(out), flush=True)


COLUMN_TITLES = {"pid": "PID", "tid": "TID", "comm": "COMM", "cgroup": "CGROUP",
                 "probe": "PROBE", "count": "COUNT", "sum": "SUM"}


def render_table(rec: dict, interval: bool, titles: dict[str, str] | None = None) -> None:
    """Columns in key order, then COUNT (and SUM); largest last, as BCC and bpftrace print."""
    if rec.get("type") != "report":
        return
    entries = rec["entries"]
    out = [f"\n[{rec['time']}]"] if interval else []
    if entries:
        names = [k for k in entries[0] if k not in ("stack", "kernel_stack", "user_stack")]
        titles = {**COLUMN_TITLES, **(titles or {})}
        heads = [titles.get(k, k.upper()) for k in names]
        cells = [[_cell(e.get(k)) for k in names] for e in entries]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
        numeric = [k in ("pid", "tid", "count", "sum") or isinstance(entries[0].get(k), int)
                   for k in names]
        _fit(cells, widths, numeric)
        out.append(_row(heads, widths, numeric))
        out.extend(_row(c, widths, numeric) for c in cells)
    elif interval:
        out.append("  (no events)")
    if out:
        print("\n".join(out), flush=True)


def render_histograms(rec: dict) -> None:
    """A report's latency histograms as BCC prints them (one per end probe)."""
    from memlens.output.hist import format_log2_hist

    unit = rec.get("histogram_unit", "usecs")
    for probe, buckets in sorted((rec.get("histograms") or {}).items()):
        text = format_log2_hist(buckets, unit)
        if text:
            print(f"\n{probe}:\n{text}", end="", flush=True)


def _fit(cells: list[list[str]], widths: list[int], numeric: list[bool],
         line: int = 79) -> None:
    """Keep rows within `line` columns: the widest text column (a path, a comm) gives up
    the excess, cut at its start ("...") so a path keeps its file name."""
    excess = sum(widths) + len(widths) - 1 - line
    text_cols = [i for i, n in enumerate(numeric) if not n]
    if excess <= 0 or not text_cols:
        return
    i = max(text_cols, key=lambda c: widths[c])
    new = max(8, widths[i] - excess)
    for row in cells:
        if len(row[i]) > new:
            row[i] = "..." + row[i][-(new - 3):]
    widths[i] = new


def _cell(v: Any) -> str:
    return escape(str(v)) if v is not None else "-"


def _row(cells: list[str], widths: list[int], numeric: list[bool]) -> str:
    parts = [c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric)]
    return " ".join(parts).rstrip()


def write_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
