# SPDX-License-Identifier: GPL-2.0-only
"""The lifecycle of a tracing tool, written once: start → ready → poll / report every
interval → final report → close.  It prints nothing and owns no signal: records go to an
`emit` callback and a `threading.Event` ends the run, so the same tool runs under the CLI
(which turns SIGINT/SIGTERM into that event), in a test, or in a thread of a long-lived
process such as an exporter.

A tool given to Runner.run() has:
    what: str                         the banner's "Tracing <what>..."
    start() -> None                   privileges, hooks, open, configure, load, attach
    poll(timeout: float) -> list      wait for data at most `timeout`; event/lost records
    report(final: bool) -> list       report/lost records for the interval (or the run)
    summary() -> list                 records at the end (after the final report)
    close() -> None                   detach everything; called whatever happened
Every OSError that escapes becomes a typed error (memlens.errors.from_oserror).
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from memlens.errors import MemlensError, from_oserror

Record = dict[str, Any]
POLL_S = 0.05  # longest wait for data: bounds the latency of a stop, an interval, a deadline


class Runner:
    def __init__(self, *, duration: float | None = None, interval: float | None = None,
                 count: int | None = None, stop: threading.Event | None = None):
        self.duration, self.interval, self.count = duration, interval, count
        self.stop = stop or threading.Event()
        self.intervals_done = 0

    def run(self, tool, emit: Callable[[Record], None],
            ready: Callable[[str], None] | None = None) -> None:
        try:
            try:
                tool.start()
                if ready is not None:
                    ready(tool.what)
                self._loop(tool, emit)
                # what arrived between the last poll and the stop (a trace's ring buffer)
                # is still read: a stop must not lose events silently
                for rec in tool.poll(0):
                    emit(rec)
                if not (self.interval and self.count and self.intervals_done >= self.count):
                    for rec in tool.report(True):
                        emit(rec)
                for rec in tool.summary():
                    emit(rec)
            finally:
                tool.close()
        except MemlensError:
            raise
        except OSError as err:
            raise from_oserror(err, f"{getattr(tool, 'name', 'tool')}") from None

    def _loop(self, tool, emit: Callable[[Record], None]) -> None:
        start = time.monotonic()
        next_tick = start + self.interval if self.interval else None
        deadline = start + self.duration if self.duration else None
        while not self.stop.is_set():
            now = time.monotonic()
            wake = min(t for t in (now + POLL_S, next_tick, deadline) if t is not None)
            for rec in tool.poll(max(0.0, wake - now)):
                emit(rec)
            now = time.monotonic()
            if next_tick is not None and now >= next_tick:
                for rec in tool.report(False):
                    emit(rec)
                self.intervals_done += 1
                next_tick += self.interval  # type: ignore[operator]
                if self.count and self.intervals_done >= self.count:
                    return
            if deadline is not None and now >= deadline:
                return
            if getattr(tool, "finished", False):
                return


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP set `stop` while the block runs; the previous handlers are
    put back after (only the main thread can install them: elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.getsignal(s) for s in sigs}
    for s in sigs:
        signal.signal(s, lambda *_: stop.set())
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def banner(what: str) -> None:
    """The one line on stderr that says every probe is attached."""
    print(f"Tracing {what}... Hit Ctrl-C to end.", file=sys.stderr, flush=True)


def run_cli(tool, args, sink) -> int:
    """Run `tool` for the CLI: signals end it, the banner goes to stderr once attached, and
    every record goes to `sink` (memlens.output.sinks)."""
    runner = Runner(duration=getattr(args, "duration", None),
                    interval=getattr(args, "interval", None), count=getattr(args, "count", None))
    with stop_on_signals(runner.stop):
        try:
            runner.run(tool, sink.emit, banner)
        finally:
            sink.close()
    return 0
