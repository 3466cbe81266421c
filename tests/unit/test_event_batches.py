# SPDX-License-Identifier: GPL-2.0-only
"""Event batches (output/sinks.EventBatch): the bulk text rows and NDJSON lines an event tool
builds from columns say exactly what the one-record path says (Table rows, JsonWriter
lines), whatever the records hold; sinks and the runner take a poll's records at once."""
from __future__ import annotations

import argparse
import io
import json

import numpy as np
import pytest

from memlens.core.loader import BpfObject
from memlens.core.runner import Runner
from memlens.output import sinks
from memlens.output.ndjson import json_line
from memlens.tools import mmapsnoop as M

BOOT_TO_WALL = 1_796_000_000.123_456_7


@pytest.fixture(scope="module")
def dtypes():
    with BpfObject.open("tools/mmapsnoop/mmapsnoop.bpf.o") as obj:
        return obj.struct_dtype("mmap_event"), obj.struct_dtype("mmap_file_event")


def _events(dtypes):
    """Anonymous, failing, hostile-comm, odd-flag and huge-offset calls, interleaved with
    file maps (in the other ring), all at distinct times."""
    small, big = dtypes
    ev = np.zeros(9, small)
    ev["ts_ns"] = [10, 20, 30, 40, 60, 70, 90, 100, 120]
    ev["pid"] = ev["tid"] = 4242
    ev["tid"][3] = 4243
    ev["comm"] = b"burst"
    ev["comm"][2] = b"a\nb\x1b[2J\xff\\x41zzzz"
    ev["comm"][4] = b"exactly15chars!"
    ev["prot"] = 3
    ev["flags"] = 0x22
    ev["flags"][5] = 0x22 | 0x40000 | (21 << 26) | 0x800000  # hugetlb 2M + an unknown bit
    ev["len"] = 4096
    ev["off"][6] = 123 << 30  # a number wider than its column pushes the row right
    ev["fd"] = -1
    ev["ret"] = 0x7F00_0000_0000 + np.arange(9) * 4096
    ev["ret"][1] = -12  # ENOMEM
    ev["ret"][7] = -9999  # not an errno: shown as an address
    ev["file_kind"] = M.MMAP_ANON
    ev["file_kind"][8] = M.MMAP_NO_FILE
    ev["flags"][8] = 0x02
    ev["fd"][8] = 77
    ev["ret"][8] = -9  # EBADF
    files = np.zeros(3, big)
    fe = files["ev"]
    fe["ts_ns"] = [15, 50, 110]
    fe["pid"] = fe["tid"] = 4242
    fe["comm"] = b"burst"
    fe["prot"] = [1, 5, 1]
    fe["flags"] = [0x02, 0x812, 0x01]
    fe["len"] = [8192, 1 << 20, 4096]
    fe["off"] = [0, 4096, 0]
    fe["fd"] = [3, 4, 5]
    fe["ret"] = [0x7F10_0000_0000, -13, 0x7F20_0000_0000]
    fe["file_kind"] = M.MMAP_FILE
    fe["deleted"] = [0, 0, 1]
    paths = [[b"libc.so.6", b"x86_64-linux-gnu", b"lib", b"usr"],
             [b"a" * 100, b"b" * 100, b"tmp"],
             [b"bad\xffname\n", b"tmp"]]
    for i, comps in enumerate(paths):
        files["path"][i][:len(comps)] = comps
        fe["path_levels"][i] = len(comps)
    return ev, files


def test_batch_is_ordered_by_time_and_iterates_as_plain_records(dtypes):
    ev, files = _events(dtypes)
    lost = {"type": "lost", "what": "events", "reason": "ring buffer full", "count": 1}
    b = M.MmapBatch(ev, files, BOOT_TO_WALL, [lost])
    assert b.n == 12 and len(b) == 13
    recs = list(b)
    assert recs[-1] is lost and b[-1] is lost and b[0] == recs[0]
    ts = [r["timestamp"] for r in recs[:-1]]
    assert ts == sorted(ts)
    assert [r["file"] for r in recs[:-1] if r["file"]] == [
        "/usr/lib/x86_64-linux-gnu/libc.so.6", "/tmp/" + "b" * 100 + "/" + "a" * 100,
        "/tmp/bad\udcffname\n (deleted)"]
    r = recs[1]  # the first file map, between the first two anonymous calls
    assert (r["fd"], r["anonymous"], r["prot"], r["flags"], r["size_bytes"]) == \
        (3, False, "R--", "P", 8192)
    assert abs(recs[0]["timestamp"] - (BOOT_TO_WALL + 10e-9)) < 1e-6
    failed = recs[2]
    assert (failed["error"], failed["errno"], failed["addr"]) == ("ENOMEM", 12, None)
    odd = [x for x in recs[:-1] if x["ret"] == -9999][0]
    assert odd["error"] is None and odd["addr"] == hex(-9999 & (2**64 - 1))
    bad = recs[-2]
    assert (bad["fd"], bad["file"], bad["error"]) == (77, None, "EBADF")


