# SPDX-License-Identifier: GPL-2.0-only
"""Every /proc, /sys and /dev/kmsg read of the checklist, through one configurable root.

psutil's idea (`psutil.PROCFS_PATH`): a single root makes containers (a host /proc bind-mounted
elsewhere) and tests (fake trees under tests/unit/data/procfs/<scenario>/) work with the same
code.  The root is the directory that holds `proc/`, `sys/` and `dev/`; it is `/` unless
MEMLENS_ROOT or set_root() says otherwise.

Parsers are pure functions of the file text (`parse_*`), readers (`read_*`) join the root and
degrade: a file a kernel does not have (PSI before 4.20, MemAvailable before 3.14, VmSwap
before 2.6.34, smaps_rollup before 4.14, memory.events before 4.13 ...) gives None or a missing
key, never an exception.  Callers print "unavailable" for those.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

_root = os.environ.get("MEMLENS_ROOT", "/")

PAGESIZE = os.sysconf("SC_PAGE_SIZE")


def get_root() -> str:
    return _root


def set_root(root: str) -> None:
    global _root
    _root = root


@contextlib.contextmanager
def using_root(root: str) -> Iterator[None]:
    """Point every read at `root` for the duration (tests, containers)."""
    old = get_root()
    set_root(str(root))
    try:
        yield
    finally:
        set_root(old)


def path(rel: str) -> str:
    """The real path of `rel` ("proc/meminfo") under the current root."""
    return os.path.join(_root, rel.lstrip("/"))


def read_text(rel: str) -> str | None:
    """File text, or None when the file is missing or unreadable (a kernel without it)."""
    try:
        with open(path(rel), encoding="utf-8", errors="replace") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, PermissionError, ProcessLookupError):
        return None
    except OSError:
        # e.g. ESRCH/EINVAL from a task that is exiting while we read it
        return None


# --- system memory ------------------------------------------------------------------------

def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo → bytes for the `kB` fields, plain counts for HugePages_* ."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        parts = rest.split()
        if not parts:
            continue
        try:
            value = int(parts[0])
        except ValueError:
            continue
        # the kernel's "kB" is KiB (fs/proc/meminfo.c show_val_kb shifts by 10)
        out[key.strip()] = value * 1024 if len(parts) > 1 and parts[1] == "kB" else value
    return out


def read_meminfo() -> dict[str, int] | None:
    text = read_text("proc/meminfo")
    return None if text is None else parse_meminfo(text)


def parse_keyvalue(text: str) -> dict[str, int]:
    """`name value` lines (/proc/vmstat, memory.stat, memory.events)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def read_vmstat() -> dict[str, int] | None:
    text = read_text("proc/vmstat")
    return None if text is None else parse_keyvalue(text)


