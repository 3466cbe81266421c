# SPDX-License-Identifier: GPL-2.0-only
"""Tracepoint format parsing, record decoding and the filter compiler, on format files copied
from a 6.18 x86_64 kernel (tests/unit/data/tracefs/<cat>/<name>/format); no root needed."""
from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from memlens.core import tpformat as T
from memlens.errors import KernelLacks, MemlensError, UsageError

DATA = Path(__file__).parent / "data" / "tracefs"
COMMON = struct.Struct("=HBBi")  # common_type, common_flags, common_preempt_count, common_pid


def fmt(event: str) -> T.TracepointFormat:
    cat, name = event.split(":")
    return T.parse_format((DATA / cat / name / "format").read_text(), cat, name)


def layout(f: T.TracepointFormat) -> list[tuple[str, int, int, bool]]:
    return [(x.name, x.offset, x.size, x.signed) for x in f.user_fields()]


# --- parsing ------------------------------------------------------------------------------

@pytest.mark.parametrize("event,tp_id,size,nuser", [
    ("syscalls:sys_enter_madvise", 726, 40, 4),
    ("kmem:kmalloc", 658, 52, 6),
    ("kmem:kmem_cache_alloc", 659, 61, 8),
    ("sched:sched_process_exec", 365, 20, 3),
    ("sched:sched_switch", 372, 64, 7),
    ("vmscan:mm_vmscan_lru_shrink_inactive", 626, 96, 13),
    ("oom:mark_victim", 609, 66, 9),
    ("filemap:mm_filemap_fault", 597, 32, 3),
    ("percpu:percpu_alloc_percpu", 645, 80, 10),
])
def test_every_copied_format_parses_with_its_id_size_and_fields(event, tp_id, size, nuser):
    f = fmt(event)
    assert (f.category, f.name) == tuple(event.split(":"))
    assert f.id == tp_id and f.size == size and len(f.user_fields()) == nuser
    assert [x.name for x in f.fields if x.is_common] == [
        "common_type", "common_flags", "common_preempt_count", "common_pid"]
    assert f.field("common_pid") == T.Field("common_pid", "int", 4, 4, True, True, False,
                                            None, False, False)


def test_madvise_keeps_the_files_8_byte_unsigned_slot_for_int_behavior():
    f = fmt("syscalls:sys_enter_madvise")
    assert layout(f) == [("__syscall_nr", 8, 4, True), ("start", 16, 8, False),
                         ("len_in", 24, 8, False), ("behavior", 32, 8, False)]
    assert f.field("behavior").type == "int" and f.field("len_in").type == "size_t"


def test_data_loc_string_bool_and_pointer_fields():
    f = fmt("kmem:kmem_cache_alloc")
    name = f.field("name")
    assert (name.type, name.offset, name.size, name.data_loc, name.is_string) == (
        "__data_loc char[]", 24, 4, True, True)
    assert name.array_len is None and not name.is_pointer
    assert f.field("ptr").is_pointer and f.field("ptr").type == "const void *"
    assert layout(f)[-2:] == [("node", 56, 4, True), ("accounted", 60, 1, False)]


def test_seg_gs_pointer_and_comm_arrays():
    ptr = fmt("percpu:percpu_alloc_percpu").field("ptr")
    assert (ptr.type, ptr.offset, ptr.size, ptr.is_pointer) == ("void __seg_gs *", 56, 8, True)
    comm = fmt("sched:sched_switch").field("prev_comm")
    assert (comm.type, comm.offset, comm.size, comm.array_len) == ("char[16]", 8, 16, 16)
    assert comm.is_string and not comm.data_loc
    assert fmt("sched:sched_switch").field("prev_state").signed


