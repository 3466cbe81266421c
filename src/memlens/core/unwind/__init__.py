# SPDX-License-Identifier: GPL-2.0-only
"""Unwinding user stacks without frame pointers: call frame information (.eh_frame) reduced
to compact rows (cfi.py), built once per ELF file (tables.py), loaded into the BPF maps the
unwinder of bpf/include/memlens.bpf.h walks (store.py)."""
from __future__ import annotations

import argparse

STACK_UNWIND_HELP = ("how user stacks are walked: dwarf, with each file's .eh_frame (whole "
                     "stacks through code built without frame pointers: Debian's libc, "
                     "python3, git); fp, by frame pointers only (the kernel's walk); auto "
                     "(default): dwarf where the kernel can (bpf_loop, 5.17+)")


def add_stack_unwind_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack-unwind", choices=("auto", "fp", "dwarf"), default="auto",
                        help=STACK_UNWIND_HELP)
