# SPDX-License-Identifier: GPL-2.0-only
"""memleak's probe placement (the entry-skip decoder, aliases) and report grouping/format,
without privileges."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest

from memlens.core.stacks import Frame
from memlens.tools.memleak.probes import ElfFunctions, entry_skip, plan_probes
from memlens.tools.memleak.report import (
    Report,
    StackTotal,
    group,
    json_record,
    render_text,
    sort_stacks,
)
from tests.conftest import fresh_python

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


class TestEntrySkip:
    def test_glibc_free_prologue(self):
        # test %rdi,%rdi ; je +0xbf ; push %rbp  -> the je (emulated) at +3
        assert entry_skip(bytes.fromhex("4885ff0f84bf00000055488d77f0")) == 3

    def test_emulated_first_instruction_stays(self):
        assert entry_skip(bytes.fromhex("415455534889fb")) == 0      # push %r12 (malloc)

    def test_rip_relative_cmp_then_push(self):
        # cmpb $0,0x140201(%rip) ; push %r12   (posix_memalign)
        assert entry_skip(bytes.fromhex("803d0102140000415449")) == 7

    def test_endbr_test_mov_eax_then_push(self):
        # endbr64 ; test %rdi,%rdi ; mov $1,%eax ; push %rbx   (operator new)
        assert entry_skip(bytes.fromhex("f30f1efa4885ffb80100000053")) == 12

    def test_write_to_argument_register_stops(self):
        # mov %rax,%rdi ; push %rbx: rdi is an argument, never skipped
        assert entry_skip(bytes.fromhex("4889c753")) == 0

    def test_sub_rsp_stops(self):
        assert entry_skip(bytes.fromhex("4883ec5853")) == 0          # sub $0x58,%rsp

    def test_branch_into_new_offset_refuses(self):
        # test %rdi,%rdi ; je ... ; ... ; jmp back to +3
        code = bytes.fromhex("4885ff7402") + b"\x90\x90" + bytes([0xEB, (3 - 9) & 0xFF])
        assert entry_skip(code) == 0

    def test_nothing_to_land_on(self):
        assert entry_skip(bytes.fromhex("b80b0000000f05")) == 0      # mov $0xb,%eax ; syscall


@pytest.mark.skipif(not os.path.exists(LIBC), reason="needs Debian's libc")
class TestPlanOnLibc:
    def test_aliases_probed_once_and_free_skipped(self):
        plan = plan_probes([LIBC], None, "", "test")
        by_sym = {p.symbol: p for p in plan.probes}
        elf = ElfFunctions.read(LIBC)
        if elf.funcs["aligned_alloc"][0] == elf.funcs["memalign"][0]:
            assert "memalign" not in by_sym
            assert by_sym["aligned_alloc"].names == ["aligned_alloc", "memalign"]
        assert not by_sym["free"].retprobe and by_sym["malloc"].retprobe
        offsets = [(p.binary, p.offset) for p in plan.probes]
        assert len(offsets) == len(set(offsets))

    def test_prefix_missing_symbol_is_exit_4(self):
        from memlens.tools.memleak.probes import MissingSymbol

        with pytest.raises(MissingSymbol, match="je_malloc"):
            plan_probes([LIBC], None, "je_", "test")


@pytest.mark.skipif(not os.path.exists(LIBC), reason="needs Debian's libc")
class TestElfFunctionsAgainstReadelf:
    """The struct reader of the plan (symbols.function_names) against readelf: every
    defined FUNC/IFUNC of .dynsym with its value and size, and the PT_LOAD segments."""

    def test_dynsym_functions_and_loads(self):
        from tests.elf_witness import dynsym_functions

        elf = ElfFunctions.read(LIBC)
        funcs, loads = dynsym_functions(LIBC)
        want = {name: (value, size) for name, value, size in funcs}  # the last wins
        assert len(want) > 1000
        assert {k: elf.funcs[k] for k in want} == want
        assert elf.loads == sorted(loads)
        # a probe's file offset through those segments (malloc in the text segment)
        off, va, _ = next(seg for seg in loads if seg[1] <= want["malloc"][0] < seg[1] + seg[2])
        assert elf.file_offset(want["malloc"][0]) == want["malloc"][0] - va + off

    def test_plan_imports_neither_numpy_nor_dataclasses(self):
        """-p's plan is made while the BPF object loads and the attach waits for it:
        numpy's import (~0.1-0.2 s of CPU) and dataclasses' made it, not the kernel's
        verifier, the longer of the two."""

        code = ("import sys\n"
                "from memlens.tools.memleak.probes import plan_probes\n"
                f"plan = plan_probes([{LIBC!r}], None, '', 'test')\n"
                "assert any(p.symbol == 'malloc' for p in plan.probes)\n"
                "print(' '.join(m for m in ('numpy', 'dataclasses', 'inspect')"
                " if m in sys.modules))\n")
        words = fresh_python(code)
        assert words == []


INFO = np.dtype([("size", "<u8"), ("ts_ns", "<u8"), ("stack", "<u8"), ("kind", "<u2"),
                 ("gen", "<u2"), ("pad", "<u4")])


class TestReport:
    def test_group_and_scale(self):
        info = np.zeros(5, INFO)
        info["size"] = [4099, 4099, 10, 4099, 7]
        info["stack"] = [11, 11, 11, 12, 11]
        info["kind"] = [0, 0, 1, 0, 0]
        got = {(s.stack, s.kind): (s.bytes, s.allocs) for s in group(np.arange(5), info, 2)}
        assert got == {(11, 0): (2 * 8205, 6), (11, 1): (20, 2), (12, 0): (8198, 2)}

    def test_sort_by_count(self):
        a, b = StackTotal(1, 0, 100, 1), StackTotal(2, 0, 10, 5)
        assert sort_stacks([b, a], "size") == [a, b]
        assert sort_stacks([a, b], "count") == [b, a]

    def test_text_is_bcc_format(self):
        s = StackTotal(1, 0, 94277, 23, frames=[Frame(0, "malloc", 0, "libc.so.6"),
                                                 Frame(0x1490, "leak_malloc", 0x20, "leaker")])
        out = io.StringIO()
        render_text(json_record(Report(0.0, [s]), 10, 1, "user", 1), out)
        lines = out.getvalue().splitlines()
        assert lines[0].endswith("Top 1 stacks with outstanding allocations:")
        assert lines[1:4] == ["\t94277 bytes in 23 allocations from stack",
                              "\t\tmalloc+0x0 [libc.so.6]", "\t\tleak_malloc+0x20 [leaker]"]
        assert lines[4].startswith("\ttotal: 94277 bytes in 23 allocations from 1 stacks; lost:")

    def test_sampling_is_announced(self):
        out = io.StringIO()
        render_text(json_record(Report(0.0, []), 10, 23, "user", 1), out)
        assert "scaled by 23" in out.getvalue()

    def test_blocks_from_the_record(self):
        blocks = np.zeros(2, [("addr", "<u8"), ("size", "<u8"), ("age", "<i8")])
        blocks["addr"], blocks["size"] = [0x1000, 0x2000], [16, 32]
        out = io.StringIO()
        render_text(json_record(Report(0.0, [], blocks), 10, 1, "user", 1), out)
        assert out.getvalue().splitlines()[1:3] == ["\taddr = 1000 size = 16",
                                                    "\taddr = 2000 size = 32"]


class TestOutputs:
    """The output flags are every tool's (output/sinks.py); the sink renders memleak's
    records; --folded/--html/--pprof are written at the sink's close from the snapshot."""

    @staticmethod
    def parse(*argv):
        from memlens.cli import build_parser
        from memlens.tools.memleak import COMMAND

        return build_parser("memleak", COMMAND).parse_args(list(argv))

    def test_json_folded_exclusive_with_the_shared_message(self):
        from memlens.errors import UsageError
        from memlens.output.sinks import check_output_options
        from memlens.tools.memleak import COMMAND

        args = self.parse("-p", "1", "--json", "-f")
        with pytest.raises(UsageError) as shared:
            check_output_options(args)
        with pytest.raises(UsageError) as ours:
            COMMAND.validate(args)
        assert str(ours.value) == str(shared.value)

    def test_sinks(self, tmp_path):
        from memlens.output.sinks import JsonSink
        from memlens.tools.memleak import MemleakTool, _FinalFiles, _Snapshot, make_memleak_sink

        args = self.parse("-p", "1", "--json")
        assert isinstance(make_memleak_sink(args, MemleakTool(args)), JsonSink)
        html = tmp_path / "x.html"
        args = self.parse("-p", "1", "--folded", "--html", str(html))
        tool = MemleakTool(args)
        sink = make_memleak_sink(args, tool)
        assert sink.render is None  # folded: no text report on stdout
        files = sink.side[0]
        assert isinstance(files, _FinalFiles) and len(sink.side) == 1
        files.write()  # no snapshot (the run failed before its final report): no file
        assert not html.exists()
        out = io.StringIO()
        args.html = None
        tool.snapshot = _Snapshot([(["leaker"], ["malloc", "leak", "main"], 4099)], "t", None)
        _FinalFiles(args, tool, out).write()
        assert out.getvalue() == "leaker;main;leak;malloc 4099\n"


