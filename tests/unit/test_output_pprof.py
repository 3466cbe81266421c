# SPDX-License-Identifier: GPL-2.0-only
"""pprof profiles, read back by two independent decoders: `go tool pprof` (the reference
reader) and the protobuf runtime with the Profile messages declared here from
google/pprof proto/profile.proto's field numbers (no generated code from our encoder)."""
from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

import pytest

from memlens.output.pprof import HEAP_SAMPLE_TYPES, write_heap_profile, write_profile

LEAK_A = ["malloc+0x0 [libc.so.6]", "leak_a+0x12 [leaker]", "main+0x30 [leaker]"]
LEAK_B = ["malloc+0x0 [libc.so.6]", "leak_b+0x8 [leaker]", "main+0x40 [leaker]"]
MIB = 1 << 20
HEAP = [(LEAK_A, 23, 23 * MIB, 23, 23 * MIB),     # 23 blocks of 1 MiB, all still held
        (LEAK_B, 7, 700, 3, 300)]                 # 7 of 100 B, 3 still held


@dataclass
class Frame:
    """What the symbolizer hands over: duck-typed, str() is the printed form."""
    addr: int
    symbol: str | None
    offset: int
    module: str
    build_id: bytes | None = None
    source: str | None = None

    def __str__(self):
        name = self.symbol or f"{self.addr:#x}"
        return f"{name}+{self.offset:#x} [{os.path.basename(self.module)}]"


LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
BUILD_ID = bytes.fromhex("6a2b1d07c3a4e0f5")


# --- decoder 1: protobuf runtime ------------------------------------------------------

def _profile_class():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    U64, I64, BOOL, STR, MSG = F.TYPE_UINT64, F.TYPE_INT64, F.TYPE_BOOL, F.TYPE_STRING, \
        F.TYPE_MESSAGE
    messages = {  # name: [(field, number, type, repeated, message type)]
        "ValueType": [("type", 1, I64), ("unit", 2, I64)],
        "Label": [("key", 1, I64), ("str", 2, I64), ("num", 3, I64), ("num_unit", 4, I64)],
        "Sample": [("location_id", 1, U64, True), ("value", 2, I64, True),
                   ("label", 3, MSG, True, "Label")],
        "Mapping": [("id", 1, U64), ("memory_start", 2, U64), ("memory_limit", 3, U64),
                    ("file_offset", 4, U64), ("filename", 5, I64), ("build_id", 6, I64),
                    ("has_functions", 7, BOOL), ("has_filenames", 8, BOOL),
                    ("has_line_numbers", 9, BOOL), ("has_inline_frames", 10, BOOL)],
        "Line": [("function_id", 1, U64), ("line", 2, I64), ("column", 3, I64)],
        "Location": [("id", 1, U64), ("mapping_id", 2, U64), ("address", 3, U64),
                     ("line", 4, MSG, True, "Line"), ("is_folded", 5, BOOL)],
        "Function": [("id", 1, U64), ("name", 2, I64), ("system_name", 3, I64),
                     ("filename", 4, I64), ("start_line", 5, I64)],
        "Profile": [("sample_type", 1, MSG, True, "ValueType"),
                    ("sample", 2, MSG, True, "Sample"), ("mapping", 3, MSG, True, "Mapping"),
                    ("location", 4, MSG, True, "Location"),
                    ("function", 5, MSG, True, "Function"), ("string_table", 6, STR, True),
                    ("drop_frames", 7, I64), ("keep_frames", 8, I64), ("time_nanos", 9, I64),
                    ("duration_nanos", 10, I64), ("period_type", 11, MSG, False, "ValueType"),
                    ("period", 12, I64), ("comment", 13, I64, True),
                    ("default_sample_type", 14, I64)],
    }
    fdp = descriptor_pb2.FileDescriptorProto(name="memlens_test_profile.proto",
                                             package="perftools.profiles", syntax="proto3")
    for name, fields in messages.items():
        msg = fdp.message_type.add(name=name)
        for field in fields:
            fname, number, ftype = field[:3]
            repeated = len(field) > 3 and field[3]
            f = msg.field.add(name=fname, number=number, type=ftype,
                              label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if ftype == MSG:
                f.type_name = ".perftools.profiles." + field[4]
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    desc = pool.FindMessageTypeByName("perftools.profiles.Profile")
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)  # protobuf < 4.21


def decode(path):
    pytest.importorskip("google.protobuf")
    raw = path.read_bytes()
    assert raw[:2] == b"\x1f\x8b", "profile must be gzip-compressed"
    profile = _profile_class()()
    profile.ParseFromString(gzip.decompress(raw))
    return profile


