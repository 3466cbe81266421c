# SPDX-License-Identifier: GPL-2.0-only
"""Unwinding user stacks without frame pointers: call frame information (.eh_frame) reduced
to compact rows (cfi.py), built once per ELF file (tables.py), loaded into the BPF maps the
unwinder of bpf/include/memlens.bpf.h walks (store.py)."""
