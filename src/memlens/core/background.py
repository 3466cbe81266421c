# SPDX-License-Identifier: GPL-2.0-only
"""A start-up step run in a thread beside libbpf's load (core/runner.Background), and the
flag its steps signal each other with.

Both are on the _thread module, not threading: threading (with functools and collections)
was ~5 ms of memleak -p's start on this VM (`python -c "import threading"` against `pass`,
25 alternating runs), on the main thread before its load.  Threads started here are
daemons, as threading's daemon threads: the interpreter's exit does not wait for them.
"""
from __future__ import annotations

import _thread
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class Flag:
    """threading.Event's set(), is_set() and wait(timeout), on a _thread lock held until
    set() (then released for good: every wait after it returns at once)."""

    def __init__(self) -> None:
        self._set = False
        self._guard = _thread.allocate_lock()
        self._gate = _thread.allocate_lock()
        self._gate.acquire()

    def set(self) -> None:
        with self._guard:
            if not self._set:
                self._set = True
                self._gate.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        if self._gate.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            self._gate.release()  # stays open for the other waiters
        return self._set


class Background:
    """A start-up step run in a thread (once started) while the main one waits in libbpf
    (ctypes releases the GIL for the kernel's verifier); result() waits for it and raises
    what it raised, or runs it in place if it was never started.  `also(fn)` before the
    start: fn runs after it in the same thread (an import to warm up: a failure is left for
    the main thread's own import to report).  From start() to result() the GIL's switch
    interval is SWITCH_S: each of the main thread's many short libbpf calls (the object's
    configuration) gives the GIL away and waited up to the default 5 ms to get it back
    from this thread's Python (memleak -p's map creation: 67-105 ms with the plan beside
    it, 37-48 with the short interval)."""

    SWITCH_S = 0.0005

    def __init__(self, fn: Callable[[], None], name: str):
        self.fn = fn
        self.name = name
        self.error: BaseException | None = None
        self.after: list[Callable[[], None]] = []
        self._switch: float | None = None  # the interval to restore
        self._started = False
        self._done = Flag()

    def start(self) -> None:
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch, self.SWITCH_S))
        self._started = True
        _thread.start_new_thread(self._thread_main, ())

    def restore_switch(self) -> None:
        """The switch interval back as it was (result() does it; idempotent)."""
        if self._switch is not None:
            sys.setswitchinterval(self._switch)
            self._switch = None

    def also(self, fn: Callable[[], None]) -> None:
        self.after.append(fn)

    def _thread_main(self) -> None:
        try:
            self.run()
        finally:
            self._done.set()

    def run(self) -> None:
        try:
            self.fn()
        except BaseException as err:  # handed to the main thread
            self.error = err
            return
        for fn in self.after:
            try:
                fn()
            except Exception:  # a warm-up only
                pass

    def result(self) -> None:
        if not self._started:  # never started (a failure before the load): run here
            self.after.clear()
            self.run()
        else:
            self._done.wait()
        self.restore_switch()
        if self.error is not None:
            err, self.error = self.error, None
            raise err
