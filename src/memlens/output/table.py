# SPDX-License-Identifier: GPL-2.0-only
"""Fixed-column text output with BCC column names, fitting 80 columns by default.

comm, file names and cgroup paths are chosen by whoever runs the traced process, so every
string cell goes through `escape()`: a comm of "\\x1b[2J" must not clear the operator's
screen, and a newline in a path must not forge a second row.
"""
from __future__ import annotations

from memlens.core.record import record

TYPE_CHECKING = False  # typing costs ~4 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, Union

    Formatter = Union[str, Callable[[Any], str], None]

TASK_COMM_LEN = 16  # the kernel's comm buffer, NUL included: at most 15 visible characters
LINE_WIDTH = 79     # BCC tools keep lines under 80 columns
ELLIPSIS = "..."



def escape(value: str | bytes) -> str:
    """Return `value` with every non-printable character shown as `\\xNN` (or `\\uNNNN`).

    Bytes are decoded as UTF-8; bytes that are not valid UTF-8 are shown as `\\xNN` of the
    raw byte.  A backslash is doubled so that an escape in the output is never ambiguous
    with a literal `\\x41` written by the traced program.
    """
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "surrogateescape")
    if value.isprintable() and "\\" not in value:
        return value  # nearly every string (a report's frames: ~240k), checked in C
    out = []
    for ch in value:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        else:  # e.g. U+202E, which would reverse the rest of the line on a terminal
            out.append(f"\\u{code:04x}")
    return "".join(out)


def comm_str(comm: str | bytes) -> str:
    """A task comm as the kernel holds it (NUL-padded, 15 characters at most), escaped."""
    if isinstance(comm, (bytes, bytearray)):
        comm = bytes(comm).split(b"\0", 1)[0]
    else:
        comm = comm.split("\0", 1)[0]
    return escape(comm[:TASK_COMM_LEN - 1])


@record(frozen=True)
class Column:
    """One column: header `name`, `width` in characters (None: the rest of the line, only
    for the last column), `align` "<" or ">", and `fmt` a format spec ("d", ".2f") or a
    callable returning the cell text.  Strings that do not fit are cut, with "..." marking
    the cut: at the end, or with `keep="tail"` at the start (a path's file name is worth more
    than its first directory).
    """

    name: str
    width: int | None
    align: str = "<"
    fmt: Formatter = None
    keep: str = "head"

    def cell(self, value: Any) -> str:
        if callable(self.fmt):
            text = self.fmt(value)
        elif self.fmt:
            text = format(value, self.fmt)
        elif isinstance(value, (str, bytes, bytearray)):
            text = value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")
        else:
            text = str(value)
        return escape(text)


class Table:
    """Header and rows of fixed-width columns, separated by one space, as BCC prints them.

    A number wider than its column is printed whole (pushing the row right) rather than
    cut, because a cut number is a wrong number; strings are cut to the column width.
    The last column may be open (`width=None`); it is cut to end the line at `line_width`
    (None: never cut).
    """

    def __init__(self, columns: Sequence[Column], line_width: int | None = LINE_WIDTH):
        if not columns:
            raise ValueError("a table needs at least one column")
        for col in columns[:-1]:
            if col.width is None:
                raise ValueError(f"only the last column may be open-ended, not {col.name!r}")
        self.columns = list(columns)
        self.line_width = line_width

    def header(self) -> str:
        return self._line([c.name for c in self.columns], [c.name for c in self.columns])

    def row(self, values: Sequence[Any] | Mapping[str, Any]) -> str:
        if hasattr(values, "keys"):  # a mapping (no collections.abc import at start-up)
            values = [values[c.name] for c in self.columns]
        if len(values) != len(self.columns):
            raise ValueError(f"expected {len(self.columns)} values, got {len(values)}")
        return self._line([c.cell(v) for c, v in zip(self.columns, values)], values)

    def _line(self, cells: list[str], values: Sequence[Any]) -> str:
        parts = []
        used = 0
        for col, text, value in zip(self.columns, cells, values):
            width = col.width
            if width is None and self.line_width is not None:
                width = max(self.line_width - used, 1)
            if width is not None and len(text) > width and _is_text(value):
                text = _cut(text, width, col.keep == "tail")
            if col.width is not None:
                text = f"{text:{col.align}{col.width}}"
            parts.append(text)
            used += len(text) + 1
        return " ".join(parts).rstrip()


def _cut(text: str, width: int, keep_tail: bool) -> str:
    if width <= len(ELLIPSIS):
        return text[-width:] if keep_tail else text[:width]
    keep = width - len(ELLIPSIS)
    return ELLIPSIS + text[-keep:] if keep_tail else text[:keep] + ELLIPSIS


def _is_text(value: Any) -> bool:
    return isinstance(value, (str, bytes, bytearray))