def test_signedness_exactly_as_in_the_files():
    assert layout(fmt("oom:mark_victim"))[::4] == [
        ("pid", 8, 4, True), ("file_rss", 32, 8, False), ("oom_score_adj", 64, 2, True)]
    assert layout(fmt("filemap:mm_filemap_fault")) == [
        ("i_ino", 8, 8, False), ("s_dev", 16, 4, False), ("index", 24, 8, False)]
    vm = fmt("vmscan:mm_vmscan_lru_shrink_inactive")
    assert vm.field("nr_activate1").offset == 68 and vm.field("reclaim_flags").signed


def test_unknown_field_names_the_event_and_its_fields_on_one_line():
    with pytest.raises(UsageError) as e:
        fmt("syscalls:sys_enter_madvise").field("behaviour")
    assert str(e.value) == ("no field 'behaviour' in syscalls:sys_enter_madvise "
                            "(fields: __syscall_nr, start, len_in, behavior)")


def test_text_that_is_not_a_format_file_is_refused():
    with pytest.raises(MemlensError, match="not a tracepoint format"):
        T.parse_format("hello\n", "x", "y")
    with pytest.raises(MemlensError, match="cannot parse format line"):
        T.parse_format("ID: 1\nformat:\n\tfield:int;\toffset:x;\n", "x", "y")


# --- decoding -----------------------------------------------------------------------------

def test_decode_madvise_reads_ints_at_their_width():
    raw = COMMON.pack(726, 0, 0, 42) + struct.pack("=i4xQQq", 28, 0x7F0000001000, 1 << 21, 14)
    assert T.decode(fmt("syscalls:sys_enter_madvise"), raw) == {
        "__syscall_nr": 28, "start": 0x7F0000001000, "len_in": 1 << 21, "behavior": 14}


def test_decode_data_loc_string_present_and_cut_off():
    f = fmt("kmem:kmem_cache_alloc")
    name = b"kmalloc-64\0"
    fixed = COMMON.pack(659, 0, 0, 1) + struct.pack(
        "=QQIxxxxQQQi?", 0xFFFFFFFF81000000, 0xFFFF888000001000, (len(name) << 16) | 64,
        56, 64, 0xCC0, -1, True) + b"\0\0\0"
    assert len(fixed) == 64
    out = T.decode(f, fixed + name)
    assert out == {"call_site": 0xFFFFFFFF81000000, "ptr": 0xFFFF888000001000,
                   "name": "kmalloc-64", "bytes_req": 56, "bytes_alloc": 64,
                   "gfp_flags": 0xCC0, "node": -1, "accounted": True}
    assert T.decode(f, fixed)["name"] == "?"  # only the fixed part was copied


def test_decode_comm_arrays_and_negative_long():
    raw = COMMON.pack(372, 0, 0, 7) + struct.pack(
        "=16siiq16sii", b"bash\0garbage", 7, 120, -1, b"\xffkworker/0:1", 0, 120)
    assert T.decode(fmt("sched:sched_switch"), raw) == {
        "prev_comm": "bash", "prev_pid": 7, "prev_prio": 120, "prev_state": -1,
        "next_comm": "\ufffdkworker/0:1", "next_pid": 0, "next_prio": 120}


def test_decode_oom_victim_with_negative_short():
    comm = b"stress-ng\0"
    raw = COMMON.pack(609, 0, 0, 9) + struct.pack(
        "=iIQQQQI4xQh6x", 1234, (len(comm) << 16) | 72, 100, 200, 300, 400, 1000, 5, -1000)
    out = T.decode(fmt("oom:mark_victim"), raw + comm)
    assert out["comm"] == "stress-ng" and out["oom_score_adj"] == -1000 and out["uid"] == 1000


