# SPDX-License-Identifier: GPL-2.0-only
"""`--json`: one compact JSON object per line (NDJSON), each with a "type".

Lost events and errors travel in-band as typed records, as bpftrace's `-f json` does, so a
consumer reading only stdout still learns that data is missing.
"""
from __future__ import annotations

import io
import json
import math
import os
import sys
from collections.abc import Mapping

TYPE_CHECKING = False  # typing costs ~7 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    from typing import IO, Any

RECORD_TYPES = frozenset({"event", "report", "lost", "error", "summary"})


def json_safe(value: Any) -> Any:
    """Return `value` converted to plain JSON types.

    bytes (comm, paths read from the kernel) may hold anything: decode with replacement
    rather than fail.  numpy scalars and arrays come from batch-decoded ring buffers; they
    are recognised by their `item`/`tolist` methods so numpy need not be imported here.
    NaN and infinities are not JSON: they become null.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return json_safe(value.tolist())
    if hasattr(value, "item"):
        return json_safe(value.item())
    return str(value)


def json_line(record: Mapping[str, Any]) -> str:
    """One record as one NDJSON line, newline included."""
    kind = record.get("type")
    if kind not in RECORD_TYPES:
        raise ValueError(f"record type must be one of {sorted(RECORD_TYPES)}, got {kind!r}")
    # ensure_ascii keeps control and non-ASCII characters from attacker-chosen comm and
    # paths escaped, so the line stays one line on any terminal.
    return json.dumps(json_safe(record), separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False) + "\n"


_STR_CACHE: dict[str, str] = {}


def json_str(text: str) -> str:
    """`text` as a JSON string literal, exactly as json_line writes it (ASCII, escaped),
    cached: the lines event tools build from columns repeat a few comms, flags and paths.
    A lone surrogate (an undecodable byte kept by surrogateescape) is written as json.dumps
    writes it, \\udcXX."""
    out = _STR_CACHE.get(text)
    if out is None:
        if len(_STR_CACHE) >= 4096:
            _STR_CACHE.clear()
        out = _STR_CACHE[text] = json.dumps(text, ensure_ascii=True)
    return out


def write_whole(stream: IO[str], text: str) -> None:
    """Write `text` to `stream` whole and flush, even across signals.

    CPython's BufferedWriter loses the rest of a write that blocks on a full pipe and is
    interrupted by a signal after part of it went through (3.11, measured: a 2.4 MB write,
    SIGINT while the reader waits: 64 KiB written, the rest gone, no error) — the state
    of every `memlens ... | slow-reader` at Ctrl-C.  Lines under PIPE_BUF (4 KiB) were
    immune (a pipe takes them whole or not at all); a poll's batch is not.  So the text
    goes to the file descriptor with os.write in a loop (which retries after EINTR and
    continues after a partial write), after whatever the stream still holds."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        stream.write(text)  # a StringIO, a capture: no descriptor to block on
        stream.flush()
        return
    stream.flush()
    data = memoryview(text.encode(getattr(stream, "encoding", None) or "utf-8",
                                  getattr(stream, "errors", None) or "strict"))
    while data:
        data = data[os.write(fd, data):]


class JsonWriter:
    """Write typed records as NDJSON to `stream`, one per line, flushed at once.

    Flushing per record lets `memlens ... --json | jq` show events as they happen, and means a
    tool killed mid-run leaves only whole lines behind.  `emit_many` writes a poll's records
    with one write and one flush: whole lines still, at a fraction of the system calls.
    """

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream if stream is not None else sys.stdout

    def emit(self, record: Mapping[str, Any]) -> None:
        write_whole(self.stream, json_line(record))

    def write_lines(self, text: str) -> None:
        """Lines already encoded (an event batch's ndjson()), each whole, in one write."""
        if text:
            write_whole(self.stream, text)

    def emit_many(self, records) -> None:
        self.write_lines("".join([json_line(r) for r in records]))