def check_valid(p):
    """The invariants pprof's Profile.CheckValid enforces, plus string index 0 == ""."""
    assert p.string_table[0] == ""
    n = len(p.string_table)
    for ids in ([m.id for m in p.mapping], [loc.id for loc in p.location],
                [f.id for f in p.function]):
        assert 0 not in ids and len(set(ids)) == len(ids)
    mappings = {m.id for m in p.mapping}
    functions = {f.id for f in p.function}
    locations = {loc.id for loc in p.location}
    for loc in p.location:
        assert loc.mapping_id == 0 or loc.mapping_id in mappings
        assert all(line.function_id in functions for line in loc.line)
    for s in p.sample:
        assert len(s.value) == len(p.sample_type)
        assert all(lid in locations for lid in s.location_id)
        assert all(0 <= lab.key < n and 0 <= lab.str < n for lab in s.label)
    for f in p.function:
        assert 0 <= f.name < n and 0 <= f.system_name < n
    for m in p.mapping:
        assert 0 <= m.filename < n and 0 <= m.build_id < n


def stacks(p):
    """[(function names leaf first, values, {label: value})] as a reader sees them."""
    s = p.string_table
    fname = {f.id: s[f.name] for f in p.function}
    loc = {loc.id: fname[loc.line[0].function_id] for loc in p.location}
    return [([loc[i] for i in sample.location_id], list(sample.value),
             {s[lab.key]: (s[lab.str] if lab.str else lab.num) for lab in sample.label})
            for sample in p.sample]


def test_heap_profile_protobuf_decoder(tmp_path):
    path = tmp_path / "heap.pb.gz"
    write_heap_profile(path, HEAP, period=1, comments=["memlens 0.1.0", "lost_events=0"],
                       duration_ns=5_000_000_000, time_ns=1_700_000_000_000_000_000)
    p = decode(path)
    check_valid(p)
    s = p.string_table
    assert [(s[t.type], s[t.unit]) for t in p.sample_type] == list(HEAP_SAMPLE_TYPES)
    assert (s[p.period_type.type], s[p.period_type.unit]) == ("space", "bytes")
    assert p.period == 1
    assert s[p.default_sample_type] == "inuse_space"
    assert [s[c] for c in p.comment] == ["memlens 0.1.0", "lost_events=0"]
    assert p.duration_nanos == 5_000_000_000 and p.time_nanos == 1_700_000_000_000_000_000
    assert stacks(p) == [
        (["malloc", "leak_a", "main"], [23, 23 * MIB, 23, 23 * MIB], {"bytes": MIB}),
        (["malloc", "leak_b", "main"], [7, 700, 3, 300], {"bytes": 100})]
    # malloc is one function and one location; main has two call sites, one function.
    names = [s[f.name] for f in p.function]
    assert sorted(names) == ["leak_a", "leak_b", "main", "malloc"]
    assert len(p.location) == 5
    assert {s[m.filename] for m in p.mapping} == {"libc.so.6", "leaker"}
    assert all(m.has_functions for m in p.mapping)
    assert len(set(s)) == len(s), "string table entries are interned once"


def test_fault_profile_with_addresses(tmp_path):
    malloc = Frame(0x7F0000029100, "malloc", 0, LIBC, BUILD_ID)
    a = Frame(0x555555555234, "leak_a", 0x12, "/tmp/leaker", source="src/leak.c:12")
    main = Frame(0x555555555100, None, 0, "/tmp/leaker")
    path = tmp_path / "faults.pb.gz"
    write_profile(path, [("faults", "count")],
                  [([malloc, a, main], [5]),
                   ([Frame(a.addr, "leak_a", 0x12, "/tmp/leaker"), main], [2], {"comm": "x;y"}),
                   (["[missed user stack]"], [1])],
                  comments=["lost_stacks=1"])
    p = decode(path)
    check_valid(p)
    s = p.string_table
    assert [(s[t.type], s[t.unit]) for t in p.sample_type] == [("faults", "count")]
    assert (s[p.period_type.type], s[p.period_type.unit]) == ("faults", "count")
    assert stacks(p) == [(["malloc", "leak_a", "0x555555555100+0x0 [leaker]"], [5], {}),
                         (["leak_a", "0x555555555100+0x0 [leaker]"], [2], {"comm": "x;y"}),
                         (["[missed user stack]"], [1], {})]
    # Same address and module -> the same location, even from a different frame object.
    assert p.sample[0].location_id[1] == p.sample[1].location_id[0]
    assert len(p.location) == 4
    addrs = {loc.address for loc in p.location}
    assert {malloc.addr, a.addr, main.addr, 0} == addrs
    by_file = {s[m.filename]: m for m in p.mapping}
    assert s[by_file[LIBC].build_id] == BUILD_ID.hex()
    leaker = by_file["/tmp/leaker"]
    assert leaker.memory_start <= main.addr < a.addr < leaker.memory_limit
    missed = next(loc for loc in p.location if loc.address == 0)
    assert missed.mapping_id == 0
    leak_a = next(f for f in p.function if s[f.name] == "leak_a")
    assert s[leak_a.filename] == "src/leak.c"
    assert [loc.line[0].line for loc in p.location if loc.address == a.addr] == [12]


