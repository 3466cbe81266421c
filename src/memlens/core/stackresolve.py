# SPDX-License-Identifier: GPL-2.0-only
"""From BPF stack ids to printed frames, shared by every tool that records stacks.

- User stacks need the process's memory map: `watch(pid)` snapshots /proc/PID/maps the first
  time a PID is seen (tools call it while polling), so a process that exits before the
  report still gets symbols.  A failed lookup refreshes the snapshot once (dlopen, exec).
- A negative stack id (the kernel could not walk or store the stack) becomes the explicit
  frame `[missed user stack]` / `[missed kernel stack]`: never silently dropped.
- Resolved stacks are cached per (pid, stack id) as report text: reports repeat every
  interval.  A stack is kept as a tuple of FrameText (core/stacks.py), each shared by every
  stack that prints the same frame (SharedTexts): under process churn each new process
  brings back the same frames, and a cached stack costs a pointer a frame, not a Frame
  and a FrameText (~600 B) a frame.  user_frames/kernel_frames give the frames behind them.
- A user stack with frames printed as bare addresses (`0x... [unknown]`: in no mapping
  known for the process) is counted.  Mostly its process was gone before its memory map
  could be read, or read in full (a snapshot from before the exec or before libc was
  mapped, or of a zombie): `unsymbolized`; else the process lives but the addresses are
  in none of its mappings (it exec'd since, JIT code without a perf map): `unmapped`.
  `new_losses()` gives them as "lost" records of what "symbols", like every other loss
  (DESIGN §3); the engine reports them with its other losses.
- `mappings` (set by a tool that unwinds with the tables: core/unwind/store.py's
  UnwindStore.mappings) gives the file mappings the kernel side met in a process's stacks:
  frames the process's map cannot place (it was gone, or read before its exec) are resolved
  by file through them.  Short commands keep their names so.
"""
from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable

from memlens.core.stacks import Frame, SharedTexts

MISSED_USER = "[missed user stack]"
MISSED_KERNEL = "[missed kernel stack]"
TRUNCATED = "[truncated stack]"
# the last "address" of a user stack the unwinder could not finish (memlens_common.h
# MEMLENS_STACK_TRUNCATED): printed as the marker frame TRUNCATED
TRUNCATED_IP = 0xFFFFFFFFFFFFFFFE
# frames the cache holds at most (engine.FRAME_CACHE bounds its stacks): 20000 stacks of
# ~20 frames.  A pointer each when frames repeat (SharedTexts); when they do not (JIT code
# without a perf map: each address its own text) ~450 B each, 180 MB at the bound (each
# stack its own Frame and FrameText made 20000 stacks of 127 frames 1.7 GB)
MAX_FRAMES = 400_000


TYPE_CHECKING = False  # typing costs ~4 ms of every stack tool's start: annotations only
if TYPE_CHECKING:
    from typing import Union


class MarkerFrame(namedtuple("MarkerFrame", "text addr symbol offset module",
                             defaults=(0, None, 0, None))):
    """A frame standing for something that is not an address (a missed stack).
    (collections.namedtuple, not typing.NamedTuple: see core/stacks.py)"""

    __slots__ = ()
    text: str
    addr: int
    symbol: str | None
    offset: int
    module: str | None

    def __str__(self) -> str:
        return self.text

    @property
    def name(self) -> str:
        return self.text

    @property
    def resolved(self) -> bool:
        return False


if TYPE_CHECKING:
    AnyFrame = Union[Frame, MarkerFrame]


