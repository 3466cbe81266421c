# SPDX-License-Identifier: GPL-2.0-only
"""Privilege check before anything is loaded: exit 3 with what is needed, not an EPERM
traceback halfway through attaching."""
from __future__ import annotations

from memlens.errors import NotPermitted

CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


def effective_caps(status_path: str = "/proc/self/status") -> int:
    with open(status_path) as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def can_trace(caps: int | None = None) -> bool:
    caps = effective_caps() if caps is None else caps
    has = lambda c: bool(caps >> c & 1)  # noqa: E731
    return has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON))


# this process was seen able to trace: its capabilities change only by its own capset or
# setuid, which memlens never calls
_granted = False


def require_tracing_privileges(what: str = "this tool") -> None:
    # asked by each step of a tool's start (3 times by a counting tool's): /proc/self/status
    # is read until the answer is yes
    global _granted
    if _granted:
        return
    if can_trace():
        _granted = True
        return
    raise NotPermitted(
        f"{what} loads BPF programs: run as root, or grant CAP_BPF and CAP_PERFMON "
        "(e.g. `sudo setcap cap_bpf,cap_perfmon+ep` on the interpreter), "
        "or CAP_SYS_ADMIN on kernels before 5.8")
