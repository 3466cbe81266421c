# SPDX-License-Identifier: GPL-2.0-only
"""numpy imported on first use.  Importing numpy costs ~0.1-0.18 s and ~16 MB RSS here;
tools that only stream rare events (oomkill) never touch it, which keeps their
launch-to-attached time and peak RSS low (figures in bench/)."""
from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule(ModuleType):
    def __init__(self, name: str):
        super().__init__(name)
        self._real: ModuleType | None = None

    def __getattr__(self, attr: str):
        if attr == "_real":
            raise AttributeError(attr)
        if self._real is None:
            self._real = importlib.import_module(self.__name__)
        return getattr(self._real, attr)


np = LazyModule("numpy")
_prefetching = False


def prefetch_numpy() -> None:
    """Import numpy in a background thread while the main thread opens and loads BPF
    objects: libbpf's load (mostly the kernel verifying programs) runs in ctypes calls that
    release the GIL, so the import overlaps it instead of delaying the first attach."""
    global _prefetching
    if _prefetching or np._real is not None:
        return  # one import is enough (slabratetop starts two engines)
    _prefetching = True
    import threading

    def load() -> None:
        try:
            np.ndarray  # noqa: B018 — touching an attribute performs the import
        except ImportError:
            pass

    threading.Thread(target=load, name="numpy-prefetch", daemon=True).start()