def test_decode_arrays_rel_loc_and_flexible_tail():
    f = T.parse_format("name: synth\nID: 9\nformat:\n"
                       "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
                       "\tfield:u8 mac[4];\toffset:2;\tsize:4;\tsigned:0;\n"
                       "\tfield:long v[2];\toffset:8;\tsize:16;\tsigned:1;\n"
                       "\tfield:unsigned int rc[2];\toffset:24;\tsize:8;\tsigned:0;\n"
                       "\tfield:__data_loc u64[] ids;\toffset:32;\tsize:4;\tsigned:0;\n"
                       "\tfield:__rel_loc char[] s;\toffset:36;\tsize:4;\tsigned:0;\n"
                       "\tfield:char tail[];\toffset:40;\tsize:0;\tsigned:0;\n", "t")
    assert f.field("tail").array_len == 0 and f.field("s").data_loc
    assert f.field("rc").array_len == 2 and not f.field("rc").is_string
    raw = struct.pack("=H4B2x2q2III", 9, 1, 2, 3, 4, -5, 6, 7, 8, (16 << 16) | 40,
                      (3 << 16) | 16)
    raw += struct.pack("=QQ", 10, 11) + b"ok\0"
    # the tail is whatever follows offset 40 up to a NUL: here the first id's low byte
    assert T.decode(f, raw) == {"mac": [1, 2, 3, 4], "v": [-5, 6], "rc": [7, 8],
                                "ids": [10, 11], "s": "ok", "tail": "\n"}
    assert T.decode(f, raw[:40])["ids"] is None  # dynamic data not copied


def test_decode_refuses_a_record_shorter_than_its_fixed_fields():
    with pytest.raises(MemlensError, match="record of 10 bytes"):
        T.decode(fmt("kmem:kmalloc"), bytes(10))


def test_decode_is_fast_enough_for_thousands_of_records_a_second():
    f = fmt("kmem:kmem_cache_alloc")
    raw = bytes(64) + b"x" * 8
    start = time.perf_counter()
    for _ in range(20000):
        T.decode(f, raw)
    assert time.perf_counter() - start < 1.0


# --- filters ------------------------------------------------------------------------------

MADVISE = "syscalls:sys_enter_madvise"


def test_filter_terms_compile_to_offsets_ops_and_values():
    terms = T.parse_filter("behavior==MADV_HUGEPAGE and len_in >= 0x200000", fmt(MADVISE))
    # behavior's C type is int: its value is the low 4 bytes of the 8-byte syscall slot
    assert terms[0] == T.FilterTerm(32, 4, True, T.EQ, 14, "behavior == MADV_HUGEPAGE")
    assert terms[1] == T.FilterTerm(24, 8, False, T.GE, 0x200000, "len_in >= 0x200000")
    assert T.parse_filter("start&0xfff", fmt(MADVISE))[0].op == T.AND


def test_filter_constants_negative_and_symbolic():
    oom = fmt("oom:mark_victim")
    assert T.parse_filter("oom_score_adj < -1", oom)[0].value == (1 << 64) - 1
    assert T.parse_filter("pid == 0xffffffff", oom)[0].value == (1 << 64) - 1  # int -1
    assert T.parse_filter("uid == -1", oom)[0].value == 0xFFFFFFFF  # uid_t is unsigned
    terms = T.parse_filter("behavior != MADV_COLLAPSE && start & MAP_SHARED|MAP_HUGETLB",
                           fmt(MADVISE))
    assert [t.value for t in terms] == [25, 0x40001]


@pytest.mark.parametrize("expr,says", [
    ("behaviour == 14",
     "filter 'behaviour == 14': no field 'behaviour' in syscalls:sys_enter_madvise "
     "(fields: __syscall_nr, start, len_in, behavior)"),
    ("behavior = 14", "expected FIELD OP VALUE"),
    ("behavior == MADV_FOO",
     "'MADV_FOO' is not a number, a constant memlens knows (like it: MADV_"),
    ("behavior == 14 || behavior == 15", "|| and parentheses are not supported"),
    ("start > 1 && start > 2 && start > 3 && start > 4 && start > 5", "5 terms, at most 4"),
    ("behavior == 0x100000000", "does not fit the 4-byte field 'behavior'"),
    ("behavior == 14 &&", "expected FIELD OP VALUE"),
    ("", "expected FIELD OP VALUE"),
])
def test_bad_filters_say_what_is_wrong_on_one_line(expr, says):
    with pytest.raises(UsageError) as e:
        T.parse_filter(expr, fmt(MADVISE))
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("event,expr,says", [
    ("sched:sched_switch", "prev_comm == 1", "field 'prev_comm' is a string (char[16])"),
    ("kmem:kmem_cache_alloc", "name != 0", "is a string (__data_loc char[])"),
])
def test_string_fields_cannot_be_filtered(event, expr, says):
    with pytest.raises(UsageError) as e:
        T.parse_filter(expr, fmt(event))
    assert says in str(e.value) and "filters compare integer and pointer fields only" in str(
        e.value)


