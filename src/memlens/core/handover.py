# SPDX-License-Identifier: GPL-2.0-only
"""The hand-over: a tool whose program walks user stacks with .eh_frame tables (the DWARF
walk, bpf/include/memlens.bpf.h) attaches first a twin of that program verified without
the walk, says it is tracing, and only then loads the whole program and hands every event
over to it.  The verifier's pass over the walk (~40-65 ms) comes after the banner.

The BPF side (core/engine.bpf.c, tools/oomkill/oomkill.bpf.c, tools/memleak/memleak.bpf.c),
for each program P that may hand over: a twin P_handing of the same type and hook, whose
first act is `bpf_tail_call(ctx, &ARRAY, 0)` on a program array of one slot, then P's
body; and a rodata `hand_over` flag the twin's body reads (fallback counted: the walk not
loaded yet).  A tail
call that succeeds does not return, one into an empty slot does: every event runs exactly
one body, the twin's until the slot is filled, the whole program's after.  The twin is its
own program: a tail call anywhere in a program holds its whole stack to the tail-call
limits, which the walk's frames exceed.

    ho = HandOver(obj, {"count_tp": ("count_tp_handing", "hand_over_tp")})
    ho.arm()              # before obj's load: twins in the programs' place, walk off
    obj.load(); obj.attach_tracepoint(ho.attached("count_tp"), ...); banner
    whole = ho.load_whole(stack_unwind)   # a second copy, sharing obj's maps
    ...                   # the walk's store on whole (its unwind_* maps are its own)
    ho.install()          # from now on every event runs the whole program

The program array's kernel check (bpf_prog_map_compatible) wants the twin and the whole
program of one type, and for BPF_PROG_TYPE_TRACING (tp_btf) of one attach target too
(attach_func_proto): a tp_btf twin and whole program on the same BTF id pass (6.18 here).
It wants one expected attach type too (6.18): a uprobe_multi twin (memleak -p's
ml_return_handing, BPF_TRACE_UPROBE_MULTI) refused a whole program loaded with the
section's type (EINVAL at install), so load_whole gives each whole program its twin's.
"""
from __future__ import annotations

import sys

from memlens.errors import MemlensError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from memlens.core.loader import BpfObject


class HandOver:
    """One object's hand-over: `progs` maps each program that may hand over to its twin
    and the twin's program array ({prog: (twin, array)})."""

    def __init__(self, obj: BpfObject, progs: dict[str, tuple[str, str]]):
        self.first = obj
        self.progs = progs
        self.whole: BpfObject | None = None
        self.armed = False

    def arm(self) -> None:
        """Before the first object's load: each program chosen to load is swapped for its
        twin, the walk is switched off (its maps at their smallest) and `hand_over` set."""
        from memlens.core import unwind

        obj = self.first
        unwind.configure(obj, "fp")
        obj.rodata["hand_over"] = True
        for prog, (twin, _) in self.progs.items():
            if obj.autoload(prog):
                obj.set_autoload(prog, False)
                obj.set_autoload(twin, True)
        self.armed = True

    def attached(self, prog: str) -> str:
        """The program to attach for `prog`: its twin when armed and loaded."""
        twin = self.progs[prog][0]
        return twin if self.armed and self.first.autoload(twin) else prog

    def load_whole(self, stack_unwind: str) -> BpfObject:
        """The whole programs: open_whole's copy, sharing the first's maps but for the
        walk's own (unwind_*) and the program arrays, loaded (after the first's load)."""
        first = self.first
        whole = self.open_whole(stack_unwind)
        try:
            arrays = {array for _, array in self.progs.values()}
            for name in first.map_names():
                if "." not in name and not name.startswith("unwind_") and name not in arrays:
                    whole.share_map(name, first)
            whole.load()
        except BaseException:
            whole.close()
            raise
        self.whole = whole
        return whole

    def open_whole(self, stack_unwind: str) -> BpfObject:
        """A second copy of the object, opened and configured as the first (its rodata,
        `hand_over` off, the walk on as `stack_unwind` says, each program's expected attach
        type its twin's), not loaded.  Only the programs to install load in it (those whose
        twin the first loaded): the first's others (memleak's entry probes) run as
        attached, and verifying them again would only delay the hand-over."""
        from memlens.core import unwind
        from memlens.core.loader import BpfObject

        first = self.first
        whole = BpfObject(first.path)
        try:
            for prog in whole.programs():
                twin = self.progs[prog][0] if prog in self.progs else None
                load = twin is not None and first.autoload(twin)
                whole.set_autoload(prog, load)
                if load:
                    # the program array takes programs of its owner's (the twin's) attach
                    # type only: a uprobe_multi twin's refused the section's (EINVAL)
                    attach_type = first.expected_attach_type(twin)
                    if attach_type is None:
                        attach_type = first.expected_attach_type(prog)
                    if attach_type is not None:
                        whole.set_expected_attach_type(prog, attach_type)
            whole.rodata.copy_from(first.rodata)
            whole.rodata["hand_over"] = False
            unwind.configure(whole, stack_unwind)
        except BaseException:
            whole.close()
            raise
        return whole

    def install(self) -> None:
        """Every loaded whole program into its twin's slot: from here each event runs it."""
        assert self.whole is not None
        for prog, (_, array) in self.progs.items():
            if self.whole.autoload(prog):
                fd = self.whole.prog_fd(prog)
                self.first.map(array).update(b"\0" * 4, fd.to_bytes(4, "little"))

    def close(self) -> None:
        if self.whole is not None:
            self.whole.close()
            self.whole = None


def walk_not_loaded(err: MemlensError) -> None:
    """The one line a tool prints when the whole program did not load: tracing goes on as
    attached, user stacks walked by frame pointers (and counted as such)."""
    print(f"memlens: user stacks stay frame-pointer walks: the DWARF walk did not load "
          f"({err})", file=sys.stderr)
