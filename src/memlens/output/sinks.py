# SPDX-License-Identifier: GPL-2.0-only
"""Where a tool's records go, chosen once for every tool from the same options.

Tools produce plain records (dicts with "type": event, report, lost, summary — DESIGN.md
§3); a sink renders them:
    text     the tool's own BCC-shaped renderer (a callable per record); losses on stderr
    --json   every record as one NDJSON line
    --folded report entries that carry a stack, as `prefix;root;...;leaf COUNT` lines
    --html F / --pprof F   the whole run's stacks, written at the end (besides the above);
             F is checked and opened when the sink is made, before tracing starts
             (output/files.py: a bad path is exit 2 then, not a lost profile after the run)
The same records are what a Prometheus collector reads.

A report entry with a stack has "stack" (frames, leaf first, as printed) and may have
"comm" and "pid" (the folded prefix); its weight is "count" (or the tool's value key).

Batches: `emit_many(records)` takes a poll's records at once (the runner passes them so).
Any sequence of records works; an `EventBatch` (events decoded as columns by an event tool)
is rendered in bulk — text by the renderer's `many(batch)`, JSON by the batch's `ndjson()` —
with one write and one flush, and never becomes dicts unless something iterates it.  At
150k+ events/s the per-event dict, format call, write and flush were what lost events
(bench/bench_events.py).
"""
from __future__ import annotations

import sys

from memlens.core.session import nonempty
from memlens.errors import UsageError

TYPE_CHECKING = False  # typing costs ~7 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from typing import IO, Any, TypeAlias

    Record: TypeAlias = dict[str, Any]


def add_output_options(parser: argparse.ArgumentParser, *, json: bool = True,
                       folded: bool = False, html: bool = False, pprof: bool = False) -> None:
    """The output options, with the same names, letters and types in every tool."""
    if json:
        parser.add_argument("--json", action="store_true",
                            help="NDJSON output: one typed object per line")
    if folded:
        parser.add_argument("-f", "--folded", action="store_true",
                            help="folded stacks `comm;root;...;leaf COUNT` (flamegraph.pl input)")
    if html:
        parser.add_argument("--html", type=nonempty, metavar="FILE",
                            help="also write an HTML flame graph of the whole run to FILE")
    if pprof:
        parser.add_argument("--pprof", type=nonempty, metavar="FILE",
                            help="also write a pprof profile (gzip protobuf) of the whole run")


def check_output_options(args: argparse.Namespace) -> None:
    if getattr(args, "json", False) and getattr(args, "folded", False):
        raise UsageError("--json and --folded are exclusive: choose one output format")


def folded_entries(record: Record, prefix: Callable[[Record], list[str]] | None = None,
                   weight: str = "count") -> list[tuple[list[str], list[str], int]]:
    """(prefix, stack leaf first, weight) of every entry of a report that has a stack."""
    # imported here: folded needs output.table, whose dataclass costs ~15 ms of start-up
    from memlens.output.folded import frame_name

    out = []
    for e in record.get("entries", ()):
        if "stack" not in e:
            continue
        pre = prefix(e) if prefix else ([e["comm"]] if "comm" in e else [])
        out.append((pre, [frame_name(f) for f in e["stack"]], int(e.get(weight, 0))))
    return out


class EventBatch:
    """The events of one poll as columns, and the poll's other records (`extra`: losses)
    after them.  A sequence of plain records for whoever iterates it (tests, a collector):
    len, indexing and iteration (not collections.abc.Sequence: importing _collections_abc
    and making an ABC subclass were ~3 ms of every event tool's start here); sinks render
    it in bulk.  Subclasses (one per event tool) give:

        n                   the number of events
        record(i) -> dict   event i as the plain "event" record
        ndjson() -> str     every event as NDJSON lines, byte for byte what JsonWriter
                            writes for record(i) (the default does exactly that, slowly)
    """

    n = 0

    def __init__(self, extra: Iterable[Record] = ()):
        self.extra = list(extra)

    def record(self, i: int) -> Record:
        raise NotImplementedError

    def ndjson(self) -> str:
        from memlens.output.ndjson import json_line

        return "".join([json_line(self.record(i)) for i in range(self.n)])

    def events(self) -> Iterator[Record]:
        return (self.record(i) for i in range(self.n))

    def __len__(self) -> int:
        return self.n + len(self.extra)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.record(i) if i < self.n else self.extra[i - self.n]

    def __iter__(self) -> Iterator[Record]:
        yield from self.events()
        yield from self.extra


def group_rows(columns: list) -> tuple[list[int], list[int]]:
    """(group of each row, first row of each group) for rows equal in every one of
    `columns` (numpy arrays of integers, one value a row): a batch's text or JSON is then
    made once per group for what the rows share.  One np.unique over a 64-bit mix of the
    columns, checked column by column: rows that mix alike but differ (a collision) make
    every row its own group rather than merge."""
    from memlens.core.lazy import np

    n = len(columns[0])
    h = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):
        for col in columns:
            h = h * np.uint64(0x100000001B3) ^ col.astype(np.uint64)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    if all(np.array_equal(col, col[first][inverse]) for col in columns):
        return inverse.ravel().tolist(), first.tolist()
    return list(range(n)), list(range(n))


