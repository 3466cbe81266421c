# SPDX-License-Identifier: GPL-2.0-only
"""mmapsnoop: trace mmap() calls with protection, flags, offset, size, file and result.

The book's mmapsnoop (Ch. 7) rebuilt on the syscall tracepoints alone: the file path is
resolved in the kernel from the fd at the time of the call (see mmapsnoop.bpf.c), anonymous
maps are shown as `[anon]` (the book's version skipped them) and the exit tracepoint adds
the mapped address or the error.
"""
from __future__ import annotations

import errno
import select
import time

from memlens import registry
from memlens.core import kernel
from memlens.core.drops import Losses
from memlens.core.hooks import choose
from memlens.core.lazy import prefetch_numpy
from memlens.core.loader import BpfObject
from memlens.core.memo import memo
from memlens.core.privileges import require_tracing_privileges
from memlens.core.ringsize import RING_MIN, default_ring_bytes, ring_size_arg
from memlens.core.session import TargetExit, add_common_options, configure_filters
from memlens.output.sinks import EventBatch, add_output_options, group_rows

TYPE_CHECKING = False  # typing costs ~7 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    import argparse
    from typing import Any

EXAMPLES = """\
examples:
  memlens mmapsnoop                # every mmap() system wide
  memlens mmapsnoop -T             # with a time column
  memlens mmapsnoop -T -w          # ... and whole paths, however wide
  memlens mmapsnoop -p 1234        # only PID 1234
  memlens mmapsnoop --file-only    # hide anonymous maps (the book's behaviour)
  memlens mmapsnoop --name python  # comm contains "python"
  memlens mmapsnoop --json -d 10   # one JSON object per call, for 10 seconds

output (`ls /` starting, this machine):
  PID     COMM            PROT MAP   OFFS(KB) SIZE(KB) FILE
  18740   ls              RW-  PA           0        8 [anon]
  18740   ls              R--  P            0       36 /etc/ld.so.cache
  18740   ls              R--  PD           0      182 ...nux-gnu/libselinux.so.1
  18740   ls              R-E  PFD         28      108 ...nux-gnu/libselinux.so.1
  18740   ls              RW-  PFA          0        6 [anon]
  18740   ls              R--  PD           0     1928 ..._64-linux-gnu/libc.so.6

  PROT: R read, W write, E execute, '-' not set (PROT_NONE is ---).
  MAP:  S shared, P private, V shared-validate, Q droppable, F fixed, N fixed-noreplace,
        A anonymous, 3 32bit, G growsdown, D denywrite, X executable, L locked,
        R noreserve, O populate, B nonblock, K stack, H hugetlb (H2M/H1G with a size),
        Y sync, I uninitialized, ? other bits.
  SIZE(KB) and OFFS(KB) are rounded up to whole KiB.  FILE is the path the fd named at
  the call ("(deleted)" if unlinked), [anon] for MAP_ANONYMOUS, [bad fd N] for an
  fd that named no open file; a failed call ends with the error name, e.g. `(EBADF)`.
  Long paths are cut from the left (the tail is kept); --json has them whole.
"""

# x86-64 / generic values from include/uapi/asm-generic/mman-common.h, linux/mman.h
MAP_TYPE_LETTERS = {0x01: "S", 0x02: "P", 0x03: "V", 0x0F: "Q"}
MAP_TYPE_NAMES = {0x01: "MAP_SHARED", 0x02: "MAP_PRIVATE", 0x03: "MAP_SHARED_VALIDATE",
                  0x0F: "MAP_DROPPABLE"}
MAP_BITS = [  # (bit, letter, name), in the order printed
    (0x10, "F", "MAP_FIXED"),
    (0x100000, "N", "MAP_FIXED_NOREPLACE"),
    (0x20, "A", "MAP_ANONYMOUS"),
    (0x40, "3", "MAP_32BIT"),
    (0x100, "G", "MAP_GROWSDOWN"),
    (0x800, "D", "MAP_DENYWRITE"),
    (0x1000, "X", "MAP_EXECUTABLE"),
    (0x2000, "L", "MAP_LOCKED"),
    (0x4000, "R", "MAP_NORESERVE"),
    (0x8000, "O", "MAP_POPULATE"),
    (0x10000, "B", "MAP_NONBLOCK"),
    (0x20000, "K", "MAP_STACK"),
    (0x40000, "H", "MAP_HUGETLB"),
    (0x80000, "Y", "MAP_SYNC"),
]
MAP_HUGETLB = 0x40000
MAP_HUGE_SHIFT, MAP_HUGE_MASK = 26, 0x3F
MAP_UNINITIALIZED = 0x4000000
KNOWN_BITS = 0x0F | sum(b for b, _, _ in MAP_BITS)
MMAP_ANON, MMAP_FILE, MMAP_NO_FILE = 0, 1, 2  # enum mmap_file_kind
MAX_ERRNO = 4095
U64 = (1 << 64) - 1
# A read with data costs a fixed ~0.1-0.4 ms however few records it holds, so reads are
# spaced at least this much apart; the ring (--ring-size, default 4 MiB: ~37k calls,
# 0.15 s at 250k calls/s) holds what arrives meanwhile many times over.
GATHER_S = 0.02
MAX_BATCH = 4096  # calls a read: a batch's lines are a few MB at most (peak RSS)


