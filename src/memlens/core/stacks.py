# SPDX-License-Identifier: GPL-2.0-only
"""Stack frames as every memlens tool prints them.

A `Frame` is what the symbolizers (memlens.core.symbols) return for one address.  Its text
form follows BCC's stack output so users can diff our stacks against theirs:

    malloc+0x1a [libc.so.6]       resolved user frame
    do_anonymous_page+0x1d        kernel frame (no module for vmlinux)
    kmem_cache_alloc+0x40 [xfs]   kernel module frame
    libfoo.so+0x1a2b              inside a mapped file that has no symbol there: its
                                  offset in the file (with the file's build id in
                                  `mapping`, a pprof profile can be symbolized later)
    [unknown] [libfoo.so]         the same where the offset is not known
    0x7f3a2c001234 [unknown]      not inside any file we can read
"""
from __future__ import annotations

from _weakref import ref as _ref  # weakref.ref itself (weakref's import: ~2 ms)
from collections import namedtuple

# collections.namedtuple bases, not typing.NamedTuple: typing's class building compiles
# each field's annotation (~5 ms of every stack tool's start, with typing's own import);
# the field types are in the comments
#   path: str, start: int, end: int, pgoff: int (file offset of `start`),
#   build_id: bytes | None
_MapInfo = namedtuple("MapInfo", "path start end pgoff build_id", defaults=(None,))
#   addr: int                 runtime address as recorded (for return addresses: the IP)
#   symbol: str | None        function name (demangled when C++), None if unresolved
#   offset: int               addr - symbol start (0 when unresolved)
#   module: str | None        basename of the mapped file / kernel module, None = vmlinux
#   approx: bool              the symbol had no size (size 0 in the ELF table, or any
#                             kallsyms symbol): we accepted the address because it lies
#                             before the next symbol, which is a guess, not a proof
#   source: str | None        "file.c:12" when line info was asked for and found
#   file_offset: int | None   addr's offset in its mapped file (user frames)
#   mapping: MapInfo | None   the mapping it lies in (user frames)
_Frame = namedtuple("Frame", "addr symbol offset module approx source file_offset mapping",
                    defaults=(False, None, None, None))


class MapInfo(_MapInfo):
    """The mapping a user frame lies in, as /proc/PID/maps showed it when the process was
    read (what pprof's Mapping carries: symbolization later, anywhere, by build id)."""

    __slots__ = ()
    path: str
    start: int
    end: int
    pgoff: int
    build_id: bytes | None


class Frame(_Frame):
    """One address as the symbolizers return it (fields above)."""

    __slots__ = ()
    addr: int
    symbol: str | None
    offset: int
    module: str | None
    approx: bool
    source: str | None
    file_offset: int | None
    mapping: MapInfo | None

    @property
    def resolved(self) -> bool:
        return self.symbol is not None

    def __str__(self) -> str:
        if self.symbol is None:
            if self.module and self.file_offset is not None:
                text = f"{self.module}+{self.file_offset:#x}"
            elif self.module:
                text = f"[unknown] [{self.module}]"
            else:
                text = f"{self.addr:#x} [unknown]"
        else:
            text = f"{self.symbol}+{self.offset:#x}"
            if self.module:
                text += f" [{self.module}]"
        if self.source:
            text += f" ({self.source})"
        return text

    @property
    def name(self) -> str:
        """Short label for folded stacks / flame graphs: the symbol, else `[module]`/`[unknown]`."""
        if self.symbol is not None:
            return self.symbol
        # one box per file in a flame graph, not one per address in it
        return f"[{self.module}]" if self.module else "[unknown]"


class FrameText(str):
    """A frame as printed, still holding the frame (`frame`: its address and mapping).
    Reports carry stacks as these: every output takes them as the plain text, and
    --pprof reads the frame behind it (one pprof writer: output/pprof.py).
    Slots, not a dict (a str subclass may have them: its text is held apart): a dict was
    ~300 B of each frame's ~450 B here; __weakref__ for SharedTexts."""

    __slots__ = ("frame", "__weakref__")


def frame_text(frame: object) -> FrameText:
    t = FrameText(str(frame))
    t.frame = frame
    return t


class SharedTexts:
    """One FrameText per frame as printed, shared by every stack that holds it.

    A FrameText and its Frame are ~450 B (~680 B when FrameText had a dict), and under
    process churn the same few thousand frames (libc's, ld.so's, the kernel's fault path)
    come back in every new process's stacks: faults held ~575k of them for ~1.6k distinct
    texts (~330 MB).
    Frames of the same text are the same code: the same symbol and offset, or file offset,
    in the same file (its path and build id are compared: two files of one basename stay
    apart), or the same bare address.  The FrameText kept is the first one met; its frame's
    address and mapping are that process's (what --pprof reads: the same file offset).

    Held weakly: a text lives as long as some stack (a cache, a report) holds it; dead
    entries are swept when the table has doubled since the last sweep."""

    def __init__(self):
        self._refs: dict = {}  # text, or (text, path, build id) -> weak ref to its FrameText
        self._sweep_at = 4096

    def __len__(self) -> int:
        return len(self._refs)

    def text(self, frame: object) -> FrameText:
        s = str(frame)
        r = self._refs.get(s)
        t = r() if r is not None else None
        m = getattr(frame, "mapping", None)
        if t is not None:
            tm = getattr(t.frame, "mapping", None)
            if tm is m or (tm is not None and m is not None and tm.path == m.path
                           and tm.build_id == m.build_id):
                return t
            key: object = (s, m.path, m.build_id) if m is not None else (s, None, None)
            r = self._refs.get(key)
            t = r() if r is not None else None
            if t is not None:
                return t
        else:
            key = s
        t = FrameText(s)
        t.frame = frame
        if len(self._refs) >= self._sweep_at:
            self._sweep()
        self._refs[key] = _ref(t)
        return t

    def _sweep(self) -> None:
        self._refs = {k: r for k, r in self._refs.items() if r() is not None}
        self._sweep_at = max(4096, 2 * len(self._refs))

