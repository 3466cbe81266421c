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