@memo(maxsize=256)
def prot_letters(prot: int) -> str:
    return "".join(ch if prot & bit else "-" for bit, ch in ((1, "R"), (2, "W"), (4, "E")))


def _size_suffix(shift: int) -> str:
    for unit, s in (("G", 30), ("M", 20), ("K", 10)):
        if shift >= s:
            return f"{1 << (shift - s)}{unit}"
    return f"{1 << shift}B"


@memo(maxsize=1024)  # a handful of distinct values in practice
def map_flags(flags: int) -> tuple[str, tuple[str, ...]]:
    """(letters, names) for mmap flags; letters as documented in the --help epilog."""
    letters, names = [], []
    mtype = flags & 0x0F
    if mtype in MAP_TYPE_LETTERS:
        letters.append(MAP_TYPE_LETTERS[mtype])
        names.append(MAP_TYPE_NAMES[mtype])
    elif mtype:
        letters.append("?")
        names.append(f"MAP_TYPE_{mtype:#x}")
    for bit, letter, name in MAP_BITS:
        if flags & bit:
            letters.append(letter)
            names.append(name)
    rest = flags & ~KNOWN_BITS
    if flags & MAP_HUGETLB:
        shift = (flags >> MAP_HUGE_SHIFT) & MAP_HUGE_MASK
        if shift:  # MAP_HUGE_2MB etc.: log2 of the page size in the top bits
            letters.append(_size_suffix(shift))
            names.append(f"MAP_HUGE_{_size_suffix(shift)}B")
        rest &= ~(MAP_HUGE_MASK << MAP_HUGE_SHIFT)
    elif rest & MAP_UNINITIALIZED:
        letters.append("I")
        names.append("MAP_UNINITIALIZED")
        rest &= ~MAP_UNINITIALIZED
    if rest:
        letters.append("?")
        names.append(f"{rest:#x}")
    return "".join(letters) or "-", tuple(names)


@memo(maxsize=4)
def _clock(second: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(second))


def kb_up(n: int) -> int:
    return (n + 1023) // 1024


def join_path(components: list[bytes], truncated: bool) -> str:
    # an empty slot marks a mount crossing (mmapsnoop.bpf.c), not a name
    parts = [c.decode("utf-8", "surrogateescape") for c in reversed(components) if c]
    return ("..." if truncated else "") + "/" + "/".join(parts)




