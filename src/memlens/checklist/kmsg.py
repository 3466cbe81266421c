# SPDX-License-Identifier: GPL-2.0-only
"""OOM kills recorded in the kernel log since boot (what `dmesg | grep -i oom` tells you).

Read from /dev/kmsg (Documentation/ABI/testing/dev-kmsg): every open() starts at the oldest
record still in the ring buffer; each read() returns one record
`prio,seq,ts_usec,flags[,...];message` plus continuation lines that start with a space.
Opened O_NONBLOCK, a read at the end raises EAGAIN instead of waiting for new records; EPIPE
means records were overwritten under us and the next read continues after the gap.

An OOM kill writes, in order (mm/oom_kill.c):
  `<comm> invoked oom-killer: gfp_mask=..., order=N, oom_score_adj=N`     (the trigger)
  `oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,
   oom_memcg=/x,task_memcg=/x,task=python3,pid=11995,uid=0`             (since 4.19)
  `Memory cgroup out of memory: Killed process 11995 (python3) total-vm:538144kB,
   anon-rss:65280kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:...kB oom_score_adj:0`
  (`Out of memory: Killed process ...` for a system-wide OOM)
Before 4.19 the cgroup came from `Task in /x killed as a result of limit of /x`; both are
handled so older logs still attribute the victim.
"""
from __future__ import annotations

import errno
import os
import re
import time
from dataclasses import dataclass

from memlens.checklist import procfs

_TRIGGER = re.compile(r"^(?P<comm>.*?) invoked oom-killer: .*?order=(?P<order>-?\d+)")
_SUMMARY = re.compile(r"^oom-kill:(?P<kv>.*)$")
_KILLED = re.compile(
    r"^(?P<scope>Memory cgroup out of memory|Out of memory(?: \(oom_kill_allocating_task\))?)"
    r": Kill(?:ed)? process (?P<pid>\d+) \((?P<comm>.*?)\)(?P<rest>.*)$")
# before 5.x the kill was announced as "Kill process N (comm) score S or sacrifice child"
# and the sizes followed on a separate bare "Killed process N (comm) total-vm:..." line
_BARE_KILLED = re.compile(r"^Killed process (?P<pid>\d+) \((?P<comm>.*?)\)(?P<rest>.*)$")
_OLD_TASK_IN = re.compile(r"^Task in (?P<task>\S+) killed as a result of limit of (?P<memcg>\S+)")
_KB = re.compile(r"(?P<key>total-vm|anon-rss|file-rss|shmem-rss|pgtables):(?P<kb>\d+)kB")
_UID = re.compile(r"UID:(?P<uid>\d+)")


@dataclass
class KmsgRecord:
    priority: int
    seq: int
    ts_us: int       # microseconds since boot (CLOCK_MONOTONIC at the time of printk)
    message: str


@dataclass
class OomKill:
    ts_us: int
    pid: int
    comm: str
    constraint: str | None = None      # CONSTRAINT_NONE / _CPUSET / _MEMORY_POLICY / _MEMCG
    oom_memcg: str | None = None       # the cgroup whose limit was hit
    task_memcg: str | None = None      # the victim's cgroup
    uid: int | None = None
    trigger_comm: str | None = None    # who invoked the OOM killer
    order: int | None = None
    total_vm_bytes: int | None = None
    anon_rss_bytes: int | None = None
    file_rss_bytes: int | None = None
    shmem_rss_bytes: int | None = None
    pgtables_bytes: int | None = None
    scope: str | None = None           # "memcg" or "system"

    def to_json(self, boot_time: float | None) -> dict:
        d = dict(self.__dict__)
        d["time_since_boot_s"] = round(self.ts_us / 1e6, 6)
        d["time_unix_s"] = round(boot_time + self.ts_us / 1e6, 3) if boot_time else None
        return d


def parse_records(text: str) -> list[KmsgRecord]:
    """Records from /dev/kmsg text (continuation lines ` KEY=value` are dropped)."""
    out = []
    for line in text.splitlines():
        if not line or line[0] == " ":
            continue
        head, sep, msg = line.partition(";")
        if not sep:
            continue
        f = head.split(",")
        try:
            # prio is facility<<3 | level
            out.append(KmsgRecord(int(f[0]) & 7, int(f[1]), int(f[2]), msg))
        except (ValueError, IndexError):
            continue
    return out


class KmsgUnavailable(Exception):
    pass


