# SPDX-License-Identifier: GPL-2.0-only
"""shmsnoop: System V shared memory calls — shmget, shmat, shmdt, shmctl — with their
arguments decoded and their results (BCC's shmsnoop, by Jiri Olsa).

BCC attaches kprobes and kretprobes to the `__x64_sys_shm*` functions; memlens uses the
syscall tracepoints only (stable, and the only choice on kernels without kprobes), as
latency pairs on the counting engine's event mode: `sys_enter_shm*` stamps the thread with
its arguments, `sys_exit_shm*` arrives with the result, the time between, and the
arguments — one event per call, nothing joined in Python.
"""
from __future__ import annotations

import argparse
import errno
import functools
import time
from typing import Any

from memlens.core.session import add_common_options, check_pid_exists, pid_arg
from memlens.output.eventlines import EventLines

SYSCALLS = ("shmget", "shmat", "shmdt", "shmctl")

EXAMPLES = """\
examples:
  memlens shmsnoop                 # every shm*() call, system wide
  memlens shmsnoop -T              # with a time column (seconds since the first call)
  memlens shmsnoop -p 181          # only PID 181
  memlens shmsnoop -t 123          # only thread 123
  memlens shmsnoop -d 10           # for 10 seconds
  memlens shmsnoop -n main         # comm contains "main"
  memlens shmsnoop --json          # one JSON object per call
  memlens shmsnoop --ring-size 128M   # a burst of ~150k calls held whole while they are read

output (tests/workloads/shm_seq, this machine):
  PID     COMM                SYS              RET ARGs
  31800   shm_seq          SHMGET               12 key: 0x4d4c7c38, size: 200005, shmflg: 0x780 (IPC_CREAT|IPC_EXCL|0600)
  31800   shm_seq          SHMGET          -EEXIST key: 0x4d4c7c38, size: 200005, shmflg: 0x780 (IPC_CREAT|IPC_EXCL|0600)
  31800   shm_seq           SHMAT   0x7f10b1b5e000 shmid: 12, shmaddr: 0x0, shmflg: 0x0
  31800   shm_seq           SHMAT   0x7f10b1b2d000 shmid: 12, shmaddr: 0x0, shmflg: 0x1000 (SHM_RDONLY)
  31800   shm_seq           SHMDT                0 shmaddr: 0x7f10b1b5e000
  31800   shm_seq           SHMDT                0 shmaddr: 0x7f10b1b2d000
  31800   shm_seq          SHMCTL                0 shmid: 12, cmd: 2 (IPC_STAT), buf: 0x7fffed0dd200
  31800   shm_seq          SHMCTL                0 shmid: 12, cmd: 0 (IPC_RMID), buf: 0x0

  RET: the segment id (SHMGET), the address attached (SHMAT), 0 or a count (SHMCTL
  IPC_INFO/SHM_INFO: the highest index; SHM_STAT: an id); a failed call shows -ERRNO.
  Calls that found the ring full are counted and reported ("lost N events" on stderr, a
  "lost" record in JSON): a burst above the ring's size wants a larger --ring-size.
  Ids are decimal, as ipcs and strace print them (BCC prints them in hex).  ARGs are
  never cut: a line with many flags passes 80 columns, as BCC's do.
"""  # noqa: E501 (the example lines are the tool's real output)

# include/uapi/linux/ipc.h, shm.h (the same on every architecture)
IPC_CREAT, IPC_EXCL = 0o1000, 0o2000
SHM_HUGETLB, SHM_NORESERVE = 0o4000, 0o10000
SHM_HUGE_SHIFT, SHM_HUGE_MASK = 26, 0x3F
SHMGET_BITS = ((IPC_CREAT, "IPC_CREAT"), (IPC_EXCL, "IPC_EXCL"), (SHM_HUGETLB, "SHM_HUGETLB"),
               (SHM_NORESERVE, "SHM_NORESERVE"))
SHMAT_BITS = ((0o10000, "SHM_RDONLY"), (0o20000, "SHM_RND"), (0o40000, "SHM_REMAP"),
              (0o100000, "SHM_EXEC"))
SHMCTL_CMDS = {0: "IPC_RMID", 1: "IPC_SET", 2: "IPC_STAT", 3: "IPC_INFO", 11: "SHM_LOCK",
               12: "SHM_UNLOCK", 13: "SHM_STAT", 14: "SHM_INFO", 15: "SHM_STAT_ANY"}
IPC_64 = 0x100  # glibc ORs it into cmd on architectures with old-style IPC (not x86-64)
MAX_ERRNO = 4095


def _huge_size(shift: int) -> str:
    for unit, s in (("GB", 30), ("MB", 20), ("KB", 10)):
        if shift >= s:
            return f"{1 << (shift - s)}{unit}"
    return f"{1 << shift}B"


