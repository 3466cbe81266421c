# SPDX-License-Identifier: GPL-2.0-only
"""core/handover.py on the objects as opened (no load, no privileges): which programs the
first copy loads and attaches once armed, and the twins each object declares."""
from __future__ import annotations

import pytest

from memlens.core.handover import HandOver
from memlens.core.loader import BpfObject

OBJECTS = {
    "core/engine.bpf.o": "memlens.core.engine",
    "tools/oomkill/oomkill.bpf.o": "memlens.tools.oomkill",
}


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