def read_kmsg(rel: str = "dev/kmsg", limit_bytes: int = 64 << 20) -> str:
    """All records now in the ring buffer, without blocking.

    A regular file (a fake tree) ends with read() == b""; the device ends with EAGAIN.
    """
    try:
        fd = os.open(procfs.path(rel), os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError as e:
        raise KmsgUnavailable(f"{procfs.path(rel)} does not exist") from e
    except PermissionError as e:
        # dmesg_restrict=1 needs CAP_SYSLOG
        raise KmsgUnavailable(f"cannot read {procfs.path(rel)}: {e.strerror} "
                              "(needs root or CAP_SYSLOG when kernel.dmesg_restrict=1)") from e
    chunks: list[bytes] = []
    total = 0
    try:
        while total < limit_bytes:
            try:
                # one record per read on the device; the size must hold the longest record
                b = os.read(fd, 16384)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:  # overwritten records: carry on after the gap
                    continue
                if e.errno == errno.EINVAL:  # buffer too small for a record: skip it
                    continue
                raise KmsgUnavailable(f"reading {procfs.path(rel)}: {e.strerror}") from e
            if not b:
                break
            chunks.append(b if b.endswith(b"\n") else b + b"\n")
            total += len(b)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _kv(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        if sep:
            out[k.strip()] = v.strip()
    return out


def _add_sizes(k: OomKill, rest: str) -> None:
    for km in _KB.finditer(rest):
        setattr(k, km["key"].replace("-", "_") + "_bytes", int(km["kb"]) * 1024)
    um = _UID.search(rest)
    if um and k.uid is None:
        k.uid = int(um["uid"])


def find_oom_kills(records: list[KmsgRecord]) -> list[OomKill]:
    """Pair each kill's lines into one OomKill (victim, cgroup, constraint, trigger, RSS)."""
    kills: list[OomKill] = []
    pending_trigger: tuple[str, int] | None = None
    pending_old_memcg: tuple[str, str] | None = None
    by_pid_open: dict[int, OomKill] = {}
    last_by_pid: dict[int, OomKill] = {}
    for r in records:
        msg = r.message
        m = _TRIGGER.match(msg)
        if m:
            pending_trigger = (m["comm"], int(m["order"]))
            continue
        m = _OLD_TASK_IN.match(msg)
        if m:
            pending_old_memcg = (m["task"], m["memcg"])
            continue
        m = _SUMMARY.match(msg)
        if m:
            kv = _kv(m["kv"])
            try:
                pid = int(kv.get("pid", ""))
            except ValueError:
                continue
            k = OomKill(ts_us=r.ts_us, pid=pid, comm=kv.get("task", "?"),
                        constraint=kv.get("constraint"), oom_memcg=kv.get("oom_memcg"),
                        task_memcg=kv.get("task_memcg"))
            try:
                k.uid = int(kv["uid"])
            except (KeyError, ValueError):
                pass
            if pending_trigger:
                k.trigger_comm, k.order = pending_trigger
                pending_trigger = None
            kills.append(k)
            by_pid_open[pid] = k
            continue
        m = _BARE_KILLED.match(msg)
        if m:
            k = last_by_pid.get(int(m["pid"]))
            if k is not None:
                _add_sizes(k, m["rest"])
            continue
        m = _KILLED.match(msg)
        if m:
            pid = int(m["pid"])
            k = by_pid_open.pop(pid, None)
            if k is None:
                # kernels before 4.19 print no oom-kill: summary line
                k = OomKill(ts_us=r.ts_us, pid=pid, comm=m["comm"])
                if pending_trigger:
                    k.trigger_comm, k.order = pending_trigger
                    pending_trigger = None
                if pending_old_memcg:
                    k.task_memcg, k.oom_memcg = pending_old_memcg
                    k.constraint = "CONSTRAINT_MEMCG"
                    pending_old_memcg = None
                kills.append(k)
            k.scope = "memcg" if m["scope"].startswith("Memory cgroup") else "system"
            if k.constraint is None and k.scope == "system":
                k.constraint = "CONSTRAINT_NONE"
            _add_sizes(k, m["rest"])
            last_by_pid[pid] = k
    # summary lines whose "Killed process" line is missing stay as they are
    return kills


def boot_time() -> float | None:
    """Wall-clock boot time: now minus CLOCK_MONOTONIC-like uptime (what dmesg -T does)."""
    up = procfs.read_uptime()
    if up is None:
        return None
    return time.time() - up


def oom_kills() -> list[OomKill]:
    return find_oom_kills(parse_records(read_kmsg()))