def test_ndjson_lines_equal_the_writers_lines_once_parsed(dtypes):
    ev, files = _events(dtypes)
    b = M.MmapBatch(ev, files, BOOT_TO_WALL)
    fast = b.ndjson()
    assert fast.isascii() and fast.count("\n") == b.n
    slow = [json_line(b.record(i)) for i in range(b.n)]
    assert [json.loads(x) for x in fast.splitlines()] == [json.loads(x) for x in slow]
    # the key order too
    assert [list(json.loads(x)) for x in fast.splitlines()] == \
        [list(json.loads(x)) for x in slow]


@pytest.mark.parametrize("with_time,wide", [(False, False), (True, False), (False, True)])
def test_text_rows_equal_the_table_rows(dtypes, with_time, wide):
    ev, files = _events(dtypes)
    b = M.MmapBatch(ev, files, BOOT_TO_WALL)
    args = argparse.Namespace(time=with_time, wide=wide)
    one, bulk = M.TextRenderer(args), M.TextRenderer(args)
    slow = [one.table.header()] + [one.table.row(M.text_row(b.record(i), with_time))
                                   for i in range(b.n)]
    assert bulk.many(b) == "\n".join(slow) + "\n"
    assert bulk.many(b) == "\n".join(slow[1:]) + "\n"  # the header once


def test_a_burst_is_grouped_and_hash_collisions_cannot_merge_calls(dtypes, monkeypatch):
    small, _ = dtypes
    ev = np.zeros(1000, small)
    ev["ts_ns"] = np.arange(1000)
    ev["pid"] = ev["tid"] = 7
    ev["comm"] = b"x"
    ev["len"] = 4096
    ev["ret"] = 1 << 40
    ev["len"][500] = 8192
    b = M.MmapBatch(ev, np.zeros(0, dtypes[1]), BOOT_TO_WALL)
    group_of, first = b._groups()
    assert first == [0, 500] or sorted(first) == [0, 500]
    assert len(set(group_of)) == 2
    # a degenerate hash (every call alike) must not merge different calls
    real_unique = np.unique
    monkeypatch.setattr(np, "unique", lambda h, **kw: real_unique(h * np.uint64(0), **kw))
    b = M.MmapBatch(ev, np.zeros(0, dtypes[1]), BOOT_TO_WALL)
    assert b.text(False, 79).splitlines()[500].split()[5] == "8"


class _Batch(sinks.EventBatch):
    def __init__(self, n, extra=()):
        super().__init__(extra)
        self.n = n

    def record(self, i):
        return {"type": "event", "i": i}


class _Renderer:
    def __init__(self):
        self.rows = []

    def __call__(self, rec):
        self.rows.append(rec)

    def many(self, batch):
        return "".join(f"row {r['i']}\n" for r in batch.events())


def test_sinks_write_a_batch_at_once_and_everything_else_as_before(capsys):
    lost = {"type": "lost", "what": "events", "reason": "ring buffer full", "count": 3}
    buf = io.StringIO()
    sinks.JsonSink(buf).emit_many(_Batch(2, [lost]))
    assert [json.loads(x) for x in buf.getvalue().splitlines()] == [
        {"type": "event", "i": 0}, {"type": "event", "i": 1}, lost]
    buf = io.StringIO()
    sinks.JsonSink(buf).emit_many([{"type": "event", "i": 5}])  # a plain list still works
    assert json.loads(buf.getvalue()) == {"type": "event", "i": 5}

    out = io.StringIO()
    sinks.Sink(_Renderer(), out).emit_many(_Batch(2, [lost]))
    assert out.getvalue() == "row 0\nrow 1\n"
    assert "lost 3 events" in capsys.readouterr().err
    plain = []
    sinks.Sink(plain.append).emit_many(_Batch(2))  # a renderer without many(): per record
    assert plain == [{"type": "event", "i": 0}, {"type": "event", "i": 1}]


def test_the_runner_passes_each_poll_whole_or_record_by_record():
    class Tool:
        what, name, n = "x", "x", 0

        def start(self):
            pass

        def poll(self, timeout):
            self.n += 1
            return _Batch(3) if self.n == 1 else []

        def report(self, final):
            return []

        def summary(self):
            return [{"type": "summary"}]

        def close(self):
            pass

    batches, records = [], []
    Runner(duration=0.1).run(Tool(), records.append, emit_many=batches.append)
    assert isinstance(batches[0], _Batch) and records == [{"type": "summary"}]
    Runner(duration=0.1).run(Tool(), records.append)
    assert [r.get("i") for r in records[1:4]] == [0, 1, 2]