@pytest.mark.parametrize("stem", ["c", "jemalloc", "tcmalloc_minimal", "a"])
def test_library_names_match_as_bccs_pattern_does(stem):
    """find_library's and the libc test's file names, without re (~5 ms of memleak -p's
    start): the same answers as the pattern lib<stem>(.so|-<digits and dots>.so)."""
    import re

    from memlens.tools.memleak.probes import _lib_named

    names = ["libc.so.6", "libc-2.31.so", "libc-.so", "libc-2.31", "libcrypto.so.3", "libc.so",
             "libjemalloc.so.2", "libjemalloc-5.3.so", "libjemalloc-x.so", "libc-2.31.sox",
             "libtcmalloc_minimal.so.4", "libc-2..so", "liba.so", "libc-2.31.so.6", "c.so"]
    pattern = re.compile(rf"^lib{re.escape(stem)}(\.so|-[\d.]+\.so)")
    assert [_lib_named(n, stem) for n in names] == [bool(pattern.match(n)) for n in names]


def test_registry_early_allocs_is_the_objects_default():
    """The registry's early allocs (core/earlymaps, made before memleak's module imports)
    is memleak.bpf.o's allocs as --max-allocs' default sizes it: else the tool would close
    it and make its own every time (premake_maps compares them)."""
    from memlens import cli, registry
    from memlens.core import libbpf as L
    from memlens.core.loader import BpfObject

    (early,) = registry.find("memleak").early_maps
    command = cli.load_command("memleak")
    args = cli.parse_args("memleak", command, ["-p", "1"])
    with BpfObject.open("tools/memleak/memleak.bpf.o") as obj:
        mtype, key, value, _, _, name = obj.map_spec(early.name)
    assert (mtype, key, value, name) == (getattr(L, f"BPF_MAP_TYPE_{early.kind.upper()}"),
                                         early.key_size, early.value_size, "allocs")
    assert early.max_entries == args.max_allocs