class StackResolver:
    def __init__(self, stack_map=None, max_processes: int = 4096, max_cache: int = 50000,
                 max_frames: int = MAX_FRAMES):
        self.stack_map = stack_map
        self._procs: dict[int, object] = {}
        self._gone: set[int] = set()
        # the cache: each stack resolved, as report text (stacks.FrameText), one tuple per
        # stack that every report key holding it shares (under churn a report's thousands of
        # keys share a few hundred kernel stacks), its frames shared with every other stack
        # printing them (self._shared)
        self._texts: dict[tuple[int, int, bool], tuple] = {}
        self._cached_of: dict[int, set[tuple[int, int, bool]]] = {}  # pid -> its user stacks
        self._stripped: dict[int, tuple] = {}  # kernel stack id -> texts, tracing frames off
        # the frames as lists, for user_frames/kernel_frames' callers (trace mode), made at
        # their first call (the counting tools read texts only)
        self._frames: dict[tuple[int, int, bool], list] = {}
        self._shared = SharedTexts()
        self._missed_user = (self._shared.text(MarkerFrame(MISSED_USER)),)
        self._missed_kernel = (self._shared.text(MarkerFrame(MISSED_KERNEL)),)
        self._refreshed: set[int] = set()
        self._max = max_processes
        # a long run keeps memory bounded (oldest dropped): by stacks, and by the frames
        # they hold (what the memory follows: a stack is 1 to 127 frames)
        self._max_cache = max_cache
        self._max_frames = max_frames
        self._held = 0  # frames in self._texts
        self._ksyms = None
        self.unsymbolized = 0        # user stacks printed as bare addresses: process gone
        self.unmapped = 0            # ... process alive, addresses in none of its mappings
        self._reported = (0, 0)
        self.mappings: Callable[[int], list] | None = None  # pid -> mappings kept of it
        # symbolizers over those kept mappings, by pid (and how many mappings each was
        # made of: the unwinder learns more): one per process, not one per stack (under
        # churn a new one per stack was half of a report's time)
        self._kept: dict[int, tuple[int, object]] = {}

    def watch(self, pid: int) -> None:
        """Snapshot the memory map of `pid` if not done yet (cheap when already known)."""
        if pid in self._procs or pid in self._gone or pid <= 0:
            return
        from memlens.core.symbols import ProcessSymbolizer

        if len(self._procs) >= self._max:  # bound memory on PID churn
            self._procs.pop(next(iter(self._procs)))
        try:
            self._procs[pid] = ProcessSymbolizer(pid)
        except (ProcessLookupError, PermissionError, OSError):
            if len(self._gone) >= self._max:
                self._gone.clear()
            self._gone.add(pid)

    def forget(self, pid: int, keep_frames: bool = False) -> None:
        """Drop what is known of `pid` (after an exec: a new program under the same PID);
        the next watch() takes a fresh snapshot.  keep_frames: stacks already resolved
        stay (they were resolved against the program that made them)."""
        self._procs.pop(pid, None)
        self._kept.pop(pid, None)
        self._gone.discard(pid)
        self._refreshed.discard(pid)
        if keep_frames:
            return
        for key in self._cached_of.pop(pid, ()):
            self._held -= len(self._texts.pop(key, ()))
            self._frames.pop(key, None)

    def end_of_read(self) -> None:
        """A read's stacks are resolved: the symbolizers' frames kept by address (shared
        by that read's stacks: a burst of new stacks resolved ~2x faster) go, as the
        stacks keep their own.  Kept, they held ~13 MB more of faults under churn."""
        for sym in self._procs.values():
            sym.forget_frames()  # type: ignore[attr-defined]
        for _, sym in self._kept.values():
            sym.forget_frames()  # type: ignore[attr-defined]

    def pids(self) -> set[int]:
        """The processes something is kept of (a symbolizer, resolved user stacks)."""
        return {*self._procs, *self._kept, *self._cached_of}

    def user_frames(self, pid: int, stack_id: int) -> list[AnyFrame]:
        """The frames of a user stack (those behind user_texts: a frame printed the same
        in another process's stack may be that process's, with its address)."""
        if stack_id < 0:
            return [MarkerFrame(MISSED_USER)]
        key = (pid, stack_id, True)
        frames = self._frames.get(key)
        if frames is None:
            frames = [t.frame for t in self.user_texts(pid, stack_id)]
            if key in self._texts:  # kept as long as its texts are
                self._frames[key] = frames
        return frames

    def user_texts(self, pid: int, stack_id: int) -> tuple:
        """A user stack as report text (stacks.FrameText), the same tuple for every key
        holding the stack."""
        if stack_id < 0:
            return self._missed_user
        key = (pid, stack_id, True)
        texts = self._texts.get(key)
        if texts is None:
            ips = self.stack_map.stack(stack_id) if self.stack_map is not None else []
            ips, truncated = split_truncated(ips)
            frames = self.resolve_user(pid, ips) if ips else [MarkerFrame(MISSED_USER)]
            if truncated:
                frames = [*frames, MarkerFrame(TRUNCATED)]
            texts = self._remember(key, frames)
        return texts

    def resolve_user(self, pid: int, ips: list[int]) -> list[AnyFrame]:
        self.watch(pid)
        sym = self._procs.get(pid)
        if sym is None:
            frames = self._by_file(pid, ips, None)
            if frames is None:
                # gone (or never readable) before its map was read: addresses only, counted
                self.unsymbolized += 1
                return [Frame(ip, None, 0, None) for ip in ips]
        else:
            frames = sym.resolve_stack(ips)  # type: ignore[attr-defined]
            if unplaced(frames) and pid not in self._refreshed:
                # an address outside every known mapping: the map changed since the snapshot
                self._refreshed.add(pid)
                try:
                    sym.refresh()  # type: ignore[attr-defined]
                    frames = sym.resolve_stack(ips)  # type: ignore[attr-defined]
                except ProcessLookupError:
                    pass
            if unplaced(frames):
                frames = self._by_file(pid, ips, frames) or frames
        if unplaced(frames):
            if _alive(pid):
                self.unmapped += 1
            else:
                # the snapshot was taken too early (before the exec, before libc was
                # mapped) or of a zombie (empty map), and the process is gone now
                self.unsymbolized += 1
        return frames

    def _by_file(self, pid: int, ips: list[int], frames: list | None) -> list | None:
        """`frames` with those no mapping of the process's map placed resolved through the
        mappings the unwinder kept of it (None: it kept none)."""
        maps = self.mappings(pid) if self.mappings is not None else None
        if not maps:
            return None
        kept = self._kept.get(pid)
        if kept is None or kept[0] != len(maps):
            from memlens.core.symbols import ProcessSymbolizer

            if len(self._kept) >= self._max:  # bound memory on PID churn
                self._kept.pop(next(iter(self._kept)))
            kept = self._kept[pid] = (len(maps), ProcessSymbolizer.from_maps(pid, maps))
        alt = kept[1].resolve_stack(ips)  # type: ignore[attr-defined]
        if frames is None:
            return alt
        return [a if (not f.resolved and f.module is None) else f
                for f, a in zip(frames, alt)]

    def kernel_texts(self, stack_id: int) -> tuple:
        """kernel_frames without the tracing machinery's frames, as report text, the same
        tuple for every key holding the stack."""
        if stack_id < 0:
            return self._missed_kernel
        texts = self._stripped.get(stack_id)
        if texts is None:
            whole = self._kernel(stack_id)
            texts = whole[tracing_depth([t.frame for t in whole]):]
            if (0, stack_id, False) in self._texts:
                self._stripped[stack_id] = texts
        return texts

    def kernel_frames(self, stack_id: int) -> list[AnyFrame]:
        if stack_id < 0:
            return [MarkerFrame(MISSED_KERNEL)]
        key = (0, stack_id, False)
        frames = self._frames.get(key)
        if frames is None:
            frames = [t.frame for t in self._kernel(stack_id)]
            if key in self._texts:
                self._frames[key] = frames
        return frames

    def _kernel(self, stack_id: int) -> tuple:
        """A kernel stack as report text, the tracing machinery's frames included."""
        key = (0, stack_id, False)
        texts = self._texts.get(key)
        if texts is None:
            ips = self.stack_map.stack(stack_id) if self.stack_map is not None else []
            if not ips:
                frames: list[AnyFrame] = [MarkerFrame(MISSED_KERNEL)]
            else:
                if self._ksyms is None:
                    from memlens.core.symbols import KernelSymbolizer

                    self._ksyms = KernelSymbolizer.get()
                frames = self._ksyms.resolve_stack(ips)  # type: ignore[attr-defined]
            texts = self._remember(key, frames)
        return texts

    def _remember(self, key: tuple[int, int, bool], frames: list[AnyFrame]) -> tuple:
        """Cache a stack's frames as text (shared texts); the oldest stack goes past the
        bound (a long run keeps memory bounded)."""
        while self._texts and (len(self._texts) >= self._max_cache
                               or self._held + len(frames) > self._max_frames):
            old = next(iter(self._texts))
            self._held -= len(self._texts.pop(old))
            self._frames.pop(old, None)
            if old[2]:
                self._cached_of.get(old[0], set()).discard(old)
            else:
                self._stripped.pop(old[1], None)
        text = self._shared.text
        texts = self._texts[key] = tuple([text(f) for f in frames])
        self._held += len(texts)
        if key[2]:  # a user stack: forget(pid) drops it with its process
            self._cached_of.setdefault(key[0], set()).add(key)
        return texts

    def forget_stacks(self) -> None:
        """Drop cached stacks (after the stack map was cleared: ids get reused)."""
        self._texts.clear()
        self._cached_of.clear()
        self._stripped.clear()
        self._frames.clear()
        self._held = 0

    def new_losses(self) -> list[dict]:
        """Stacks left unsymbolized since the last call, as "lost" records (the counts are
        taken once, whoever asks: the engine or the tool)."""
        out = []
        for total, seen, reason in zip((self.unsymbolized, self.unmapped), self._reported,
                                       (LOST_SYMBOLS_GONE, LOST_SYMBOLS_UNMAPPED)):
            if total > seen:
                out.append({"type": "lost", "what": LOST_SYMBOLS_WHAT, "reason": reason,
                            "count": total - seen, "total": total})
        self._reported = (self.unsymbolized, self.unmapped)
        return out

    @property
    def lost_symbols(self) -> int:
        return self.unsymbolized + self.unmapped