@functools.lru_cache(maxsize=256)
def shmget_flags(flg: int) -> tuple[str, ...]:
    """shmget's shmflg as names, then the permission bits in octal (strace's spelling:
    IPC_CREAT|IPC_EXCL|0600); () for 0."""
    flg &= 0xFFFFFFFF
    names = [name for bit, name in SHMGET_BITS if flg & bit]
    rest = flg & ~(sum(b for b, _ in SHMGET_BITS) | 0o777)
    if flg & SHM_HUGETLB:
        shift = (flg >> SHM_HUGE_SHIFT) & SHM_HUGE_MASK
        if shift:  # SHM_HUGE_2MB etc.: log2 of the huge page size in the top bits
            names.append(f"SHM_HUGE_{_huge_size(shift)}")
        rest &= ~(SHM_HUGE_MASK << SHM_HUGE_SHIFT)
    if rest:
        names.append(f"{rest:#x}")
    if flg & 0o777:
        names.append(f"0{flg & 0o777:o}")
    return tuple(names)


@functools.lru_cache(maxsize=64)
def shmat_flags(flg: int) -> tuple[str, ...]:
    flg &= 0xFFFFFFFF
    names = [name for bit, name in SHMAT_BITS if flg & bit]
    rest = flg & ~sum(b for b, _ in SHMAT_BITS)
    if rest:
        names.append(f"{rest:#x}")
    return tuple(names)


def shmctl_cmd(cmd: int) -> str:
    cmd &= 0xFFFFFFFF
    name = SHMCTL_CMDS.get(cmd & ~IPC_64, f"{cmd & ~IPC_64}")
    return f"IPC_64|{name}" if cmd & IPC_64 else name


def _flag_text(flg: int, names: tuple[str, ...]) -> str:
    """BCC's spelling: the value in hex, then the names in parentheses."""
    return f"{flg:#x} ({'|'.join(names)})" if names else f"{flg:#x}"


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def decode(rec: dict[str, Any], mono_to_wall: float) -> dict[str, Any] | None:
    """One engine event (the exit of a pair, with the entry's fields) as an "event" record;
    None for an event that is not a call's exit."""
    probe = rec["probe"]
    if ":sys_exit_" not in probe or "begin_fields" not in rec:
        return None
    sysname = probe.rsplit("_", 1)[-1]
    args = rec["begin_fields"]
    ret = int(rec["fields"]["ret"])
    failed = -MAX_ERRNO <= ret < 0
    ts = mono_to_wall + rec["ts_ns"] / 1e9
    out: dict[str, Any] = {
        "type": "event", "timestamp": round(ts, 6), "ts_ns": rec["ts_ns"],
        "pid": rec["pid"], "tid": rec["tid"], "comm": rec["comm"], "syscall": sysname,
        "ret": ret,
        "error": errno.errorcode.get(-ret, f"E{-ret}") if failed else None,
        "errno": -ret if failed else None,
        "latency_ns": rec["latency_ns"],
    }
    if sysname == "shmget":
        flg = int(args["shmflg"]) & 0xFFFFFFFF
        out.update(key=int(args["key"]) & 0xFFFFFFFF, size_bytes=int(args["size"]),
                   shmflg=flg, flag_names=list(shmget_flags(flg)),
                   mode=f"0{flg & 0o777:o}" if flg & 0o777 else "0",
                   shmid=None if failed else ret)
    elif sysname == "shmat":
        flg = int(args["shmflg"]) & 0xFFFFFFFF
        out.update(shmid=_s32(int(args["shmid"])), shmaddr=int(args["shmaddr"]), shmflg=flg,
                   flag_names=list(shmat_flags(flg)),
                   addr=None if failed else f"{ret & 0xFFFFFFFFFFFFFFFF:#x}")
    elif sysname == "shmdt":
        out.update(shmaddr=int(args["shmaddr"]))
    else:
        cmd = int(args["cmd"]) & 0xFFFFFFFF
        out.update(shmid=_s32(int(args["shmid"])), cmd=cmd, cmd_name=shmctl_cmd(cmd),
                   buf=int(args["buf"]))
    return out


def args_text(ev: dict[str, Any]) -> str:
    """The ARGs column, in BCC's words (ids in decimal)."""
    s = ev["syscall"]
    if s == "shmget":
        return (f"key: {ev['key']:#x}, size: {ev['size_bytes']}, "
                f"shmflg: {_flag_text(ev['shmflg'], tuple(ev['flag_names']))}")
    if s == "shmat":
        return (f"shmid: {ev['shmid']}, shmaddr: {ev['shmaddr']:#x}, "
                f"shmflg: {_flag_text(ev['shmflg'], tuple(ev['flag_names']))}")
    if s == "shmdt":
        return f"shmaddr: {ev['shmaddr']:#x}"
    return f"shmid: {ev['shmid']}, cmd: {ev['cmd']} ({ev['cmd_name']}), buf: {ev['buf']:#x}"


def ret_text(ev: dict[str, Any]) -> str:
    if ev["error"]:
        return f"-{ev['error']}"
    if ev["syscall"] == "shmat":
        return ev["addr"]
    return str(ev["ret"])


