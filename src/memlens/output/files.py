# SPDX-License-Identifier: GPL-2.0-only
"""Output files (--html, --pprof): opened before tracing starts, written at the end.

What a path names decides how it is written:
  - a regular file, or nothing yet: a new file written whole and renamed into place, so a
    reader never sees half a profile.  It is created before tracing starts (unnamed, with
    O_TMPFILE where the filesystem has it, so a memlens killed with SIGKILL leaves nothing
    behind): a missing directory or an unwritable place is a usage error (exit 2) before
    the run, not a lost profile after it.  A new file is readable by its owner only (0600:
    a profile shows someone's process); a file replaced keeps its mode and owner.
  - `-`: standard output.
  - a character device (/dev/null, /dev/stdout, a tty) or a FIFO: written as a stream,
    never replaced.  A FIFO is opened at the end, when its reader is waited for (a second
    Ctrl-C gives up).  Block devices, sockets and directories are refused.
  - a symbolic link: followed, so the file it names is written as above.  Not followed,
    as the kernel's fs.protected_symlinks would refuse it (whatever the sysctl says here),
    when it sits in a sticky world-writable directory (/tmp) and belongs neither to us nor
    to the directory's owner: root must not write through a link another user planted.
"""
from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
import time

from memlens.errors import MemlensError, UsageError


