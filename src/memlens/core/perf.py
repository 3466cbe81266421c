# SPDX-License-Identifier: GPL-2.0-only
"""perf_event_open for software events (page faults), one fd per online CPU."""
from __future__ import annotations

import os

from memlens.core import libbpf as L
from memlens.core.libbpf import PERF_ATTR_SIZE, PERF_FLAG_FD_CLOEXEC  # noqa: F401 (users')
from memlens.core.libbpf import perf_event_attr as event_attr

PERF_TYPE_HARDWARE, PERF_TYPE_SOFTWARE = 0, 1
PERF_COUNT_SW_PAGE_FAULTS, PERF_COUNT_SW_PAGE_FAULTS_MIN, PERF_COUNT_SW_PAGE_FAULTS_MAJ = 2, 5, 6
PERF_SAMPLE_ADDR = 1 << 3


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


def open_event(type_: int, config: int, cpu: int, pid: int = -1, sample_period: int = 1,
               sample_type: int = 0) -> int:
    """Returns an fd, or raises OSError with the errno (EACCES/EPERM, ENOENT for no PMU)."""
    fd = L.perf_event_open(event_attr(type_, config, sample_period, sample_type), pid, cpu,
                           -1, PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        raise OSError(-fd, os.strerror(-fd))
    return fd


def open_event_typed(type_: int, config: int, cpu: int, pid: int = -1, sample_period: int = 1,
                     sample_type: int = 0, what: str = "perf event") -> int:
    """open_event whose failure is a typed error: not permitted (exit 3), no such event on
    this kernel or machine (exit 4), else a runtime failure."""
    import errno

    from memlens.errors import KernelLacks, NotPermitted, SystemCallError

    try:
        return open_event(type_, config, cpu, pid, sample_period, sample_type)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM):
            raise NotPermitted(f"perf_event_open for {what} on CPU {cpu} refused: needs root "
                               "or CAP_PERFMON (and kernel.perf_event_paranoid)") from None
        if err.errno in (errno.ENOENT, errno.ENODEV, errno.EOPNOTSUPP):
            raise KernelLacks(f"perf_event_open for {what}: this kernel or machine has no "
                              f"such event ({err.strerror})") from None
        raise SystemCallError(err.errno or 0, f"perf_event_open for {what} on CPU {cpu}: "
                              f"{err.strerror}") from None
