# SPDX-License-Identifier: GPL-2.0-only
"""The unwind table builder (memlens.core.unwind) against `readelf --debug-dump=frames-interp`
as the witness: every row readelf prints for the test programs built without frame pointers
(tests/workloads/unwind_*.c), for libc and for python3, looked up in our rows, gives the same
CFA and the same place for the saved rbp.  Then the rules readelf prints as `exp` (the PLT,
the signal trampoline, gcc's stack realignment) on hand-made CFI, and the cache."""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from memlens.core.unwind import cfi
from memlens.core.unwind.tables import NoTable, TableCache, build_table
from tests import unwind_workloads

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
PYTHON = "/usr/bin/python3.11"


@pytest.fixture(scope="module")
def bins() -> dict[str, Path]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    return unwind_workloads.build()


def readelf_rows(path) -> list[tuple[int, str, str | None, str | None]]:
    """(LOC, CFA, rbp rule, ra rule) of every row readelf interprets, and for FDEs it prints
    without rows (no instructions) their start with the CIE's rule."""
    out = subprocess.run(["readelf", "--debug-dump=frames-interp", str(path)],
                         capture_output=True, text=True).stdout  # exit 1 on warnings
    assert "Contents of the .eh_frame section" in out
    rows: list[tuple[int, str, str | None, str | None]] = []
    cols: list[str] | None = None
    in_fde = False
    for line in out.splitlines():
        m = re.match(r"^[0-9a-f]+ [0-9a-f]+ [0-9a-f]+ FDE cie=[0-9a-f]+ pc=([0-9a-f]+)\.\.", line)
        if m:
            in_fde, cols = True, None
            continue
        if re.match(r"^[0-9a-f]+ [0-9a-f]+ [0-9a-f]+ (CIE|ZERO)", line):
            in_fde = False
            continue
        if line.strip().startswith("LOC"):
            cols = line.split()[2:]
            continue
        if in_fde and cols and re.match(r"^[0-9a-f]{16} ", line):
            parts = line.split()
            rule = dict(zip(["CFA", *cols], parts[1:]))
            rows.append((int(parts[0], 16), rule["CFA"], rule.get("rbp"), rule.get("ra")))
    return rows


def row_at(table, pc: int):
    i = int(np.searchsorted(table.rows["pc"].astype(np.int64), pc, side="right")) - 1
    assert i >= 0
    return table.rows[i]


def cfa_of(row) -> tuple[int, int]:
    kind, off = int(row["kind"]), int(row["cfa_off"])
    return kind & 7, off * 8 if kind & cfi.CFA_SCALED else off


def compare_with_readelf(path) -> tuple[int, int, list[str]]:
    """(rows compared, rows readelf shows as expressions, mismatches)."""
    table = build_table(str(path))
    compared, expr, bad = 0, 0, []
    for loc, cfa, rbp, ra in readelf_rows(path):
        row = row_at(table, loc)
        m = re.fullmatch(r"(rsp|rbp)\+(-?\d+)", cfa)
        if m is None or ra != "c-8" or (rbp is not None and not re.fullmatch(r"u|c-?\d+", rbp)):
            expr += 1
            continue
        compared += 1
        want = (cfi.CFA_RSP if m.group(1) == "rsp" else cfi.CFA_RBP, int(m.group(2)))
        rk = int(row["kind"]) >> 4
        got_rbp = "u" if rk == cfi.RBP_SAME else (
            f"c{int(row['rbp_off']) * 8:+d}".replace("+", "") if rk == cfi.RBP_AT_CFA else "?")
        if cfa_of(row) != want or got_rbp != (rbp or "u"):
            bad.append(f"{loc:#x}: readelf {cfa} rbp={rbp}, ours {cfi.describe(row)}")
    return compared, expr, bad


# -- against readelf --------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["chain", "split", "lib"])
def test_rows_of_the_test_programs_equal_readelfs(bins, which):
    compared, _expr, bad = compare_with_readelf(bins[which])
    assert compared >= 30
    assert bad == []


@pytest.mark.parametrize("path", [LIBC, PYTHON])
def test_rows_of_distribution_binaries_equal_readelfs(path):
    if not os.path.exists(path):
        pytest.skip(f"{path} not installed")
    compared, expr, bad = compare_with_readelf(path)
    assert compared > 20000
    assert expr < 30          # the PLT, __restore_rt, longjmp/setcontext: checked below
    assert bad == []


# -- what the test programs are made of (the kernel tests rely on each shape) --------------

