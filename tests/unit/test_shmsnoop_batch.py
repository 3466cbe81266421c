# SPDX-License-Identifier: GPL-2.0-only
"""shmsnoop's batch path (ShmBatch: a poll's records read by columns) against the per-record
path it replaced (engine.decode_event, decode, json_line / TextRenderer.lines): the same
records, the same NDJSON bytes and the same text bytes, for synthesized engine records of
the four syscalls with successes, errors, odd flags, hostile comms and records that are not
a call's exit with its entry."""
from __future__ import annotations

import argparse
import contextlib
import io
import struct

import numpy as np
import pytest

from memlens.core import tpformat
from memlens.core.engine import Engine
from memlens.core.loader import BpfObject
from memlens.core.probespec import Probe
from memlens.output.ndjson import json_line
from memlens.tools import shmsnoop as S

MONO_TO_WALL = 1_796_000_000.123_456_7
HEAD = ("\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
        "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n"
        "\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n")
# this kernel's formats (6.18, /sys/kernel/tracing/events/syscalls/*/format)
ENTER = {
    "shmget": [("key_t key", 16, 0), ("size_t size", 24, 0), ("int shmflg", 32, 0)],
    "shmat": [("int shmid", 16, 0), ("char * shmaddr", 24, 0), ("int shmflg", 32, 0)],
    "shmdt": [("char * shmaddr", 16, 0)],
    "shmctl": [("int shmid", 16, 0), ("int cmd", 24, 0), ("struct shmid_ds * buf", 32, 0)],
}


def _format(name: str, fields: list[tuple[str, int, int]]):
    body = "".join(f"\tfield:{decl};\toffset:{off};\tsize:8;\tsigned:{signed};\n"
                   for decl, off, signed in fields)
    return tpformat.parse_format(f"name: {name}\nID: 1\nformat:\n{HEAD}{body}",
                                 "syscalls", name)


@pytest.fixture(scope="module")
def engine():
    eng = Engine.__new__(Engine)  # decode_event's state, without a kernel
    eng.probe_by_id, eng.formats, eng._begin_of, eng.adds = {}, {}, {}, {}
    for k, s in enumerate(S.SYSCALLS):
        enter, exit_ = 2 * k, 2 * k + 1
        for n, kind in ((enter, "enter"), (exit_, "exit")):
            p = Probe.__new__(Probe)
            object.__setattr__(p, "text", f"t:syscalls:sys_{kind}_{s}")
            eng.probe_by_id[n] = p
        eng.formats[enter] = _format(f"sys_enter_{s}", ENTER[s])
        eng.formats[exit_] = _format(f"sys_exit_{s}", [("long ret", 16, 1)])
        eng._begin_of[exit_] = enter
    with BpfObject.open("core/engine.bpf.o") as obj:
        dtype = obj.struct_dtype("engine_event")
    return eng, dtype


# (syscall, arguments in ARG_NAMES order, ret); the arguments as the kernel's 8-byte slots
CALLS = [
    ("shmget", (0x4D4C7C38, 200005, 0o3600), 12),
    ("shmget", (0x4D4C7C38, 200005, 0o3600), -17),                   # EEXIST
    ("shmget", (0xFFFF_FFFF_DEAD_BEEF, 2 << 20, 0o1000 | 0o4000 | (21 << 26) | 0o600), 13),
    ("shmget", (0, 0, 0), -22),
    ("shmat", (12, 0, 0), 0x7F10_B1B5_E000),
    ("shmat", (12, 0, 0o10000), 0x7F10_B1B2_D000),
    ("shmat", (0xFFFF_FFFF_FFFF_FFFF, 0x7F00_0000_1000, 0o20000 | 0o1), -22),
    ("shmat", (12, 0, 0), -9999),                                   # not an errno: an address
    ("shmdt", (0x7F10_B1B5_E000,), 0),
    ("shmdt", (0x1234,), -22),
    ("shmctl", (12, 2, 0x7FFF_ED0D_D200), 0),
    ("shmctl", (12, 0, 0), 0),
    ("shmctl", (12, 0x102, 0x10), 0),                               # IPC_64|IPC_STAT
    ("shmctl", (0x8000_0001, 99, 0), -4095),                        # unknown cmd, MAX_ERRNO
    ("shmctl", (3, 14, 0x20), 7),                                   # SHM_INFO: an index
]


def _records(dtype, calls=CALLS):
    """The engine's trace-mode records for `calls`, with an entry record (not streamed in
    pair mode, but harmless), an exit without its entry, and other threads and comms."""
    rows = [(s, a, r, "call") for s, a, r in calls]
    rows.insert(3, ("shmget", (1, 2, 3), 0, "enter"))
    rows.insert(7, ("shmat", (1, 2, 3), 0, "no-begin"))
    ev = np.zeros(len(rows), dtype)
    ev["ts_ns"] = 1_000_000_007 + np.arange(len(rows)) * 123_457
    ev["tgid"] = ev["tid"] = 31800
    ev["tid"][5] = 31801
    ev["comm"] = b"shm_seq"
    ev["comm"][6] = b"a\nb\x1b[2J\xff\\x41zz"
    ev["comm"][9] = b"other"
    ev["latency_ns"] = 1500 + np.arange(len(rows))
    for i, (s, args, ret, kind) in enumerate(rows):
        k = S.SYSCALLS.index(s)
        enter = kind == "enter"
        ev["probe"][i] = 2 * k + (0 if enter else 1)
        begin = bytearray(64)
        struct.pack_into("<i", begin, 8, 29 + k)
        for j, v in enumerate(args):
            struct.pack_into("<Q", begin, 16 + 8 * j, v & 0xFFFF_FFFF_FFFF_FFFF)
        if enter:  # its own record is the arguments
            ev["latency_ns"][i] = 0
            ev["size"][i] = 16 + 8 * len(args)
            ev["data"][i][:64] = np.frombuffer(bytes(begin), np.uint8)
            continue
        rec = bytearray(64)
        struct.pack_into("<i4xq", rec, 8, 29 + k, ret)
        ev["size"][i] = 24
        ev["data"][i][:64] = np.frombuffer(bytes(rec), np.uint8)
        if kind == "no-begin":
            continue
        ev["begin_size"][i] = 16 + 8 * len(args)
        ev["begin_data"][i][:64] = np.frombuffer(bytes(begin), np.uint8)
    return ev