def parse_stat(text: str) -> dict[str, int]:
    """/proc/stat's scalar lines (intr total, ctxt, procs_running, procs_blocked, btime)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("cpu"):
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def read_stat() -> dict[str, int] | None:
    text = read_text("proc/stat")
    return None if text is None else parse_stat(text)


def read_uptime() -> float | None:
    """Seconds since boot, /proc/uptime's first field (the clock sar's itv comes from)."""
    text = read_text("proc/uptime")
    try:
        return float(text.split()[0]) if text else None
    except (ValueError, IndexError):
        return None


@dataclass
class SwapDevice:
    filename: str
    type: str
    size_bytes: int
    used_bytes: int
    priority: int


def parse_swaps(text: str) -> list[SwapDevice]:
    """/proc/swaps (mimics `swapon --show`; sizes there are KiB)."""
    out = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 5:
            continue
        try:
            out.append(SwapDevice(parts[0].replace("\\040", " "), parts[1],
                                  int(parts[2]) * 1024, int(parts[3]) * 1024, int(parts[4])))
        except ValueError:
            continue
    return out


def read_swaps() -> list[SwapDevice] | None:
    text = read_text("proc/swaps")
    return None if text is None else parse_swaps(text)


def parse_pressure(text: str) -> dict[str, dict[str, float]]:
    """PSI lines `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` → {"some": {...}, ...}.

    total is microseconds of stall.  Kernels 4.20+ have /proc/pressure (CONFIG_PSI); a line may
    be absent (cpu "full" only since 5.13), so callers look keys up with .get().
    """
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] not in ("some", "full"):
            continue
        fields: dict[str, float] = {}
        for kv in parts[1:]:
            k, _, v = kv.partition("=")
            try:
                fields[k] = float(v)
            except ValueError:
                continue
        out[parts[0]] = fields
    return out


def read_pressure(resource: str = "memory") -> dict[str, dict[str, float]] | None:
    text = read_text(f"proc/pressure/{resource}")
    return None if text is None else parse_pressure(text)


# --- processes ------------------------------------------------------------------------------

def pids() -> list[int]:
    try:
        names = os.listdir(path("proc"))
    except OSError:
        return []
    return sorted(int(n) for n in names if n.isdigit())


@dataclass
class PidStat:
    """/proc/PID/stat, the fields the checklist needs (proc(5) numbering)."""
    pid: int
    comm: str
    state: str
    ppid: int
    minflt: int          # field 10
    majflt: int          # field 12
    utime: int           # 14, clock ticks
    stime: int           # 15
    starttime: int       # 22, clock ticks after boot
    vsize_bytes: int     # 23
    rss_pages: int       # 24


def parse_pid_stat(text: str) -> PidStat | None:
    # comm may hold spaces and parentheses: it ends at the *last* ')'.
    lpar, rpar = text.find("("), text.rfind(")")
    if lpar < 0 or rpar < 0:
        return None
    try:
        pid = int(text[:lpar])
        f = text[rpar + 2:].split()
        # f[0] is field 3 (state)
        return PidStat(pid=pid, comm=text[lpar + 1:rpar], state=f[0], ppid=int(f[1]),
                       minflt=int(f[7]), majflt=int(f[9]), utime=int(f[11]), stime=int(f[12]),
                       starttime=int(f[19]), vsize_bytes=int(f[20]), rss_pages=int(f[21]))
    except (ValueError, IndexError):
        return None


def read_pid_stat(pid: int) -> PidStat | None:
    text = read_text(f"proc/{pid}/stat")
    return None if text is None else parse_pid_stat(text)


def parse_pid_status(text: str) -> dict[str, int | str]:
    """/proc/PID/status: `kB` fields in bytes (VmRSS, VmSwap ...), others as text or int."""
    out: dict[str, int | str] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        rest = rest.strip()
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            try:
                out[key] = int(parts[0]) * 1024
                continue
            except ValueError:
                pass
        out[key] = rest
    return out


def read_pid_status(pid: int) -> dict[str, int | str] | None:
    text = read_text(f"proc/{pid}/status")
    return None if text is None else parse_pid_status(text)


def read_pid_cmdline(pid: int) -> str | None:
    text = read_text(f"proc/{pid}/cmdline")
    if text is None:
        return None
    return text.rstrip("\0").replace("\0", " ")


@dataclass
class Mapping:
    """One /proc/PID/smaps entry; sizes in bytes."""
    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    name: str
    fields: dict[str, int] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return self.end - self.start

    def get(self, key: str) -> int:
        return self.fields.get(key, 0)


def parse_smaps(text: str) -> list[Mapping]:
    """/proc/PID/smaps → mappings with their `Key: N kB` fields in bytes.

    Header lines are `start-end perms offset dev inode [name]`; VmFlags and THPeligible lines
    are not sizes and are skipped.
    """
    maps: list[Mapping] = []
    cur: Mapping | None = None
    for line in text.splitlines():
        if not line:
            continue
        head = line.split(None, 5)
        if "-" in head[0] and not head[0].endswith(":"):
            try:
                lo, hi = head[0].split("-")
                cur = Mapping(int(lo, 16), int(hi, 16), head[1], int(head[2], 16), head[3],
                              int(head[4]), head[5].strip() if len(head) > 5 else "")
            except (ValueError, IndexError):
                cur = None
                continue
            maps.append(cur)
            continue
        if cur is None or not head[0].endswith(":"):
            continue
        if len(head) >= 3 and head[2] == "kB":
            try:
                cur.fields[head[0][:-1]] = int(head[1]) * 1024
            except ValueError:
                pass
    return maps


def read_pid_smaps(pid: int) -> list[Mapping] | None:
    text = read_text(f"proc/{pid}/smaps")
    return None if text is None else parse_smaps(text)


def read_pid_rollup(pid: int) -> dict[str, int] | None:
    """Summed smaps fields: smaps_rollup (4.14+), else the sum over smaps."""
    text = read_text(f"proc/{pid}/smaps_rollup")
    if text is not None:
        maps = parse_smaps(text)
        if maps:
            return maps[0].fields
    maps = read_pid_smaps(pid)
    if maps is None:
        return None
    total: dict[str, int] = {}
    for m in maps:
        for k, v in m.fields.items():
            total[k] = total.get(k, 0) + v
    return total


# --- mounts ----------------------------------------------------------------------------------

@dataclass
class Mount:
    source: str
    target: str
    fstype: str
    options: list[str]


def parse_mounts(text: str) -> list[Mount]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            out.append(Mount(parts[0], parts[1].replace("\\040", " "), parts[2],
                             parts[3].split(",")))
    return out


def read_mounts() -> list[Mount]:
    text = read_text("proc/self/mounts") or read_text("proc/mounts") or ""
    return parse_mounts(text)
