# SPDX-License-Identifier: GPL-2.0-only
"""`--json`: one compact JSON object per line (NDJSON), each with a "type".

Lost events and errors travel in-band as typed records, as bpftrace's `-f json` does, so a
consumer reading only stdout still learns that data is missing.
"""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
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


class JsonWriter:
    """Write typed records as NDJSON to `stream`, one per line, flushed at once.

    Flushing per record lets `memlens ... --json | jq` show events as they happen, and means a
    tool killed mid-run leaves only whole lines behind.
    """

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream if stream is not None else sys.stdout

    def emit(self, record: Mapping[str, Any]) -> None:
        kind = record.get("type")
        if kind not in RECORD_TYPES:
            raise ValueError(f"record type must be one of {sorted(RECORD_TYPES)}, got {kind!r}")
        # ensure_ascii keeps control and non-ASCII characters from attacker-chosen comm and
        # paths escaped, so the line stays one line on any terminal.
        line = json.dumps(json_safe(record), separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False)
        self.stream.write(line + "\n")
        self.stream.flush()
