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

import errno
import time

from memlens.core.memo import memo
from memlens.core.session import add_common_options, check_pid_exists, pid_arg
from memlens.output.eventlines import EventLines
from memlens.output.sinks import EventBatch

TYPE_CHECKING = False  # typing costs ~4 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    import argparse
    from typing import Any

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
GATHER_S = 0.02  # reads at least this far apart under a steady stream (trace's)


def _huge_size(shift: int) -> str:
    for unit, s in (("GB", 30), ("MB", 20), ("KB", 10)):
        if shift >= s:
            return f"{1 << (shift - s)}{unit}"
    return f"{1 << shift}B"


@memo(maxsize=256)
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


@memo(maxsize=64)
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


M32, M64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
# each call's arguments as its sys_enter_* record names them (decode's order)
ARG_NAMES = {"shmget": ("key", "size", "shmflg"), "shmat": ("shmid", "shmaddr", "shmflg"),
             "shmdt": ("shmaddr",), "shmctl": ("shmid", "cmd", "buf")}


@memo(maxsize=256)
def _shmget_flag_text(flg: int) -> str:
    return _flag_text(flg, shmget_flags(flg))


@memo(maxsize=64)
def _shmat_flag_text(flg: int) -> str:
    return _flag_text(flg, shmat_flags(flg))


@memo(maxsize=256)
def _shmget_flag_json(flg: int) -> str:
    """`"flag_names":[...],"mode":"0600"` as json_line writes them."""
    from memlens.output.ndjson import json_str

    names = ",".join([json_str(n) for n in shmget_flags(flg)])
    mode = f"0{flg & 0o777:o}" if flg & 0o777 else "0"
    return f'"flag_names":[{names}],"mode":{json_str(mode)}'


@memo(maxsize=64)
def _shmat_flag_json(flg: int) -> str:
    from memlens.output.ndjson import json_str

    return '"flag_names":[' + ",".join([json_str(n) for n in shmat_flags(flg)]) + "]"


@memo(maxsize=64)
def _shmctl_cmd_text(cmd: int) -> str:
    return shmctl_cmd(cmd)


@memo(maxsize=256)
def _error_name(err: int) -> str:
    return errno.errorcode.get(err, f"E{err}")