def _function_rows(path: Path, name: str):
    out = subprocess.run(["nm", str(path)], capture_output=True, text=True, check=True).stdout
    addr = next(int(ln.split()[0], 16) for ln in out.splitlines() if ln.endswith(" " + name))
    table = build_table(str(path))
    pcs = table.rows["pc"].astype(np.int64)
    lo = int(np.searchsorted(pcs, addr, side="right")) - 1
    hi = int(np.searchsorted(pcs, addr + 4096))
    rows = [r for r in table.rows[lo:hi]]
    # up to the function's end (the gap row after it)
    end = next((i for i, r in enumerate(rows) if i and (int(r["kind"]) & 7) == cfi.CFA_GAP),
               len(rows))
    return rows[:end]


def test_alloca_frame_has_an_rbp_based_cfa(bins):
    rows = _function_rows(bins["chain"], "chain3")
    assert any(cfa_of(r) == (cfi.CFA_RBP, 16) for r in rows), [cfi.describe(r) for r in rows]


def test_big_frame_is_scaled(bins):
    rows = _function_rows(bins["chain"], "chain2")
    big = [r for r in rows if int(r["kind"]) & cfi.CFA_SCALED]
    assert big and cfa_of(big[0])[1] > 40 * 1024, [cfi.describe(r) for r in rows]


def test_start_ends_the_stack(bins):
    rows = _function_rows(bins["chain"], "_start")
    assert (int(rows[0]["kind"]) & 7) == cfi.CFA_END   # cfi_undefined(rip) in start.S


def test_plt_expression(bins):
    table = build_table(str(bins["chain"]))
    plt = [r for r in table.rows if (int(r["kind"]) & 7) == cfi.CFA_PLT]
    assert len(plt) == 1
    assert int(plt[0]["cfa_off"]) == 8 and int(plt[0]["rbp_off"]) == 11
    # it covers the PLT entries: readelf's `exp` row there
    exp = [loc for loc, cfa, _, _ in readelf_rows(bins["chain"]) if cfa == "exp"]
    assert exp and all(cfa_of(row_at(table, loc))[0] == cfi.CFA_PLT for loc in exp)


def test_libc_signal_trampoline():
    table = build_table(LIBC)
    sig = [r for r in table.rows if (int(r["kind"]) & 7) == cfi.CFA_SIGNAL]
    assert len(sig) == 1
    assert int(sig[0]["cfa_off"]) == 160   # offsetof(ucontext_t, uc_mcontext.gregs[REG_RSP])


def test_gaps_between_functions(bins):
    table = build_table(str(bins["chain"]))
    kinds = table.rows["kind"] & 7
    assert kinds[-1] == cfi.CFA_GAP            # after the last FDE
    assert np.count_nonzero(kinds == cfi.CFA_GAP) >= 8
    assert (np.diff(table.rows["pc"].astype(np.int64)) > 0).all()


def test_bias_is_the_symbolizers_formula(bins):
    table = build_table(str(bins["lib"]))
    # a PIE/shared object's text mapped at 0x7f0000001000 from file offset 0x1000
    seg = [i for i in range(len(table.seg_offset)) if int(table.seg_offset[i]) == 0x1000]
    assert seg
    vaddr = int(table.seg_vaddr[seg[0]])
    assert table.bias(0x7F0000001000, 0x1000) == 0x7F0000001000 - vaddr


def test_no_table_for_a_non_elf(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"#!/bin/sh\n" * 10)
    with pytest.raises(Exception):  # noqa: B017 - ElfError or NoTable: both mean none
        build_table(str(p))
    cache = TableCache()
    assert cache.get(str(p)) is None and str(p) in cache.reasons


def test_cache_by_build_id(bins, tmp_path):
    cache = TableCache()
    t1 = cache.get(str(bins["lib"]))
    t2 = cache.get(str(bins["lib"]))
    copy = tmp_path / "libcopy.so"
    shutil.copy(bins["lib"], copy)
    t3 = cache.get(str(copy))
    assert t1 is t2 is t3 and t1.build_id
    assert cache.nbytes == t1.nbytes


# -- hand-made CFI: the expressions readelf shows as `exp` -------------------------------------

SEC_VADDR = 0x10000


def _uleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _sleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        done = (v == 0 and not b & 0x40) or (v == -1 and b & 0x40)
        out.append(b | (0 if done else 0x80))
        if done:
            return bytes(out)


def eh_frame(fdes: list[tuple[int, int, bytes]], aug: str = "zR") -> bytes:
    """A .eh_frame at SEC_VADDR: one CIE (x86-64's: CFA rsp+8, ra at c-8) and the FDEs
    (pc, length, instructions), pointers pcrel sdata4."""
    body = b"\0\0\0\0" + b"\x01" + aug.encode() + b"\0" + _uleb(1) + _sleb(-8) + b"\x10" \
        + _uleb(1) + b"\x1b" + b"\x0c\x07\x08" + b"\x90\x01"
    out = bytearray(struct.pack("<I", len(body)) + body)
    for pc, length, instr in fdes:
        start = len(out)
        ptr_field = start + 8
        fde = struct.pack("<I", start + 4) \
            + struct.pack("<i", pc - (SEC_VADDR + ptr_field)) + struct.pack("<i", length) \
            + _uleb(0) + instr
        out += struct.pack("<I", len(fde)) + fde
    return bytes(out + b"\0\0\0\0")


