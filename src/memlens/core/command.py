# SPDX-License-Identifier: GPL-2.0-only
"""`-c CMD` for any tool: the command is forked at once and held until the probes are
attached, then traced to its exit with its memory map still readable (memleak, growth).

The command never outlives memlens: the child asks for SIGKILL at its parent's death
(PR_SET_PDEATHSIG, kept across the exec), so a memlens killed with SIGKILL, or crashing,
takes its command along instead of leaving it reparented to init."""
from __future__ import annotations

import os
import shlex
import signal
import threading

from memlens.errors import UsageError

PR_SET_PDEATHSIG = 1


def split_command(text: str | None) -> list[str]:
    """-c's command line split as a shell would split words: a usage error (exit 2) for an
    empty command or unbalanced quotes, not an internal error."""
    try:
        argv = shlex.split(text or "")
    except ValueError as err:  # "No closing quotation", "No escaped character"
        raise UsageError(f"-c {text!r}: {str(err).lower()}") from None
    if not argv:
        raise UsageError("-c needs a command")
    return argv


def _prctl():
    """libc's prctl, looked up before the fork: a dlopen in the child of a threaded process
    (numpy may be importing in another thread) could wait forever on the loader's lock."""
    import ctypes

    fn = ctypes.CDLL(None, use_errno=True).prctl
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                   ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


def _die_with_parent(prctl, parent: int) -> None:
    """In the forked child: SIGKILL when the parent dies; if it already has (between the
    fork and the prctl), go now."""
    if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(126)
    if os.getppid() != parent:
        os._exit(0)


class TracedCommand:
    """The -c command: forked now, blocked on a pipe until the probes are attached.

    A thread of ours ptrace-seizes the child with PTRACE_O_TRACEEXIT only: at its exit the
    command stops with its memory map still in place, `on_exit` snapshots it (a command that
    runs for milliseconds still gets symbols: a zombie's /proc/PID/maps is empty), and the
    thread lets it go.  Signals the command receives are passed straight on."""

    PTRACE_CONT, PTRACE_SEIZE, PTRACE_LISTEN = 7, 0x4206, 0x4208
    PTRACE_O_TRACEEXIT, PTRACE_EVENT_EXIT, PTRACE_EVENT_STOP = 0x40, 6, 128

    def __init__(self, argv: list[str], on_exit, stdout_to_stderr: bool = False):
        self.argv = argv
        self.on_exit = on_exit
        prctl = _prctl()
        r, w = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # child
            try:
                _die_with_parent(prctl, parent)
                os.close(w)
                go = os.read(r, 1)
                os.close(r)
                if go != b"x":
                    os._exit(0)  # the tool failed before attaching
                if stdout_to_stderr:
                    os.dup2(2, 1)
                os.execvp(argv[0], argv)
            except OSError as err:
                os.write(2, f"memlens: cannot run {argv[0]}: {err.strerror}\n".encode())
            os._exit(127)
        os.close(r)
        self.pid, self._w = pid, w
        self.status: int | None = None
        self._seized = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._trace, name="memlens-c", daemon=True)
        self._thread.start()
        self._seized.wait(5)

    def _trace(self) -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        libc.ptrace.restype = ctypes.c_long
        seized = libc.ptrace(self.PTRACE_SEIZE, self.pid, None,
                             ctypes.c_void_p(self.PTRACE_O_TRACEEXIT)) == 0
        self._seized.set()
        while True:
            try:
                _pid, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                self.status = self.status if self.status is not None else 0
                break
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self.status = status
                break
            if not (seized and os.WIFSTOPPED(status)):
                continue
            event, sig = status >> 16, os.WSTOPSIG(status)
            if event == self.PTRACE_EVENT_EXIT:
                try:
                    self.on_exit()
                except Exception:
                    pass
                libc.ptrace(self.PTRACE_CONT, self.pid, None, None)
            elif event == self.PTRACE_EVENT_STOP:
                libc.ptrace(self.PTRACE_LISTEN, self.pid, None, None)  # group stop: stay
            else:  # signal-delivery-stop: deliver it
                libc.ptrace(self.PTRACE_CONT, self.pid, None, ctypes.c_void_p(sig))
        self._done.set()

    def held(self) -> bool:
        """Still waiting on the pipe for release()."""
        return self._w >= 0

    def release(self) -> None:
        os.write(self._w, b"x")
        os.close(self._w)
        self._w = -1

    def end(self) -> None:
        """At the end of the run, whatever happened: a child never released exits without
        running the command (EOF on its pipe); a running command is stopped."""
        if self.held():
            os.close(self._w)
            self._w = -1
            self._done.wait(10)
        else:
            self.stop()

    def exited(self) -> bool:
        return self._done.is_set()

    def stop(self) -> None:
        if self.exited():
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if not self._done.wait(2):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._done.wait(5)
