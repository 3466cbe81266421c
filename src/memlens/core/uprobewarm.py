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

PERIOD_S = 0.005   # under the grace period the semaphore's writer side stays passed for
MAX_LINKS = 8      # ~40 ms of warm-up; a longer load waits at its first link, as before
STOP_S = 5.0       # never stopped (a start that failed): its links closed after this
EARLY_ROOM = 256 << 20  # start_early: memory left to the process beyond kernel.maps_fit's margin

_early: UprobeWarmup | None = None  # start_early's, until start_if_room takes it


class UprobeWarmup:
    # Its thread is the _thread module's and its signals core/background's Flags: threading
    # (with functools and collections, ~3 ms to import) was most of what the warm-up added
    # to a u: probe's start before the banner.
    def __init__(self, path: str):
        from memlens.core.background import Flag

        self.path = path
        self.links = 0          # made (for tests)
        self.error = 0          # the first link's -errno, if it failed
        self._stop = Flag()     # stop(): the thread waits on it between its links
        self._done = Flag()     # the thread has closed everything

    @classmethod
    def start(cls, path: str) -> UprobeWarmup:
        import _thread

        warm = cls(path)
        _thread.start_new_thread(warm._thread_main, ())
        return warm

    @classmethod
    def start_early(cls, path: str) -> None:
        """start() now, before the tool knows its maps' sizes, for its later start_if_room
        to take: where the object loads in a few milliseconds (the engine's u: probes: ~6
        ms), a warm-up started at the open had not waited out the grace period by the
        attach (`trace -p PID u:libc:malloc`: its link 9-24 ms after the load, 0.5 ms
        with the warm-up started ~20 ms sooner).  The command line starts it as soon as
        it knows the command (cli._main: a grace period of ~10-20 ms here, most of it
        then spent while the tool's modules import), probespec.prepare_tracing where
        the command line did not.  Not where the process has less than EARLY_ROOM of
        memory left (start_if_room decides then, with the maps' sizes)."""
        from memlens.core import kernel

        global _early
        if _early is None and kernel.maps_fit(EARLY_ROOM):
            _early = cls.start(path)

    @classmethod
    def start_early_for_specs(cls, words) -> None:
        """start_early() for the engine's object where a probe spec among `words` (specs,
        or a command line's words) is a user-space probe (probespec.names_user_probe)."""
        from memlens.core.probespec import names_user_probe

        if names_user_probe(words):
            from memlens.core.engine import OBJECT
            from memlens.core.loader import object_path

            cls.start_early(object_path(OBJECT))

    @classmethod
    def start_if_room(cls, path: str, maps_bytes: int) -> UprobeWarmup | None:
        """start(), unless the maps about to be made (`maps_bytes`) come near this process's
        memory limit (kernel.maps_fit; see above); the warm-up start_early began, if any
        (stopped if the maps do not fit: still the caller's to finish())."""
        from memlens.core import kernel

        global _early
        fits = kernel.maps_fit(maps_bytes)
        early, _early = _early, None
        if early is not None and early.path == path:
            if not fits:
                early.stop()
            return early
        if early is not None:
            early.finish()
        return cls.start(path) if fits else None

    def stop(self) -> None:
        """The tool's uprobes are attached (or failed): stop, and close the warm-up's links
        from its thread."""
        self._stop.set()

    def stopped(self) -> bool:
        return self._stop.is_set()

    def alive(self) -> bool:
        """Its thread has not closed everything yet."""
        return not self._done.is_set()

    def finish(self, timeout: float = 10.0) -> None:
        """stop(), and wait until its links and program are closed (the tool's close)."""
        self.stop()
        self._done.wait(timeout)

    def _thread_main(self) -> None:
        try:
            self._run()
        finally:
            self._done.set()

    def _run(self) -> None:
        try:
            from memlens.core import libbpf as L

            prog = L.load_return_zero(L.BPF_PROG_TYPE_KPROBE, L.BPF_TRACE_UPROBE_MULTI)
        except Exception:  # (an architecture without bpf's number...): only a warm-up
            prog = -1
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
            self._stop.wait(STOP_S)
        finally:
            from memlens.core.loader import run_all

            run_all([lambda fd=fd: os.close(fd) for fd in fds])
            os.close(prog)
