# SPDX-License-Identifier: GPL-2.0-only
"""core/elf.function_offset (a u: probe's function checked before anything is attached)
against readelf: the file offset of each defined FUNC/IFUNC of libc's .dynsym, through its
PT_LOAD segments; no match for a name that is only another's prefix or suffix, nor for an
undefined one; and no numpy, nor symbols.py, imported on the way."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from memlens.core.elf import function_offset, sole_function_offset
from tests.elf_witness import dynsym_functions, dynsym_kinds

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


@pytest.mark.skipif(not os.path.exists(LIBC), reason="needs Debian's libc")
def test_offsets_equal_readelfs():
    funcs, loads = dynsym_functions(LIBC)
    first: dict[str, int] = {}
    for name, value, _size in funcs:
        first.setdefault(name, value)  # .dynsym's first

    def offset(vaddr: int) -> int:
        off, va, _ = next(s for s in loads if s[1] <= vaddr < s[1] + s[2])
        return vaddr - va + off

    assert len(first) > 1000
    names = sorted(first)[::25] + ["malloc", "free", "memcpy", "getppid"]
    assert {n: function_offset(LIBC, n) for n in names} == {n: offset(first[n]) for n in names}


@pytest.mark.skipif(not os.path.exists(LIBC), reason="needs Debian's libc")
def test_names_stored_as_the_tail_of_another():
    # the linker shares string tails: these names' st_name points into the middle of a
    # longer name in this libc's .dynstr (the byte before is not NUL); found all the same
    funcs, loads = dynsym_functions(LIBC)
    first: dict[str, int] = {}
    for name, value, _size in funcs:
        first.setdefault(name, value)
    for name in ("syslog", "fgets", "sync", "nanosleep", "vsscanf"):
        off, va, _ = next(s for s in loads if s[1] <= first[name] < s[1] + s[2])
        assert function_offset(LIBC, name) == first[name] - va + off, name


@pytest.mark.skipif(not os.path.exists(LIBC), reason="needs Debian's libc")
def test_no_match_for_a_part_of_a_name_or_an_undefined_one():
    assert function_offset(LIBC, "malloc_usable") is None   # prefix of malloc_usable_size
    assert function_offset(LIBC, "alloc") is None           # suffix of malloc
    assert function_offset(LIBC, "no_such_function") is None
    assert function_offset(LIBC, "_dl_exception_create") is None  # UND here (ld.so's)


@pytest.mark.skipif(not os.path.exists(LIBC), reason="needs Debian's libc")
def test_sole_offset_only_for_a_name_defined_once_as_a_plain_function():
    # the engine attaches these by offset (uprobe_multi), the others by name (libbpf)
    kinds = dynsym_kinds(LIBC)
    once = sorted(n for n, k in kinds.items() if k == ["FUNC"])
    twice = sorted(n for n, k in kinds.items() if len(k) > 1)
    ifunc = sorted(n for n, k in kinds.items() if k == ["IFUNC"])
    assert len(once) > 1000 and twice and ifunc
    assert "malloc" in once and "memcpy" in twice and "strlen" in ifunc
    for n in once[::40] + ["malloc", "free", "getppid"]:
        assert sole_function_offset(LIBC, n) == function_offset(LIBC, n) is not None, n
    for n in twice[:20] + ifunc[::10] + ["memcpy", "strlen", "malloc_usable", "no_such"]:
        assert sole_function_offset(LIBC, n) is None, n


def test_imports_neither_numpy_nor_symbols():
    code = ("import sys; from memlens.core.elf import function_offset; "
            f"function_offset({LIBC!r}, 'malloc') if __import__('os').path.exists({LIBC!r}) "
            "else None; print(sorted(m for m in ('numpy', 'memlens.core.symbols') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