def split_truncated(ips: list[int]) -> tuple[list[int], bool]:
    """A user stack's addresses without the unwinder's truncation mark, and whether it
    had one (a frame it could not follow, or deeper than MEMLENS_STACK_DEPTH)."""
    if ips and ips[-1] == TRUNCATED_IP:
        return list(ips[:-1]), True
    return list(ips), False


def unplaced(frames: list) -> bool:
    """Some frame is in no mapping known for its process (printed `0x... [unknown]`)."""
    return any(not f.resolved and f.module is None for f in frames)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


# What a stack left as bare addresses is reported as ("lost" records, DESIGN §3)
LOST_SYMBOLS_WHAT = "symbols"
LOST_SYMBOLS_GONE = "process gone before its symbols were read"
LOST_SYMBOLS_UNMAPPED = "addresses in none of the process's mappings (exec'd since, or JIT)"


# Frames of the tracing machinery itself, on top of kernel stacks taken from a BPF program
# (one list for every tool): the user wants the stack that reached the event.
TRACING_FRAME_PREFIXES = ("bpf_", "__bpf_", "__traceiter_", "__probestub_", "trace_call_bpf",
                          "perf_trace_", "perf_tp_event", "perf_syscall_", "perf_swevent_",
                          "perf_event_",
                          "___perf_sw_event", "__perf_sw_event", "__perf_event_overflow",
                          "trace_event_raw_event_", "kprobe_", "uprobe_", "ftrace_",
                          "__do_trace_")


def strip_tracing_frames(frames: list) -> list:
    out = list(frames)
    return out[tracing_depth(out):]


def tracing_depth(frames: list) -> int:
    """How many frames on top of a kernel stack are the tracing machinery's (the last
    frame is always kept)."""
    n = 0
    while n < len(frames) - 1 and (getattr(frames[n], "symbol", None) or "").startswith(
            TRACING_FRAME_PREFIXES):
        n += 1
    return n
