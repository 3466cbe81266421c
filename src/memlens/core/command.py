# SPDX-License-Identifier: GPL-2.0-only
"""`-c CMD` for any tool: the command is forked at once and held until the probes are
attached, then traced to its exit with its memory map still readable (memleak, growth).

Nothing the command starts outlives memlens, whatever ends memlens (SIGKILL included):

- the command itself asks for SIGKILL at its parent's death (PR_SET_PDEATHSIG, kept across
  the exec), so it dies with memlens even before anything below is in place;
- everything it starts (`sh -c 'sleep 1000 & sleep 1000'`) runs in a cgroup of its own, and
  a guardian process empties that cgroup when memlens is gone.  PDEATHSIG alone cannot do
  this (a grandchild's parent is the command, and an orphan is reparented to init), nor can
  a process group (any descendant may setsid/setpgid out of it, and putting the command in
  a group of its own takes it out of the terminal's foreground: it would stop on reading
  the terminal).  A cgroup cannot be left by an unprivileged process, and forks cannot slip
  out while it is being emptied: cgroup v2's cgroup.kill (5.14+) kills all at once; before
  it, a v2 cgroup.freeze (5.2+) or the v1 freezer holds the tasks still while each is sent
  SIGKILL.  v2 is tried first (a hierarchy with no controllers, like the hybrid layout's
  /sys/fs/cgroup/unified, still has cgroup.kill), then the v1 freezer; the new cgroup is
  a child of memlens's own, so the limits the command ran under still apply.
- the guardian is a process of its own (setsid, out of the terminal's signals) blocked
  reading a pipe only memlens holds open: whatever ends memlens, the kernel closes the pipe,
  the read returns and the guardian kills what is left in the cgroup and removes it.  A
  normal end (the command done, -d, Ctrl-C) does the same from memlens: SIGTERM to every
  process of the command, SIGKILL after 2 s.
Without a writable cgroup hierarchy (no root, a read-only cgroupfs in a container) only the
command itself is bound to memlens (PDEATHSIG), as before."""
from __future__ import annotations

import os
import shlex
import signal
import threading
import time

from memlens.errors import UsageError

TYPE_CHECKING = False  # typing costs ~4 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    from collections.abc import Callable

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


GROUP_PREFIX = "memlens-c."  # memlens-c.<memlens pid>.<n>: a dead owner's empty ones go


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, options) of every cgroup hierarchy."""
    out = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                    mnt = parts[1].replace("\\040", " ")
                    out.append((mnt, parts[2], set(parts[3].split(","))))
    except OSError:
        pass
    return out


def _own_cgroup(v2: bool, controller: str = "") -> str | None:
    """Our path in the v2 hierarchy, or in the v1 one holding `controller`."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                if (v2 and ctrls == "") or (not v2 and controller in ctrls.split(",")):
                    return path
    except (OSError, ValueError):
        pass
    return None