class ShmBatch(EventBatch):
    """One poll's calls as columns (Engine(event_array=True)): the result from each exit's
    record and the arguments from its entry's (`begin_data`), read by numpy a syscall at
    a time (the four record formats differ), then each call's text line or NDJSON line
    made from plain ints with cached flag and command names — byte for byte what decode()
    with json_line or TextRenderer.lines write for the same record (tests/unit).  A probe
    whose records the columns cannot read (tpformat.field_columns says so) is decoded one
    record at a time, as before.

    `exits`: exit probe number -> (syscall, exit format, entry format).  Events that are
    not a call's exit with its entry (decode() -> None), and those -n or -t leave out, are
    not in the batch."""

    def __init__(self, ev, engine, exits: dict, mono_to_wall: float,
                 name: str | None = None, tid: int | None = None, extra=()):
        from memlens.core import tpformat
        from memlens.core.lazy import np

        super().__init__(extra)
        self.mono_to_wall = mono_to_wall
        self.slow: dict[int, dict[str, Any]] = {}  # position -> decode()'s record
        # (syscall, positions, results, argument columns in ARG_NAMES order)
        self.groups: list[tuple[str, list[int], list[int], list[list[int]]]] = []
        self._where: dict[int, tuple[int, int]] | None = None
        if not len(ev):
            sel = np.zeros(0, np.int64)
        else:
            mask = (np.isin(ev["probe"], list(exits)) & (ev["begin_size"] > 0)
                    & (ev["size"] > 0))
            if tid:
                mask &= ev["tid"] == tid
            sel = np.flatnonzero(mask)
        comms = _comms(ev["comm"][sel].tolist()) if len(sel) else []
        if name and comms:
            keep = [k for k, c in enumerate(comms) if name in c]
            sel, comms = sel[keep], [comms[k] for k in keep]
        self.n = n = len(sel)
        self.comm = comms
        self.ts_ns = ev["ts_ns"][sel].tolist() if n else []
        self.pid = ev["tgid"][sel].tolist() if n else []
        self.tid = ev["tid"][sel].tolist() if n else []
        self.latency_ns = ev["latency_ns"][sel].tolist() if n else []
        self.syscall = [""] * n
        self.ret = [0] * n
        if not n:
            return
        psel = ev["probe"][sel]
        for p in sorted(set(psel.tolist())):
            at = np.flatnonzero(psel == p)
            rows = sel[at]
            sysname, fmt, bfmt = exits[p]
            res = tpformat.field_columns(fmt, ev["data"][rows], ev["size"][rows])
            args = tpformat.field_columns(bfmt, ev["begin_data"][rows], ev["begin_size"][rows])
            pos = at.tolist()
            want = ARG_NAMES[sysname]
            if (res is None or args is None or "ret" not in res[0]
                    or not set(want) <= set(args[0])):
                for k, r in zip(pos, rows.tolist()):
                    rec = decode(engine.decode_event(ev[r]), mono_to_wall)
                    assert rec is not None  # an exit with its entry's fields
                    self.slow[k] = rec
                    self.syscall[k], self.ret[k] = sysname, rec["ret"]
                continue
            ret = res[1][res[0].index("ret")]
            cols = dict(zip(*args))
            for k, r in zip(pos, ret):
                self.syscall[k] = sysname
                self.ret[k] = r
            self.groups.append((sysname, pos, ret, [cols[a] for a in want]))

    # -- one record --------------------------------------------------------------------------
    def record(self, i: int) -> dict[str, Any]:
        if i in self.slow:
            return self.slow[i]
        if self._where is None:
            self._where = {k: (g, j) for g, (_, pos, _, _) in enumerate(self.groups)
                           for j, k in enumerate(pos)}
        g, j = self._where[i]
        sysname, _, _, cols = self.groups[g]
        ret = self.ret[i]
        failed = -MAX_ERRNO <= ret < 0
        ts = self.ts_ns[i]
        out: dict[str, Any] = {
            "type": "event", "timestamp": round(self.mono_to_wall + ts / 1e9, 6),
            "ts_ns": ts, "pid": self.pid[i], "tid": self.tid[i], "comm": self.comm[i],
            "syscall": sysname, "ret": ret,
            "error": _error_name(-ret) if failed else None,
            "errno": -ret if failed else None, "latency_ns": self.latency_ns[i]}
        a = [c[j] for c in cols]
        if sysname == "shmget":
            flg = a[2] & M32
            out.update(key=a[0] & M32, size_bytes=a[1], shmflg=flg,
                       flag_names=list(shmget_flags(flg)),
                       mode=f"0{flg & 0o777:o}" if flg & 0o777 else "0",
                       shmid=None if failed else ret)
        elif sysname == "shmat":
            flg = a[2] & M32
            out.update(shmid=_s32(a[0]), shmaddr=a[1], shmflg=flg,
                       flag_names=list(shmat_flags(flg)),
                       addr=None if failed else f"{ret & M64:#x}")
        elif sysname == "shmdt":
            out.update(shmaddr=a[0])
        else:
            cmd = a[1] & M32
            out.update(shmid=_s32(a[0]), cmd=cmd, cmd_name=_shmctl_cmd_text(cmd), buf=a[2])
        return out

    # -- the whole batch ---------------------------------------------------------------------
    def _failed(self, ret: list[int]) -> list[bool]:
        return [-MAX_ERRNO <= r < 0 for r in ret]

    def ndjson(self) -> str:
        from memlens.output.ndjson import json_line, json_str

        tail = [""] * self.n  # each call's fields after latency_ns, and the closing brace
        for sysname, pos, ret, cols in self.groups:
            failed = self._failed(ret)
            if sysname == "shmget":
                cells = [f',"key":{k & M32},"size_bytes":{s},"shmflg":{f & M32},'
                         f'{_shmget_flag_json(f & M32)},"shmid":{"null" if e else r}}}\n'
                         for k, s, f, r, e in zip(*cols, ret, failed)]
            elif sysname == "shmat":
                cells = [f',"shmid":{_s32(i)},"shmaddr":{a},"shmflg":{f & M32},'
                         f'{_shmat_flag_json(f & M32)},"addr":'
                         f'{"null" if e else chr(34) + hex(r & M64) + chr(34)}}}\n'
                         for i, a, f, r, e in zip(*cols, ret, failed)]
            elif sysname == "shmdt":
                cells = [f',"shmaddr":{a}}}\n' for a in cols[0]]
            else:
                cells = [f',"shmid":{_s32(i)},"cmd":{c & M32},'
                         f'"cmd_name":{json_str(_shmctl_cmd_text(c & M32))},"buf":{b}}}\n'
                         for i, c, b in zip(*cols)]
            for k, cell in zip(pos, cells):
                tail[k] = cell
        who: dict[tuple[int, int, str], str] = {}
        m = self.mono_to_wall
        out = []
        for t, pid, tid, comm, sysname, r, lat, cell in zip(
                self.ts_ns, self.pid, self.tid, self.comm, self.syscall, self.ret,
                self.latency_ns, tail):
            w = who.get((pid, tid, comm))
            if w is None:
                w = who[(pid, tid, comm)] = (f'"pid":{pid},"tid":{tid},'
                                             f'"comm":{json_str(comm)},')
            err = (f'"error":{json_str(_error_name(-r))},"errno":{-r}'
                   if -MAX_ERRNO <= r < 0 else '"error":null,"errno":null')
            out.append(f'{{"type":"event","timestamp":{round(m + t / 1e9, 6)!r},'
                       f'"ts_ns":{t},{w}"syscall":"{sysname}","ret":{r},{err},'
                       f'"latency_ns":{lat}{cell}')
        for k, rec in self.slow.items():
            out[k] = json_line(rec)
        return "".join(out)

    def text_rows(self, by_tid: bool) -> list[str]:
        """Each call's line after the TIME(s) cell: PID (TID) COMM SYS RET ARGs."""
        from memlens.output.table import escape

        args = [""] * self.n
        for sysname, pos, _, cols in self.groups:
            if sysname == "shmget":
                cells = [f"key: {k & M32:#x}, size: {s}, shmflg: {_shmget_flag_text(f & M32)}"
                         for k, s, f in zip(*cols)]
            elif sysname == "shmat":
                cells = [f"shmid: {_s32(i)}, shmaddr: {a:#x}, "
                         f"shmflg: {_shmat_flag_text(f & M32)}" for i, a, f in zip(*cols)]
            elif sysname == "shmdt":
                cells = [f"shmaddr: {a:#x}" for a in cols[0]]
            else:
                cells = [f"shmid: {_s32(i)}, cmd: {c & M32} ({_shmctl_cmd_text(c & M32)}), "
                         f"buf: {b:#x}" for i, c, b in zip(*cols)]
            for k, cell in zip(pos, cells):
                args[k] = cell
        for k, rec in self.slow.items():
            args[k] = args_text(rec)
        prefix: dict[tuple[int, str, str], str] = {}
        out = []
        for who, comm, sysname, r, a in zip(self.tid if by_tid else self.pid, self.comm,
                                            self.syscall, self.ret, args):
            p = prefix.get((who, comm, sysname))
            if p is None:
                p = prefix[(who, comm, sysname)] = (f"{who:<7} {escape(comm):<16} "
                                                    f"{sysname.upper():>6} ")
            if -MAX_ERRNO <= r < 0:
                rt = f"-{_error_name(-r)}"
            elif sysname == "shmat":
                rt = f"{r & M64:#x}"
            else:
                rt = str(r)
            out.append(f"{p}{rt:>16} {a}")
        return out


