# SPDX-License-Identifier: GPL-2.0-only
"""core/handover.py on the objects as opened (no load, no privileges): which programs the
first copy loads and attaches once armed, and the twins each object declares."""
from __future__ import annotations

import pytest

from memlens.core.handover import HandOver
from memlens.core.loader import BpfObject

OBJECTS = {
    "core/engine.bpf.o": "memlens.core.engine",
    "tools/memleak/memleak.bpf.o": "memlens.tools.memleak",
    "tools/oomkill/oomkill.bpf.o": "memlens.tools.oomkill",
}
BPF_TRACE_UPROBE_MULTI = 48  # enum bpf_attach_type


def _handing(module: str) -> dict[str, tuple[str, str]]:
    import importlib

    return importlib.import_module(module).HANDING


@pytest.mark.parametrize("path", sorted(OBJECTS))
def test_every_twin_and_array_is_in_its_object(path):
    with BpfObject.open(path) as obj:
        for prog, (twin, array) in _handing(OBJECTS[path]).items():
            # the twin: the same hook (section) as its program, so one program array
            # takes both (bpf_prog_map_compatible)
            assert obj.section(twin) == obj.section(prog), (prog, twin)
            assert obj.has_map(array)
        assert "hand_over" in obj.rodata and "unwind_dwarf" in obj.rodata


def test_armed_the_twin_loads_and_is_attached_in_its_programs_place():
    handing = _handing("memlens.tools.oomkill")
    with BpfObject.open("tools/oomkill/oomkill.bpf.o") as obj:
        for prog in obj.programs():
            obj.set_autoload(prog, prog == "mark_victim_raw")
        ho = HandOver(obj, handing)
        assert ho.attached("mark_victim_raw") == "mark_victim_raw"  # not armed: itself
        ho.arm()
        loaded = {p for p in obj.programs() if obj.autoload(p)}
        assert loaded == {"mark_victim_raw_handing"}
        assert ho.attached("mark_victim_raw") == "mark_victim_raw_handing"
        assert obj.rodata["hand_over"] == b"\x01"
        assert obj.rodata["unwind_dwarf"] == b"\x00"  # the first is verified without the walk


def _libbpf_attach_type(obj: BpfObject, prog: str) -> int:
    """libbpf's own account of a program's expected attach type (not the loader's record
    of what was set): the getter the binding does not declare, read here."""
    import ctypes as C

    from memlens.core import libbpf as L

    fn = L.lib()._cdll.bpf_program__expected_attach_type
    fn.restype, fn.argtypes = C.c_int, [C.c_void_p]
    return int(fn(obj.prog(prog)))


def _memleak_first(multi: bool) -> BpfObject:
    """memleak's object configured as -p --quick-start configures it: its user programs,
    uprobe_multi attach types when the kernel has the links (as _open_and_load)."""
    from memlens.tools import memleak

    obj = BpfObject.open("tools/memleak/memleak.bpf.o")
    obj.rodata["targ_tgid"] = 4242  # -p's target: the whole copy's too
    for prog in obj.programs():
        obj.set_autoload(prog, prog in memleak.USER_PROGS)
        if multi and obj.section(prog).startswith(("uprobe", "uretprobe")):
            obj.set_expected_attach_type(prog, memleak.BPF_TRACE_UPROBE_MULTI)
    return obj


@pytest.mark.parametrize("multi", [True, False])
def test_the_whole_copy_takes_its_twins_attach_type_and_loads_only_what_is_installed(multi):
    """memleak -p --quick-start: the twin is a uprobe_multi program, and the program array
    it owns refuses a program of another expected attach type (6.18: EINVAL at install,
    tests/kernel/test_memleak.py checks the kernel's side).  The whole copy's ml_return is
    given the twin's; without uprobe_multi it keeps its section's, as the twin does.  Its
    other programs (the entry probes, the exec tracepoint) stay attached from the first
    copy: they do not load again."""
    from memlens.tools import memleak

    first = _memleak_first(multi)
    whole = None
    try:
        ho = HandOver(first, memleak.HANDING)
        ho.arm()
        assert ho.attached("ml_return") == "ml_return_handing"
        loaded = {p for p in first.programs() if first.autoload(p)}
        assert loaded == set(memleak.USER_PROGS) - {"ml_return"} | {"ml_return_handing"}
        whole = ho.open_whole("fp")
        assert {p for p in whole.programs() if whole.autoload(p)} == {"ml_return"}
        twin_type = _libbpf_attach_type(first, "ml_return_handing")
        assert _libbpf_attach_type(whole, "ml_return") == twin_type
        assert (twin_type == BPF_TRACE_UPROBE_MULTI) == multi
        # configured as the first, but handing over no more
        assert whole.rodata["hand_over"] == b"\x00" and first.rodata["hand_over"] == b"\x01"
        assert whole.rodata["targ_tgid"] == first.rodata["targ_tgid"]
    finally:
        if whole is not None:
            whole.close()
        first.close()


def test_the_whole_copy_takes_the_programs_attach_type_when_its_twin_has_none():
    """An attach type set on the program only (not on its twin) still reaches the whole
    copy: the twin's first, else the program's."""
    from memlens.tools import memleak

    first = _memleak_first(False)
    whole = None
    try:
        first.set_expected_attach_type("ml_return", BPF_TRACE_UPROBE_MULTI)
        ho = HandOver(first, memleak.HANDING)
        ho.arm()
        whole = ho.open_whole("fp")
        assert _libbpf_attach_type(whole, "ml_return") == BPF_TRACE_UPROBE_MULTI
    finally:
        if whole is not None:
            whole.close()
        first.close()