class CommandGroup:
    """The cgroup -c's command and everything it starts run in (see the module's text)."""

    _n = 0

    def __init__(self, path: str, kind: str):
        self.path, self.kind = path, kind  # kind: "v2" or "v1-freezer"

    @classmethod
    def create(cls, pid: int, kinds: tuple[str, ...] = ("v2", "v1-freezer")):
        """A new cgroup holding `pid` (not yet running the command), or None where none can
        be made here."""
        for kind in kinds:
            base = cls._parent_dir(kind)
            if base is None:
                continue
            _sweep(base)
            cls._n += 1
            path = os.path.join(base, f"{GROUP_PREFIX}{os.getpid()}.{cls._n}")
            try:
                os.mkdir(path, 0o755)
            except OSError:
                continue
            group = cls(path, kind)
            try:
                if kind == "v2" and not (group._has("cgroup.kill") or group._has("cgroup.freeze")):
                    raise OSError("no cgroup.kill nor cgroup.freeze")
                group._write("cgroup.procs", str(pid))
            except OSError:
                group.remove()
                continue
            return group
        return None

    @staticmethod
    def _parent_dir(kind: str) -> str | None:
        for mnt, fstype, opts in _mounts():
            if kind == "v2" and fstype == "cgroup2":
                own = _own_cgroup(True)
            elif kind == "v1-freezer" and fstype == "cgroup" and "freezer" in opts:
                own = _own_cgroup(False, "freezer")
            else:
                continue
            if own is None or not own.startswith("/"):
                return None
            path = os.path.join(mnt, own.lstrip("/"))
            return path if os.path.isdir(path) else None
        return None

    def _has(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.path, name))

    def _write(self, name: str, text: str) -> None:
        fd = os.open(os.path.join(self.path, name), os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def pids(self) -> list[int]:
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            return []

    def signal_all(self, sig: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except OSError:
                pass

    def kill(self) -> None:
        """SIGKILL to every process in the cgroup, forks racing it included."""
        try:
            if self.kind == "v2" and self._has("cgroup.kill"):
                self._write("cgroup.kill", "1")
                return
            # frozen, nothing forks while each is sent SIGKILL; thawed, they die (a v1
            # frozen task does not act on a signal until then)
            freeze = ("cgroup.freeze", "1", "0") if self.kind == "v2" else \
                ("freezer.state", "FROZEN", "THAWED")
            self._write(freeze[0], freeze[1])
            try:
                self.signal_all(signal.SIGKILL)
            finally:
                self._write(freeze[0], freeze[2])
        except OSError:
            self.signal_all(signal.SIGKILL)

    def wait_empty(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.pids():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def kill_and_remove(self, timeout: float = 10.0) -> None:
        """Everything in it killed, then the cgroup removed (rmdir waits for the last
        task to be gone from it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pids():
                self.kill()
                self.wait_empty(min(1.0, max(deadline - time.monotonic(), 0)))
                continue
            if self.remove():
                return
            time.sleep(0.01)

    def remove(self) -> bool:
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


def _sweep(base: str) -> None:
    """Empty cgroups of a memlens that died before its guardian was running."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        if not name.startswith(GROUP_PREFIX):
            continue
        try:
            owner = int(name[len(GROUP_PREFIX):].split(".")[0])
        except ValueError:
            continue
        if owner != os.getpid() and not os.path.exists(f"/proc/{owner}"):
            try:
                os.rmdir(os.path.join(base, name))  # fails (EBUSY) while not empty
            except OSError:
                pass


def _guardian(group: CommandGroup) -> tuple[int, int] | None:
    """Fork the guardian: (its pid, the pipe end memlens keeps open), or None."""
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return None
    if pid == 0:
        try:
            # nothing of memlens's held here: not its BPF links (they would stay attached),
            # not its stdout (a reader would wait for our end), not the command's go pipe
            os.closerange(3, r)
            os.closerange(r + 1, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.setsid()  # out of the terminal's job: its Ctrl-C and hangup are memlens's
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
                signal.signal(sig, signal.SIG_IGN)
            while os.read(r, 64):  # memlens never writes: this returns when it is gone
                pass
            group.kill_and_remove()
        finally:
            os._exit(0)
    os.close(r)
    return pid, w


class TracedCommand:
    """The -c command: forked now, blocked on a pipe until the probes are attached.

    A thread of ours ptrace-seizes the child with PTRACE_O_TRACEEXIT and _TRACEEXEC: at its
    exit the command stops with its memory map still in place, `on_exit` snapshots it (a
    command that runs for milliseconds still gets symbols: a zombie's /proc/PID/maps is
    empty), and the thread lets it go.  At each exec it stops too, its new image mapped but
    not one instruction of it run: `on_exec(pid)`, when a tool sets it, prepares for that
    image (the stack tools load its unwind tables: a pyenv shim execs bash, then python3,
    none of which the command line named).  Signals the command receives are passed
    straight on."""

    PTRACE_CONT, PTRACE_SEIZE, PTRACE_LISTEN = 7, 0x4206, 0x4208
    PTRACE_O_TRACEEXEC, PTRACE_O_TRACEEXIT = 0x10, 0x40
    PTRACE_EVENT_EXEC, PTRACE_EVENT_EXIT, PTRACE_EVENT_STOP = 4, 6, 128

    def __init__(self, argv: list[str], on_exit, stdout_to_stderr: bool = False,
                 group_kinds: tuple[str, ...] = ("v2", "v1-freezer")):
        self.argv = argv
        self.on_exit = on_exit
        self.on_exec: Callable[[int], None] | None = None
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
        # the child waits on its pipe: it is in its cgroup before it can run anything
        self.group = CommandGroup.create(pid, group_kinds) if group_kinds else None
        self._guard = _guardian(self.group) if self.group is not None else None
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
        options = self.PTRACE_O_TRACEEXIT | self.PTRACE_O_TRACEEXEC
        seized = libc.ptrace(self.PTRACE_SEIZE, self.pid, None, ctypes.c_void_p(options)) == 0
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
            elif event == self.PTRACE_EVENT_EXEC:
                hook = self.on_exec
                if hook is not None:
                    try:
                        hook(self.pid)
                    except Exception:
                        pass  # the command runs on; its first stacks may be walked by fp
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
        running the command (EOF on its pipe); a running command is stopped, and so is
        everything it started (its cgroup emptied and removed)."""
        try:
            if self.held():
                os.close(self._w)
                self._w = -1
                self._done.wait(10)
            else:
                self.stop()
        finally:
            self._end_guard()

    def exited(self) -> bool:
        return self._done.is_set()

    def stop(self) -> None:
        """SIGTERM to the command and to every process it started (which may outlive it:
        `sh -c 'sleep 100 &'`), SIGKILL to what is left 2 s later."""
        group = self.group
        if group is not None:
            group.signal_all(signal.SIGTERM)
        elif not self.exited():
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2
        self._done.wait(2)
        if group is not None and not group.wait_empty(max(deadline - time.monotonic(), 0)):
            group.kill()
        elif group is None and not self.exited():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._done.wait(5)

    def _end_guard(self) -> None:
        """The guardian let go (it empties and removes the cgroup, then exits) and reaped."""
        if self._guard is None:
            if self.group is not None:
                self.group.kill_and_remove()
            return
        pid, w = self._guard
        self._guard = None
        os.close(w)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return
            time.sleep(0.005)


def _shebang_interpreter(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    if not words:
        return None
    interp = words[0].decode(errors="replace")
    if os.path.basename(interp) == "env" and len(words) > 1:
        import shutil

        return shutil.which(words[1].decode(errors="replace"))
    return interp


def command_libraries(binary: str) -> list[str]:
    """Files the command's process will map: the binary and what the dynamic loader resolves
    for it (`ldd`; we are about to run the binary anyway).  Scripts: their interpreter's.
    memleak plans its uprobes on them; the stack tools load their unwind tables before the
    command runs (its first events' stacks whole)."""
    interp = _shebang_interpreter(binary)
    if interp:
        binary = interp
    paths = [os.path.realpath(binary)]
    import re
    import subprocess

    try:
        out = subprocess.run(["ldd", binary], check=False, capture_output=True, text=True,
                             timeout=20,
                             env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "")}).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    for line in out.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m and os.path.exists(m.group(1)):
            paths.append(m.group(1))
    return paths


def unwind_at_exec(store) -> Callable[[int], None]:
    """TracedCommand.on_exec for a tool that walks stacks with `store` (core/unwind):
    at each exec of the command, the tables of the new image's files (its binary and what
    ldd resolves for it, once per binary) and the process's entry, before its first
    instruction.  Without it the loader's start-up of an image the command line did not
    name (a pyenv shim's python3: 14k frames of one run) was walked by frame pointers."""
    done: set[str] = set()

    def at_exec(pid: int) -> None:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return
        if exe not in done:
            done.add(exe)
            for path in command_libraries(exe):
                store.load_file(path)
        store.load_process(pid)

    return at_exec