class Sink:
    """Text by default: `render(record)` writes report/event records; losses go to stderr
    (always shown); summaries are JSON-only unless the tool renders them.  A renderer with
    a `many(batch) -> str` method renders an EventBatch's events in one string."""

    def __init__(self, render: Callable[[Record], None] | None = None,
                 stream: IO[str] | None = None):
        self.render = render
        self.stream = stream if stream is not None else sys.stdout
        self.side: list[_RunStacks] = []

    def emit(self, record: Record) -> None:
        for side in self.side:
            side.add(record)
        kind = record.get("type")
        if kind == "lost":
            self.lost(record)
        elif self.render is not None:
            self.render(record)

    def emit_many(self, records: Sequence[Record]) -> None:
        """A poll's records at once: an EventBatch's events rendered in bulk (one write,
        one flush), everything else as emit() would."""
        if not isinstance(records, EventBatch):
            for rec in records:
                self.emit(rec)
            return
        if records.n and self.render is not None:
            many = getattr(self.render, "many", None)
            if many is not None:
                self._write(many(records))
            else:
                for rec in records.events():
                    self.render(rec)
        for rec in records.extra:
            self.emit(rec)

    def _write(self, text: str) -> None:
        if text:
            from memlens.output.ndjson import write_whole

            write_whole(self.stream, text)

    @staticmethod
    def lost(rec: Record) -> None:
        extra = f", {rec['events']} events" if "events" in rec else ""
        hint = f"; {rec['hint']}" if rec.get("hint") else ""
        print(f"memlens: lost {rec['count']} {rec['what']} ({rec['reason']}{extra}{hint})",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        """The run is over: side files are written (each is let go even if one fails)."""
        try:
            for side in self.side:
                side.write()
        finally:
            self.discard()

    def discard(self) -> None:
        """The run failed or traced nothing: side files are let go, their paths untouched."""
        for side in self.side:
            getattr(side, "discard", lambda: None)()
        self.side.clear()


class JsonSink(Sink):
    def __init__(self, stream: IO[str] | None = None):
        super().__init__(None, stream)
        from memlens.output.ndjson import JsonWriter

        self.writer = JsonWriter(self.stream)

    def emit(self, record: Record) -> None:
        for side in self.side:
            side.add(record)
        self.writer.emit(record)

    def emit_many(self, records: Sequence[Record]) -> None:
        if not isinstance(records, EventBatch):
            for side in self.side:
                for rec in records:
                    side.add(rec)
            self.writer.emit_many(records)
            return
        from memlens.output.ndjson import json_line

        for side in self.side:
            for rec in records.extra:
                side.add(rec)
        text = records.ndjson() if records.n else ""
        if records.extra:
            text += "".join([json_line(r) for r in records.extra])
        self.writer.write_lines(text)


class FoldedSink(Sink):
    """One block of folded lines per report; flamegraph.pl (and read_folded) sum repeated
    stacks, so the concatenation of interval blocks is the whole run."""

    def __init__(self, prefix=None, weight: str = "count", stream: IO[str] | None = None):
        super().__init__(None, stream)
        self.prefix, self.weight = prefix, weight

    def emit(self, record: Record) -> None:
        for side in self.side:
            side.add(record)
        if record.get("type") == "lost":
            self.lost(record)
        elif record.get("type") == "report":
            from memlens.output.folded import write_folded

            write_folded(self.stream, folded_entries(record, self.prefix, self.weight))

    def emit_many(self, records: Sequence[Record]) -> None:
        # events have no stack to fold: only the poll's other records matter here
        for rec in (records.extra if isinstance(records, EventBatch) else records):
            self.emit(rec)


class _RunStacks:
    """Collects every report's stacks for a file written at the end (--html, --pprof)."""

    def __init__(self, kind: str, path: str, title: str, unit: str, prefix, weight: str):
        from memlens.output.files import OutputFile

        self.kind, self.path, self.title, self.unit = kind, path, title, unit
        self.out = OutputFile(path, f"--{kind}")  # checked and opened now, before tracing
        self.prefix, self.weight = prefix, weight
        self.entries: list[tuple[list[str], list, int]] = []

    def add(self, record: Record) -> None:
        if record.get("type") != "report":
            return
        if self.kind == "pprof":
            # the frames themselves where the stack holds them (core/stacks.FrameText):
            # addresses and mappings, as memleak's profile has
            for e in record.get("entries", ()):
                if "stack" in e:
                    pre = self.prefix(e) if self.prefix else (
                        [e["comm"]] if "comm" in e else [])
                    self.entries.append((pre, [getattr(f, "frame", None) or f
                                               for f in e["stack"]],
                                         int(e.get(self.weight, 0))))
        else:
            self.entries.extend(folded_entries(record, self.prefix, self.weight))

    def write(self) -> None:
        if self.kind == "html":
            from memlens.output.flamegraph import write_html

            write_html(self.out, self.entries, title=self.title, count_name=self.unit)
        else:
            from memlens.output.pprof import write_profile

            # the comm (and pid) prefix becomes the root frames, as in the flame graph
            samples = [(list(stack) + list(reversed(pre)), [count])
                       for pre, stack, count in self.entries if count]
            write_profile(self.out, [(self.unit, "count")], samples)
        print(f"memlens: wrote {self.path}", file=sys.stderr, flush=True)

    def discard(self) -> None:
        self.out.discard()


def make_sink(args: argparse.Namespace, render: Callable[[Record], None] | None, *,
              title: str = "", unit: str = "count",
              prefix: Callable[[Record], list[str]] | None = None,
              weight: str = "count") -> Sink:
    """The sink the options ask for, with --html/--pprof files attached."""
    check_output_options(args)
    sink: Sink
    if getattr(args, "json", False):
        sink = JsonSink()
    elif getattr(args, "folded", False):
        sink = FoldedSink(prefix, weight)
    else:
        sink = Sink(render)
    for kind in ("html", "pprof"):
        path = getattr(args, kind, None)
        if path:
            sink.side.append(_RunStacks(kind, path, title, unit, prefix, weight))
    return sink