class MmapsnoopTool:
    """mmapsnoop for the runner (core/runner.py): one "event" record per mmap() call."""

    name, what = "mmapsnoop", "mmap() calls"

    def __init__(self, args: argparse.Namespace):
        self.args, self.obj, self.shown, self.last_read = args, None, 0, 0.0
        self.backlog = False
        self.losses = Losses()
        self.target = TargetExit(None)
        self.ready = select.epoll()  # on the ring's fd, registered once it exists

    def start(self) -> None:
        require_tracing_privileges("mmapsnoop")
        kernel.ensure_tracefs()
        # the hooks declared in the registry (doctor reads the same): both syscall
        # tracepoints, with the fields the program reads; exit 4 names what is missing
        for need in range(len(registry.find("mmapsnoop").needs)):
            choose(registry.hooks_of("mmapsnoop", need), "mmapsnoop")
        # boot-time ns from the kernel -> wall clock (CLOCK_BOOTTIME counts suspend too)
        self.boot_to_wall = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        self.obj = obj = BpfObject.open("tools/mmapsnoop/mmapsnoop.bpf.o")
        configure_filters(obj, self.args)  # -p: checked to exist
        self.target = TargetExit(self.args.pid)  # -p: end when it exits
        obj.rodata["targ_file_only"] = bool(self.args.file_only)
        if getattr(self.args, "name", None):  # --name: filtered in the kernel (comm_allowed)
            obj.rodata["targ_comm"] = self.args.name.encode()
            obj.rodata["targ_comm_len"] = len(self.args.name.encode())
        # the record's size from BTF (its type's header): numpy is still being imported
        # (prefetch_numpy) while libbpf loads; its dtypes are made after the banner
        size = getattr(self.args, "ring_size", None)
        obj.set_max_entries("events", size or default_ring_bytes(
            obj.struct_size("mmap_event")), "--ring-size")
        # a file's record is 20x an anonymous one, and file maps come in far smaller
        # bursts (program and library loads): 1 MiB (~480 maps) unless asked
        obj.set_max_entries("file_events", size or RING_MIN, "--ring-size")
        obj.load()
        obj.attach_tracepoint("mmap_enter", "syscalls", "sys_enter_mmap")
        obj.attach_tracepoint("mmap_exit", "syscalls", "sys_exit_mmap")
        self.ring = obj.map("events").ringbuf()
        self.file_ring = obj.map("file_events").ringbuf()
        self.ready.register(obj.map("events").fd, select.EPOLLIN)
        self.ready.register(obj.map("file_events").fd, select.EPOLLIN)
        # numpy is first needed by the first read, after the banner: imported meanwhile
        # (imported while libbpf loads, it held the GIL that open/load/attach wait for)
        self.dtype = self.file_dtype = None
        prefetch_numpy()

    def poll(self, timeout: float, cap: int | None = MAX_BATCH) -> MmapBatch:
        # Wait on the rings' fds (bounded by the runner's timeout) rather than sleep a fixed
        # tick, so the first call after a quiet spell is shown at once; then read at most
        # once per GATHER_S, so a steady stream is still decoded in batches.
        end = time.monotonic() + timeout
        if timeout > 0 and self.ready.poll(timeout):
            # (no wait when the last read left calls behind: a backlog is read at once)
            wait = min(self.last_read + GATHER_S, end) - time.monotonic()
            if wait > 0 and not self.backlog:
                time.sleep(wait)
            self.last_read = time.monotonic()
        if self.dtype is None:
            self.dtype = self.obj.struct_dtype("mmap_event")
            self.file_dtype = self.obj.struct_dtype("mmap_file_event")
        # at most `cap` calls a read: a reader back at a full ring holds a bounded batch
        events = self.ring.consume_fixed(self.dtype, cap)
        files = self.file_ring.consume_fixed(self.file_dtype, cap)
        self.backlog = cap is not None and (len(events) == cap or len(files) == cap)
        batch = MmapBatch(events, files, self.boot_to_wall, self.losses.new(self.obj))
        self.shown += batch.n
        return batch

    @property
    def finished(self) -> bool:
        return self.target.exited()

    @property
    def finish_reason(self) -> str:
        return self.target.reason

    def report(self, final: bool) -> MmapBatch:
        return self.poll(0, cap=None)  # every call and loss not polled yet

    def summary(self) -> list[dict]:
        return [{"type": "summary", "events": self.shown, "lost": self.losses.totals(),
                 "hook": "tracepoint/syscalls/sys_enter_mmap+sys_exit_mmap"}]

    def close(self) -> None:
        self.target.close()
        self.ready.close()
        if self.obj is not None:
            self.obj.close()


class MmapsnoopCommand:
    name = "mmapsnoop"
    summary = "Trace mmap() calls: protection, flags, offset, size, file, result."
    epilog = EXAMPLES

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_common_options(parser, json=False)
        add_output_options(parser)
        parser.add_argument("-T", "--time", action="store_true",
                            help="include a time column (HH:MM:SS)")
        parser.add_argument("-w", "--wide", action="store_true",
                            help="print whole file paths (lines may pass 80 columns)")
        parser.add_argument("--file-only", action="store_true",
                            help="hide anonymous maps (MAP_ANONYMOUS)")
        parser.add_argument("-n", "--name", metavar="COMM",
                            help="only processes whose comm contains COMM (tested in the "
                                 "kernel)")
        parser.add_argument("--ring-size", type=ring_size_arg, metavar="BYTES",
                            help="the ring buffers' size (K/M/G suffixes; a power of two); "
                                 "default 4M for anonymous maps (~37k calls, 0.15 s of a "
                                 "250k calls/s burst), 1M for file maps; each MiB is a MiB "
                                 "of RSS")

    def run(self, args: argparse.Namespace) -> int:
        from memlens.core.runner import run_cli
        from memlens.output.sinks import make_sink

        return run_cli(MmapsnoopTool(args), args, make_sink(args, TextRenderer(args)))


