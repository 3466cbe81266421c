# SPDX-License-Identifier: GPL-2.0-only
"""Freed memory given back to the kernel after large transient work (glibc's malloc_trim).

A read of thousands of keys (faults under process churn: new stacks symbolized by the
thousand) allocates and frees tens of MB.  glibc keeps freed heap pages, and after the first
large block is freed its mmap threshold rises, so later large blocks come from the heap too:
the RSS stayed at the reads' peak.  Measured: faults under 40 short processes a second, 125
MB with slower reads, 145-160 MB once its reads got faster (session 7), 125 MB again with a
trim after each large read.  malloc_trim(0) hands the free pages back (~1 ms here); at most
once per TRIM_EVERY_S.  Other C libraries (musl has no malloc_trim): nothing is done.
"""
from __future__ import annotations

import time

TRIM_EVERY_S = 1.0
_next_trim = 0.0
_malloc_trim = None  # libc's, looked up at the first trim (False: this libc has none)


def trim() -> None:
    """Give freed heap pages back, unless that was done less than TRIM_EVERY_S ago."""
    global _next_trim, _malloc_trim
    now = time.monotonic()
    if now < _next_trim:
        return
    _next_trim = now + TRIM_EVERY_S
    if _malloc_trim is None:
        import ctypes

        _malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", False)
    if _malloc_trim:
        _malloc_trim(0)
