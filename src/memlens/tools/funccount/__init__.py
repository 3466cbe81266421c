# SPDX-License-Identifier: GPL-2.0-only
"""funccount: count events per probe, BCC's `funccount`, on the counting engine.

One program is attached to every matching probe (`t:vmscan:*` is one program attached
many times); hits are told apart by the attachment's cookie and counted in the kernel.
"""
from __future__ import annotations

from memlens.core.countingtool import CountingCommand, CountSpec, render_table

EXAMPLES = """\
examples:
  memlens funccount 't:vmscan:*'                   # reclaim events, counted until Ctrl-C
  memlens funccount 't:kmem:*' -i 1                # kmem events every second
  memlens funccount -p 1234 't:syscalls:sys_enter_m*'   # PID 1234's m* syscalls
  memlens funccount sw:page-faults sw:major-faults -d 5
  memlens funccount u:c:malloc u:c:free -p 1234    # libc calls of one process

output:
  Tracing 2 probes... Hit Ctrl-C to end.
  ^C
  FUNC                                 COUNT
  t:syscalls:sys_enter_brk                23
  t:syscalls:sys_enter_mmap             4099

A kernel function (`k:FUNC` or a bare name) needs kprobes: where the kernel has none, the
error names the tracepoints that serve instead.
"""

SPEC = CountSpec(
    name="funccount",
    what="probes",
    summary="Count events per probe, with wildcards (BCC funccount).",
    keys=("probe",),
    layout="table",
    unit="events",
    epilog=EXAMPLES,
)


class FunccountCommand(CountingCommand):
    def make_tool(self, args):
        tool = super().make_tool(args)
        n = len(tool.engine.probes)
        tool.what = f"{n} probe{'s' if n != 1 else ''}" + (
            f" for PID {args.pid}" if args.pid else "")
        return tool

    def keys_for(self, args):
        return ("probe",)

    def renderer(self, args):
        return lambda rec: render_table(rec, interval=args.interval is not None,
                                        titles={"probe": "FUNC"})


COMMAND = FunccountCommand(SPEC)