def _victim(pid: int, uid: int, adj: int, total_vm: int = 0) -> bytes:
    return COMMON.pack(609, 0, 0, 1) + struct.pack(
        "=iIQQQQI4xQh6x", pid, 0, total_vm, 0, 0, 0, uid, 0, adj)


def test_evaluate_signed_unsigned_and_bit_and():
    oom = fmt("oom:mark_victim")
    negative = T.parse_filter("oom_score_adj < 0", oom)
    assert T.evaluate(negative, _victim(1, 0, -1000))
    assert not T.evaluate(negative, _victim(1, 0, 500))
    # unsigned: uid 0xffffffff is large, not negative
    assert T.evaluate(T.parse_filter("uid > 1000", oom), _victim(1, 0xFFFFFFFF, 0))
    assert T.evaluate(T.parse_filter("uid == -1", oom), _victim(1, 0xFFFFFFFF, 0))
    assert T.evaluate(T.parse_filter("pid == -1", oom), _victim(-1, 0, 0))
    big = T.parse_filter("total_vm > 0x7fffffffffffffff", oom)
    assert T.evaluate(big, _victim(1, 0, 0, 1 << 63)) and not T.evaluate(big, _victim(1, 0, 0))
    flags = T.parse_filter("oom_score_adj & 0x8000", oom)  # sign bit of a short
    assert T.evaluate(flags, _victim(1, 0, -1)) and not T.evaluate(flags, _victim(1, 0, 1))


def test_evaluate_requires_every_term_and_a_long_enough_record():
    terms = T.parse_filter("behavior == MADV_HUGEPAGE && len_in >= 4096", fmt(MADVISE))

    def rec(length, behavior):
        return COMMON.pack(726, 0, 0, 1) + struct.pack("=i4xQQq", 28, 0, length, behavior)

    assert T.evaluate(terms, rec(4096, 14))
    assert not T.evaluate(terms, rec(4095, 14)) and not T.evaluate(terms, rec(4096, 15))
    # high garbage in the 8-byte slot of an int argument is not part of its value
    assert T.evaluate(terms, rec(4096, (7 << 32) | 14))
    assert not T.evaluate(terms, rec(4096, 14)[:30])
    assert T.evaluate([], b"")


# --- tracefs ------------------------------------------------------------------------------

def test_list_events_matches_wildcards_over_categories_and_names(tmp_path):
    assert T.list_events("kmem:*", root=str(DATA)) == [
        ("kmem", "kmalloc"), ("kmem", "kmem_cache_alloc")]
    assert T.list_events("sched:sched_???????_exec", root=str(DATA)) == [
        ("sched", "sched_process_exec")]
    assert T.list_events("*:*mark_victim", root=str(DATA)) == [("oom", "mark_victim")]
    assert T.list_events("kmalloc", root=str(DATA)) == [("kmem", "kmalloc")]
    assert len(T.list_events("*:*", root=str(DATA))) == 9
    # directories without a format file (tracefs has enable/filter files alongside) are not events
    (tmp_path / "kmem" / "kfree").mkdir(parents=True)
    (tmp_path / "kmem" / "kmalloc").mkdir()
    (tmp_path / "kmem" / "kmalloc" / "format").write_text("ID: 1\n")
    (tmp_path / "kmem" / "enable").write_text("0\n")
    assert T.list_events("kmem:*", root=str(tmp_path)) == [("kmem", "kmalloc")]


