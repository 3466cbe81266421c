# SPDX-License-Identifier: GPL-2.0-only
"""mmapsnoop: trace mmap() calls with protection, flags, offset, size, file and result.

The book's mmapsnoop (Ch. 7) rebuilt on the syscall tracepoints alone: the file path is
resolved in the kernel from the fd at the time of the call (see mmapsnoop.bpf.c), anonymous
maps are shown as `[anon]` (the book's version skipped them) and the exit tracepoint adds
the mapped address or the error.
"""
from __future__ import annotations

import argparse
import errno
import functools
import select
import time
from typing import Any

from memlens import registry
from memlens.core import kernel
from memlens.core.drops import Losses
from memlens.core.hooks import choose
from memlens.core.lazy import prefetch_numpy
from memlens.core.loader import BpfObject
from memlens.core.privileges import require_tracing_privileges
from memlens.core.session import TargetExit, add_common_options, configure_filters
from memlens.output.sinks import add_output_options

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
# A read with data costs ~0.4 ms here however few records it holds (+4 µs a record), so
# reads are spaced at least this much apart.  The ring holds ~900 records: at one read per
# 20 ms it fills only above ~45 k calls/s, more than the decoder keeps up with anyway.
GATHER_S = 0.02


@functools.lru_cache(maxsize=256)
def prot_letters(prot: int) -> str:
    return "".join(ch if prot & bit else "-" for bit, ch in ((1, "R"), (2, "W"), (4, "E")))


def _size_suffix(shift: int) -> str:
    for unit, s in (("G", 30), ("M", 20), ("K", 10)):
        if shift >= s:
            return f"{1 << (shift - s)}{unit}"
    return f"{1 << shift}B"


@functools.lru_cache(maxsize=1024)  # a handful of distinct values in practice
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


@functools.lru_cache(maxsize=4)
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
        self.name_filter = args.name.encode() if args.name else None
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
        obj.load()
        obj.attach_tracepoint("mmap_enter", "syscalls", "sys_enter_mmap")
        obj.attach_tracepoint("mmap_exit", "syscalls", "sys_exit_mmap")
        self.dtype = obj.struct_dtype("mmap_event")
        self.ring = obj.map("events").ringbuf()
        self.ready.register(obj.map("events").fd, select.EPOLLIN)

    def poll(self, timeout: float) -> list[dict]:
        # Wait on the ring's fd (bounded by the runner's timeout) rather than sleep a fixed
        # tick, so the first call after a quiet spell is shown at once; then read at most
        # once per GATHER_S, so a steady stream is still decoded in batches.
        end = time.monotonic() + timeout
        if timeout > 0 and self.ready.poll(timeout):
            wait = min(self.last_read + GATHER_S, end) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.last_read = time.monotonic()
        out = [decode(rec, self.boot_to_wall) for rec in self.ring.consume_fixed(self.dtype)
               if self.name_filter is None or self.name_filter in bytes(rec["comm"])]
        self.shown += len(out)
        return out + self.losses.new(self.obj)

    @property
    def finished(self) -> bool:
        return self.target.exited()

    @property
    def finish_reason(self) -> str:
        return self.target.reason

    def report(self, final: bool) -> list[dict]:
        return self.poll(0)  # the calls and losses not polled yet

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
                            help="only processes whose comm contains COMM")

    def run(self, args: argparse.Namespace) -> int:
        from memlens.core.runner import run_cli
        from memlens.output.sinks import make_sink

        prefetch_numpy()  # overlaps the BPF load (see core/lazy.py)
        return run_cli(MmapsnoopTool(args), args, make_sink(args, TextRenderer(args)))


class TextRenderer:
    """The text columns.  The header comes with the first record the sink renders (the
    first row, or the summary of a run that saw none): the sink is told nothing at attach
    time, and stdout is the same either way."""

    def __init__(self, args: argparse.Namespace):
        from memlens.output.table import Column, Table

        cols = [Column("PID", 7), Column("COMM", 15), Column("PROT", 4), Column("MAP", 5),
                Column("OFFS(KB)", 8, ">"), Column("SIZE(KB)", 8, ">"),
                Column("FILE", None, keep="tail")]
        if args.time:
            cols.insert(0, Column("TIME", 8))
        self.table = Table(cols, line_width=None if args.wide else 79)
        self.with_time = bool(args.time)
        self.header_done = False

    def __call__(self, rec: dict[str, Any]) -> None:
        if not self.header_done:
            self.header_done = True
            print(self.table.header(), flush=True)
        if rec["type"] == "event":
            print(self.table.row(text_row(rec, self.with_time)), flush=True)


def decode(rec, boot_to_wall: float) -> dict[str, Any]:
    from memlens.output.table import comm_str

    ret = int(rec["ret"])
    failed = -MAX_ERRNO <= ret < 0
    kind = int(rec["file_kind"])
    fd = int(rec["fd"])
    flags, prot = int(rec["flags"]), int(rec["prot"])
    letters, names = map_flags(flags)
    path = None
    if kind == MMAP_FILE:
        levels = int(rec["path_levels"])
        comps = [bytes(c) for c in rec["path"][:levels]]
        path = join_path(comps, bool(rec["path_truncated"]))
        if rec["deleted"]:
            path += " (deleted)"
    ts = boot_to_wall + int(rec["ts_ns"]) / 1e9
    return {
        "type": "event",
        "time": _clock(int(ts)),
        "timestamp": round(ts, 6),
        "pid": int(rec["pid"]),
        "tid": int(rec["tid"]),
        "comm": comm_str(bytes(rec["comm"])),
        "prot": prot_letters(prot),
        "prot_raw": prot,
        "flags": letters,
        "flags_raw": flags,
        "flag_names": list(names),
        "offset": int(rec["off"]),
        "size_bytes": int(rec["len"]),
        "addr_hint": int(rec["addr_hint"]),
        "fd": None if kind == MMAP_ANON else fd,
        "anonymous": kind == MMAP_ANON,
        "file": path,
        "deleted": bool(rec["deleted"]) if kind == MMAP_FILE else False,
        "ret": ret,
        "addr": None if failed else f"{ret & 0xFFFFFFFFFFFFFFFF:#x}",
        "error": errno.errorcode.get(-ret, f"E{-ret}") if failed else None,
        "errno": -ret if failed else None,
    }


def text_row(ev: dict[str, Any], with_time: bool) -> list[Any]:
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


COMMAND = MmapsnoopCommand()
