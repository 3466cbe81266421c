# SPDX-License-Identifier: GPL-2.0-only
"""Typed errors.  Only cli.main() catches them, prints one line and exits with the code.

Exit codes (every command): 0 done; 1 runtime failure; 2 usage error; 3 not permitted;
4 the kernel lacks what the command needs.
"""


class MemlensError(Exception):
    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(MemlensError):
    exit_code = 2


class NotPermitted(MemlensError):
    exit_code = 3


class KernelLacks(MemlensError):
    exit_code = 4


EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_PERMITTED, EXIT_KERNEL = 0, 1, 2, 3, 4


class SystemCallError(MemlensError, OSError):
    """A system call on a BPF map, link or perf event failed.  Also an OSError, so code that
    handles errnos keeps working; as a MemlensError it reaches the user as one line with an
    exit code chosen by the errno (see from_errno)."""

    def __init__(self, err: int, message: str):
        super().__init__(message, exit_code=_exit_for_errno(err))
        self.errno = err


def _exit_for_errno(err: int) -> int:
    import errno as E

    if err in (E.EPERM, E.EACCES):
        return EXIT_NOT_PERMITTED
    if err in (E.ENOENT, E.ENODEV, E.EOPNOTSUPP, E.ENOSYS, 524):  # 524: ENOTSUPP
        return EXIT_KERNEL
    return EXIT_FAILURE


def from_oserror(err: OSError, doing: str) -> MemlensError:
    """An OSError from a call memlens made, as a typed error saying what was being done."""
    code = err.errno or 0
    what = err.strerror or str(err)
    return SystemCallError(code, f"{doing}: {what}")