def rows_of(fdes, aug="zR") -> list[str]:
    built = cfi.build_rows([(eh_frame(fdes, aug), SEC_VADDR, True)])
    return [f"{int(r['pc']):#x} {cfi.describe(r)}" for r in built.rows]


def test_drap_realignment():
    # gcc -mavx with an aligned local: lea 8(%rsp),%r10; and $-32,%rsp; pushq -8(%r10);
    # push %rbp; mov %rsp,%rbp; push %r10 ...
    instr = (b"\x45"                                    # advance 5
             + b"\x0c\x0a\x00"                          # def_cfa r10+0
             + b"\x49"                                  # advance 9
             + b"\x10\x06\x02\x76\x00"                  # expression rbp: breg6 0
             + b"\x44"                                  # advance 4
             + b"\x0f\x03\x76\x78\x06")                 # def_cfa_expression breg6 -8; deref
    assert rows_of([(0x2000, 0x40, instr)]) == [
        "0x2000 rsp+8 u", "0x2005 unsupported",   # CFA on r10: two instructions
        "0x2012 *(rbp-8) *(rbp+0)", "0x2040 gap"]


def test_remember_and_restore_state():
    instr = (b"\x41" + b"\x0e\x10" + b"\x86\x02"          # push rbp: rsp+16, rbp at c-16
             + b"\x41" + b"\x0a" + b"\x0e\x08" + b"\xc6"  # remember; early return path
             + b"\x41" + b"\x0b")                          # restore: back to rsp+16 c-16
    assert rows_of([(0x3000, 0x10, instr)]) == [
        "0x3000 rsp+8 u", "0x3001 rsp+16 c-16", "0x3002 rsp+8 u", "0x3003 rsp+16 c-16",
        "0x3010 gap"]


def test_signal_frame_from_its_augmentation():
    def block(expr: bytes) -> bytes:
        return _uleb(len(expr)) + expr

    instr = (b"\x0f" + block(b"\x77" + _sleb(160) + b"\x06")    # CFA = *(rsp+160)
             + b"\x10\x06" + block(b"\x77" + _sleb(120))        # rbp at rsp+120
             + b"\x10\x10" + block(b"\x77" + _sleb(168)))       # rip at rsp+168
    assert rows_of([(0x4000, 0x10, instr)], aug="zRS") == ["0x4000 signal(rsp+160)",
                                                           "0x4010 gap"]
    # the same rules without "S" are not a frame we can follow
    assert rows_of([(0x4000, 0x10, instr)])[0] == "0x4000 unsupported"


def test_undefined_return_address_ends():
    assert rows_of([(0x5000, 0x10, b"\x07\x10")]) == ["0x5000 end", "0x5010 gap"]


def test_adjacent_fdes_have_no_gap_and_equal_rows_merge():
    rows = rows_of([(0x6000, 0x10, b""), (0x6010, 0x10, b""), (0x6030, 0x8, b"\x41\x0e\x10")])
    assert rows == ["0x6000 rsp+8 u", "0x6020 gap", "0x6030 rsp+8 u", "0x6031 rsp+16 u",
                    "0x6038 gap"]


def test_bad_opcode_marks_the_fde_unsupported():
    assert rows_of([(0x7000, 0x10, b"\x3f\x3f")])[0] == "0x7000 unsupported"  # 0x3f: unknown


def test_not_x86_64(tmp_path):
    data = bytearray(Path(LIBC).read_bytes()[:64])
    struct.pack_into("<H", data, 18, 183)  # EM_AARCH64
    p = tmp_path / "arm"
    p.write_bytes(bytes(data))
    with pytest.raises(NoTable):
        build_table(str(p))


def test_a_large_table_is_built_by_a_child_process(tmp_path, monkeypatch):
    """Past CHILD_BUILD_BYTES of CFI a child process builds the table into the disk cache
    (its peak memory goes with it); the table read back is the one built here."""
    from memlens.core.unwind import tables

    monkeypatch.setattr(tables, "CHILD_BUILD_BYTES", 1000)   # libc's .eh_frame is larger
    cache = TableCache(disk=tables.DiskCache(str(tmp_path)))
    table = cache.get(LIBC)
    assert table.source == "disk cache"                        # written by the child
    assert (table.rows == build_table(LIBC).rows).all()
    assert list(tmp_path.glob("*.rows"))