class TextRenderer:
    """The text columns.  The header comes with the first record the sink renders (the
    first row, or the summary of a run that saw none): the sink is told nothing at attach
    time, and stdout is the same either way."""

    def __init__(self, args: argparse.Namespace):
        self.with_time, self.wide = bool(args.time), bool(args.wide)
        self.header_done = False
        self._table = None

    @property
    def table(self):
        # made at the first row: output.table's dataclass costs ~15 ms of start-up
        if self._table is None:
            from memlens.output.table import Column, Table

            cols = [Column("PID", 7), Column("COMM", 15), Column("PROT", 4), Column("MAP", 5),
                    Column("OFFS(KB)", 8, ">"), Column("SIZE(KB)", 8, ">"),
                    Column("FILE", None, keep="tail")]
            if self.with_time:
                cols.insert(0, Column("TIME", 8))
            self._table = Table(cols, line_width=None if self.wide else 79)
        return self._table

    def __call__(self, rec: dict[str, Any]) -> None:
        if not self.header_done:
            self.header_done = True
            print(self.table.header(), flush=True)
        if rec["type"] == "event":
            print(self.table.row(text_row(rec, self.with_time)), flush=True)

    def many(self, batch: MmapBatch) -> str:
        """A poll's rows as one string (the sink writes it at once)."""
        text = batch.text(self.with_time, self.table.line_width)
        if not self.header_done:
            self.header_done = True
            text = self.table.header() + "\n" + text
        return text


def text_row(ev: dict[str, Any], with_time: bool) -> list[Any]:
    """An event record's cells, for the one-record path (TextRenderer.__call__)."""
    if ev["anonymous"]:
        where = "[anon]"
    elif ev["file"] is None:
        where = f"[bad fd {ev['fd']}]"
    else:
        where = ev["file"]
    if ev["error"]:
        where += f" ({ev['error']})"
    row = [ev["pid"], ev["comm"], ev["prot"], ev["flags"], kb_up(ev["offset"]),
           kb_up(ev["size_bytes"]), where]
    return [ev["time"], *row] if with_time else row


# the fields that make a call's line apart from its time and result
_GROUP_FIELDS = ("pid", "tid", "prot", "flags", "off", "len", "addr_hint", "fd", "file_kind",
                 "deleted")


