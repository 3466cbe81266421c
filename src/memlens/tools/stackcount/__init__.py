# SPDX-License-Identifier: GPL-2.0-only
"""stackcount: count events by stack, BCC's `stackcount`, on the counting engine.

A spec, nothing more: the probes come from the command line, the key is the kernel and/or
user stack (-K/-U), per process with -P.
"""
from __future__ import annotations

from memlens.core.countingtool import CountingCommand, CountSpec
from memlens.core.session import seconds

EXAMPLES = """\
examples:
  memlens stackcount -U t:syscalls:sys_enter_brk        # who grows the heap (brk)
  memlens stackcount -U t:exceptions:page_fault_user    # user paths that fault pages in
  memlens stackcount -P -U sw:page-faults -p 1234       # PID 1234's faulting stacks
  memlens stackcount -K 't:kmem:mm_page_alloc'          # kernel paths allocating pages
  memlens stackcount -U u:c:malloc -p 1234 -D 5         # malloc callers of PID 1234, 5 s
  memlens stackcount -f -U sw:page-faults -D 10 > pf.folded   # flamegraph.pl input
  memlens stackcount -U sw:page-faults -D 10 --html pf.html   # a flame graph

Frames are printed leaf first (kernel frames, then user frames), then `comm [pid]` with
-P, then the count; stacks are sorted by count, largest last.  User stacks are unwound
with the files' .eh_frame (--stack-unwind auto), whole through code built without frame
pointers (Debian's libc, python3); --stack-unwind fp gives the kernel's frame-pointer walk
(one or two frames there).
"""

SPEC = CountSpec(
    name="stackcount",
    what="events by stack",
    summary="Count events by kernel and/or user stack (BCC stackcount).",
    keys=(),
    layout="stacks",
    unit="events",
    stack_options=True,
    epilog=EXAMPLES,
)


class StackcountCommand(CountingCommand):
    def add_spec_arguments(self, parser) -> None:
        parser.add_argument("-D", dest="duration", type=seconds, metavar="SECONDS",
                            help="stop after SECONDS (BCC's letter; same as -d)")


COMMAND = StackcountCommand(SPEC)
