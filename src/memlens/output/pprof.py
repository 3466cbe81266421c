# SPDX-License-Identifier: GPL-2.0-only
"""pprof profiles (`--pprof`): a gzip-compressed `profile.proto` Profile, written by hand.

No PyPI package writes pprof without dragging in a profiler, and the wire format needs only
varints and length-delimited fields, so the encoder is here.  Field numbers follow
google/pprof proto/profile.proto.  Heap profiles follow Go's runtime/pprof conventions
(protomem.go) so that `go tool pprof`, Pyroscope and Parca read them as memory profiles.

A frame the symbolizer named becomes a Location with one Line and its Function.  A user
frame carries its mapping (core/stacks.MapInfo: file, build id, start, limit, file offset,
as /proc/PID/maps showed it) and its address, so a frame left unnamed (a stripped binary
without its debug file here) is a Location with an address and no Line, in a Mapping
without has_functions: `pprof` symbolizes it later, where the binary or its debug file is
(by build id: PPROF_BINARY_PATH, $HOME/pprof/binaries/<build-id>/).  Mappings whose frames
are all named carry has_functions, so pprof leaves them as they are.
"""
from __future__ import annotations

import gzip
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

from memlens.output.files import OutputFile, write_file_atomic

HEAP_SAMPLE_TYPES = (("alloc_objects", "count"), ("alloc_space", "bytes"),
                     ("inuse_objects", "count"), ("inuse_space", "bytes"))

LabelValue = Union[int, str]
Labels = Mapping[str, LabelValue]

# "sym+0x12 [module]" as BCC and our symbolizer print a frame
_FRAME = re.compile(r"^(?P<sym>.+?)(?:\+0x[0-9a-fA-F]+)? \[(?P<module>[^\]]*)\]$")
_SOURCE = re.compile(r"^(?P<file>.+):(?P<line>\d+)$")  # Frame.source, e.g. "leak.c:12"


# --- protobuf wire format -------------------------------------------------------------

