# SPDX-License-Identifier: GPL-2.0-only
"""The text output of a snoop (one line per event, BCC's way): the header once, before the
first record (so a run with no event still shows its columns), then each "event" record's
line(s); other records (lost, summary) go to their own outputs.  A tool says only what its
header and its lines are."""
from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~4 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    import argparse
    from typing import Any

class EventLines:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.header_done = False
        self.first_ns: int | None = None

    def header(self) -> str:
        raise NotImplementedError

    def lines(self, ev: dict[str, Any]) -> str:
        raise NotImplementedError

    def __call__(self, rec: dict[str, Any]) -> None:
        if not self.header_done:
            self.header_done = True
            print(self.header(), flush=True)
        if rec["type"] == "event":
            print(self.lines(rec), flush=True)

    def time_cell(self, ev: dict[str, Any]) -> str:
        """-T's TIME(s) cell: seconds since the first event shown, 14 wide and a space;
        "" without -T."""
        if not self.args.timestamp:
            return ""
        if self.first_ns is None:
            self.first_ns = ev["ts_ns"]
        return f"{(ev['ts_ns'] - self.first_ns) / 1e9:<14.9f} "
