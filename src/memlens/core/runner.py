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
                                      (a sequence: an event tool returns an EventBatch,
                                      its events as columns, see output/sinks.py)
    report(final: bool) -> list       report/lost records for the interval (or the run)
    summary() -> list                 records at the end (after the final report)
    close() -> None                   detach everything; called whatever happened
Every OSError that escapes becomes a typed error (memlens.errors.from_oserror).

A stop that comes before every probe is attached (Ctrl-C while libbpf loads) ends the run
without a banner, a report or a summary: nothing was traced.  `Runner.attached` tells the
two cases apart; the CLI exits 128 + the signal's number then (130 for SIGINT, as a shell
reports a command it interrupted) and 0 for a stop after the banner (the final report is
the normal way to end a tracing tool).

Signals: the CLI installs `SIGNALS` (SIGINT, SIGTERM, SIGHUP) as the first thing it does;
their handler only sets an Event.  No KeyboardInterrupt is ever raised, so none can land
in the middle of an import, of libbpf's print callback (a ctypes callback: an exception
there is printed and swallowed by ctypes), or of a half-made object; every step checks
the Event where it can stop cleanly.
"""
from __future__ import annotations

# _signal: the C module under `signal`, with the same functions and numbers but without
# the enums `signal` builds from them at import (~0.5 ms of every start, bench/)
import _signal
import sys
import time

from memlens.errors import MemlensError, from_oserror

TYPE_CHECKING = False  # typing costs ~7 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from typing import Any, TypeAlias

    Record: TypeAlias = dict[str, Any]
POLL_S = 0.05  # longest wait for data: bounds the latency of a stop, an interval, a deadline
DRAIN_S = 2.0  # after the stop, batches are read until the ring is empty, for this long at most


# The command line's start runs with the cyclic garbage collector paused (cli.py): what a
# start allocates (modules, classes, functions, options, the BPF object's views) is not
# garbage, and the collections its allocations set off were 1.2-2.7 ms of the time to the
# banner (8-16 of them: drsnoop, funccount, memleak -p; gc.callbacks).  It is resumed once
# the tool is attached (Runner._start), or at once for a command that loads nothing
# (cli._main), with what the start made moved out of the collector's scans (gc.freeze):
# a long run's collections then skip the start's objects too.
_gc_paused = False


def pause_gc() -> None:
    """For the command line's start: the cyclic collector off until resume_gc()."""
    import gc

    global _gc_paused
    if gc.isenabled():
        gc.disable()
        _gc_paused = True


def resume_gc() -> None:
    """The collector back on, if pause_gc() turned it off (a no-op otherwise: a library's
    or a test's own choice is left alone)."""
    import gc

    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        gc.freeze()
        gc.enable()