# -- trace -----------------------------------------------------------------------------------

EXIT_MMAP = """name: sys_exit_mmap
ID: 173
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;
"""
WITH_BOOL = """name: flagged
ID: 900
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:unsigned int order;\toffset:8;\tsize:4;\tsigned:0;
\tfield:bool sync;\toffset:12;\tsize:1;\tsigned:0;
\tfield:int node;\toffset:16;\tsize:4;\tsigned:1;
\tfield:unsigned long long addr;\toffset:24;\tsize:8;\tsigned:0;
"""
WITH_STRING = """name: named
ID: 901
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:int prio;\toffset:24;\tsize:4;\tsigned:1;
"""


@pytest.fixture(scope="module")
def trace_engine():
    from memlens.core import tpformat
    from memlens.core.engine import Engine
    from memlens.core.probespec import Probe

    eng = Engine.__new__(Engine)  # decode_event's state, without a kernel
    texts = ["t:syscalls:sys_exit_mmap", "t:x:flagged", "t:x:named", "sw:page-faults"]
    eng.probe_by_id = {i: Probe.__new__(Probe) for i in range(4)}
    for i, t in enumerate(texts):
        object.__setattr__(eng.probe_by_id[i], "text", t)
    eng.formats = {0: tpformat.parse_format(EXIT_MMAP, "syscalls", "sys_exit_mmap"),
                   1: tpformat.parse_format(WITH_BOOL, "x", "flagged"),
                   2: tpformat.parse_format(WITH_STRING, "x", "named")}
    eng._begin_of = {}
    with BpfObject.open("core/engine.bpf.o") as obj:
        dtype = obj.struct_dtype("engine_event")
    return eng, dtype


def _trace_events(dtype):
    import struct

    ev = np.zeros(8, dtype)
    ev["ts_ns"] = np.arange(8) * 1000 + 5
    ev["tgid"] = ev["tid"] = 99
    ev["comm"] = b"burst"
    ev["comm"][3] = b"x\x1b]0;evil\x07"
    ev["cpu"] = [0, 1, 0, 1, 0, 1, 0, 1]
    ev["uid"] = 1000
    ev["cgroup"] = 1234
    ev["probe"] = [0, 0, 1, 2, 0, 1, 3, 0]
    for i, p in enumerate(ev["probe"].tolist()):
        rec = bytearray(64)
        if p == 0:
            struct.pack_into("<iq", rec, 8, 9, [0x7F12_3456_7000, -12, 0, 0, 5, 0, 0, 123][i])
            ev["size"][i] = 24
        elif p == 1:
            struct.pack_into("<I?xxxi", rec, 8, 3, i == 2, -1)
            struct.pack_into("<Q", rec, 24, 2**64 - 1)
            ev["size"][i] = 32
        elif p == 2:
            rec[8:24] = b"kworker\0garbage!"
            struct.pack_into("<i", rec, 24, -20)
            ev["size"][i] = 28
        ev["data"][i][:64] = np.frombuffer(bytes(rec), np.uint8)
    return ev


def test_trace_batch_says_what_the_engine_decoder_says(trace_engine):
    from memlens.output.ndjson import json_line
    from memlens.tools import trace as T

    eng, dtype = trace_engine
    ev = _trace_events(dtype)
    b = T.TraceBatch(ev, eng)
    assert set(b.columns) == {0, 1}  # integer fields as columns; the string probe one by one
    slow = [{"type": "event", **eng.decode_event(ev[i])} for i in range(len(ev))]
    assert list(b) == slow
    assert b.ndjson() == "".join(json_line(r) for r in slow)  # byte for byte
    args = argparse.Namespace(timestamp=False)
    one, bulk = T.TextRenderer(args), T.TextRenderer(args)
    printed = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(printed):
        for r in slow:
            one(r)
    assert bulk.many(b) == printed.getvalue()


def test_a_batch_written_to_a_full_pipe_survives_a_signal():
    """CPython's buffered writer drops the rest of a large blocked pipe write that a signal
    interrupts; write_whole (what the sinks use) does not."""
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import signal, sys\n"
        "from memlens.output.ndjson import write_whole\n"
        "signal.signal(signal.SIGINT, lambda *a: None)\n"
        "text = ''.join(f'{i:09d}\\n' for i in range(200000))\n"
        "print('go', file=sys.stderr, flush=True)\n"
        "write_whole(sys.stdout, text)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert p.stderr.readline() == b"go\n"
    time.sleep(0.3)  # blocked: nobody reads the pipe yet
    p.send_signal(signal.SIGINT)
    time.sleep(0.1)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0
    assert out == b"".join(b"%09d\n" % i for i in range(200000))
