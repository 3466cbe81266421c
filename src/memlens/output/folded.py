# SPDX-License-Identifier: GPL-2.0-only
"""Folded stacks (`--folded`), the input of flamegraph.pl, speedscope and our HTML writer.

Grammar (flamegraph.pl's parser): `frame;frame;...;leaf COUNT`, root first, one stack per
line; duplicate stacks sum; lines that do not match are ignored.  The format has no
escaping, so frames are sanitized instead: `;` would split a frame in two, a newline would
end the line, and trailing blanks would merge into the space before COUNT.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import IO, Union

from memlens.output.table import escape

# (prefix frames such as [comm], stack leaf first, count)
Entry = tuple[Sequence[str], Sequence[str], int]
Count = Union[int, float]

_LINE = re.compile(r"^(.*)\s+?(\d+(?:\.\d*)?)$")  # flamegraph.pl's own pattern


_PRINTED_FRAME = re.compile(r"^(?P<name>.+?)(?:\+0x[0-9a-f]+)?(?: \[[^\]]*\])?$")


def frame_name(printed: str) -> str:
    """The function of a printed frame (`main+0xa7 [prog]` -> `main`): folded stacks and
    flame graphs merge by function, not by return address."""
    m = _PRINTED_FRAME.match(printed)
    return m["name"] if m else printed


def sanitize_frame(frame: str) -> str:
    """Make one frame safe for a folded line: no `;`, no control characters, no edge blanks."""
    text = escape(str(frame).replace(";", ":")).strip()
    return text or "[unknown]"


def fold(entries: Iterable[Entry]) -> dict[str, int]:
    """Merge entries into {"prefix;root;...;leaf": total}; stacks with a zero total are left out."""
    merged: dict[str, int] = {}
    for prefix, stack, count in entries:
        frames = [sanitize_frame(f) for f in prefix]
        frames.extend(sanitize_frame(f) for f in reversed(stack))
        if not frames:
            frames = ["[unknown]"]
        key = ";".join(frames)
        merged[key] = merged.get(key, 0) + int(count)
    return {k: v for k, v in merged.items() if v}


def format_folded(folded: dict[str, int]) -> str:
    """Folded lines sorted by stack, so two runs over the same data diff cleanly."""
    return "".join(f"{stack} {folded[stack]}\n" for stack in sorted(folded))


def write_folded(stream: IO[str], entries: Iterable[Entry]) -> None:
    """Write entries as merged, sorted folded lines to `stream`."""
    stream.write(format_folded(fold(entries)))
    stream.flush()


def read_folded(text: str) -> dict[str, Count]:
    """Parse folded lines into {stack: total}; counts stay int unless a line has a decimal."""
    totals: dict[str, Count] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        stack, raw = m.group(1), m.group(2)
        count: Count = float(raw) if "." in raw else int(raw)
        totals[stack] = totals.get(stack, 0) + count
    return totals
