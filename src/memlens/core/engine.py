# SPDX-License-Identifier: GPL-2.0-only
"""The counting engine, user side: one generic BPF object (core/engine.bpf.c) configured
from a spec — which probes, which key, which filter, which field to sum — then read every
tick into plain entries.

    eng = Engine(parse_all(["t:syscalls:sys_enter_brk"]), keys=("pid", "comm", "ustack"))
    eng.start(pid=None, cgroup=None)       # open, configure rodata, load, attach
    eng.poll(0.05)                         # new keys: snapshot the process's map now
    entries = eng.collect()                # counts since the last collect, merged by key
    eng.lost()                             # losses since the last call, as "lost" records
    eng.close()

Reading: the kernel map is read every tick (TICK_S) without clearing it; the increase since
the previous read is the count.  A key that has not moved for PRUNE_TICKS ticks is deleted
with lookup-and-delete, which returns its final value, so nothing counted between the read
and the delete is lost, and a run with thousands of short-lived processes keeps a small map.
Stacks referenced only by pruned keys are deleted from the stack store too (an event with
the same frames stores them again); their frames stay cached here.
"""
from __future__ import annotations

import select
import time

# the C OrderedDict itself, without `collections` (~2 ms of every start on this VM)
from _collections import OrderedDict

from memlens.core.probespec import Probe
from memlens.core.record import record
from memlens.errors import KernelLacks, MemlensError, UsageError

TYPE_CHECKING = False  # typing costs ~4 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    from typing import Any

EVENT_BATCH = 4096  # trace events decoded and written at a time (see _events)
KEY_BITS = {"pid": 1, "tid": 2, "comm": 4, "cgroup": 8, "ustack": 16, "kstack": 32,
            "probe": 64, "field": 128, "file": 256, "vma": 512, "str": 1024, "field2": 2048}
L_FIELD, L_SUM, L_SUM2, L_INO, L_DEV, L_STR, L_FIELD2, L_NR = range(8)  # engine.h roles
# enum engine_vma_kind (engine.h)
VMA_KINDS = {"file": 1, "anon": 2, "hugetlb": 3, "none": 4, "unresolved": 5}
VMA_NAMES = {v: k for k, v in VMA_KINDS.items()}
KEY_NAMES = tuple(k for k in KEY_BITS if k not in ("str", "field2"))  # user-facing keys
TICK_S = 0.5         # how often the kernel map is read
PRUNE_TICKS = 2      # a key idle this many reads is deleted from the kernel map
# A map a quarter full (many short-lived processes) is read every FAST_TICK_S, for 5 s, and a
# key idle for one read is deleted: a key then lives ~0.1 s past its last event instead of
# ~1.5 s, so the table needs ~rate x 0.1 s slots instead of ~rate x 1.5 s.
FAST_TICK_S = 0.05
TRIM_AFTER_KEYS = 256    # a read of at least this many keys gives freed memory back (heap)
ANNOUNCE_BUDGET_S = 0.2  # a poll's time for new keys' announcements (Ctrl-C waits on it)
TICK_BUDGET_S = 0.3      # a poll's time for folding new counts in (see _read_tick)
HIST_UNITS = {"nsecs": 1, "usecs": 1000, "msecs": 1_000_000}  # histogram buckets' unit
MAX_FILTER_TERMS = 8          # ENGINE_MAX_FILTERS (engine.h)
FILTER_ALL_PROBES = 0xFFFFFFFF
REPORT_LIMIT = 65536  # distinct report keys kept between reports; beyond: idle ones pruned
FRAME_CACHE = 20000  # resolved stacks kept
FORGET_TICKS = 10    # a process gone is forgotten after this many ticks even if reads lag
# a program, its twin attached until the hand-over to the walk and the twin's program
# array (engine.bpf.c; core/handover.py)
HANDING = {"count_tp": ("count_tp_handing", "hand_over_tp"),
           "count_perf": ("count_perf_handing", "hand_over_perf")}
# The programs without a stack walk, each with the parts of the engine it holds
# (engine.bpf.c, SHAPE_*), smallest first: a run loads the first that holds what it needs.
# The verifier checks every instruction of a program, dead for this run or not (funccount:
# ~1.1 ms for the whole program, ~0.4 for the counting one; bench/verifier_stats.py).
ALL_PARTS = frozenset({"record", "filters", "pairs", "trace", "count", "rich_keys"})
STACKLESS = {"tracepoint": (("count_tp_simple", frozenset({"count"})),
                            ("count_tp_trace", frozenset({"record", "filters", "trace"})),
                            ("count_tp_episodes", frozenset({"record", "pairs", "trace"})),
                            ("count_tp_nostack", ALL_PARTS)),
             "perf": (("count_perf_simple", frozenset({"count"})),
                      ("count_perf_nostack", ALL_PARTS))}


def stackless_program(kind: str, needs: set[str]) -> str:
    """The smallest program without a stack walk for probes of `kind` holding `needs`."""
    return next(name for name, holds in STACKLESS[kind] if needs <= holds)


# The stack store's size by default: where the kernel allocates a hash map's entries as
# they are stored (loader.hash_maps_may_allocate, 6.1+) a large store costs nothing until
# used; where it preallocates them, the whole store (~1 KB a stack) is allocated and
# zeroed at the start.  Under 40 short processes a second for 60 s (faults system-wide, no
# -i), 10240 lost 333,662 stacks, 32768 one, 65536 none; the store's bucket array is made
# at the start all the same (16 bytes a slot: 65536 cost ~1 ms of it, 32768 half that).
STACK_STORAGE_ON_INSERT = 32768
STACK_STORAGE_PREALLOCATED = 10240


# Trace mode for episodes (drsnoop's reclaims, compactsnoop's compactions): rare next to
# syscalls (thousands a second under a memory storm at most), so a 1 MiB ring holds ~10k of
# them, and EPISODE_PENDING threads may be inside one at once (the begins held for their
# ends; beyond, the oldest begin goes and its end is counted without a time).  Both are
# made whole at the start: the defaults' 4 MiB ring and 10240 begins cost ~2 ms of it.
EPISODE_RING_SIZE = 1 << 20
EPISODE_PENDING = 4096


OBJECT = "core/engine.bpf.o"  # the package's compiled engine (engine.bpf.c)
# maps of engine.bpf.o a run with stackless programs alone neither uses nor makes (by name
# prefix): the DWARF walk's (memlens.bpf.h), the hand-over's program arrays, libbpf's USDT
# tables
NOT_MADE_WITHOUT_STACKS = ("unwind_", "stack_scratch", "hand_over_", "__bpf_usdt_")


def default_stack_storage() -> int:
    from memlens.core.loader import hash_maps_may_allocate

    return (STACK_STORAGE_ON_INSERT if hash_maps_may_allocate()
            else STACK_STORAGE_PREALLOCATED)


@record
class Entry:
    """One row of a report: the chosen key parts, and the count (and sum) since the last."""
    parts: dict[str, Any]
    count: int
    sum: int = 0
    sum2: int = 0
    time_ns: int = 0    # latency pairs: total time between begins and ends
    max_ns: int = 0     # the longest, since the key was first counted
    timed: int = 0      # ends whose begin was seen (the others: count_unstarted)

    def record(self) -> dict[str, Any]:
        out = dict(self.parts)
        out["count"] = self.count
        if self.sum:
            out["sum"] = self.sum
        if self.sum2:
            out["sum2"] = self.sum2
        if self.time_ns:
            out["time_ns"], out["max_ns"], out["timed"] = self.time_ns, self.max_ns, self.timed
        return out