class ShmsnoopTool:
    """shmsnoop for the runner (core/runner.py): one "event" record per completed call."""

    name = "shmsnoop"

    def __init__(self, args: argparse.Namespace):
        from memlens.core.engine import Engine
        from memlens.core.probespec import parse_all

        self.args = args
        enters = [f"t:syscalls:sys_enter_{s}" for s in SYSCALLS]
        exits = [f"t:syscalls:sys_exit_{s}" for s in SYSCALLS]
        # -t is applied here, not in the kernel: the engine filters processes only, and a
        # syscall tracepoint's common_pid cannot stand in (BPF sees a pt_regs pointer in
        # the record's common fields, perf_syscall_enter/exit)
        self.tid = args.tid
        from memlens.core.ringbuf import RING_DEFAULT_MAX

        # a call is 176 bytes of ring (the engine's head, its exit's record and its entry's):
        # the default ring holds ~47k calls; an unpaced burst of more is dropped at the
        # kernel side, counted, unless --ring-size holds it
        self.engine = Engine(parse_all(enters + exits), keys=(), trace=True,
                             pairs=dict(zip(exits, enters)),
                             ring_size=getattr(args, "ring_size", None) or RING_DEFAULT_MAX)
        self.name_filter = args.name
        who = (f" for TID {args.tid}" if args.tid else
               f" for PID {args.pid}" if args.pid else "")
        self.what = "shmget/shmat/shmdt/shmctl calls" + who
        self.shown = 0

    def start(self) -> None:
        from memlens import registry
        from memlens.core import kernel
        from memlens.core.hooks import choose
        from memlens.core.privileges import require_tracing_privileges

        require_tracing_privileges("shmsnoop")
        check_pid_exists(self.args.pid)
        kernel.ensure_tracefs()
        # the hooks declared in the registry (doctor reads the same); exit 4 names the
        # missing one
        for need in range(len(registry.find("shmsnoop").needs)):
            choose(registry.hooks_of("shmsnoop", need), "shmsnoop")
        # bpf_ktime_get_ns is CLOCK_MONOTONIC
        self.mono_to_wall = time.time() - time.monotonic()
        # -t is filtered in the kernel too (the Python check below stays as a guard)
        self.engine.start(pid=self.args.pid, cgroup=self.args.cgroup, tid=self.tid)

    def poll(self, timeout: float) -> list[dict]:
        out: list[dict] = []
        for raw in self.engine.poll(timeout):
            ev = decode(self.engine.decode_event(raw), self.mono_to_wall)
            if ev is None or (self.name_filter and self.name_filter not in ev["comm"]):
                continue
            if self.tid and ev["tid"] != self.tid:
                continue
            out.append(ev)
        self.shown += len(out)
        return out + self.engine.lost()

    def report(self, final: bool) -> list[dict]:
        return self.engine.lost()

    def summary(self) -> list[dict]:
        return [{"type": "summary", "events": self.shown, "lost": self.engine.total_lost(),
                 "hooks": [p.text for p in self.engine.probes]}]

    def close(self) -> None:
        self.engine.close()


class TextRenderer(EventLines):
    """BCC's columns: [TIME(s)] PID (TID with -t) COMM SYS RET ARGs."""

    def header(self) -> str:
        ts = f"{'TIME(s)':<14} " if self.args.timestamp else ""
        who = "TID" if self.args.tid else "PID"
        return f"{ts}{who:<7} {'COMM':<16} {'SYS':>6} {'RET':>16} ARGs"

    def lines(self, ev: dict[str, Any]) -> str:
        from memlens.output.table import escape

        who = ev["tid"] if self.args.tid else ev["pid"]
        return (f"{self.time_cell(ev)}{who:<7} {escape(ev['comm']):<16} {ev['syscall'].upper():>6} "
                f"{ret_text(ev):>16} {args_text(ev)}")


class ShmsnoopCommand:
    name = "shmsnoop"
    summary = "Trace System V shared memory calls: shmget, shmat, shmdt, shmctl (BCC)."
    epilog = EXAMPLES

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from memlens.output.sinks import add_output_options

        add_common_options(parser, json=False)
        add_output_options(parser)
        parser.add_argument("-T", "--timestamp", action="store_true",
                            help="include a time column (seconds since the first call)")
        parser.add_argument("-t", "--tid", type=pid_arg, metavar="TID",
                            help="trace this thread only")
        parser.add_argument("-n", "--name", metavar="NAME",
                            help="only print processes whose comm contains NAME")
        from memlens.core.ringbuf import RING_DEFAULT_MAX, ring_size_arg

        parser.add_argument("--ring-size", type=ring_size_arg, metavar="BYTES",
                            help="the event ring buffer's size (K/M/G suffixes; a power of "
                                 f"two); default {RING_DEFAULT_MAX >> 20}M (~47k calls); "
                                 "calls that find it full are counted as lost")

    def run(self, args: argparse.Namespace) -> int:
        from memlens.core.countingtool import prepare_tracing
        from memlens.core.lazy import prefetch_numpy
        from memlens.core.runner import run_cli
        from memlens.output.sinks import make_sink

        prepare_tracing("shmsnoop", ["t:syscalls:sys_enter_shmget"])
        prefetch_numpy()  # overlaps the BPF load (core/lazy.py)
        return run_cli(ShmsnoopTool(args), args, make_sink(args, TextRenderer(args)))


COMMAND = ShmsnoopCommand()
