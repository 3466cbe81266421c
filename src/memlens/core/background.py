# SPDX-License-Identifier: GPL-2.0-only
"""A start-up step run in a thread beside libbpf's load (core/runner.Background)."""
from __future__ import annotations

import sys
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class Background(threading.Thread):
    """A start-up step run in a thread (once started) while the main one waits in libbpf
    (ctypes releases the GIL for the kernel's verifier); result() joins it and raises what
    it raised, or runs it in place if it was never started.  `also(fn)` before the start:
    fn runs after it in the same thread (an import to warm up: a failure is left for the
    main thread's own import to report).  From start() to result() the GIL's switch
    interval is SWITCH_S: each of the main thread's many short libbpf calls (the object's
    configuration) gives the GIL away and waited up to the default 5 ms to get it back
    from this thread's Python (memleak -p's map creation: 67-105 ms with the plan beside
    it, 37-48 with the short interval)."""

    SWITCH_S = 0.0005

    def __init__(self, fn: Callable[[], None], name: str):
        super().__init__(name=name, daemon=True)
        self.fn = fn
        self.error: BaseException | None = None
        self.after: list[Callable[[], None]] = []
        self._switch: float | None = None  # the interval to restore

    def start(self) -> None:
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch, self.SWITCH_S))
        super().start()

    def restore_switch(self) -> None:
        """The switch interval back as it was (result() does it; idempotent)."""
        if self._switch is not None:
            sys.setswitchinterval(self._switch)
            self._switch = None

    def also(self, fn: Callable[[], None]) -> None:
        self.after.append(fn)

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
        if self.ident is None:  # never started (a failure before the load): run here
            self.after.clear()
            self.run()
        else:
            self.join()
        self.restore_switch()
        if self.error is not None:
            err, self.error = self.error, None
            raise err
