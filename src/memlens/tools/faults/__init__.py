# SPDX-License-Identifier: GPL-2.0-only
"""faults: page faults by process and stack, minor and major side by side — the book's
faults.bt (a kprobe on handle_mm_fault) as a spec on the counting engine, from the perf
software events on every CPU where the kernel has them (it always has), else x86's
exceptions:page_fault_user/_kernel tracepoints.  The hooks, best first, are declared in the
registry; `memlens doctor` shows which one this kernel gives.
"""
from __future__ import annotations

from memlens.core.countingtool import CountingCommand, CountSpec, Plan, render_table
from memlens.core.hooks import Kprobe, PerfSoftware, Tracepoint
from memlens.core.session import positive_int

EXAMPLES = """\
examples:
  memlens faults                    # faults by process and stack until Ctrl-C
  memlens faults -p 1234 -U         # PID 1234's faults by user stack
  memlens faults -S -i 1 -t 10      # the 10 processes faulting most, every second
  memlens faults -U -d 10 --folded > faults.folded    # flamegraph.pl input
  memlens faults -U -d 10 --pprof faults.pb.gz        # go tool pprof faults.pb.gz

output:
  __memset_avx2_unaligned_erms+0xca [libc.so.6]
  [unknown] [libpython3.11.so.1.0]
    python3 [15489]
    30006 (minor 30006, major 0)

Frames leaf first (kernel, then user), `comm [pid]`, then faults with the minor/major
split; largest last.  -S drops stacks: one row per process (PID COMM MINOR MAJOR COUNT).
"""

PLANS = {
    PerfSoftware("minor-faults", 5): Plan(("sw:minor-faults", "sw:major-faults"),
                                          {"sw:minor-faults": "minor",
                                           "sw:major-faults": "major"}),
    Tracepoint("exceptions", "page_fault_user"): Plan(
        ("t:exceptions:page_fault_user", "t:exceptions:page_fault_kernel"),
        {"t:exceptions:page_fault_user": "user_mode",
         "t:exceptions:page_fault_kernel": "kernel_mode"}),
    Kprobe("handle_mm_fault"): Plan(("k:handle_mm_fault",), {"k:handle_mm_fault": "faults"}),
}

SPEC = CountSpec(
    name="faults",
    what="page faults by process and stack",
    summary="Page faults by process and kernel/user stack, minor and major (faults.bt).",
    keys=("pid", "comm"),
    layout="stacks",
    unit="faults",
    stack_options=True,
    plans=PLANS,
    epilog=EXAMPLES,
)


class FaultsCommand(CountingCommand):
    def add_spec_arguments(self, parser) -> None:
        parser.add_argument("-S", "--no-stacks", action="store_true",
                            help="one row per process, no stacks")
        parser.add_argument("-t", "--top", type=positive_int, metavar="N",
                            help="only the N largest counts of each report")

    def keys_for(self, args):
        keys = super().keys_for(args)
        if args.no_stacks:
            keys = tuple(k for k in keys if k not in ("ustack", "kstack"))
        return tuple(dict.fromkeys(("pid", "comm", *keys)))  # always by process

    def make_tool(self, args):
        tool = super().make_tool(args)
        tool.spec.top = args.top
        return tool

    def renderer(self, args):
        if args.no_stacks:
            return lambda rec: render_table(rec, interval=args.interval is not None)
        return super().renderer(args)


COMMAND = FaultsCommand(SPEC)