def test_read_format_and_a_missing_event(tmp_path):
    f = T.read_format("oom", "mark_victim", root=str(DATA))
    assert f == fmt("oom:mark_victim")
    with pytest.raises(KernelLacks, match="no tracepoint kmem:nosuch"):
        T.read_format("kmem", "nosuch", root=str(tmp_path))


# --- the format parser without re -----------------------------------------------------------
# parse_format reads field lines with string operations (re and enum are ~8-14 ms of a
# tracepoint tool's start on this VM); these regular expressions are the reference it must
# agree with, line for line.
REF_FIELD = (r"field:(?P<decl>[^;]+);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);"
             r"(?:\s*signed:(?P<signed>\d+);)?")
REF_DECL = r"(?P<type>.*?)\s*(?P<name>[A-Za-z_]\w*)\s*(?:\[(?P<arr>[^\]]*)\])?\s*$"


def ref_field_line(line: str):
    import re

    m = re.match(REF_FIELD, line)
    d = re.match(REF_DECL, m.group("decl")) if m else None
    if not m or not d:
        return None
    return (d.group("type"), d.group("name"), d.group("arr"), int(m.group("off")),
            int(m.group("size")), m.group("signed") == "1")


def ref_base_type(type_: str) -> str:
    import re

    t = re.sub(r"\b(const|volatile|__data_loc|__rel_loc)\b", " ", type_)
    return " ".join(re.sub(r"\[[^\]]*\]", " ", t).split())


EDGE_LINES = [
    "field:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;",
    "field:char comm[16];\toffset:8;\tsize:16;\tsigned:0;",
    "field:__data_loc char[] name;\toffset:8;\tsize:4;\tsigned:0;",
    "field:const char *const * argv;\toffset:24;\tsize:8;\tsigned:0;",
    "field:unsigned long args[6];\toffset:16;\tsize:48;",
    "field:char name[TASK_COMM_LEN];\toffset:8;\tsize:16;\tsigned:1;",
    "field:int x1 ;\toffset:8;\tsize:4;\tsigned:1;",
    "field:struct foo *  ptr ;\toffset:8;\tsize:8;\tsigned:0;",
    "field:u8 __rel_loc data[];\toffset:8;\tsize:4;\tsigned:0;",
    "field:int 9lives;\toffset:8;\tsize:4;\tsigned:1;",
    "field:int;\toffset:8;\tsize:4;\tsigned:1;",
    "field:int a;\toffset:x;\tsize:4;",
    "field:int a;\tsize:4;\toffset:8;",
    "field:int a;\toffset:8;",
]


def test_field_lines_are_read_as_the_reference_expressions_read_them():
    lines = list(EDGE_LINES)
    for path in DATA.glob("*/*/format"):
        lines += [ln.strip() for ln in path.read_text().splitlines()
                  if ln.strip().startswith("field:")]
    assert len(lines) > 100
    for line in lines:
        assert T._field_line(line) == ref_field_line(line), line
        parsed = ref_field_line(line)
        if parsed:
            t = parsed[0] + (f"[{parsed[2]}]" if parsed[2] is not None else "")
            assert T._base_type(t) == ref_base_type(t), t


def test_the_running_kernels_formats_parse_as_the_reference_reads_them():
    """Every format file of this kernel (when tracefs is mounted and readable)."""
    import glob
    import os

    roots = [r for r in ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events")
             if os.access(r, os.R_OK)]
    if not roots:
        pytest.skip("tracefs not mounted or not readable here")
    checked = 0
    for path in glob.glob(f"{roots[0]}/*/*/format"):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("field:"):
                assert T._field_line(line) == ref_field_line(line), (path, line)
                checked += 1
    assert checked > 1000
