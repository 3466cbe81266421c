# SPDX-License-Identifier: GPL-2.0-only
"""Options every tracing tool shares (-p, --cgroup, -d, argument types) and the filters
they set in the BPF side (memlens.bpf.h).  The run itself is core/runner.py; losses are
core/drops.py."""
from __future__ import annotations

import math
import os

from memlens.errors import UsageError

TYPE_CHECKING = False  # typing costs ~4 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    import argparse

# Bounds of every duration, interval and count option (one validator each, used by every
# tool): finite, positive and sane, so `-d nan`, `-d inf` or `-d 1e400` is a usage error
# (exit 2) instead of a run that never ends.
MAX_SECONDS = 366 * 86400.0       # a year: a longer -d or interval is a typo
MAX_COUNT = 2**31 - 1             # reports, events, rows, table sizes
PID_MAX = 4194304                 # PID_MAX_LIMIT (include/linux/threads.h)
# The kernel's own bounds on a map's max_entries (the size options are checked against them
# before anything loads): a hash map's buckets (a power of two at least max_entries, 16
# bytes each) must stay below 4 GiB, so at most 2^27 entries (kernel/bpf/hashtab.c:
# n_buckets > U32_MAX / sizeof(struct bucket) is E2BIG); the stacks of every tool are such
# a hash map (bpf/include/memlens.bpf.h).  A stack-trace map refuses more than 2^31.
MAP_ENTRIES_MAX = 1 << 27
MAP_LIMIT_WHY = "the kernel's limit for a hash map"
STACK_MAP_MAX = 1 << 31


def type_error(message: str) -> Exception:
    """argparse.ArgumentTypeError(message), for a type function to raise (argparse reports
    it as a usage error, exit 2).  argparse is imported only when there is an error to
    report: its import is ~16-20 ms of a start (issue 12), and the common command lines are
    parsed without it (core/quickargs)."""
    import argparse

    return argparse.ArgumentTypeError(message)


