# SPDX-License-Identifier: GPL-2.0-only
"""perf_event_open for software events (page faults), one fd per online CPU."""
from __future__ import annotations

import os
import struct

from memlens.core import libbpf as L

PERF_TYPE_HARDWARE, PERF_TYPE_SOFTWARE = 0, 1
PERF_COUNT_SW_PAGE_FAULTS, PERF_COUNT_SW_PAGE_FAULTS_MIN, PERF_COUNT_SW_PAGE_FAULTS_MAJ = 2, 5, 6
PERF_SAMPLE_ADDR = 1 << 3
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_ATTR_SIZE = 128  # PERF_ATTR_SIZE_VER7; the kernel accepts any known version


def online_cpus() -> list[int]:
    try:
        with open("/sys/devices/system/cpu/online") as f:
            text = f.read().strip()
    except OSError:
        return list(range(os.cpu_count() or 1))
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus += range(int(lo), int(hi or lo) + 1)
    return cpus


def event_attr(type_: int, config: int, sample_period: int = 1, sample_type: int = 0) -> bytes:
    attr = bytearray(PERF_ATTR_SIZE)
    # struct perf_event_attr: type u32, size u32, config u64, sample_period u64,
    # sample_type u64, read_format u64, flags u64 (disabled=bit0 left 0: enabled at once)
    struct.pack_into("<IIQQQQQ", attr, 0, type_, PERF_ATTR_SIZE, config, sample_period,
                     sample_type, 0, 0)
    return bytes(attr)


def open_event(type_: int, config: int, cpu: int, pid: int = -1, sample_period: int = 1,
               sample_type: int = 0) -> int:
    """Returns an fd, or raises OSError with the errno (EACCES/EPERM, ENOENT for no PMU)."""
    fd = L.perf_event_open(event_attr(type_, config, sample_period, sample_type), pid, cpu,
                           -1, PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        raise OSError(-fd, os.strerror(-fd))
    return fd
