# SPDX-License-Identifier: GPL-2.0-only
"""brkstack: count brk() heap expansions by process and user stack — a spec on the
counting engine.

The book's brkstack.bt (`@[ustack, comm] = count()` on syscalls:sys_enter_brk) and BCC's
`stackcount -U t:syscalls:sys_enter_brk`, with PID/cgroup filters, intervals, JSON, folded
output, a flame graph and a pprof profile.  Counting happens in the kernel; each new
{process, stack, comm} announces itself so the process's memory map is read while it lives
(core/engine.py).

User stacks are unwound with the files' .eh_frame (--stack-unwind, core/unwind), so code
built without frame pointers (Debian's glibc: malloc -> sbrk -> brk, python3) gives whole
stacks; --stack-unwind fp is the kernel's frame-pointer walk.  See README.md.
"""
from __future__ import annotations

from memlens.core.countingtool import CountingCommand, CountSpec

EXAMPLES = """\
examples:
  memlens brkstack                 # count brk() by process and user stack until Ctrl-C
  memlens brkstack -p 1234         # only PID 1234
  memlens brkstack 5 3             # print the counts of each 5 s, 3 times
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
  built without frame pointers (Debian's glibc: malloc -> sbrk -> brk) is unwound with
  its .eh_frame; with --stack-unwind fp its stack is one frame (`brk+0x7 [libc.so.6]`).

Same as: memlens stackcount -P -U t:syscalls:sys_enter_brk
"""

SPEC = CountSpec(
    positional_interval=True,
    name="brkstack",
    what="brk() calls by user stack",
    summary="Count brk() heap expansions by process, comm and user stack.",
    probes=("t:syscalls:sys_enter_brk",),
    keys=("pid", "comm", "ustack"),
    layout="stacks",
    unit="brk_calls",
    epilog=EXAMPLES,
)


COMMAND = CountingCommand(SPEC)
