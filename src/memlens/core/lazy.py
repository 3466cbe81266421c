# SPDX-License-Identifier: GPL-2.0-only
"""numpy imported on first use.  Importing numpy costs ~0.1-0.18 s and ~16 MB RSS here;
tools that only stream rare events (oomkill) never touch it, which keeps their
launch-to-attached time and peak RSS low (figures in bench/)."""
from __future__ import annotations

import sys
from _thread import allocate_lock  # threading.Lock: threading is imported at the prefetch

ModuleType = type(sys)  # types.ModuleType, without importing types


class LazyModule(ModuleType):
    def __init__(self, name: str):
        super().__init__(name)
        self._real: ModuleType | None = None

    def __getattr__(self, attr: str):
        if attr == "_real":
            raise AttributeError(attr)
        if self._real is None:
            _import(self.__name__)
            self._real = sys.modules[self.__name__]
        return getattr(self._real, attr)


def _import(name: str) -> None:
    """__import__ (importlib.import_module, without importing importlib), numpy's BLAS
    told to start no threads: OpenBLAS starts one per CPU as it loads, and they spun
    ~0.1 s of CPU at every tool's start here (funccount -d 1: 0.19 -> 0.08 s of user
    time), for linear algebra memlens never does.  The variable is set for the import
    only, where the user has not set it: the processes memlens starts (-c's command)
    do not inherit it."""
    import os

    ours = "OPENBLAS_NUM_THREADS" not in os.environ
    if ours:
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        __import__(name)
    finally:
        if ours:
            os.environ.pop("OPENBLAS_NUM_THREADS", None)


np = LazyModule("numpy")
_prefetching = False
# A tool starting under core/runner holds the prefetch until its banner is printed: the
# import's thread, started at the end of the tool's start(), held the GIL the main thread
# needed to print the banner (2-5 ms, up to 16, of every engine tool's time to attached).
_lock = allocate_lock()
_holds = 0
_asked = False


def prefetch_numpy() -> None:
    """Import numpy in a background thread while the main thread waits for something else
    (the kernel, a first poll's timeout), so that the first decoding does not wait for the
    import.  Asked during a start held by hold_prefetch(), it begins at release_prefetch()."""
    global _asked
    with _lock:
        if _prefetching or np._real is not None:
            return  # one import is enough (slabratetop starts two engines)
        if _holds:
            _asked = True
            return
    _start()


def _start() -> None:
    global _prefetching
    with _lock:
        if _prefetching or np._real is not None:
            return
        _prefetching = True

    def load() -> None:
        try:
            np.ndarray  # noqa: B018 — touching an attribute performs the import
        except ImportError:
            pass

    import threading  # after the banner (release_prefetch), not on the way to it

    threading.Thread(target=load, name="numpy-prefetch", daemon=True).start()


def hold_prefetch() -> None:
    """A tool is starting: a prefetch it asks for waits for release_prefetch()."""
    global _holds
    with _lock:
        _holds += 1


def release_prefetch(start: bool = True) -> None:
    """The tool's banner is out (`start`): a prefetch asked meanwhile begins now, unless
    another start still holds it.  `start` False (a start that failed or was stopped
    before attaching): the process is ending, nothing to import for."""
    global _holds, _asked
    with _lock:
        _holds -= 1
        due = start and _asked and not _holds
        if due or not _holds:
            _asked = False
    if due:
        _start()