class MmapBatch(EventBatch):
    """One poll's calls, in the order they were made (the anonymous ring and the file ring
    merged by entry time), decoded by numpy at once.

    A burst repeats itself: the same process mapping the same size with the same flags.
    Calls are grouped by every field but their time and result (`_groups`: one np.unique),
    so a text row is built once per group and a JSON line costs the formatting of its
    time, address and result only.  A dict per call is made only for whoever iterates."""

    def __init__(self, events, files, boot_to_wall: float, extra=()):
        from memlens.core.lazy import np

        super().__init__(extra)
        nf = len(files)
        self.paths: dict[int, str] = {}  # index -> path, file maps only
        if nf:
            paths = [_file_path(rec) for rec in files]
            ev = np.concatenate([events, files["ev"]]) if len(events) else files["ev"]
        else:
            ev = events
        n = self.n = len(ev)
        if not n:
            return
        if nf:
            order = np.argsort(ev["ts_ns"], kind="stable")
            ev = ev[order]
            where = np.empty(n, np.int64)
            where[order] = np.arange(n)
            self.paths = dict(zip(where[n - nf:].tolist(), paths))
        self.ev = ev
        # wall-clock microseconds, in integers (exact): "timestamp" is sec.micro
        us = round(boot_to_wall * 1e6) + (ev["ts_ns"].astype(np.int64) + 500) // 1000
        self.sec = (us // 1_000_000).tolist()
        self._micro = us % 1_000_000
        self.micro = self._micro.tolist()
        self.ret = ev["ret"].tolist()
        self._group_of: list[int] | None = None

    def _groups(self) -> tuple[list[int], list[int]]:
        """(group of each call, first call of each group): calls equal in every field but
        time and result share a group; a file map is a group of its own (its path)."""
        if self._group_of is None:
            from memlens.core.lazy import np

            ev, n = self.ev, self.n
            cols = [ev[f] for f in _GROUP_FIELDS]
            comm = np.ascontiguousarray(ev["comm"]).view("<u8").reshape(n, -1)
            cols += [comm[:, k] for k in range(comm.shape[1])]
            ret = ev["ret"]
            cols.append(np.where((ret < 0) & (ret >= -MAX_ERRNO), ret, 0))  # the error
            if self.paths:
                solo = np.zeros(n, np.int64)
                solo[list(self.paths)] = np.arange(1, len(self.paths) + 1)
                cols.append(solo)
            self._group_of, self._first = group_rows(cols)
        return self._group_of, self._first

    def _fields(self, i: int) -> dict[str, Any]:
        """Call i's fields as Python values (once per group)."""
        rec = self.ev[i]
        return {f: int(rec[f]) for f in _GROUP_FIELDS} | {"comm": bytes(rec["comm"])}

    def record(self, i: int) -> dict[str, Any]:
        f = self._fields(i)
        ret, kind, fd, flags, prot = self.ret[i], f["file_kind"], f["fd"], f["flags"], f["prot"]
        failed = -MAX_ERRNO <= ret < 0
        letters, names = map_flags(flags)
        return {
            "type": "event",
            "time": _clock(self.sec[i]),
            "timestamp": float(f"{self.sec[i]}.{self.micro[i]:06d}"),
            "pid": f["pid"],
            "tid": f["tid"],
            "comm": _CACHE.comm(f["comm"]),
            "prot": prot_letters(prot),
            "prot_raw": prot,
            "flags": letters,
            "flags_raw": flags,
            "flag_names": list(names),
            "offset": f["off"],
            "size_bytes": f["len"],
            "addr_hint": f["addr_hint"],
            "fd": None if kind == MMAP_ANON else fd,
            "anonymous": kind == MMAP_ANON,
            "file": self.paths.get(i),
            "deleted": bool(f["deleted"]) if kind == MMAP_FILE else False,
            "ret": ret,
            "addr": None if failed else f"{ret & U64:#x}",
            "error": errno.errorcode.get(-ret, f"E{-ret}") if failed else None,
            "errno": -ret if failed else None,
        }

    def ndjson(self) -> str:
        """The lines JsonWriter writes for record(i) (equal once parsed; "timestamp" is
        written from integers, without float's repr), built per group, then per call."""
        from memlens.output.ndjson import json_str

        group_of, first = self._groups()
        middle = []  # per group: "pid" ... "deleted"
        for i in first:
            f = self._fields(i)
            kind, fd = f["file_kind"], f["fd"]
            if kind == MMAP_ANON:
                where = '"fd":null,"anonymous":true,"file":null,"deleted":false'
            elif kind == MMAP_FILE:
                where = (f'"fd":{fd},"anonymous":false,"file":{json_str(self.paths[i])},'
                         f'"deleted":{"true" if f["deleted"] else "false"}')
            else:
                where = f'"fd":{fd},"anonymous":false,"file":null,"deleted":false'
            middle.append(
                f'"pid":{f["pid"]},"tid":{f["tid"]},"comm":{_CACHE.comm_json(f["comm"])},'
                f'{_CACHE.prot_json(f["prot"])},{_CACHE.flags_json(f["flags"])},'
                f'"offset":{f["off"]},"size_bytes":{f["len"]},"addr_hint":{f["addr_hint"]},'
                f'{where},"ret":')
        clock = {s: _clock(s) for s in set(self.sec)}
        # negative results (errors, or an address with the top bit set): a few distinct ones
        odd = {}
        for ret in set(r for r in self.ret if r < 0):
            if ret >= -MAX_ERRNO:
                odd[ret] = (f'{ret},"addr":null,"error":{_CACHE.error_json(-ret)},'
                            f'"errno":{-ret}}}\n')
            else:
                odd[ret] = f'{ret},"addr":"{hex(ret & U64)}","error":null,"errno":null}}\n'
        # the microseconds zero-padded by numpy ("1000042"[1:]), not a format spec per line
        micro = (self._micro + 1_000_000).astype("U7").tolist()
        return "".join([
            f'{{"type":"event","time":"{clock[sec]}","timestamp":{sec}.{us[1:]},{middle[g]}'
            + (f'{ret},"addr":"{hex(ret)}","error":null,"errno":null}}\n' if ret >= 0
               else odd[ret])
            for sec, us, g, ret in zip(self.sec, micro, group_of, self.ret)])

    def text(self, with_time: bool, width: int | None) -> str:
        """The rows TextRenderer prints (Table's rules: cells escaped, strings cut with
        "...", numbers whole, FILE cut from the left to end the line at `width`); a row is
        the same for every call of a group, bar its time."""
        from memlens.output.table import escape

        group_of, first = self._groups()
        rows = []
        tw = (width - 9) if (with_time and width is not None) else width  # TIME + space
        for i in first:
            f = self._fields(i)
            head = (f"{f['pid']:<7} {_CACHE.comm_cell(f['comm'])} "
                    f"{_CACHE.prot_cell(f['prot'])} {_CACHE.flags_cell(f['flags'])} "
                    f"{kb_up(f['off']):>8} {kb_up(f['len']):>8}")
            kind, ret = f["file_kind"], self.ret[i]
            if kind == MMAP_ANON:
                where = "[anon]"
            elif kind == MMAP_FILE:
                where = escape(self.paths[i])
            else:
                where = f"[bad fd {f['fd']}]"
            if -MAX_ERRNO <= ret < 0:
                where = f"{where} ({_CACHE.error(-ret)})"
            if tw is not None:
                room = max(tw - len(head) - 1, 1)
                if len(where) > room:
                    where = cut(where, room, True)
            rows.append(f"{head} {where}".rstrip() + "\n")
        if with_time:
            clock = {s: _clock(s) + " " for s in set(self.sec)}
            return "".join([clock[s] + rows[g] for s, g in zip(self.sec, group_of)])
        return "".join([rows[g] for g in group_of])


class _Cache:
    """Strings per distinct value (a burst repeats a handful of comms, prots, flags)."""

    def __init__(self) -> None:
        self._maps: dict[str, dict] = {}

    def _get(self, kind: str, key, make):
        m = self._maps.setdefault(kind, {})
        out = m.get(key)
        if out is None:
            if len(m) >= 4096:
                m.clear()
            out = m[key] = make(key)
        return out

    def comm(self, raw: bytes) -> str:
        from memlens.output.table import comm_str

        return self._get("comm", raw, comm_str)

    def comm_json(self, raw: bytes) -> str:
        from memlens.output.ndjson import json_str

        return self._get("comm_json", raw, lambda r: json_str(self.comm(r)))

    def comm_cell(self, raw: bytes) -> str:
        return self._get("comm_cell", raw, lambda r: _cell(self.comm(r), 15))

    def prot_json(self, prot: int) -> str:
        return self._get("prot_json", prot,
                         lambda p: f'"prot":"{prot_letters(p)}","prot_raw":{p}')

    def prot_cell(self, prot: int) -> str:
        return self._get("prot_cell", prot, lambda p: _cell(prot_letters(p), 4))

    def flags_json(self, flags: int) -> str:
        from memlens.output.ndjson import json_str

        def make(f: int) -> str:
            letters, names = map_flags(f)
            return (f'"flags":{json_str(letters)},"flags_raw":{f},"flag_names":['
                    + ",".join(json_str(n) for n in names) + "]")
        return self._get("flags_json", flags, make)

    def flags_cell(self, flags: int) -> str:
        return self._get("flags_cell", flags, lambda f: _cell(map_flags(f)[0], 5))

    def error(self, err: int) -> str:
        return self._get("error", err, lambda e: errno.errorcode.get(e, f"E{e}"))

    def error_json(self, err: int) -> str:
        from memlens.output.ndjson import json_str

        return self._get("error_json", err, lambda e: json_str(self.error(e)))


_CACHE = _Cache()


def _cell(text: str, width: int) -> str:
    """A fixed-width text cell as output.table.Table makes it."""
    from memlens.output.table import escape

    text = escape(text)
    if len(text) > width:
        text = cut(text, width, False)
    return f"{text:<{width}}"


def cut(text: str, width: int, keep_tail: bool) -> str:
    """output.table's cut: "..." where the text was cut (at its start with keep_tail)."""
    from memlens.output.table import ELLIPSIS

    if width <= len(ELLIPSIS):
        return text[-width:] if keep_tail else text[:width]
    keep = width - len(ELLIPSIS)
    return ELLIPSIS + text[-keep:] if keep_tail else text[:keep] + ELLIPSIS


def _file_path(rec) -> str:
    ev = rec["ev"]
    levels = int(ev["path_levels"])
    path = join_path(list(rec["path"][:levels]), bool(ev["path_truncated"]))
    return path + " (deleted)" if ev["deleted"] else path


COMMAND = MmapsnoopCommand()