class Runner:
    def __init__(self, *, duration: float | None = None, interval: float | None = None,
                 count: int | None = None, stop: threading.Event | None = None):
        self.duration, self.interval, self.count = duration, interval, count
        if stop is None:
            import threading  # not on the CLI's way to the banner: it gives SIGNALS

            stop = threading.Event()
        self.stop = stop
        self.intervals_done = 0
        self.attached = False      # start() returned and no stop came before it did
        self.finished_by_tool = False  # the tool said it was finished (its target exited)
        self._notice: Callable[[str], None] | None = None

    def run(self, tool, emit: Callable[[Record], None],
            ready: Callable[[str], None] | None = None,
            notice: Callable[[str], None] | None = None,
            emit_many: Callable[[Any], None] | None = None) -> None:
        """`emit` gets each record; `emit_many`, when given, gets each poll's records at
        once instead (a sink writes a batch with one write: sinks.Sink.emit_many)."""
        self._notice = notice
        if emit_many is None:
            def emit_many(records) -> None:
                for rec in records:
                    emit(rec)
        self._emit_many = emit_many
        try:
            try:
                if self.stop.is_set():
                    return  # stopped before anything was made
                self._start(tool, ready)
                if not self.attached:
                    return  # stopped while attaching: nothing traced, nothing to report
                self._loop(tool, emit)
                # what arrived between the last poll and the stop (a trace's ring buffer)
                # is still read, batch after batch (a poll reads a bounded batch: peak
                # RSS): a stop must not lose events silently
                self._drain(tool)
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

    def _drain(self, tool) -> None:
        until = time.monotonic() + DRAIN_S
        while True:
            batch = tool.poll(0)
            self._emit_many(batch)
            if not getattr(batch, "__len__", None) or not len(batch):
                return
            if time.monotonic() >= until:
                # a flood that outlasts the drain: what is left is counted lost (the
                # final report shows it), not dropped with the ring
                drop = getattr(getattr(tool, "engine", None), "drop_unread", None)
                if drop is not None:
                    drop()
                return

    def _start(self, tool, ready: Callable[[str], None] | None) -> None:
        # numpy's prefetch (asked by an engine at the end of its start) waits for the
        # banner: its thread held the GIL the banner's print needed (core/lazy.py)
        from memlens.core import lazy

        lazy.hold_prefetch()
        banner_out = False
        try:
            tool.start()
            if self.stop.is_set():
                return
            self.attached = True
            if ready is not None:
                ready(tool.what)
            banner_out = True
        finally:
            resume_gc()
            lazy.release_prefetch(start=banner_out)

    def _loop(self, tool, emit: Callable[[Record], None]) -> None:
        start = time.monotonic()
        next_tick = start + self.interval if self.interval else None
        deadline = start + self.duration if self.duration else None
        while not self.stop.is_set():
            now = time.monotonic()
            wake = min(t for t in (now + POLL_S, next_tick, deadline) if t is not None)
            self._emit_many(tool.poll(max(0.0, wake - now)))
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
                # the traced process exited (say so once, as bpftrace does), or the tool
                # has what it was asked for (trace -M)
                self.finished_by_tool = True
                reason = getattr(tool, "finish_reason", None)
                if reason and self._notice is not None:
                    self._notice(f"{reason}: final report")
                return


class stop_on_signals:  # lower case: a context manager, used as a function
    """SIGINT, SIGTERM and SIGHUP set `stop` while the block runs; the previous handlers are
    put back after (only the main thread can install them: elsewhere this does nothing).
    A class, not contextlib.contextmanager: contextlib is ~0.3 ms of every start."""

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self.old: dict[int, Any] = {}

    def __enter__(self) -> None:
        sigs = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)
        self.old = _install(sigs, lambda *_: self.stop.set())

    def __exit__(self, *exc: object) -> None:
        for s, h in self.old.items():
            _signal.signal(s, h)


def _install(sigs: tuple[int, ...], handler) -> dict[int, Any]:
    """`handler` for `sigs`; the previous handlers, to put back.  Empty outside the main
    thread, where Python refuses signal handlers (told by the refusal itself: threading,
    for main_thread(), is ~5 ms of every start on this VM)."""
    old: dict[int, Any] = {}
    try:
        for s in sigs:
            prev = _signal.getsignal(s)
            _signal.signal(s, handler)
            old[s] = prev
    except ValueError:  # "signal only works in main thread of the main interpreter"
        for s, h in old.items():
            _signal.signal(s, h)
        return {}
    return old


