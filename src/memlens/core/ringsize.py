# SPDX-License-Identifier: GPL-2.0-only
"""Ring buffer sizes: the default for a stream, `--ring-size` and its parsing.

Apart from core/ringbuf (the reader, with numpy and struct): the snoops and trace add the
option and size their ring before the banner, and read the ring only after it (drsnoop,
shmsnoop, compactsnoop and trace imported the reader for these few lines: ~0.8 ms of
their start here).
"""
from __future__ import annotations

import os

HDR = 8  # each record's header: u32 length and flags, u32 page offset (core/ringbuf)
PAGE = os.sysconf("SC_PAGE_SIZE")
# Ring sizes.  A ring must absorb what arrives while the reader is away: its poll interval,
# a batch being formatted, a pipe whose reader is slow for a moment.  The default holds up
# to HOLD_S of events at RATE (above what one CPU of this machine makes with a probe on:
# ~200k mmap()/s), rounded down to a power of two, within [RING_MIN, RING_DEFAULT_MAX]: the
# kernel maps a ring whole into the reader, so every MiB of ring is a MiB of RSS.
# --ring-size overrides it.
RATE = 250_000       # events/s
HOLD_S = 0.2
RING_MIN = 1 << 20
RING_DEFAULT_MAX = 8 << 20
RING_MAX = 1 << 30   # an explicit --ring-size beyond this is surely a typo
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _pow2_pages(n: int) -> int:
    """The kernel takes a ring of a power-of-two number of pages (kernel/bpf/ringbuf.c)."""
    n = max(int(n), PAGE)
    return 1 << (n - 1).bit_length()


def default_ring_bytes(record_size: int, rate: int = RATE, hold_s: float = HOLD_S,
                       cap: int = RING_DEFAULT_MAX) -> int:
    """The largest power of two holding at most `hold_s` of `record_size`-byte records at
    `rate`, within [RING_MIN, cap]."""
    stride = (record_size + HDR + 7) & ~7
    want = int(rate * hold_s * stride)
    return min(max(1 << (want.bit_length() - 1), RING_MIN), cap)


def add_ring_size_option(parser, default: int, what: str) -> None:
    """--ring-size for a tool streaming `what` (e.g. "calls (~47k in 8M)") through one
    ring; its records that find the ring full are counted as lost."""
    parser.add_argument("--ring-size", type=ring_size_arg, metavar="BYTES",
                        help="the event ring buffer's size (K/M/G suffixes; a power of "
                             f"two); default {default >> 20}M of {what}; those that find "
                             "it full are counted as lost")


def ring_size_arg(text: str) -> int:
    """--ring-size: bytes, with an optional K/M/G suffix (KiB/MiB/GiB); rounded up to a
    power of two (the kernel's rule for a ring's size).  Errors are argparse's usage errors
    (session.type_error: argparse itself is imported only then, not at every parse)."""
    from memlens.core.session import type_error

    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] else ""
    try:
        value = int(float(t[:len(t) - len(unit)]) * _UNITS[unit])
    except (ValueError, OverflowError):
        raise type_error(f"not a size: {text!r} (bytes, or with K, M, G)") from None
    if value <= 0:
        raise type_error(f"must be > 0: {text!r}")
    if value > RING_MAX:
        raise type_error(f"at most {RING_MAX >> 20}M: {text!r}")
    return _pow2_pages(value)