def test_value_count_must_match_sample_types(tmp_path):
    with pytest.raises(ValueError):
        write_profile(tmp_path / "bad.pb.gz", [("faults", "count")], [(["f"], [1, 2])])
    assert not (tmp_path / "bad.pb.gz").exists()


def test_output_follows_a_symlink_to_the_file_it_names(tmp_path):
    # the link stays and its target is written (a link planted by another user in a
    # sticky directory is refused instead: tests/unit/test_reliability_units.py)
    target = tmp_path / "profiles" / "run.pb.gz"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "out.pb.gz"
    link.symlink_to(target)
    write_profile(link, [("faults", "count")], [(["f"], [1])])
    assert link.is_symlink()
    assert decode(target).sample[0].value == [1]


# --- decoder 2: go tool pprof -----------------------------------------------------------

def _pprof(path, *args):
    if shutil.which("go") is None:
        pytest.skip("go tool pprof not installed (Debian golang-go; scripts/setup.sh adds it)")
    env = dict(os.environ, HOME=str(path.parent), PPROF_TMPDIR=str(path.parent),
               GOCACHE=str(path.parent / "gocache"), GOFLAGS="")
    return subprocess.run(["go", "tool", "pprof", *args, str(path)], env=env, check=True,
                          capture_output=True, text=True, timeout=120).stdout


def _top(text):
    """{function: (flat, cum)} from `pprof -top` rows."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(\d+)B?\s+[\d.]+%\s+[\d.]+%\s+(\d+)B?\s+[\d.]+%\s+(.+)$", line)
        if m:
            rows[m.group(3)] = (int(m.group(1)), int(m.group(2)))
    return rows


def test_heap_profile_go_tool_pprof(tmp_path):
    path = tmp_path / "heap.pb.gz"
    write_heap_profile(path, HEAP, comments=["memlens 0.1.0", "lost_events=0"],
                       duration_ns=5_000_000_000)
    raw = _pprof(path, "-raw")
    assert "Comment: memlens 0.1.0\nComment: lost_events=0\n" in raw
    assert "PeriodType: space bytes\nPeriod: 1\n" in raw
    assert "Duration: 5s" in raw
    assert ("alloc_objects/count alloc_space/bytes inuse_objects/count "
            "inuse_space/bytes[dflt]") in raw
    assert re.search(r"\n\s+23\s+24117248\s+23\s+24117248: \d+ \d+ \d+ \n\s+bytes:\[1048576\]",
                     raw)
    assert re.search(r"\n\s+7\s+700\s+3\s+300: \d+ \d+ \d+ \n\s+bytes:\[100\]", raw)
    assert re.search(r"\d+: 0x0 M=\d+ leak_b ", raw)

    inuse = _top(_pprof(path, "-top", "-unit=B", "-nodefraction=0", "-sample_index=inuse_space"))
    assert inuse == {"malloc": (23 * MIB + 300, 23 * MIB + 300), "main": (0, 23 * MIB + 300),
                     "leak_a": (0, 23 * MIB), "leak_b": (0, 300)}
    default = _pprof(path, "-top", "-unit=B", "-nodefraction=0")
    assert "Type: inuse_space" in default and _top(default) == inuse
    objects = _top(_pprof(path, "-top", "-nodefraction=0", "-sample_index=alloc_objects"))
    assert objects == {"malloc": (30, 30), "main": (0, 30), "leak_a": (0, 23), "leak_b": (0, 7)}


def test_fault_profile_go_tool_pprof(tmp_path):
    malloc = Frame(0x7F0000029100, "malloc", 0, LIBC, BUILD_ID)
    a = Frame(0x555555555234, "leak_a", 0x12, "/tmp/leaker", source="src/leak.c:12")
    path = tmp_path / "faults.pb.gz"
    write_profile(path, [("faults", "count")], [([malloc, a], [5]), ([a], [2])])
    raw = _pprof(path, "-raw")
    assert re.search(r"0x555555555234 M=\d+ leak_a src/leak.c:12 ", raw)
    assert "PeriodType: faults count" in raw
    assert re.search(r"0x7f0000029100 M=\d+ malloc ", raw)
    assert re.search(rf"0x7f0000029100/0x7f0000029101/0x0 {LIBC} {BUILD_ID.hex()} \[FN\]", raw)
    assert _top(_pprof(path, "-top", "-nodefraction=0")) == {"malloc": (5, 5),
                                                              "leak_a": (2, 7)}