class Engine:
    def __init__(self, probes: list[Probe], *, keys: tuple[str, ...], field: str | None = None,
                 sum_field: str | None = None, filter: str | None = None,
                 trace: bool = False, max_keys: int = 10240,
                 stack_storage: int | None = None,
                 file_fields: tuple[str, str] | None = None, vma_select: str | None = None,
                 probe_filters: dict[str, str] | None = None,
                 pairs: dict[str, str] | None = None, hist: bool = False,
                 hist_unit: str = "usecs", sum2_field: str | None = None,
                 stack_unwind: str = "fp",
                 count_unstarted: bool = False, field2: str | None = None,
                 field_mask: int = 0, field2_mask: int = 0,
                 ring_size: int | None = None, event_array: bool = False,
                 pending: int | None = None,
                 adds: dict[str, str] | None = None):
        if not probes:
            raise UsageError("no probe given")
        bad = [k for k in keys if k not in KEY_BITS]
        if bad:
            raise UsageError(f"unknown key {bad[0]!r} (keys: {', '.join(KEY_NAMES)})")
        self.probes = probes
        self.keys = tuple(keys)
        self.field, self.sum_field, self.filter_text = field, sum_field, filter
        self.sum2_field = sum2_field
        # a second integer key field, and masks applied to both in the kernel
        self.field2, self.field_mask, self.field2_mask = field2, field_mask, field2_mask
        if field2 and "field2" not in keys:
            keys = (*keys, "field2")
            self.keys = tuple(keys)
        self.str_key = False
        # ends of latency pairs that began before tracing: counted without a time
        self.count_unstarted = count_unstarted
        self.trace = trace
        # trace mode's events ring, in bytes (a power of two of pages: the CLI's --ring-size
        # rounds it, core/ringsize.ring_size_arg); None: engine.bpf.c's 4 MiB (every MiB of
        # ring is a MiB of the reader's RSS: tools of rare events keep that).  event_array:
        # poll() returns a poll's records as one numpy array (decoded by columns) instead
        # of a list of its rows.
        if ring_size is not None and (ring_size < 4096 or ring_size & (ring_size - 1)):
            raise UsageError(f"ring size {ring_size}: a power of two of at least 4096 bytes")
        self.ring_size, self.event_array = ring_size, event_array
        # latency pairs: begins held at once for their end (threads inside an episode), the
        # LRU `starts`; None: engine.bpf.c's 10240.  An LRU map is allocated whole when it is
        # made: 10240 of trace mode's begins cost ~1.3 ms of the start, 4096 ~0.5.
        self.pending = pending
        # a filter of one probe only, by the probe's text (two probes on the same tracepoint
        # type with different filters, or a tracepoint filtered beside a perf event)
        self.probe_filters = dict(probe_filters or {})
        # latency pairs {end probe: begin probe}: an end counts with the time since its
        # thread's begin (summed, max, and a log2 histogram with hist=True); a begin is
        # not counted itself.  Ends whose begin came before tracing are left out.  An end
        # may have several begins (a tuple): whichever of them this thread hit last starts
        # the clock (a fault entered from user or from kernel mode, ended by one perf event).
        self.pairs = {end: (begin,) if isinstance(begin, str) else tuple(begin)
                      for end, begin in (pairs or {}).items()}
        texts = [p.text for p in probes]
        for end, begins in self.pairs.items():
            for begin in begins:
                if end not in texts or begin not in texts:
                    raise UsageError(f"latency pair {begin} -> {end}: both must be probes "
                                     "of this run")
        if len(probes) > 64 and self.pairs:
            raise UsageError("latency pairs: at most 64 probes in a run")
        # {probe: end of a pair}: the probe's sum fields (and a count of its hits) are
        # added to its thread's open pair in the kernel and come with the end's event
        # (trace mode: decode_event's "added"), not as events of their own
        self.adds = dict(adds or {})
        for add, end in self.adds.items():
            if add not in texts or end not in self.pairs:
                raise UsageError(f"{add} adds to {end}: both must be probes of this run, "
                                 "the second the end of a latency pair")
        self.hist = hist
        if hist_unit not in HIST_UNITS:
            raise UsageError(f"histogram unit {hist_unit!r}: one of {', '.join(HIST_UNITS)}")
        self.hist_unit = hist_unit
        self._begin_of: dict[int, int] = {}  # end probe number -> begin probe number
        unknown = set(self.probe_filters) - {p.text for p in probes}
        if unknown:
            raise UsageError(f"filter for {sorted(unknown)[0]}: no such probe in this run")
        # the file key from a tracepoint: (inode field, device field), e.g. filemap faults'
        # ("i_ino", "s_dev"); from a perf event it is the mapping of the sampled address
        self.file_fields = file_fields
        if vma_select is not None and vma_select not in VMA_KINDS:
            raise UsageError(f"unknown mapping kind {vma_select!r} (kinds: "
                             + ", ".join(VMA_KINDS) + ")")
        self.vma_select = vma_select
        self._files: dict[tuple[int, int], str] = {}  # (kernel dev_t, inode) -> path
        self._maps_read: set[tuple[int, bytes]] = set()
        self.max_keys = max_keys
        self.max_stacks = stack_storage or default_stack_storage()
        # core/drops.Losses's hints: the options sizing the maps a loss found full (the
        # command line's tool sets them before the start)
        self.loss_hints: dict[int, str] | None = None
        self.obj = None
        self.formats: dict[int, Any] = {}    # probe number -> TracepointFormat
        self.probe_by_id: dict[int, Probe] = {}
        self._prev: dict[bytes, tuple[int, int]] = {}
        self._idle: dict[bytes, int] = {}
        self._stack_seen: dict[int, int] = {}  # stack hash -> tick last referenced
        self._tick = 0
        self._epoch = 0  # read epoch (latency pairs): see read_epoch in engine.bpf.c
        self._deferred_reads = 0  # keys left for a later tick (time budget), all told
        self._acc: OrderedDict[tuple, list[int]] = OrderedDict()
        self._pruned_report_keys = 0
        self._pruned_report_events = 0
        self._comms: dict[int, bytes] = {}
        # processes found gone at the last tick: forgotten at the next one, when their last
        # counts have been read and their events' stacks resolved (_forget_exited)
        self._exited: dict[int, int] = {}  # pid -> the tick that found it gone
        self._cgroup_paths: dict[int, str] = {}
        self._resolver = None
        self._resolver_due = False  # made at its first use, after the banner (resolver)
        # user stacks: walked by frame pointers only ("fp": the kernel's walk), or with the
        # files' .eh_frame where the kernel can ("auto") or always ("dwarf": exit 4 where
        # it cannot); the tools' --stack-unwind (core/unwind)
        self.stack_unwind = stack_unwind
        self.unwind = None  # core/unwind/store.UnwindStore, when the walk is on
        self._dtypes: dict[str, Any] = {}  # struct name -> numpy dtype (_dtype)
        self._unwind_due = False  # the walk is on, its store not made yet (start)
        self._hand_over_due = False  # attached without the walk: _hand_over at that time
        self._stackless = False  # only stackless programs loaded (_choose_programs)
        self._hand_over = None  # core/handover.HandOver: the twins, then the whole copy
        self._warmup = None     # core/uprobewarm.UprobeWarmup: from the open to the attach
        self._uprobe_multi = False  # u: probes in uprobe_multi links (_use_uprobe_multi)
        self._check_tracepoint_needs()

    # -- configuration ---------------------------------------------------------------------
    def _check_tracepoint_needs(self) -> None:
        tps = [p for p in self.probes if p.kind == "tracepoint"]
        uses_record = (self.field or self.field2 or self.sum_field or self.sum2_field
                       or self.filter_text
                       or self.trace or self.probe_filters or (self.file_fields and tps))
        if not uses_record:
            return
        others = [p for p in self.probes if p.kind != "tracepoint"]
        # beside other probes, a filter, a sum or a field applies to the tracepoints only
        # (faults and a page-allocation tracepoint filtered by order, side by side); a perf
        # event's field is its sampled address ('addr') when no tracepoint is counted
        if (self.sum_field or self.filter_text) and not tps:
            raise UsageError(f"a filter or a sum field needs tracepoints; {others[0].text} "
                             "has no fields")
        for text in self.probe_filters:
            if next(p for p in self.probes if p.text == text).kind != "tracepoint":
                raise UsageError(f"filter for {text}: only tracepoints have fields")
        if self.field and not tps and self.field != "addr":
            raise UsageError(f"--by field: {others[0].text} has no field {self.field!r} "
                             "(perf events offer 'addr', the sampled address)")

    def _layouts(self) -> bytes:
        """Per probe, where its key field, summed fields, file fields and string key are
        (struct field_layout[64][L_NR], engine.h): the same field sits at different offsets
        in different tracepoints, and a probe without it reads nothing."""
        import struct

        from memlens.core import tpformat

        out = bytearray(64 * L_NR * 4)

        def put(i: int, role: int, off: int, size: int, sign: int) -> None:
            struct.pack_into("<HBB", out, (i * L_NR + role) * 4, off, size, sign)

        wanted = [(L_FIELD, self.field, "field"), (L_SUM, self.sum_field, "sum field"),
                  (L_SUM2, self.sum2_field, "sum field"), (L_FIELD2, self.field2, "field")]
        if self.file_fields and "file" in self.keys:
            wanted += [(L_INO, self.file_fields[0], "field"), (L_DEV, self.file_fields[1],
                                                              "field")]
        for role, name, what in wanted:
            if not name or (role == L_FIELD and (self.str_key or name == "addr"
                                                 and not self.formats)):
                continue
            found = False
            for i, fmt in self.formats.items():
                if not any(f.name == name for f in fmt.fields):
                    continue
                f = fmt.field(name)
                if what == "sum field" and f.is_pointer:
                    raise UsageError(f"sum field {name!r} of {fmt.category}:{fmt.name} is a "
                                     "pointer: adding addresses means nothing")
                if f.is_string or f.data_loc or f.array_len is not None \
                        or f.size not in (1, 2, 4, 8):
                    raise UsageError(f"{what} {name!r} of {fmt.category}:{fmt.name} is "
                                     f"{f.type}: only integer fields of 1-8 bytes can be "
                                     "summed or used with these")
                off, size, signed = tpformat.value_layout(f)
                put(i, role, off, size, int(signed))
                found = True
            if not found:
                first = next(iter(self.formats.values()))
                first.field(name)  # UsageError naming the fields there
        if self.str_key:
            for i, fmt in self.formats.items():
                if not any(f.name == self.field for f in fmt.fields):
                    continue
                f = fmt.field(self.field)
                if f.data_loc:
                    kind = 2 if "__rel_loc" in f.type else 1
                    put(i, L_STR, f.offset, kind, 0)
                else:
                    put(i, L_STR, f.offset, 3, min(f.array_len or 0, 255))
        return bytes(out)

    def _string_field(self) -> bool:
        """Is the key field a string (a cache name, a file name) in the matched
        tracepoints?  Then it is keyed as text (KEY_STR), not as a number."""
        kinds = set()
        for fmt in self.formats.values():
            for f in fmt.fields:
                if f.name == self.field:
                    kinds.add(bool(f.is_string))
        if len(kinds) > 1:
            raise UsageError(f"field {self.field!r} is a string in some matched tracepoints "
                             "and a number in others: match fewer events")
        return kinds == {True}

    def start(self, *, pid: int | None = None, cgroup: str | None = None,
              include_self: bool = False, tid: int | None = None,
              command_files: list[str] | None = None) -> None:
        """Load and attach.  `pid` with `command_files`: a -c command forked and held
        before its exec (core/command.TracedCommand): the unwind tables of the files it
        will map are loaded now, not the held fork's (a copy of this Python)."""
        from memlens.core import kernel
        from memlens.core.drops import Losses
        from memlens.core.loader import BpfObject

        if any(p.kind == "tracepoint" for p in self.probes):
            kernel.ensure_tracefs()
            from memlens.core import tpformat  # not for perf events alone (count sw:, faults)
        formats = []
        for i, p in enumerate(self.probes):
            self.probe_by_id[i] = p
            if p.kind == "tracepoint":
                fmt = tpformat.read_format(p.category, p.name)
                self.formats[i] = fmt
                formats.append(fmt)
        obj = self.obj = BpfObject.open(OBJECT)
        kinds = {p.kind for p in self.probes}
        if kinds & {"uprobe", "usdt"}:
            # the first uprobe link's grace period waited out while the object is
            # configured and loaded
            from memlens.core.uprobewarm import UprobeWarmup

            self._warmup = UprobeWarmup.start_if_room(
                obj.path, kernel.hash_buckets_bytes(self.max_keys)
                + kernel.hash_buckets_bytes(self.max_stacks) + (self.ring_size or 0))
        self._uprobe_multi = self._use_uprobe_multi()
        if self._uprobe_multi:
            from memlens.core.libbpf import BPF_TRACE_UPROBE_MULTI

            obj.set_expected_attach_type("count_uprobe", BPF_TRACE_UPROBE_MULTI)
        ro = obj.rodata
        self.str_key = bool(self.field and formats and self._string_field())
        parts = 0
        for k in self.keys:
            parts |= KEY_BITS[k]
        if self.str_key and "field" in self.keys:
            parts = (parts & ~KEY_BITS["field"]) | KEY_BITS["str"]
        if "ustack" in self.keys:
            parts |= KEY_BITS["pid"]  # user frames are symbolized per process
        if len(self.probes) > 1 or self.trace:
            parts |= KEY_BITS["probe"]
        self._parts = parts
        ro["key_parts"] = parts
        if len(self.probes) > 1:
            if not kernel.has_attach_cookie():
                raise KernelLacks("this kernel has no BPF cookies (bpf_get_attach_cookie, "
                                  f"5.15+) to tell {len(self.probes)} probes apart: give one "
                                  "probe at a time")
            ro["use_cookie"] = True
        # a new key is announced when symbols or file names must be read while it lives
        announce = bool(parts & (KEY_BITS["ustack"] | KEY_BITS["file"]))
        ro["announce"] = announce
        if self.vma_select:
            ro["vma_select"] = VMA_KINDS[self.vma_select]
        ro["trace_mode"] = self.trace
        need_record = bool(formats) and bool(
            self.field or self.field2 or self.sum_field or self.sum2_field or self.filter_text
            or self.trace or self.probe_filters or ("file" in self.keys and self.file_fields))
        if need_record:
            ro["need_record"] = True
            ro["record_size"] = min(512, max(f.size for f in formats))
        if self.trace:
            self._set_event_layout(ro, obj)
        ro["perf_field_addr"] = self.field == "addr" and not formats
        if formats:
            ro["layouts"] = self._layouts()
        ro["count_unstarted"] = self.count_unstarted
        ro["field_mask"], ro["field2_mask"] = self.field_mask, self.field2_mask
        if (self.filter_text or self.probe_filters) and formats:
            self._set_filter(ro, formats)
        if self.pairs:
            texts = [p.text for p in self.probes]
            role, partner = bytearray(64), bytearray(64)
            for end, begins in self.pairs.items():
                e = texts.index(end)
                role[e] = 2
                for begin in begins:
                    b = texts.index(begin)
                    role[b], partner[b] = 1, e
                if len(begins) == 1:  # its begin's fields decode by that probe's format
                    self._begin_of[e] = b
            for add, end in self.adds.items():
                a = texts.index(add)
                role[a], partner[a] = 3, texts.index(end)
            ro["probe_role"], ro["probe_partner"] = bytes(role), bytes(partner)
            ro["want_hist"] = self.hist
            ro["hist_div"] = HIST_UNITS[self.hist_unit]
        self._choose_programs(obj, kinds, parts, need_record, formats)
        if "cgroup" in self.keys or self.trace:
            ro["cgroup_v1"] = kernel.cgroup_v1_memory()
        ro["self_tgid"] = 0 if include_self else __import__("os").getpid()
        if pid is not None:
            ro["targ_tgid"] = pid
        if tid is not None:
            ro["targ_tid"] = tid  # a thread (-t), filtered in the kernel
        if cgroup:
            cg_id, v1 = kernel.cgroup_target(cgroup)
            ro["targ_cgroup_id"], ro["targ_cgroup_v1"] = cg_id, v1
        if self.trace:
            # events streamed, nothing counted (engine.bpf.c's trace_mode returns before
            # count_key): the counts' bucket array unmade
            obj.set_max_entries("counts", 1)
        else:
            obj.set_max_entries("counts", self.max_keys, "--max-keys")
        if self.trace or not announce:
            # no new key announced: its ring at its smallest (one page; 256 KiB was ~0.3
            # ms of the load)
            obj.set_max_entries("seen", 4096)
        # maps this run never touches get one entry: a preallocated hash map is allocated
        # and zeroed when it is made (stacks 10 MB: ~3.7 ms of the load of every tool
        # without a stack key; starts 3 MB: ~1.4 ms without latency pairs)
        stacked = parts & (KEY_BITS["ustack"] | KEY_BITS["kstack"])
        obj.set_max_entries("stacks", self.max_stacks if stacked else 1,
                            "--stack-storage-size")
        if not self.pairs:
            obj.set_max_entries("starts", 1)
        else:
            if self.pending:
                obj.set_max_entries("starts", self.pending)
            # a begin keeps no more of its record than its end streams (trace mode), else
            # none: the LRU's values sized to that (made whole when the map is made: 4096
            # of 296 bytes were ~0.6 ms of drsnoop's load, 64 bytes ~0.25), made without
            # BTF (its struct is the whole engine_start)
            keep = self._event_layout[2] if self.trace else 0
            ro["begin_keep"] = keep
            obj.set_value_size("starts", obj.member_offset("engine_start", "data") + keep)
            obj.premake_maps(["starts"])
        if not parts & (KEY_BITS["file"] | KEY_BITS["vma"]):
            obj.set_max_entries("vma_cache", 1)  # the mapping cache of file/vma keys
        if not self.hist:
            obj.set_max_entries("hists", 1)
        obj.allocate_on_insert("counts", "stacks", "hists")
        if self.trace:
            if self.ring_size:
                obj.set_max_entries("events", self.ring_size, "--ring-size")
        else:
            obj.set_max_entries("events", 4096)  # unused: smallest ring (one page)
        if self._stackless:
            # none of the walk's maps is made (skip_maps) and unwind_dwarf stays false:
            # nothing to configure, and core/unwind not imported (~0.2 ms)
            unwind_on = False
        else:
            from memlens.core import unwind

            unwind_on = unwind.configure(
                obj, self.stack_unwind if parts & KEY_BITS["ustack"] else "fp")
        # System-wide, the walk's tables come after the banner anyway (the store is made at
        # the first poll): the program attached first is verified without the walk (~5 ms
        # instead of ~40 of the start) and hands over to the whole one once it is loaded
        # (_hand_over).  A target process (-p, -c) gets the whole program before attaching.
        self._hand_over_due = (unwind_on and pid is None and not command_files
                               and kinds <= {"tracepoint", "perf"})
        if self._hand_over_due:
            from memlens.core.handover import HandOver  # (~0.4 ms: stack tools only)

            self._hand_over = HandOver(obj, HANDING)
            self._hand_over.arm()
        try:
            self._load_and_attach(obj, pid, unwind_on, command_files)
        finally:
            self._stop_warmup()
        # counts without stacks or files resolve nothing; the others make their resolver
        # at its first use, after the banner (its module's namedtuples import collections:
        # ~5 ms of the start on this VM)
        self._resolver_due = bool(
            parts & (KEY_BITS["ustack"] | KEY_BITS["kstack"] | KEY_BITS["file"]))
        self.losses = Losses(obj, missing_stacks=bool({"ustack", "kstack"} & set(self.keys)),
                             hints=self.loss_hints)
        # the rings by their fds: their Map and RingBuffer (core/maps and core/ringbuf,
        # ~1 ms to import) are made at the first poll, after the banner
        self._ep = select.epoll()
        self._ep.register(obj.map_fd("seen"), select.EPOLLIN)
        if self.trace:
            self._ep.register(obj.map_fd("events"), select.EPOLLIN)
        if unwind_on and not self._hand_over_due:
            self._watch_unwind_requests(obj)
        self._next_tick = time.monotonic() + TICK_S
        from memlens.core.lazy import prefetch_numpy

        # every poll decodes with numpy: imported from now on, after the attaches (started
        # before the load, its import held the GIL that each libbpf call of the open, the
        # configuration and the attaches waited to get back: ~90 ms of drsnoop's start)
        prefetch_numpy()

    @property
    def resolver(self):
        """The stack and symbol resolver (core/stackresolve), None for counts without stacks
        or files."""
        if self._resolver_due:
            from memlens.core.stackresolve import StackResolver

            self._resolver_due = False
            self._resolver = StackResolver(self.obj.map("stacks"), max_cache=FRAME_CACHE)
            if self.unwind is not None:
                self._resolver.mappings = self.unwind.mappings  # frames of processes gone
        return self._resolver

    def _watch_unwind_requests(self, obj) -> None:
        # a process the walk has no tables for asks for them: serve it at once (each
        # poll waited its whole timeout, and a -c command's first 2000 faults were
        # walked by frame pointers: stacks without _start, split from the others)
        self._ep.register(obj.map("unwind_requests").fd, select.EPOLLIN)

    def _start_unwind(self):
        from memlens.core.unwind.store import UnwindStore

        self._unwind_due = False
        walk_obj = self.obj
        if self._hand_over_due:
            # the whole program (with the walk): a second copy of the object sharing the
            # first's maps (counts, stacks, rings, losses...), loaded after the banner
            # (~40 ms of the verifier); core/handover.py
            self._hand_over_due = False
            try:
                walk_obj = self._hand_over.load_whole(self.stack_unwind)
            except MemlensError as err:
                # tracing goes on as attached, walking by frame pointers (counted)
                from memlens.core.handover import walk_not_loaded

                walk_not_loaded(err)
                return None
        self.unwind = UnwindStore(walk_obj)
        if self._resolver is not None:  # (one not made yet takes them when it is)
            self._resolver.mappings = self.unwind.mappings  # frames of processes gone
        if walk_obj is not self.obj:
            self._watch_unwind_requests(walk_obj)
            self._hand_over.install()  # from here every event runs the whole program
        return self.unwind

    # numpy dtypes of the kernel's records, made at first use (the first poll): a tool is
    # attached and says so without waiting for numpy's import (~0.1 s)
    @property
    def _key_dtype(self):
        return self._dtype("engine_key")

    @property
    def _val_dtype(self):
        return self._dtype("engine_value")

    @property
    def _seen_dtype(self):
        return self._dtype("engine_seen")

    def _dtype(self, name: str):
        dt = self._dtypes.get(name)
        if dt is None:
            dt = self._dtypes[name] = self.obj.struct_dtype(name)
        return dt

    def _set_filter(self, ro, formats) -> None:
        """Filter terms for the BPF side: the run's filter for every tracepoint (its fields
        at the same place in each), then each probe's own filter, at most 8 terms."""
        from memlens.core import tpformat

        rows: list[tuple[Any, int]] = []  # (term, probe number or ALL)
        if self.filter_text:
            terms = tpformat.parse_filter(self.filter_text, formats[0])
            for fmt in formats[1:]:
                other = tpformat.parse_filter(self.filter_text, fmt)
                if [(t.offset, t.size, t.signed) for t in other] != \
                   [(t.offset, t.size, t.signed) for t in terms]:
                    raise UsageError(f"filter {self.filter_text!r}: its fields are not at the "
                                     "same place in every matched tracepoint: match fewer "
                                     "events")
            rows += [(t, FILTER_ALL_PROBES) for t in terms]
        for i, p in enumerate(self.probes):
            if p.text in self.probe_filters:
                terms = tpformat.parse_filter(self.probe_filters[p.text], self.formats[i])
                rows += [(t, i) for t in terms]
        if len(rows) > MAX_FILTER_TERMS:
            raise UsageError(f"filters: {len(rows)} terms in all, at most {MAX_FILTER_TERMS}")
        self.filter_terms = [t for t, _ in rows]
        ro["nfilters"] = len(rows)
        fields = (("filt_off", "offset", 4), ("filt_size", "size", 4),
                  ("filt_signed", "signed", 1), ("filt_op", "op", 4), ("filt_val", "value", 8))
        for name, attr, width in fields:
            ro[name] = b"".join(int(getattr(t, attr)).to_bytes(width, "little")
                                for t, _ in rows)
        ro["filt_probe"] = b"".join(n.to_bytes(4, "little") for _, n in rows)

    def _choose_programs(self, obj, kinds: set[str], parts: int, record: bool,
                         formats: list) -> None:
        """The programs loaded: with a stack key, the ones with the walk (a quarter of the
        code more, ~2 ms of the verifier: engine.bpf.c, fill_key); without, the smallest
        holding this run's parts (STACKLESS)."""
        stackless = not parts & (KEY_BITS["ustack"] | KEY_BITS["kstack"])
        needs = {"trace" if self.trace else "count"}
        if self.pairs:
            needs.add("pairs")
        if record:
            needs.add("record")
        if (self.filter_text or self.probe_filters) and formats:
            needs.add("filters")
        if parts & (KEY_BITS["file"] | KEY_BITS["str"] | KEY_BITS["vma"]) or self.vma_select:
            needs.add("rich_keys")
        self._tp_prog = stackless_program("tracepoint", needs) if stackless else "count_tp"
        self._perf_prog = stackless_program("perf", needs) if stackless else "count_perf"
        progs = {"tracepoint": self._tp_prog, "perf": self._perf_prog,
                 "uprobe": "count_uprobe", "usdt": "count_usdt", "kprobe": "count_kprobe"}
        for prog in obj.programs():
            obj.set_autoload(prog, False)
        for kind, prog in progs.items():
            obj.set_autoload(prog, kind in kinds)
        self._stackless = stackless and kinds <= {"tracepoint", "perf"}
        if self._stackless:
            # the stackless programs refer to none of the walk's maps, the hand-over's or
            # USDT's (bpftool prog show: count_tp_episodes uses 7 of the object's 31):
            # not made at all (17 maps, the USDT specs' preallocated hash among them:
            # ~0.2 ms of drsnoop's load)
            obj.skip_maps(NOT_MADE_WITHOUT_STACKS)

    def _load_and_attach(self, obj, pid: int | None, unwind_on: bool,
                         command_files) -> None:
        obj.load()
        if {"ustack", "kstack"} & set(self.keys):
            # an event stores its key and up to two stacks: the per-CPU caches of free
            # entries filled first (loader).  Without stacks, one entry an event: the one
            # each CPU starts with, refilled as it goes (and ~0.5-1 ms of the start: the
            # process moved to each CPU in turn)
            obj.warm_allocation("counts", "stacks")
        # The walk's store needs numpy (~0.1 s to import): made before attaching only for a
        # target process (its first stacks whole), else at the first poll, after the banner.
        # Meanwhile the kernel side walks by frame pointers (counted as unwind_fallback) and
        # queues its requests in a ring, as it does for any process not loaded yet.
        self._unwind_due = unwind_on
        if unwind_on and command_files:
            store = self._start_unwind()
            for path in command_files:
                store.load_file(path)
        elif unwind_on and pid is not None:
            self._start_unwind().load_process(pid)
        self._attach(pid)

    def _attached(self, prog: str) -> str:
        """The program attached for a probe kind: its handing twin until the hand-over."""
        return prog if self._hand_over is None else self._hand_over.attached(prog)

    def _attach(self, pid: int | None) -> None:
        obj = self.obj
        for i, p in enumerate(self.probes):
            if p.kind == "tracepoint":
                obj.attach_tracepoint_id(self._attached(self._tp_prog), p.category, p.name,
                                         self.formats[i].id, cookie=i)
            elif p.kind == "perf":
                from memlens.core import perf  # (not for tracepoints alone)

                for cpu in perf.online_cpus():
                    fd = perf.open_event_typed(perf.PERF_TYPE_SOFTWARE, p.config, cpu,
                                               sample_period=p.period, what=p.text)
                    try:
                        obj.attach_perf_event(self._attached(self._perf_prog), fd, cookie=i)
                    except Exception:
                        __import__("os").close(fd)
                        raise
            elif p.kind == "uprobe" and not self._uprobe_multi:
                obj.attach_uprobe("count_uprobe", p.binary, p.func, pid=pid or -1, cookie=i)
            elif p.kind == "usdt":
                obj.attach_usdt("count_usdt", p.binary, p.provider, p.name, pid=pid or -1,
                                cookie=i)
            elif p.kind == "kprobe":
                obj.attach_kprobe("count_kprobe", p.name, cookie=i)
        if self._uprobe_multi:
            by_file: dict[str, list[tuple[int, int]]] = {}
            for i, p in enumerate(self.probes):
                if p.kind == "uprobe":
                    by_file.setdefault(p.binary, []).append((p.offset, i))
            for binary, spots in by_file.items():
                obj.attach_uprobe_multi("count_uprobe", binary, [o for o, _ in spots],
                                        [i for _, i in spots], pid=pid or -1)

    def _use_uprobe_multi(self) -> bool:
        """The u: probes attached as one uprobe_multi link a file (kernel >= 6.6), not a
        perf-event uprobe each: where every probe's function has an offset of its own
        (probespec.check_function; else libbpf finds it by name, or says why not).  A
        perf event in a process (-p) made the kernel wait for a grace period the first
        time in a while (perf_sched_events turned on: account_event's synchronize_rcu,
        8-24 ms of `trace -p PID u:libc:malloc`'s start), besides the uprobe's own
        (core/uprobewarm.py)."""
        from memlens.core.kernel import uprobe_multi_supported

        ups = [p for p in self.probes if p.kind == "uprobe"]
        return bool(ups) and all(p.offset is not None for p in ups) \
            and uprobe_multi_supported()

    # -- reading ---------------------------------------------------------------------------
    def poll(self, timeout: float) -> list:
        """Wait up to `timeout` for new keys (or trace events); read the map when a tick is
        due.  Returns trace events (trace mode), else []."""
        if timeout > 0:
            self._ep.poll(timeout)
        if self._unwind_due:
            self._start_unwind()
        if self.unwind is not None:
            self.unwind.poll()  # processes the kernel side met without their tables
        # new keys' announcements, in batches and for a bounded time: under process churn
        # each costs a maps read and symbols, and a poll that drained them all kept Ctrl-C
        # waiting 11-15 s; what is left stays in the ring for the next poll (a full ring
        # counts "announcements" lost: counts intact, symbols maybe missing)
        deadline = time.monotonic() + ANNOUNCE_BUDGET_S
        while True:
            batch = self.obj.map("seen").ringbuf().consume_fixed(self._seen_dtype,
                                                                 max_records=64)
            for rec in batch:
                self._watch(int(rec["tgid"]), bytes(rec["comm"]), int(rec["ustack"]))
            if len(batch) < 64 or time.monotonic() >= deadline:
                break
        events = self._events() if self.trace else []
        if self.trace and (self._parts & (KEY_BITS["ustack"] | KEY_BITS["kstack"])):
            # events' stacks are resolved by the caller in this poll: after a few ticks
            # their entries in the stack store can go, or a long trace would fill it
            for ev in events:
                for part in ("ustack", "kstack"):
                    h = int(ev[part])
                    if h:
                        self._stack_seen[h] = self._tick
            if time.monotonic() >= self._next_tick:
                self._next_tick = time.monotonic() + TICK_S
                self._tick += 1
                self._prune_stacks()
                self._forget_exited()
                self._end_of_read()
        if not self.trace and time.monotonic() >= self._next_tick:
            self._read_tick(budget_s=TICK_BUDGET_S)
        return events

    def _forget_exited(self, complete: bool = True) -> None:
        """What is kept of each process met (its comm, its symbols, its resolved stacks,
        the mappings the unwinder kept of it) is dropped one tick after it is found gone:
        by then the tick's read has folded its last counts in (trace mode: the polls since
        have handed its events over, their stacks resolved).  Without this a system-wide
        run under process churn grew by the processes it had ever seen until each cache's
        bound (brkstack: +200 MB in 10 minutes of 35 short processes a second).
        `complete`: the tick read every key.  A read cut by its time budget (a loaded
        machine) keeps the processes gone for FORGET_TICKS more: a key of theirs still
        waiting in the kernel map after that is read without their symbols (counted)."""
        import os

        for pid, since in list(self._exited.items()):
            if complete or self._tick - since >= FORGET_TICKS:
                del self._exited[pid]
                comm = self._comms.pop(pid, None)
                if comm is not None:
                    self._maps_read.discard((pid, comm))
                if self.resolver is not None:
                    self.resolver.forget(pid)
                if self.unwind is not None:
                    self.unwind.forget_mappings(pid)
        # one stat per process met and not forgotten: those alive, and those gone since
        # (met: announced, or only read from the map when its announcement was lost)
        met = set(self._comms)
        if self.resolver is not None:
            met |= self.resolver.pids()
        if self.unwind is not None:
            met |= self.unwind.pids()
        for pid in met:
            if pid > 0 and pid not in self._exited and not os.path.exists(f"/proc/{pid}"):
                self._exited[pid] = self._tick

    def _watch(self, pid: int, comm: bytes, ustack: int) -> None:
        """A new key: read the process's map and resolve its stack now, while it lives and
        before an exec replaces its program (the frames are cached for the report)."""
        if self._comms.get(pid, comm) != comm:  # exec'd: a new program under this PID
            self.resolver.forget(pid, keep_frames=True)
        self._comms[pid] = comm
        if len(self._comms) > 4 * REPORT_LIMIT:
            self._comms.pop(next(iter(self._comms)))
        self.resolver.watch(pid)
        if ustack:
            self.resolver.user_texts(pid, ustack)
        if "file" in self.keys and (pid, comm) not in self._maps_read:
            # once per program a process runs: its maps name the files it faults on
            self._maps_read.add((pid, comm))
            if len(self._maps_read) > 4 * REPORT_LIMIT:
                self._maps_read.clear()
            self._learn_files(pid)

    def _learn_files(self, pid: int) -> None:
        """File names by (device, inode) from the process's map, read while it lives: the
        kernel side keys faults by inode, which has no name of its own."""
        try:
            with open(f"/proc/{pid}/maps") as f:
                lines = f.readlines()
        except OSError:
            return
        for line in lines:
            parts = line.split(maxsplit=5)
            if len(parts) < 6 or parts[4] == "0":
                continue
            major, minor = (int(x, 16) for x in parts[3].split(":"))
            dev = (major << 20) | minor  # the kernel's dev_t (MKDEV), as the BPF side reads
            self._files.setdefault((dev, int(parts[4])), parts[5].strip())
        if len(self._files) > 4 * REPORT_LIMIT:
            self._files.clear()

    def _events(self):
        """trace mode: the records in the events ring, as an array or a list of its rows."""
        ring = self.obj.map("events").ringbuf()
        # a bounded batch: its decoded columns and formatted lines are what a burst's peak
        # RSS is made of (a full 8 MiB ring in one batch: +20 MB); the rest stays in the
        # ring, whose poll is level-triggered: the next poll returns at once
        events = ring.consume_fixed(self._event_head(), max_records=EVENT_BATCH,
                                    record_size=self._event_size)
        return events if self.event_array else list(events)

    def _set_event_layout(self, ro, obj) -> None:
        """Trace mode streams engine_event's head, then this run's record (its largest
        tracepoint record, 8 bytes at least) and, for the ends of pairs, the begin's record
        right after it: event_size bytes a hit, not the struct's 864."""
        head = obj.member_offset("engine_event", "data")
        record = int.from_bytes(ro["record_size"], "little")
        rec = max(8, (record + 7) & ~7)
        begin = min(256, (record + 7) & ~7) if self.pairs else 0
        self._event_layout = (head, rec, begin)
        ro["begin_off"] = rec
        ro["event_size"] = head + rec + begin

    def _event_head(self):
        """The streamed event's dtype: engine_event's head fields, `data` (the record)
        and `begin_data` (an end's begin record) as long as this run streams them."""
        head = self._dtypes.get("event_head")
        if head is None:
            from memlens.core.lazy import np

            full = self._dtype("engine_event")
            hsize, rec, begin = self._event_layout
            names = [n for n in full.names if n not in ("data", "begin_data")]
            formats = [full.fields[n][0] for n in names]
            offsets = [full.fields[n][1] for n in names]
            names.append("data")
            formats.append((np.uint8, rec))
            offsets.append(hsize)
            if begin:  # the ends of pairs: their begin's record
                names.append("begin_data")
                formats.append((np.uint8, begin))
                offsets.append(hsize + rec)
            self._event_size = hsize + rec + begin
            head = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                             "itemsize": self._event_size})
            self._dtypes["event_head"] = head
        return head

    def _read_tick(self, budget_s: float | None = None) -> None:
        """Read the counts map into the report.  With a budget (a poll's tick), keys whose
        new counts would take longer to fold in (a new key's stack is symbolized: under
        process churn thousands a second) are left for the next tick: their counts wait in
        the kernel map, nothing is lost, and Ctrl-C is not kept waiting (it was 11-15 s
        under two shell loops of short commands).  A report's read has no budget."""
        from memlens.core.lazy import np

        self._tick += 1
        counts = self.obj.map("counts")
        # a new read epoch before reading: the values' slot of the epoch that ended holds
        # the longest end since the last read, and no end writes it any more
        if self.pairs:
            self._epoch += 1
            self.obj.map("read_epoch").update(b"\0\0\0\0", self._epoch.to_bytes(8, "little"))
        epoch = self._epoch - 1  # the epoch that ended (-1 without pairs: no max to read)
        keys, vals = counts.items(self._key_dtype, self._val_dtype)
        now = time.monotonic()
        if len(keys) > self.max_keys // 4:
            # stay fast a while: back at the slow pace the map would refill within a tick
            self._fast_until = now + 5.0
        crowded = now < getattr(self, "_fast_until", 0.0)
        self._next_tick = now + (FAST_TICK_S if crowded else TICK_S)
        prune_after = 1 if crowded else PRUNE_TICKS
        raw = np.ascontiguousarray(keys).view(np.uint8).reshape(len(keys), self._key_dtype.itemsize)
        stale = []
        deadline = None if budget_s is None else time.monotonic() + budget_s
        deferred = False
        for i in range(len(keys)):
            kb = raw[i].tobytes()
            now = self._value_tuple(vals[i])
            prev = self._prev.get(kb, (0, 0, 0, 0, 0))
            if deferred or (deadline is not None and now[0] > prev[0] and not i % 16
                            and time.monotonic() > deadline):
                # left for the next tick (its interval's max, if timed, is then lost)
                deferred = True
                self._deferred_reads += 1
                for part in ("ustack", "kstack"):  # its stacks are still wanted
                    h = int(keys[i][part])
                    if h:
                        self._stack_seen[h] = self._tick
                continue
            if now[0] > prev[0]:
                self._add(keys[i], *(a - b for a, b in zip(now, prev)),
                          max_ns=self._fresh_max(vals[i], epoch))
                self._prev[kb] = now
                self._idle[kb] = 0
            else:
                idle = self._idle.get(kb, 0) + 1
                self._idle[kb] = idle
                if idle >= prune_after:
                    stale.append((kb, keys[i]))
                    continue
            for part in ("ustack", "kstack"):
                h = int(keys[i][part])
                if h:
                    self._stack_seen[h] = self._tick
        for kb, key in stale:
            final = counts.lookup_and_delete(kb)
            prev = self._prev.pop(kb, (0, 0, 0, 0, 0))
            self._idle.pop(kb, None)
            if final is not None:
                v = np.frombuffer(final[: self._val_dtype.itemsize], self._val_dtype)[0]
                now = self._value_tuple(v)
                if now[0] > prev[0]:
                    self._add(key, *(a - b for a, b in zip(now, prev)),
                              max_ns=self._fresh_max(v, epoch))
        self._prune_stacks()
        self._forget_exited(complete=not deferred)
        self._end_of_read()
        if len(keys) >= TRIM_AFTER_KEYS:
            from memlens.core import heap

            heap.trim()  # a large read's freed memory back to the kernel (core/heap.py)

    def _end_of_read(self) -> None:
        resolver = getattr(self, "_resolver", None)  # (not made for it: a property)
        if resolver is not None:
            resolver.end_of_read()

    def _prune_stacks(self) -> None:
        old = [h for h, t in self._stack_seen.items() if self._tick - t >= PRUNE_TICKS + 1]
        if not old:
            return
        stacks = self.obj.map("stacks")
        for h in old:
            del self._stack_seen[h]
            stacks.delete(int(h).to_bytes(8, "little"))

    @staticmethod
    def _fresh_max(v, epoch: int) -> int:
        """The longest end of read epoch `epoch` (0 when the value had none then)."""
        if epoch < 0:
            return 0
        odd = "_odd" if epoch & 1 else ""
        return int(v["max_ns" + odd]) if int(v["max_epoch" + odd]) == epoch else 0

    @staticmethod
    def _value_tuple(v) -> tuple[int, int, int, int, int]:
        """The cumulative parts of a value: (count, sum, sum2, time_ns, timed)."""
        return (int(v["count"]), int(v["sum"]), int(v["sum2"]), int(v["time_ns"]),
                int(v["timed"]))

    def _add(self, key, count: int, total: int, total2: int = 0, time_ns: int = 0,
             timed: int = 0, max_ns: int = 0) -> None:
        """Fold one kernel key into the report accumulator, by the parts the user chose
        (a user stack is keyed by process in the kernel, merged here when -P is off)."""
        pid = int(key["tgid"])
        parts: list = []
        for k in self.keys:
            if k == "pid":
                parts.append(pid)
            elif k == "tid":
                parts.append(int(key["tid"]))
            elif k == "comm":
                parts.append(bytes(key["comm"]).split(b"\0", 1)[0])
            elif k == "cgroup":
                parts.append(int(key["cgroup"]))
            elif k == "ustack":
                h = int(key["ustack"])
                # the text, keeping its frame (address, mapping) for --pprof
                parts.append(self.resolver.user_texts(pid, h if h else -1))
            elif k == "kstack":
                # no kernel stack: the event happened in user mode (a perf event at a user
                # page fault) — nothing to show, and nothing was lost
                h = int(key["kstack"])
                parts.append(self.resolver.kernel_texts(h) if h else ())
            elif k == "probe":
                parts.append(int(key["probe"]))
            elif k == "field":
                parts.append(bytes(key["str"]).split(b"\0", 1)[0].decode(errors="replace")
                             if self.str_key else int(key["field"]))
            elif k == "file":
                parts.append((int(key["file_dev"]), int(key["file_ino"])))
            elif k == "vma":
                parts.append(int(key["vma"]))
            elif k == "field2":
                parts.append(int(key["field2"]))
        tkey = tuple(parts)
        slot = self._acc.get(tkey)
        if slot is None:
            if len(self._acc) >= REPORT_LIMIT:
                _, (oc, *_rest) = self._acc.popitem(last=False)  # least recently counted
                self._pruned_report_keys += 1
                self._pruned_report_events += oc
            self._acc[tkey] = [count, total, total2, time_ns, max_ns, timed]
        else:
            slot[0] += count
            slot[1] += total
            slot[2] += total2
            slot[3] += time_ns
            slot[4] = max(slot[4], max_ns)
            slot[5] += timed
            self._acc.move_to_end(tkey)

    def collect(self) -> list[Entry]:
        """Counts since the last collect (the map is read first), largest last."""
        self._read_tick()
        out = []
        for tkey, (count, total, total2, time_ns, max_ns, timed) in self._acc.items():
            parts = dict(zip(self.keys, tkey))
            self._decode_parts(parts)
            out.append(Entry(parts, count, total, total2, time_ns, max_ns, timed))
        self._acc.clear()
        out.sort(key=lambda e: (e.count, str(e.parts)))
        return out

    def decode_event(self, ev) -> dict[str, Any]:
        """One trace-mode record as a plain dict: who, which probe, the tracepoint's fields
        decoded from its format, and for the end of a latency pair the time since its begin
        and the begin's fields (a syscall's arguments at its exit, say)."""
        from memlens.core import tpformat
        from memlens.output.table import comm_str

        n = int(ev["probe"])
        probe = self.probe_by_id.get(n)
        rec: dict[str, Any] = {"ts_ns": int(ev["ts_ns"]), "pid": int(ev["tgid"]),
                               "tid": int(ev["tid"]), "comm": comm_str(bytes(ev["comm"])),
                               "cpu": int(ev["cpu"]), "uid": int(ev["uid"]),
                               "cgroup_id": int(ev["cgroup"]),
                               "probe": probe.text if probe else f"probe#{n}"}
        fmt = self.formats.get(n)
        if fmt is not None and int(ev["size"]):
            rec["fields"] = tpformat.decode(fmt, bytes(ev["data"][:int(ev["size"])]))
        latency = int(ev["latency_ns"])
        if latency:
            rec["latency_ns"] = latency
            if self.adds:
                rec["added"] = {"count": int(ev["add_count"]), "sum": int(ev["add_sum"]),
                                "sum2": int(ev["add_sum2"])}
            begin = self._begin_of.get(n)
            bfmt = self.formats.get(begin) if begin is not None else None
            size = int(ev["begin_size"])
            if bfmt is not None and size:
                rec["begin_fields"] = tpformat.decode(bfmt, bytes(ev["begin_data"][:size]))
        return rec

    def histograms(self) -> dict[str, list[int]]:
        """Latency histograms since the last call, {end probe: log2 buckets in hist_unit}
        (the map is drained: lookup-and-delete, no sample lost between read and reset)."""
        from memlens.core.lazy import np

        if not self.hist:
            return {}
        kd = self.obj.struct_dtype("engine_hist_key")
        keys, vals = self.obj.map("hists").drain(kd, "<u8")
        out: dict[str, list[int]] = {}
        for k, v in zip(keys, np.asarray(vals).tolist()):
            text = self.probe_by_id[int(k["probe"])].text
            buckets = out.setdefault(text, [0] * 64)
            buckets[int(k["slot"])] += int(v)
        return out

    def _decode_parts(self, parts: dict[str, Any]) -> None:
        from memlens.output.table import comm_str

        if "comm" in parts:
            parts["comm"] = comm_str(parts["comm"])
        if "probe" in parts:
            p = self.probe_by_id.get(parts["probe"])
            parts["probe"] = p.text if p else f"probe#{parts['probe']}"
        if "ustack" in parts:
            parts["ustack"] = list(parts["ustack"])
        if "kstack" in parts:
            parts["kstack"] = list(parts["kstack"])
        if "cgroup" in parts:
            parts["cgroup"] = self.cgroup_path(parts["cgroup"])
        if "file" in parts:
            parts["file"] = self.file_name(*parts["file"])
        if "vma" in parts:
            parts["vma"] = VMA_NAMES.get(parts["vma"], "?")

    def file_name(self, dev: int, ino: int) -> str:
        """A file's path as its processes mapped it; an inode no live process showed us is
        named by device and inode (anonymous mappings have none: "[anon]")."""
        if dev == 0xFFFFFFFF:
            return "[unresolved: mmap lock busy]"
        if dev == 0 and ino == 0:
            return "[anon]"
        name = self._files.get((dev, ino))
        if name is None:
            # overlayfs (container images): the kernel side reads the mapping's real file,
            # on the layer's device, while /proc/PID/maps shows the overlay's device with
            # the same inode number; one mapped file with that inode is that file
            paths = {path for (_d, i), path in self._files.items() if i == ino}
            name = paths.pop() if len(paths) == 1 else None
        return name or f"[dev {dev >> 20}:{dev & 0xFFFFF} ino {ino}]"

    def cgroup_path(self, cg_id: int) -> str:
        if cg_id not in self._cgroup_paths:
            from memlens.core import kernel

            self._cgroup_paths[cg_id] = kernel.cgroup_path_of_id(cg_id) or f"cgroup#{cg_id}"
        return self._cgroup_paths[cg_id]

    def drop_unread(self) -> int:
        """Trace mode, at the end: the records still in the events ring are released
        unread and counted lost (the runner's drain after a stop is bounded in time: a
        flood that outlasts it must not end silently).  How many there were."""
        if not self.trace or self.obj is None:
            return 0
        n = self.obj.map("events").ringbuf().discard_all()
        self.losses.count("events", "still in the ring when the read after the stop ended "
                          "(it is bounded in time)", n)
        return n

    def lost(self) -> list[dict]:
        """Losses since the last call as "lost" records: the kernel's drops, and report keys
        pruned here when more distinct keys arrived between two reports than REPORT_LIMIT."""
        out = self.losses.new()
        if self.resolver is not None:  # stacks left as bare addresses (process gone, ...)
            out.extend(self.resolver.new_losses())
        if self._pruned_report_keys:
            out.append({"type": "lost", "what": "report_keys",
                        "reason": f"more than {REPORT_LIMIT} keys between reports: the least "
                                  "recently counted were dropped",
                        "count": self._pruned_report_keys,
                        "events": self._pruned_report_events})
            self._pruned_report_keys = self._pruned_report_events = 0
        return out

    def total_lost(self) -> dict[str, int]:
        out = self.losses.totals()
        if self.resolver is not None and self.resolver.lost_symbols:
            out["symbols"] = self.resolver.lost_symbols
        return out

    def _stop_warmup(self) -> None:
        if self._warmup is not None:
            self._warmup.stop()  # (its links closed meanwhile; waited for at close)

    def close(self) -> None:
        if self._warmup is not None:
            self._warmup.finish()
            self._warmup = None
        if getattr(self, "_ep", None) is not None:
            self._ep.close()
            self._ep = None
        if self.unwind is not None:
            self.unwind.close()
            self.unwind = None
        if self.obj is not None:
            self.obj.close()
            self.obj = None
        if self._hand_over is not None:
            self._hand_over.close()
            self._hand_over = None