def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 is sent as its 64-bit two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _Message:
    """Fields appended in order; proto3 zero values are omitted like any encoder does."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def num(self, field: int, value: int) -> _Message:
        if value:
            self.buf += _varint(field << 3) + _varint(value)
        return self

    def raw(self, field: int, value: bytes, keep_empty: bool = False) -> _Message:
        if value or keep_empty:
            self.buf += _varint(field << 3 | 2) + _varint(len(value)) + value
        return self

    def sub(self, field: int, msg: _Message) -> _Message:
        return self.raw(field, bytes(msg.buf), keep_empty=True)

    def packed(self, field: int, values: Iterable[int]) -> _Message:
        return self.raw(field, b"".join(_varint(v) for v in values))


# --- the profile model ----------------------------------------------------------------

class _Builder:
    """Interns strings, functions, mappings and locations; ids start at 1 (0 means none)."""

    def __init__(self) -> None:
        self.strings: dict[str, int] = {"": 0}
        self.functions: dict[tuple[int, int], int] = {}  # (name, file) string ids -> id
        # (file, build id, start) -> [id, start, limit, file offset, all frames named]
        self.mappings: dict[tuple[str, str, int], list[int]] = {}
        # key -> (id, mapping id, address, function id, line)
        self.locations: dict[tuple[Any, ...], tuple[int, int, int, int, int]] = {}

    def string(self, s: str) -> int:
        return self.strings.setdefault(s, len(self.strings))

    def function(self, name: str, filename: str) -> int:
        key = (self.string(name), self.string(filename))
        return self.functions.setdefault(key, len(self.functions) + 1)

    def mapping(self, module: str, build_id: str, addr: int, named: bool = True,
                info: Any = None) -> int:
        """The Mapping of a frame: the process's real one (`info`: path, start, end, pgoff)
        where the symbolizer gave it, else one per module spanning the addresses seen."""
        if info is not None:
            key = (str(info.path), build_id, int(info.start))
            entry = self.mappings.get(key)
            if entry is None:
                entry = self.mappings[key] = [len(self.mappings) + 1, int(info.start),
                                              int(info.end), int(info.pgoff), 1]
        else:
            entry = self.mappings.get((module, build_id, 0))
            if entry is None:
                entry = self.mappings[(module, build_id, 0)] = [len(self.mappings) + 1,
                                                                addr, addr, 0, 1]
            if addr:
                entry[1] = min(entry[1], addr) if entry[1] else addr
                entry[2] = max(entry[2], addr + 1)
        if not named:
            entry[4] = 0  # pprof symbolizes this mapping's unnamed addresses itself
        return entry[0]

    def location(self, frame: Any) -> int:
        """Location id of a frame: a string, or an object with addr/symbol/offset/module."""
        if isinstance(frame, str):
            key: tuple[Any, ...] = ("s", frame)
            m = _FRAME.match(frame)
            name, module = (m["sym"], m["module"]) if m else (frame, "")
            build_id, addr, source, info, named = "", 0, "", None, True
        else:
            addr = int(getattr(frame, "addr", 0) or 0)
            module = str(getattr(frame, "module", "") or "")
            info = getattr(frame, "mapping", None)
            build_id = getattr(frame, "build_id", None) or \
                (getattr(info, "build_id", None) if info is not None else None) or ""
            if isinstance(build_id, (bytes, bytearray)):
                build_id = bytes(build_id).hex()
            symbol = getattr(frame, "symbol", None)
            # an unnamed frame with its mapping and address: left for pprof to symbolize
            named = symbol is not None or info is None or not addr
            name = symbol or str(frame)
            source = getattr(frame, "source", None) or ""  # "file.c:12" from line info
            key = ("a", addr, module) if addr else ("s", str(frame))
        loc = self.locations.get(key)
        if loc is None:
            m = _SOURCE.match(source)
            filename, line = (m["file"], int(m["line"])) if m else (source, 0)
            mapping_id = self.mapping(module, build_id, addr, named, info) \
                if module or info is not None else 0
            loc = (len(self.locations) + 1, mapping_id, addr,
                   self.function(name, filename) if named else 0, line)
            self.locations[key] = loc
        return loc[0]

    def encode(self, sample_types: Sequence[tuple[str, str]],
               samples: Iterable[tuple[Sequence[Any], Sequence[int], Labels]],
               period_type: tuple[str, str], period: int, comments: Iterable[str],
               default_sample_type: str, time_ns: int, duration_ns: int) -> bytes:
        profile = _Message()
        for typ, unit in sample_types:
            profile.sub(1, _Message().num(1, self.string(typ)).num(2, self.string(unit)))
        for frames, values, labels in samples:
            if len(values) != len(sample_types):
                raise ValueError(f"sample has {len(values)} values for "
                                 f"{len(sample_types)} sample types")
            sample = _Message()
            sample.packed(1, [self.location(f) for f in frames])
            sample.packed(2, [int(v) for v in values])
            for key, value in labels.items():
                label = _Message().num(1, self.string(key))
                if isinstance(value, str):
                    label.num(2, self.string(value))
                else:
                    label.num(3, int(value))
                sample.sub(3, label)
            profile.sub(2, sample)
        for (module, build_id, _), (mid, start, limit, offset, named) in \
                self.mappings.items():
            profile.sub(3, _Message().num(1, mid).num(2, start).num(3, limit).num(4, offset)
                            .num(5, self.string(module)).num(6, self.string(build_id))
                            .num(7, named))
        for loc_id, mapping_id, addr, function_id, line in self.locations.values():
            loc = _Message().num(1, loc_id).num(2, mapping_id).num(3, addr)
            if function_id:
                loc.sub(4, _Message().num(1, function_id).num(2, line))
            profile.sub(4, loc)
        for (name, filename), fid in self.functions.items():
            # The symbolizer hands over demangled names only, so the system name is the name.
            profile.sub(5, _Message().num(1, fid).num(2, name).num(3, name).num(4, filename))
        # Strings interned last, so every index used above already exists.
        period_msg = _Message().num(1, self.string(period_type[0])) \
            .num(2, self.string(period_type[1]))
        comment_ids = [self.string(c) for c in comments]
        default_id = self.string(default_sample_type) if default_sample_type else 0
        for s in self.strings:  # dicts keep insertion order, which is the index order
            profile.raw(6, s.encode("utf-8", "replace"), keep_empty=True)
        profile.num(9, time_ns).num(10, duration_ns).sub(11, period_msg).num(12, period)
        profile.packed(13, comment_ids)
        profile.num(14, default_id)
        return bytes(profile.buf)


def encode_profile(sample_types: Sequence[tuple[str, str]],
                   samples: Iterable[tuple[Sequence[Any], Sequence[int], Labels]],
                   period_type: tuple[str, str] | None = None, period: int = 1,
                   comments: Iterable[str] = (), default_sample_type: str = "",
                   time_ns: int | None = None, duration_ns: int = 0) -> bytes:
    """Serialize an uncompressed Profile message.  Each sample is (frames leaf first,
    values in sample_types order, labels {key: int for num or str for str})."""
    if period_type is None:
        period_type = sample_types[0]
    return _Builder().encode(sample_types, samples, period_type, period, comments,
                             default_sample_type,
                             time.time_ns() if time_ns is None else time_ns, duration_ns)


def write_profile(path: str | os.PathLike[str] | OutputFile,
                  sample_types: Sequence[tuple[str, str]], samples: Iterable[Sequence[Any]],
                  period_type: tuple[str, str] | None = None, period: int = 1,
                  comments: Iterable[str] = (), default_sample_type: str = "",
                  duration_ns: int = 0,
                  time_ns: int | None = None) -> None:
    """Write a gzip-compressed profile of `(frames, [values], labels?)` samples to `path`,
    e.g. sample_types=[("faults", "count")] for page faults."""
    normalized = ((s[0], s[1], s[2] if len(s) > 2 else {}) for s in samples)
    data = encode_profile(sample_types, normalized, period_type, period, comments,
                          default_sample_type, time_ns, duration_ns)
    write_file_atomic(path, gzip.compress(data, mtime=0))


def write_heap_profile(path: str | os.PathLike[str] | OutputFile, samples: Iterable[Sequence[Any]],
                       period: int = 1, comments: Iterable[str] = (), duration_ns: int = 0,
                       time_ns: int | None = None) -> None:
    """Write a Go-style heap profile of `(frames, alloc_objects, alloc_space, inuse_objects,
    inuse_space[, labels])` samples: pprof then defaults to inuse_space, and `-sample_index`
    names work as for Go programs.  `period` is the sampling period in bytes (1: every
    allocation).  Each sample gets Go's numeric label `bytes`, the average block size."""

    def heap_samples():
        for s in samples:
            frames, alloc_objects, alloc_space, inuse_objects, inuse_space = s[:5]
            labels = dict(s[5]) if len(s) > 5 else {}
            objects, space = (alloc_objects, alloc_space) if alloc_objects else \
                (inuse_objects, inuse_space)
            if objects:
                labels.setdefault("bytes", int(space) // int(objects))
            yield frames, (alloc_objects, alloc_space, inuse_objects, inuse_space), labels

    write_profile(path, HEAP_SAMPLE_TYPES, heap_samples(), period_type=("space", "bytes"),
                  period=period, comments=comments, default_sample_type="inuse_space",
                  duration_ns=duration_ns, time_ns=time_ns)