def _tool(eng, name=None, tid=None):
    tool = S.ShmsnoopTool.__new__(S.ShmsnoopTool)
    tool.engine, tool.name_filter, tool.tid = eng, name, tid
    return tool


def _old_poll(eng, ev, name=None, tid=None):
    """The per-record path (ShmsnoopTool.poll before the batches)."""
    out = []
    for raw in ev:
        rec = S.decode(eng.decode_event(raw), MONO_TO_WALL)
        if rec is None or (name and name not in rec["comm"]):
            continue
        if tid and rec["tid"] != tid:
            continue
        out.append(rec)
    return out


@pytest.mark.parametrize("name,tid", [(None, None), ("shm_se", None), (None, 31801),
                                      ("zz", None)])
@pytest.mark.parametrize("short_shmdt", [False, True], ids=["columns", "shmdt-one-by-one"])
def test_batch_says_byte_for_byte_what_the_record_path_says(engine, name, tid, short_shmdt,
                                                            monkeypatch):
    eng, dtype = engine
    ev = _records(dtype)
    if short_shmdt:  # a format the columns cannot read (a string, say): one by one
        columns = tpformat.field_columns
        monkeypatch.setattr(tpformat, "field_columns", lambda fmt, data, sizes: None if (
            fmt.name == "sys_enter_shmdt") else columns(fmt, data, sizes))
    old = _old_poll(eng, ev, name, tid)
    exits = _tool(eng)._exits()
    assert sorted((s, n) for n, (s, _, _) in exits.items()) == sorted(
        (s, 2 * k + 1) for k, s in enumerate(S.SYSCALLS))
    lost = {"type": "lost", "what": "events", "reason": "ring buffer full", "count": 3}
    b = S.ShmBatch(ev, eng, exits, MONO_TO_WALL, name, tid, [lost])
    assert b.n == len(old) and list(b) == [*old, lost]
    assert list(b.events()) == old
    assert b.ndjson() == "".join(json_line(r) for r in old)
    if short_shmdt and name is None and tid is None:
        assert sorted(b[k]["syscall"] for k in b.slow) == ["shmdt", "shmdt"]
    else:
        assert not b.slow or short_shmdt
    for timestamp in (False, True):
        for by_tid in (None, 31801):
            args = argparse.Namespace(timestamp=timestamp, tid=by_tid)
            one, bulk = S.TextRenderer(args), S.TextRenderer(args)
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                for r in old:
                    one(r)
            assert bulk.many(b) == printed.getvalue()


def test_the_exact_lines_of_a_few_calls(engine):
    eng, dtype = engine
    ev = _records(dtype)
    b = S.ShmBatch(ev, eng, _tool(eng)._exits(), MONO_TO_WALL)
    args = argparse.Namespace(timestamp=False, tid=None)
    lines = S.TextRenderer(args).many(b).splitlines()
    assert lines[0] == "PID     COMM                SYS              RET ARGs"
    assert lines[1:3] == [
        "31800   shm_seq          SHMGET               12 key: 0x4d4c7c38, size: 200005, "
        "shmflg: 0x780 (IPC_CREAT|IPC_EXCL|0600)",
        "31800   shm_seq          SHMGET          -EEXIST key: 0x4d4c7c38, size: 200005, "
        "shmflg: 0x780 (IPC_CREAT|IPC_EXCL|0600)"]
    assert len(lines) == 1 + len(CALLS)
    first = b.ndjson().splitlines()[0]
    assert first == (
        '{"type":"event","timestamp":1796000001.123457,"ts_ns":1000000007,"pid":31800,'
        '"tid":31800,"comm":"shm_seq","syscall":"shmget","ret":12,"error":null,'
        '"errno":null,"latency_ns":1500,"key":1296858168,"size_bytes":200005,'
        '"shmflg":1920,"flag_names":["IPC_CREAT","IPC_EXCL","0600"],"mode":"0600",'
        '"shmid":12}')


def test_an_empty_poll_is_an_empty_batch_with_its_losses(engine):
    eng, dtype = engine
    lost = {"type": "lost", "what": "events", "reason": "ring buffer full", "count": 1}
    b = S.ShmBatch(np.zeros(0, dtype), eng, _tool(eng)._exits(), MONO_TO_WALL, None, None,
                   [lost])
    assert (b.n, list(b), b.ndjson()) == (0, [lost], "")
