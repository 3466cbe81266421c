# SPDX-License-Identifier: GPL-2.0-only
"""count: events counted by chosen keys — bpftrace's `@[comm, pid] = count()` — top N per
interval, on the counting engine."""
from __future__ import annotations

from memlens.core.countingtool import (
    CountingCommand,
    CountSpec,
    add_stack_storage_option,
    render_table,
)
from memlens.core.engine import KEY_NAMES
from memlens.core.session import positive_int
from memlens.errors import UsageError

EXAMPLES = """\
examples:
  memlens count sw:page-faults --by comm,pid        # page faults by process
  memlens count sw:page-faults --by comm -i 1 -t 5  # the top 5 every second
  memlens count 't:syscalls:sys_enter_madvise' --by pid,field:behavior
  memlens count t:kmem:kmalloc --by comm --sum bytes_alloc   # bytes kmalloc'ed per comm
  memlens count 't:vmscan:*' --by probe,cgroup      # reclaim events per memory cgroup
  memlens count t:syscalls:sys_enter_mmap --by comm --filter 'flags & MAP_HUGETLB'

keys: pid, tid, comm, cgroup (v1 memory or v2 path), ustack, kstack, probe, field:NAME
(a tracepoint field; `field:addr` is a perf event's sampled address).
"""

SPEC = CountSpec(
    name="count",
    what="events by key",
    summary="Count events by chosen keys, top N per interval (bpftrace @[comm, pid] = count()).",
    keys=("comm", "pid"),
    layout="table",
    unit="events",
    epilog=EXAMPLES,
)


class CountCommand(CountingCommand):
    def add_spec_arguments(self, parser) -> None:
        parser.add_argument("--by", default="comm,pid", metavar="KEYS",
                            help="comma-separated keys (default comm,pid): "
                                 + ", ".join(k for k in KEY_NAMES if k != "field")
                                 + ", field:NAME")
        parser.add_argument("-t", "--top", type=positive_int, metavar="N",
                            help="print only the N largest counts of each report")
        parser.add_argument("--sum", metavar="FIELD",
                            help="also sum this tracepoint field (e.g. bytes_alloc)")
        parser.add_argument("--filter", metavar="EXPR",
                            help="count only events whose fields match, evaluated in the "
                                 "kernel: 'FIELD OP CONST [&& ...]'")
        from memlens.core.unwind import add_stack_unwind_option

        add_stack_unwind_option(parser)  # for --by ustack
        add_stack_storage_option(parser)

    def _parse_by(self, text: str) -> tuple[tuple[str, ...], str | None]:
        keys, field = [], None
        for part in (p.strip() for p in text.split(",") if p.strip()):
            if part.startswith("field:"):
                if field is not None:
                    raise UsageError("--by: one field key at most")
                field = part.split(":", 1)[1]
                if not field:
                    raise UsageError("--by field:NAME needs a field name")
                keys.append("field")
            elif part in KEY_NAMES and part != "field":
                keys.append(part)
            else:
                raise UsageError(f"--by: unknown key {part!r} (keys: "
                                 + ", ".join(k for k in KEY_NAMES if k != "field")
                                 + ", field:NAME)")
        if not keys:
            raise UsageError("--by needs at least one key")
        return tuple(dict.fromkeys(keys)), field

    def make_tool(self, args):
        from memlens.core.countingtool import CountingTool
        from memlens.core.probespec import parse_all

        keys, field = self._parse_by(args.by)
        self.spec.top = args.top
        probes = parse_all(list(args.probes), args.pid)
        if len(probes) > 1 and "probe" not in keys:
            keys = ("probe", *keys)  # several probes: say which one counted
        tool = CountingTool(self.spec, probes, keys, args, field_name=field,
                            sum_field=args.sum, filter=args.filter, max_keys=args.max_keys,
                            stack_storage=args.stack_storage_size)
        tool.what = f"events of {', '.join(p.text for p in probes[:3])}" + (
            ", ..." if len(probes) > 3 else "") + f" by {args.by}"
        return tool

    def renderer(self, args):
        return lambda rec: render_table(rec, interval=args.interval is not None)


COMMAND = CountCommand(SPEC)
