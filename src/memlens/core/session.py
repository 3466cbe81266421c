# SPDX-License-Identifier: GPL-2.0-only
"""Options every tracing tool shares (-p, --cgroup, -d, argument types) and the filters
they set in the BPF side (memlens.bpf.h).  The run itself is core/runner.py; losses are
core/drops.py."""
from __future__ import annotations

import argparse
import os

from memlens.errors import UsageError


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def pid_arg(text: str) -> int:
    pid = positive_int(text)
    return pid


def add_common_options(parser: argparse.ArgumentParser, *, pid: bool = True,
                       cgroup: bool = True, duration: bool = True, json: bool = True) -> None:
    if pid:
        parser.add_argument("-p", "--pid", type=pid_arg, metavar="PID",
                            help="trace this process only")
    if cgroup:
        parser.add_argument("--cgroup", metavar="PATH",
                            help="trace tasks in this cgroup and its descendants "
                                 "(v1 memory hierarchy or v2 path)")
    if duration:
        parser.add_argument("-d", "--duration", type=positive_float, metavar="SECONDS",
                            help="stop after this many seconds")
    if json:
        parser.add_argument("--json", action="store_true",
                            help="NDJSON output: one typed object per line")


def check_pid_exists(pid: int | None) -> None:
    import os

    if pid is None:
        return
    if not os.path.exists(f"/proc/{pid}"):
        raise UsageError(f"no process with PID {pid}")


def configure_filters(obj, args: argparse.Namespace, pid: int | None = None) -> None:
    """Set the shared rodata filters (memlens.bpf.h) from -p/--cgroup; `pid` overrides -p
    (memleak -c: the child it started)."""
    from memlens.core.kernel import cgroup_target

    if obj.rodata is not None and "self_tgid" in obj.rodata:
        # memlens's own mmaps, brk calls and allocations (numpy import, ring polling) would
        # show up in system-wide runs: leave ourselves out
        obj.rodata["self_tgid"] = os.getpid()
    if pid is None:
        pid = getattr(args, "pid", None)
    if pid is not None and obj.rodata is not None and "targ_tgid" in obj.rodata:
        check_pid_exists(pid)
        obj.rodata["targ_tgid"] = pid
    cg = getattr(args, "cgroup", None)
    if cg and obj.rodata is not None and "targ_cgroup_id" in obj.rodata:
        cg_id, v1 = cgroup_target(cg)
        obj.rodata["targ_cgroup_id"] = cg_id
        obj.rodata["targ_cgroup_v1"] = v1