_COMM_CACHE: dict[bytes, str] = {}


def _comms(raw: list[bytes]) -> list[str]:
    """comm_str of each raw comm, cached (a burst repeats a few)."""
    from memlens.output.table import comm_str

    out = []
    for c in raw:
        s = _COMM_CACHE.get(c)
        if s is None:
            if len(_COMM_CACHE) >= 4096:
                _COMM_CACHE.clear()
            s = _COMM_CACHE[c] = comm_str(c)
        out.append(s)
    return out


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
        from memlens.core.ringsize import RING_DEFAULT_MAX

        # a call is 176 bytes of ring (the engine's head, its exit's record and its entry's):
        # the default ring holds ~47k calls; an unpaced burst of more is dropped at the
        # kernel side, counted, unless --ring-size holds it
        self.engine = Engine(parse_all(enters + exits), keys=(), trace=True,
                             pairs=dict(zip(exits, enters)),
                             ring_size=getattr(args, "ring_size", None) or RING_DEFAULT_MAX,
                             event_array=True)
        self.exits: dict[int, tuple[str, Any, Any]] | None = None
        self.last_read = 0.0
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

    def poll(self, timeout: float) -> ShmBatch:
        # a poll's events as one array, decoded by columns (ShmBatch): one call at a time
        # (engine.decode_event, decode, a print each) kept up with ~6k calls/s, and a
        # burst of 100k lost 7-50 % of its calls with the default ring
        wait = min(self.last_read + GATHER_S - time.monotonic(), timeout)
        if wait > 0:  # a steady stream is read in batches, as trace's (GATHER_S)
            time.sleep(wait)
            timeout -= wait
        events = self.engine.poll(max(timeout, 0.0))
        if len(events):
            self.last_read = time.monotonic()
        if self.exits is None:
            self.exits = self._exits()
        batch = ShmBatch(events, self.engine, self.exits, self.mono_to_wall,
                         self.name_filter, self.tid, self.engine.lost())
        self.shown += batch.n
        return batch

    def _exits(self) -> dict[int, tuple[str, Any, Any]]:
        """exit probe number -> (syscall, its format, its entry's format), for the exits
        whose both formats are known (decode_event gives the others no begin_fields)."""
        ids = {p.text: n for n, p in self.engine.probe_by_id.items()}
        out = {}
        for s in SYSCALLS:
            n = ids.get(f"t:syscalls:sys_exit_{s}")
            b = ids.get(f"t:syscalls:sys_enter_{s}")
            fmt, bfmt = self.engine.formats.get(n), self.engine.formats.get(b)
            if n is not None and fmt is not None and bfmt is not None:
                out[n] = (s, fmt, bfmt)
        return out

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

    def many(self, batch: ShmBatch) -> str:
        """A poll's lines as one string (the sink writes it at once): what __call__ prints
        for each of its records."""
        lines = []
        if not self.header_done:
            self.header_done = True
            lines.append(self.header())
        rows = batch.text_rows(bool(self.args.tid))
        if self.args.timestamp and rows:
            if self.first_ns is None:
                self.first_ns = batch.ts_ns[0]
            f = self.first_ns
            rows = [f"{(t - f) / 1e9:<14.9f} {row}" for t, row in zip(batch.ts_ns, rows)]
        lines += rows
        lines.append("")
        return "\n".join(lines)


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
        from memlens.core.ringsize import RING_DEFAULT_MAX, add_ring_size_option

        add_ring_size_option(parser, RING_DEFAULT_MAX, "calls (~47k in 8M)")

    def run(self, args: argparse.Namespace) -> int:
        from memlens.core.probespec import prepare_tracing
        from memlens.core.runner import run_cli
        from memlens.output.sinks import make_sink

        prepare_tracing("shmsnoop", ["t:syscalls:sys_enter_shmget"])
        return run_cli(ShmsnoopTool(args), args, make_sink(args, TextRenderer(args)))


COMMAND = ShmsnoopCommand()