def _number(text: str, kind: type) -> float | int:
    text = text.strip()
    if not text:
        raise type_error("empty: a number is needed")
    try:
        value = int(text, 0) if kind is int else float(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise type_error(f"not {what}: {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise type_error(f"must be a finite number: {text!r}")
    return value


def seconds(text: str) -> float:
    """A duration or an interval in seconds: finite, > 0, at most a year."""
    value = _number(text, float)
    if value <= 0:
        raise type_error(f"must be > 0 seconds: {text!r}")
    if value > MAX_SECONDS:
        raise type_error(f"at most {MAX_SECONDS:.0f} seconds (a year): {text!r}")
    return float(value)


def count(text: str, maximum: int = MAX_COUNT, why: str = "") -> int:
    """A count (reports, events, rows, entries): an integer from 1 to `maximum` (`why`: the
    reason for that bound, said when it is passed)."""
    value = _number(text, int)
    if value <= 0:
        raise type_error(f"must be > 0: {text!r}")
    if value > maximum:
        raise type_error(f"at most {maximum}: {text!r}" + (f" ({why})" if why else ""))
    return int(value)


def bounded_count(maximum: int, why: str = ""):
    """count() with a smaller upper bound (a kernel map's size limit, say), for argparse."""
    def check(text: str) -> int:
        return count(text, maximum, why)

    check.__name__ = "count"
    return check


def nonneg_int(text: str, maximum: int = 2**64 - 1) -> int:
    """A size or an age that may be 0 (bytes, milliseconds)."""
    value = _number(text, int)
    if value < 0:
        raise type_error(f"must be >= 0: {text!r}")
    if value > maximum:
        raise type_error(f"at most {maximum}: {text!r}")
    return int(value)


def nonempty(text: str) -> str:
    """A path or a name that must not be empty: `--cgroup ''` would otherwise mean "no
    filter" and trace the whole system."""
    if not text.strip():
        raise type_error("must not be empty")
    if "\0" in text:
        raise type_error("must not contain a NUL byte")
    return text


def map_limit(map_type: int) -> int | None:
    """The kernel's bound on max_entries for a BPF map type (None: not known here)."""
    from memlens.core import libbpf as L

    if map_type == L.BPF_MAP_TYPE_STACK_TRACE:
        return STACK_MAP_MAX
    if map_type in (L.BPF_MAP_TYPE_HASH, L.BPF_MAP_TYPE_PERCPU_HASH, L.BPF_MAP_TYPE_LRU_HASH,
                    L.BPF_MAP_TYPE_LRU_PERCPU_HASH):
        return MAP_ENTRIES_MAX
    return None


map_entries = bounded_count(MAP_ENTRIES_MAX, MAP_LIMIT_WHY)      # --max-keys, --max-allocs
stack_entries = map_entries  # --stack-storage-size: the stack store is a hash map too

# the names the tools have always imported
positive_float = seconds
positive_int = count


def pid_arg(text: str) -> int:
    pid = _number(text, int)
    if not 0 < pid <= PID_MAX:
        raise type_error(f"not a process ID (1..{PID_MAX}): {text!r}")
    return int(pid)


def add_common_options(parser: argparse.ArgumentParser, *, pid: bool = True,
                       cgroup: bool = True, duration: bool = True, json: bool = True) -> None:
    if pid:
        parser.add_argument("-p", "--pid", type=pid_arg, metavar="PID",
                            help="trace this process only")
    if cgroup:
        parser.add_argument("--cgroup", type=nonempty, metavar="PATH",
                            help="trace tasks in this cgroup and its descendants "
                                 "(v1 memory hierarchy or v2 path)")
    if duration:
        parser.add_argument("-d", "--duration", type=seconds, metavar="SECONDS",
                            help="stop after this many seconds")
    if json:
        parser.add_argument("--json", action="store_true",
                            help="NDJSON output: one typed object per line")


def check_pid_exists(pid: int | None) -> None:
    import os

    if pid is None:
        return
    if not os.path.exists(f"/proc/{pid}"):
        raise UsageError(f"no process with PID {pid}")


class TargetExit:
    """Tells when the -p process has exited, so a tool ends with its final report instead
    of tracing nothing forever (bpftrace ends when its -p target does).

    A pidfd (pidfd_open, 5.3+) is readable once the process has exited: no polling of
    /proc, and a PID reused by a new process cannot be mistaken for the target.  Without
    one (an older kernel, a thread ID given as -p), /proc/PID/stat is read.  `pid=None`:
    no target, never finished."""

    def __init__(self, pid: int | None):
        self.pid, self.fd = pid, None
        self._gone = False
        if pid is None:
            return
        try:
            self.fd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise UsageError(f"no process with PID {pid}") from None
        except (OSError, AttributeError):
            self.fd = None

    @property
    def reason(self) -> str:
        return f"PID {self.pid} exited"

    def exited(self) -> bool:
        if self.pid is None or self._gone:
            return self._gone
        if self.fd is not None:
            import select

            self._gone = bool(select.select([self.fd], [], [], 0)[0])
        else:
            self._gone = not process_alive(self.pid)
        return self._gone

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def process_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def configure_filters(obj, args: argparse.Namespace, pid: int | None = None) -> None:
    """Set the shared rodata filters (memlens.bpf.h) from -p/--cgroup; `pid` overrides -p
    (memleak -c: the child it started)."""
    from memlens.core.kernel import cgroup_target

    if obj.rodata is not None and "self_tgid" in obj.rodata:
        # memlens's own mmaps, brk calls and allocations (numpy import, ring polling) would
        # show up in system-wide runs: leave ourselves out
        obj.rodata["self_tgid"] = os.getpid()
    if pid is None:
        pid = getattr(args, "pid", None)
    if pid is not None and obj.rodata is not None and "targ_tgid" in obj.rodata:
        check_pid_exists(pid)
        obj.rodata["targ_tgid"] = pid
    cg = getattr(args, "cgroup", None)
    if cg and obj.rodata is not None and "targ_cgroup_id" in obj.rodata:
        cg_id, v1 = cgroup_target(cg)
        obj.rodata["targ_cgroup_id"] = cg_id
        obj.rodata["targ_cgroup_v1"] = v1