class OutputFile:
    """One output path, checked and opened now (`OutputFile(path, option)`), written once at
    the end (`commit(data)`), or let go without touching what the path names (`discard()`:
    the run failed or was interrupted before it traced anything)."""

    def __init__(self, path: str | os.PathLike[str], option: str = "output"):
        self.path = os.fspath(path)
        self.option = option
        self.kind = "file"            # file | stdout | stream (device) | fifo
        self.target = self.path       # the path written (a symlink's target)
        self._fd: int | None = None   # unnamed or temporary file, or the device's fd
        self._tmp: str | None = None  # named temporary file (no O_TMPFILE here)
        self._keep: os.stat_result | None = None  # the file replaced: its mode and owner
        if not self.path or "\0" in self.path:
            raise UsageError(f"{option}: empty path")
        if self.path == "-":
            self.kind = "stdout"
            return
        try:
            self._open()
        except OSError as err:
            self.discard()
            raise UsageError(f"{option} {self.path}: {err.strerror or err}") from None

    # -- opening -----------------------------------------------------------------------
    def _open(self) -> None:
        try:
            lst = os.lstat(self.path)
        except FileNotFoundError:
            lst = None
        if lst is not None and stat.S_ISLNK(lst.st_mode):
            self._check_link(lst)
        try:
            # O_PATH follows links the way a write would (magic /proc links too:
            # /dev/stdout on a pipe), without opening anything for reading or writing
            pfd = os.open(self.path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            # nothing there yet (or a link to nothing): a new file where the path leads
            self.target = os.path.realpath(self.path)
            self._open_new()
            return
        try:
            st = os.fstat(pfd)
            if stat.S_ISREG(st.st_mode):
                self.target = os.readlink(f"/proc/self/fd/{pfd}")
                if not os.access(self.target, os.W_OK):
                    raise UsageError(f"{self.option} {self.path}: not writable")
                self._keep = st
                self._open_new()
            elif stat.S_ISCHR(st.st_mode):
                self.kind = "stream"
                self._fd = os.open(f"/proc/self/fd/{pfd}",
                                   os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY)
            elif stat.S_ISFIFO(st.st_mode):
                if not os.access(f"/proc/self/fd/{pfd}", os.W_OK):
                    raise UsageError(f"{self.option} {self.path}: FIFO not writable")
                self.kind = "fifo"
            elif stat.S_ISDIR(st.st_mode):
                raise UsageError(f"{self.option} {self.path}: is a directory (give a file "
                                 "name)")
            else:
                what = "a block device" if stat.S_ISBLK(st.st_mode) else "a socket"
                raise UsageError(f"{self.option} {self.path}: is {what}; refusing to write a "
                                 "profile there")
        finally:
            os.close(pfd)

    def _check_link(self, lst: os.stat_result) -> None:
        parent = os.path.dirname(os.path.abspath(self.path))
        pst = os.stat(parent)
        sticky_world = (pst.st_mode & stat.S_ISVTX) and (pst.st_mode & stat.S_IWOTH)
        if sticky_world and lst.st_uid not in (os.geteuid(), pst.st_uid):
            raise UsageError(f"{self.option} {self.path}: a symbolic link owned by another "
                             f"user (uid {lst.st_uid}) in the sticky directory {parent}: "
                             "not following it (fs.protected_symlinks rule)")

    def _open_new(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.target))
        try:
            # unnamed until linked at commit: nothing is left behind by a kill
            self._fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
            return
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
        fd, self._tmp = tempfile.mkstemp(dir=directory, prefix=".memlens-", suffix=".tmp")
        self._fd = fd

    # -- writing -----------------------------------------------------------------------
    def commit(self, data: bytes) -> None:
        """Write `data` to the path (whole, once); MemlensError (exit 1) naming the path if
        that fails, and nothing half-written left in place of a regular file."""
        try:
            if self.kind == "stdout":
                sys.stdout.flush()
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            elif self.kind == "stream":
                assert self._fd is not None
                _write_all(self._fd, data)
            elif self.kind == "fifo":
                fd = _open_fifo(self.target)
                try:
                    _write_all(fd, data)
                finally:
                    os.close(fd)
            else:
                self._commit_file(data)
        except OSError as err:
            raise MemlensError(f"cannot write {self.option} {self.path}: "
                               f"{err.strerror or err}") from None
        finally:
            self.discard()

    def _commit_file(self, data: bytes) -> None:
        assert self._fd is not None
        fd = self._fd
        _write_all(fd, data)
        if self._keep is not None:  # the file replaced keeps its mode and owner
            os.fchmod(fd, stat.S_IMODE(self._keep.st_mode) & 0o777)
            if (self._keep.st_uid, self._keep.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fd, self._keep.st_uid, self._keep.st_gid)
                except PermissionError:
                    pass  # not root: the file becomes ours, as any editor's save does
        else:
            os.fchmod(fd, 0o600)
        os.fsync(fd)
        directory = os.path.dirname(os.path.abspath(self.target))
        if self._tmp is None:
            # give the unnamed file a temporary name beside the target, then rename it over
            # the target (rename, unlike link, replaces)
            dfd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                for _ in range(100):
                    name = f".memlens-{os.getpid()}-{time.monotonic_ns()}"
                    try:
                        # linkat(AT_SYMLINK_FOLLOW) of the /proc/self/fd link (os.link only
                        # calls linkat, and so follows, when given a directory fd)
                        os.link(f"/proc/self/fd/{fd}", name, src_dir_fd=dfd, dst_dir_fd=dfd,
                                follow_symlinks=True)
                        break
                    except FileExistsError:
                        continue
                else:
                    raise OSError(errno.EEXIST, "no free temporary name")
            finally:
                os.close(dfd)
            self._tmp = os.path.join(directory, name)
        os.replace(self._tmp, self.target)
        self._tmp = None

    def discard(self) -> None:
        """Close what was opened; a temporary file is removed, the path is untouched."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
            self._tmp = None

    def __del__(self) -> None:
        self.discard()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _open_fifo(path: str) -> int:
    """Open a FIFO for writing, waiting for its reader; the next signal gives up (the CLI's
    handlers only count signals, so a blocking open could not be interrupted)."""
    from memlens.core.runner import SIGNALS

    seen, told = SIGNALS.count, False
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            if err.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        else:
            os.set_blocking(fd, True)
            return fd
        if not told:
            print(f"memlens: waiting for a reader on the FIFO {path} (Ctrl-C to give up)",
                  file=sys.stderr, flush=True)
            told = True
        if SIGNALS.count > seen:
            raise OSError(errno.EINTR, "gave up waiting for a reader")
        time.sleep(0.05)


def write_file_atomic(path: str | os.PathLike[str] | OutputFile, data: bytes) -> None:
    """Write `data` to `path` (an OutputFile opened earlier, or a path opened now) as
    OutputFile does: regular files replaced whole, devices and FIFOs written as streams,
    symlinks followed unless planted by another user."""
    out = path if isinstance(path, OutputFile) else OutputFile(path)
    out.commit(data)