class SignalStop:
    """The CLI's signal handling, installed first thing (cli.main) and kept for the whole
    command: SIGINT, SIGTERM and SIGHUP stop it and are counted; nothing is raised.

    It is the stop event a Runner is given (set/is_set/wait, as threading.Event): a real
    threading.Event is kept in step with it only once a thread waits on it, so threading
    stays off the way to the banner.

    `signum` is the first signal (the exit code is 128 + it when it came before attach);
    `count` lets a blocking step that runs after the stop (waiting for a FIFO's reader)
    give up on the next signal."""

    SIGS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)

    def __init__(self) -> None:
        self._set = False
        self._event: threading.Event | None = None
        self.signum: int | None = None
        self.count = 0
        self.active = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        self.count += 1
        self.set()

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        return self._waitable().wait(timeout)

    def _waitable(self) -> threading.Event:
        if self._event is None:
            import threading

            self._event = threading.Event()
            if self._set:
                self._event.set()
        return self._event

    def install(self) -> bool:
        """Install the handlers (main thread only); False where they cannot be."""
        if self.active:
            return True
        self._set, self._event = False, None
        self.signum, self.count = None, 0
        self._old = _install(self.SIGS, self._handler)
        if not self._old:
            return False
        self.active = True
        return True

    def restore(self) -> None:
        """Put the previous handlers back (a command that wants Ctrl-C as KeyboardInterrupt,
        such as `memlens top`, or the end of cli.main)."""
        if not self.active:
            return
        for s, h in self._old.items():
            _signal.signal(s, h if h is not None else _signal.SIG_DFL)
        self.active = False

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or _signal.SIGINT)


SIGNALS = SignalStop()


def __getattr__(name: str) -> Any:
    """`runner.Background` (core/background.py): a start-up step's thread, made only by the
    tools that run one beside the load (its module is not on the others' way to the
    banner)."""
    if name == "Background":
        from memlens.core.background import Background

        return Background
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def banner(what: str) -> None:
    """The one line on stderr that says every probe is attached."""
    print(f"Tracing {what}... Hit Ctrl-C to end.", file=sys.stderr, flush=True)


def notice(msg: str) -> None:
    print(f"memlens: {msg}", file=sys.stderr, flush=True)


def run_cli(tool, args, sink) -> int:
    """Run `tool` for the CLI: signals end it, the banner goes to stderr once attached, and
    every record goes to `sink` (memlens.output.sinks).

    Exit status: 0 after a run that attached (whatever ended it: -d, the count, a signal,
    the traced process's exit); 128 + the signal's number when a signal came before every
    probe was attached (nothing traced, no report, files not written)."""
    installed_here = not SIGNALS.active and SIGNALS.install()
    pid = getattr(args, "pid", None)
    if isinstance(pid, int) and not (hasattr(type(tool), "finished")
                                     or "finished" in getattr(tool, "__dict__", {})):
        tool = EndsWithTarget(tool, pid)
    runner = Runner(duration=getattr(args, "duration", None),
                    interval=getattr(args, "interval", None), count=getattr(args, "count", None),
                    stop=SIGNALS if SIGNALS.active else None)
    ok = False
    try:
        with (stop_on_signals(runner.stop) if not SIGNALS.active else _Nothing()):
            try:
                runner.run(tool, sink.emit, banner, notice,
                           emit_many=getattr(sink, "emit_many", None))
                ok = runner.attached
            finally:
                if ok:
                    sink.close()
                else:
                    sink.discard()
    finally:
        if installed_here:
            SIGNALS.restore()
    if not runner.attached and runner.stop.is_set():
        return SIGNALS.exit_code if SIGNALS.signum else 130
    return 0


class _Nothing:
    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        pass


class EndsWithTarget:
    """A tool given -p that does not say itself when it is finished: it is, once that
    process has exited (checked through a pidfd taken right after the tool's start, which
    checked the PID).  Every other attribute is the tool's."""

    def __init__(self, tool, pid: int):
        from memlens.core.session import TargetExit

        self._tool, self._pid = tool, pid
        self._target = TargetExit(None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tool, name)

    def start(self) -> None:
        from memlens.core.session import TargetExit

        self._tool.start()
        self._target = TargetExit(self._pid)

    @property
    def finished(self) -> bool:
        return self._target.exited()

    @property
    def finish_reason(self) -> str:
        return self._target.reason

    def close(self) -> None:
        try:
            self._target.close()
        finally:
            self._tool.close()
