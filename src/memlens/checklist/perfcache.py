# SPDX-License-Identifier: GPL-2.0-only
"""Last-level cache loads and misses, system wide, from hardware counters (what
`perf stat -e LLC-loads,LLC-load-misses -a sleep N` prints).

perf_event_open(2) through ctypes: one PERF_TYPE_HW_CACHE counter pair per online CPU,
pid = -1 (all tasks on that CPU).  Virtual machines without a virtual PMU (this development
machine: only `software`, `tracepoint`, ... under /sys/bus/event_source/devices) refuse the
hardware event with ENOENT or EOPNOTSUPP; that is reported with the errno, not as zero.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import time

# include/uapi/linux/perf_event.h
PERF_TYPE_HARDWARE = 0
PERF_TYPE_HW_CACHE = 3
PERF_COUNT_HW_CACHE_LL = 2
PERF_COUNT_HW_CACHE_OP_READ = 0
PERF_COUNT_HW_CACHE_RESULT_ACCESS = 0
PERF_COUNT_HW_CACHE_RESULT_MISS = 1
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
_ATTR_FLAG_DISABLED = 1 << 0
_ATTR_SIZE = 128   # PERF_ATTR_SIZE_VER7-ish; zero tail is accepted by every kernel since 3.x

_NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "riscv64": 241, "ppc64le": 319,
                       "s390x": 331, "i686": 336, "armv7l": 364}


class PmcUnavailable(Exception):
    pass


def _ll_config(result: int) -> int:
    return (PERF_COUNT_HW_CACHE_LL | (PERF_COUNT_HW_CACHE_OP_READ << 8) | (result << 16))


def _open(cfg: int, cpu: int) -> int:
    nr = _NR_PERF_EVENT_OPEN.get(platform.machine())
    if nr is None:
        raise PmcUnavailable(f"perf_event_open syscall number unknown for {platform.machine()}")
    attr = bytearray(_ATTR_SIZE)
    # struct perf_event_attr { u32 type; u32 size; u64 config; u64 sample_period;
    #   u64 sample_type; u64 read_format; u64 flags-bitfield; ... }
    struct.pack_into("=IIQQQQQ", attr, 0, PERF_TYPE_HW_CACHE, _ATTR_SIZE, cfg, 0, 0, 0,
                     _ATTR_FLAG_DISABLED)
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(bytes(attr), _ATTR_SIZE)
    fd = libc.syscall(ctypes.c_long(nr), buf, ctypes.c_int(-1), ctypes.c_int(cpu),
                      ctypes.c_int(-1), ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        e = ctypes.get_errno()
        reason = f"{errno.errorcode.get(e, e)} ({os.strerror(e)})"
        if e in (errno.ENOENT, errno.EOPNOTSUPP, errno.ENODEV, errno.EINVAL):
            raise PmcUnavailable(f"no hardware PMCs: {reason}")
        if e in (errno.EACCES, errno.EPERM):
            raise PmcUnavailable(f"not permitted: {reason}; needs root or CAP_PERFMON "
                                 "(kernel.perf_event_paranoid)")
        raise PmcUnavailable(f"perf_event_open failed: {reason}")
    return fd


def _ioctl(fd: int, req: int) -> None:
    import fcntl

    fcntl.ioctl(fd, req, 0)


def measure(interval_s: float) -> dict:
    """LLC loads and misses over interval_s on every online CPU; raises PmcUnavailable."""
    ncpu = os.cpu_count() or 1
    fds: list[tuple[int, int]] = []
    try:
        for cpu in range(ncpu):
            fds.append((_open(_ll_config(PERF_COUNT_HW_CACHE_RESULT_ACCESS), cpu),
                        _open(_ll_config(PERF_COUNT_HW_CACHE_RESULT_MISS), cpu)))
        for a, b in fds:
            _ioctl(a, PERF_EVENT_IOC_ENABLE)
            _ioctl(b, PERF_EVENT_IOC_ENABLE)
        time.sleep(interval_s)
        loads = misses = 0
        for a, b in fds:
            _ioctl(a, PERF_EVENT_IOC_DISABLE)
            _ioctl(b, PERF_EVENT_IOC_DISABLE)
            loads += struct.unpack("=Q", os.read(a, 8))[0]
            misses += struct.unpack("=Q", os.read(b, 8))[0]
    finally:
        for pair in fds:
            for fd in pair:
                os.close(fd)
    return {"llc_loads": loads, "llc_load_misses": misses, "interval_s": interval_s,
            "miss_percent": (misses / loads * 100) if loads else None}


def probe() -> str | None:
    """None when a hardware cache counter opens on CPU 0, else the reason it does not."""
    try:
        fd = _open(_ll_config(PERF_COUNT_HW_CACHE_RESULT_ACCESS), 0)
    except PmcUnavailable as e:
        return str(e)
    os.close(fd)
    return None
