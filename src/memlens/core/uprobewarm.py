# SPDX-License-Identifier: GPL-2.0-only
"""Uprobes attached without waiting for a grace period: a warm-up beside the load.

Registering a uprobe (a uprobe_multi link, a perf-event uprobe: bpftrace's too) takes the
kernel's dup_mmap_sem for writing, a per-CPU rw-semaphore whose writer waits for an RCU
grace period unless another writer passed within the last one or two (rcu_sync).  On this
VM the first uprobe link of a start took 9-21 ms (of memleak -p's ~100 ms to its banner),
the links after it 0.03-0.4 ms, and a link made 20 ms after the one before 5-8 ms again.

So while a tool's programs load (the verifier: 10-20 ms for memleak), a thread registers a
uprobe on a file no process maps executable -- the BPF object file being loaded: nothing
is installed in any process, only the semaphore's writer side is taken -- waits out the
grace period there, and registers again every PERIOD_S, so that the tool's own links find
it passed (memleak's first link: 0.2 ms instead of 9-21).  Its links are closed once the
tool's are made, all at once from threads (each close waits ~40 ms for the kernel's uprobe
teardown, so at most MAX_LINKS are made), and the tool's close() waits for that (finish):
a link closed by the process's exit frees its program only after the kernel's next RCU
grace period, and the program was still listed after the tool had exited.  Where the
kernel has no uprobe_multi links (< 6.6) the first one fails and the warm-up ends: the
tool's first link waits, as before.

Near a memory cgroup's limit (kernel.maps_fit) the tools do not start it: a map too big for
the cgroup fails cleanly (ENOMEM, exit 2 naming its option) when nothing else allocates
meanwhile, but the warm-up's link (a dentry, GFP_KERNEL) met the cgroup's OOM killer then.
"""
from __future__ import annotations

import os
import threading

PERIOD_S = 0.005   # under the grace period the semaphore's writer side stays passed for
MAX_LINKS = 8      # ~40 ms of warm-up; a longer load waits at its first link, as before
STOP_S = 5.0       # never stopped (a start that failed): its links closed after this


class UprobeWarmup:
    def __init__(self, path: str):
        self.path = path
        self.links = 0          # made (for tests)
        self.error = 0          # the first link's -errno, if it failed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memlens-uprobe-warmup",
                                        daemon=True)

    @classmethod
    def start(cls, path: str) -> UprobeWarmup:
        warm = cls(path)
        warm._thread.start()
        return warm

    @classmethod
    def start_if_room(cls, path: str, maps_bytes: int) -> UprobeWarmup | None:
        """start(), unless the maps about to be made (`maps_bytes`) come near this process's
        memory limit (kernel.maps_fit; see above)."""
        from memlens.core import kernel

        return cls.start(path) if kernel.maps_fit(maps_bytes) else None

    def stop(self) -> None:
        """The tool's uprobes are attached (or failed): stop, and close the warm-up's links
        from its thread."""
        self._stop.set()

    def finish(self, timeout: float = 10.0) -> None:
        """stop(), and wait until its links and program are closed (the tool's close)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        from memlens.core import libbpf as L

        prog = L.load_return_zero(L.BPF_PROG_TYPE_KPROBE, L.BPF_TRACE_UPROBE_MULTI)
        if prog < 0:
            self.error = prog
            return
        fds: list[int] = []
        try:
            while not self._stop.is_set() and len(fds) < MAX_LINKS:
                fd = L.link_create_uprobe_multi(prog, self.path, [0], [0], -1, False)
                if fd < 0:
                    self.error = fd
                    break
                fds.append(fd)
                self.links += 1
                self._stop.wait(PERIOD_S)
            self._stop.wait(timeout=STOP_S)
        finally:
            from memlens.core.loader import run_all

            run_all([lambda fd=fd: os.close(fd) for fd in fds])
            os.close(prog)
