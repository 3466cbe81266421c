# SPDX-License-Identifier: GPL-2.0-only
"""The run loop shared by tracing tools: common options, privileges, banner, signals,
interval/duration timing, and loss reporting.

The banner goes to stderr only after every probe is attached; stdout carries data only.
SIGINT and SIGTERM end the loop; the tool then prints its final report and detaches
(BpfObject's context manager), and exits 0.
"""
from __future__ import annotations

import argparse
import os
import signal
import struct
import sys
import time
from collections.abc import Callable

from memlens.core.drops import DROP_NAMES
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


class Session:
    def __init__(self, duration: float | None = None, interval: float | None = None,
                 count: int | None = None):
        self.duration, self.interval, self.count = duration, interval, count
        self.stopping = False
        self.start = time.monotonic()
        self.intervals_done = 0
        self._reported_drops: dict[int, int] = {}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._stop)

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    @staticmethod
    def banner(what: str) -> None:
        print(f"Tracing {what}... Hit Ctrl-C to end.", file=sys.stderr, flush=True)

    def run(self, poll: Callable[[], None], on_interval: Callable[[], None] | None = None,
            poll_interval: float = 0.05, should_stop: Callable[[], bool] | None = None) -> None:
        """Call poll() every poll_interval and on_interval() every interval until a signal,
        the duration, the interval count, or should_stop() ends it."""
        next_tick = self.start + self.interval if self.interval else None
        deadline = self.start + self.duration if self.duration else None
        while not self.stopping:
            now = time.monotonic()
            wake = min(t for t in (now + poll_interval, next_tick, deadline) if t is not None)
            if wake > now:
                time.sleep(wake - now)
            poll()
            now = time.monotonic()
            if next_tick is not None and now >= next_tick and on_interval is not None:
                on_interval()
                self.intervals_done += 1
                next_tick += self.interval  # type: ignore[operator]
                if self.count and self.intervals_done >= self.count:
                    break
            if deadline is not None and now >= deadline:
                break
            if should_stop is not None and should_stop():
                break

    def new_drops(self, obj) -> list[dict]:
        """Losses counted by the BPF side since the last call, as "lost" records."""
        if not obj.has_map("drops"):
            return []
        drops = obj.map("drops")
        out = []
        for idx in DROP_NAMES:
            # a handful of per-CPU slots: plain lookups, no numpy needed
            raw = drops.lookup(idx.to_bytes(4, "little")) or b""
            total = sum(struct.unpack(f"<{len(raw) // 8}Q", raw))
            delta = total - self._reported_drops.get(idx, 0)
            if delta > 0 and idx in DROP_NAMES:
                what, reason = DROP_NAMES[idx]
                out.append({"type": "lost", "what": what, "reason": reason, "count": delta,
                            "total": total})
                self._reported_drops[idx] = total
        return out

    def total_drops(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for idx, total in self._reported_drops.items():
            what, _ = DROP_NAMES[idx]
            totals[what] = totals.get(what, 0) + total
        return totals


def report_lost(records: list[dict], json_writer=None) -> None:
    """Losses are always shown: stderr line in text mode, "lost" records in JSON mode."""
    for rec in records:
        if json_writer is not None:
            json_writer.emit(rec)
        else:
            print(f"memlens: lost {rec['count']} {rec['what']} ({rec['reason']})",
                  file=sys.stderr, flush=True)
