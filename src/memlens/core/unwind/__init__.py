# SPDX-License-Identifier: GPL-2.0-only
"""Unwinding user stacks without frame pointers: call frame information (.eh_frame) reduced
to compact rows (cfi.py), built once per ELF file (tables.py), loaded into the BPF maps the
unwinder of bpf/include/memlens.bpf.h walks (store.py).

This module imports no numpy (store.py does, ~0.1 s): a tool decides and configures the
walk before its BPF load (`configure`) and imports the store only when the walk is on,
so a run without it starts without numpy, and one with it imports numpy while libbpf
loads (core/lazy.prefetch_numpy)."""
from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

ROW_CAPACITY = 1 << 21          # 8-byte rows: 16 MiB of kernel memory
CACHE_SLOTS = 4096              # the row cache's slots per CPU (memlens.bpf.h)
MODES = ("auto", "fp", "dwarf")

STACK_UNWIND_HELP = ("how user stacks are walked: dwarf, with each file's .eh_frame (whole "
                     "stacks through code built without frame pointers: Debian's libc, "
                     "python3, git); fp, by frame pointers only (the kernel's walk); auto "
                     "(default): dwarf where the kernel can (bpf_loop, 5.17+)")


def add_stack_unwind_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack-unwind", choices=("auto", "fp", "dwarf"), default="auto",
                        help=STACK_UNWIND_HELP)


_support: tuple[bool, str] | None = None


def kernel_support() -> tuple[bool, str]:
    """Can this kernel run the walk (bpf_loop 5.17, bpf_task_pt_regs 5.15)?  (ok, why not)
    Each probe loads a program (1.3-7 ms the three): their answers are kept for the boot
    (hooks.helper_exists), and this one for the process."""
    global _support
    if _support is None:
        _support = _probe_support()
    return _support


def _probe_support() -> tuple[bool, str]:
    from memlens.core import libbpf as L
    from memlens.core.hooks import helper_exists

    if os.uname().machine != "x86_64":
        return False, f"the unwinder reads x86-64 frames; this is {os.uname().machine}"
    if not L.lib().has("libbpf_probe_bpf_helper"):
        return True, ""  # an old libbpf without the probe: let the load say
    for helper, name in (("loop", "bpf_loop (5.17)"), ("find_vma", "bpf_find_vma (5.17)"),
                         ("task_pt_regs", "bpf_task_pt_regs (5.15)")):
        if not helper_exists(helper, "tracepoint"):
            return False, f"the kernel lacks the BPF helper {name}"
    return True, ""


def choose(mode: str) -> bool:
    """--stack-unwind: True to walk with the tables.  auto: where the kernel can; dwarf:
    KernelLacks (exit 4) where it cannot; fp: never."""
    from memlens.errors import KernelLacks, UsageError

    if mode not in MODES:
        raise UsageError(f"--stack-unwind {mode!r}: one of {', '.join(MODES)}")
    if mode == "fp":
        return False
    ok, why = kernel_support()
    if not ok and mode == "dwarf":
        raise KernelLacks(f"--stack-unwind dwarf: {why}; use --stack-unwind fp")
    return ok


# the walk's other maps (bpf/include/memlens.bpf.h): made at their smallest when it is off
# (a preallocated hash is allocated and zeroed when made: unwind_procs alone is ~20 MB, and
# together they were ~5.5 ms of every stack tool's load with --stack-unwind fp, of the
# hand-over's first program, of every stackless engine tool)
_WALK_MAPS = ("unwind_procs", "unwind_files", "unwind_vma_sent", "unwind_named",
              "unwind_asked", "unwind_met", "unwind_rowcache")
_WALK_RINGS = ("unwind_requests", "unwind_vmas")


def configure(obj, mode: str, rows: int = ROW_CAPACITY) -> bool:
    """Before load: switch the walk on (True) or leave the kernel's (False)."""
    on = choose(mode)
    obj.rodata["unwind_dwarf"] = on
    # memlens.bpf.h has unwind_procs allocate its entries on insert (preallocated it is
    # ~20 MB): kernels before 6.1 refuse that to perf_event programs, and there it is
    # preallocated (loader.allocate_on_insert); unwind_files likewise
    obj.allocate_on_insert("unwind_procs", "unwind_files")
    # off: the smallest array (the verifier drops the code that reads it)
    obj.set_max_entries("unwind_rows", rows if on else 1)
    if on and obj.has_map("unwind_rowcache"):
        from memlens.core.libbpf import ncpus_possible

        # each CPU its own slots (a program's CPU picks them)
        obj.set_max_entries("unwind_rowcache", CACHE_SLOTS * ncpus_possible())
    if not on:
        for name in _WALK_MAPS:
            if obj.has_map(name):
                obj.set_max_entries(name, 1)
        for name in _WALK_RINGS:
            if obj.has_map(name):
                obj.set_max_entries(name, os.sysconf("SC_PAGE_SIZE"))  # a ring's smallest
    return on
