# SPDX-License-Identifier: GPL-2.0-only
"""BPF ring buffer consumer: mmap the ring and decode whole batches with numpy.

Why not ring_buffer__poll with a ctypes callback: measured here it tops out at 0.4-0.9 M
events/s and dropped 39-63 % of a 1.5 M/s stream; decoding the pending region as one numpy
array drains 22-31 M events/s, and polling on a 10-50 ms timer instead of waking per event
cut consumer CPU from 1.9 s to 0.15 s per 3 M events (../shared/BPF-PYTHON.md §3).

Layout (kernel/bpf/ringbuf.c): page 0 = consumer_pos (we write it), page 1 = producer_pos,
then the data area, which the kernel lets a reader map twice in a row so that a record that
wraps is contiguous.  We map it once: the kernel maps every page of a ring at mmap() time
(remap_vmalloc_range), and each counts in our RSS, so the second view cost a ring's size in
RSS (an 8 MiB ring: 16 MiB); the few records that wrap are put together from the two ends.
Each record has an 8-byte header {u32 len | BUSY<<31 | DISCARD<<30, u32 pg_off} and is
8-byte aligned (a header never wraps: the size is a power of two of pages).
Reading relies on x86-64 TSO ordering (a plain load of producer_pos then of the data).
"""
from __future__ import annotations

import os
import struct

from memlens.core.lazy import np

BUSY, DISCARD = 1 << 31, 1 << 30
HDR = 8
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


class RingBuffer:
    def __init__(self, map_fd: int, size: int, name: str = "events"):
        self.name, self.size = name, size
        import mmap  # here: the module (a shared library) is not on the way to a banner

        self._cons = mmap.mmap(map_fd, PAGE, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(map_fd, PAGE + size, mmap.MAP_SHARED, mmap.PROT_READ,
                               offset=PAGE)
        self._mv = memoryview(self._prod)[PAGE:]  # the data area, mapped once
        # consumer_pos / producer_pos as native u64 views: one aligned 8-byte load or store.
        # struct.pack_into("<Q") writes byte by byte, and the kernel reading a torn
        # consumer_pos sees a ring that looks full and drops events (measured: ~50 of 3 M).
        self._cons_pos = memoryview(self._cons).cast("B").cast("Q")
        self._prod_pos = memoryview(self._prod).cast("B")[:8].cast("Q")
        self._np_data = None

    @property
    def _data(self):
        if self._np_data is None:
            self._np_data = np.frombuffer(self._prod, np.uint8, offset=PAGE)
        return self._np_data

    def _positions(self) -> tuple[int, int]:
        return self._cons_pos[0], self._prod_pos[0]

    def pending_bytes(self) -> int:
        cons, prod = self._positions()
        return prod - cons

    def consume_fixed(self, dtype: np.dtype, max_records: int | None = None,
                      record_size: int | None = None) -> np.ndarray:
        """Every committed record (at most `max_records`: the rest stay for the next call,
        which bounds a reader's memory when it comes back to a full ring), all of which
        have dtype's size (one ring per event type) — or `record_size`, of which `dtype`
        reads the first dtype.itemsize bytes (a record's unused tail is not copied)."""
        rec = record_size or dtype.itemsize
        stride = (rec + HDR + 7) & ~7
        cons, prod = self._positions()
        nrec = (prod - cons) // stride
        if max_records is not None:
            nrec = min(nrec, max_records)
        if nrec <= 0:
            return np.zeros(0, dtype)
        start = cons & (self.size - 1)
        end = start + nrec * stride
        if end <= self.size:
            raw = self._data[start:end].reshape(nrec, stride)
        else:  # the batch wraps: its two ends, joined (a copy)
            raw = np.concatenate([self._data[start:], self._data[:end - self.size]])
            raw = raw.reshape(nrec, stride)
        hdr = raw[:, :4].copy().view("<u4").ravel()
        busy = np.flatnonzero(hdr & BUSY)
        if busy.size:  # stop at the first record still being written
            nrec = int(busy[0])
        lengths = hdr[:nrec] & ~np.uint32(BUSY | DISCARD)
        if nrec and np.any(lengths != rec):
            # a record of another size: fall back to the generic walk for this batch
            return self._consume_walk(dtype)
        # copy before release
        out = raw[:nrec, HDR:HDR + dtype.itemsize].copy().view(dtype).ravel()
        keep = (hdr[:nrec] & DISCARD) == 0
        self._cons_pos[0] = cons + nrec * stride
        return out[keep]

    def _consume_walk(self, dtype: np.dtype) -> np.ndarray:
        # (a record shorter than what dtype reads cannot be decoded: left out, as before)
        records = [r for r in self.consume_records() if len(r) >= dtype.itemsize]
        if not records:
            return np.zeros(0, dtype)
        return np.frombuffer(b"".join(r[:dtype.itemsize] for r in records), dtype)

    def _bytes(self, off: int, length: int) -> bytes:
        """`length` bytes of the data area from `off`, across its end if they wrap."""
        end = off + length
        if end <= self.size:
            return bytes(self._mv[off:end])
        return bytes(self._mv[off:self.size]) + bytes(self._mv[:end - self.size])

    def consume_records(self) -> list[bytes]:
        """Generic walk for rings with records of varying size."""
        out = []
        cons, prod = self._positions()
        pos = cons
        while pos < prod:
            off = pos & (self.size - 1)
            hdr = struct.unpack_from("<I", self._mv, off)[0]
            if hdr & BUSY:
                break
            length = hdr & ~(BUSY | DISCARD)
            if not hdr & DISCARD:
                out.append(self._bytes((off + HDR) & (self.size - 1), length))
            pos += (length + HDR + 7) & ~7
        if pos != cons:
            self._cons_pos[0] = pos
        return out

    def discard_all(self) -> int:
        """Release every committed record unread; how many there were (a record still
        being written stays)."""
        n = 0
        cons, prod = self._positions()
        pos = cons
        while pos < prod:
            hdr = struct.unpack_from("<I", self._mv, pos & (self.size - 1))[0]
            if hdr & BUSY:
                break
            n += not hdr & DISCARD
            pos += ((hdr & ~(BUSY | DISCARD)) + HDR + 7) & ~7
        if pos != cons:
            self._cons_pos[0] = pos
        return n

    def close(self) -> None:
        try:
            self._np_data = None
            self._cons_pos.release()
            self._prod_pos.release()
            self._mv.release()
            self._prod.close()
            self._cons.close()
        except (BufferError, AttributeError):
            pass
