# SPDX-License-Identifier: GPL-2.0-only
"""Start-up stays lean: what oomkill and mmapsnoop import on their way to the banner (the
command line parsed, the tool and its sink made, libbpf's binding loaded) leaves out the
modules measured as the costly ones (bench/launch_phases.py): numpy (~100 ms; oomkill
never needs it, mmapsnoop imports it after attaching), dataclasses and inspect (~15 ms),
typing (~7 ms), pathlib, subprocess, shutil and ctypes.util (~25 ms together)."""
from __future__ import annotations

import pytest

from tests.conftest import fresh_python

HEAVY = ("numpy", "dataclasses", "inspect", "typing", "pathlib", "subprocess", "shutil",
         "ctypes.util")

CODE = """
import sys
import memlens.cli as cli
from memlens.core import libbpf, loader, ringbuf, runner  # what start() and the loop use
from memlens.output import sinks
command = cli.load_command({tool!r})
args = cli.parse_args({tool!r}, command, {argv!r})
renderer = {renderer}
sink = sinks.make_sink(args, renderer)
tool = command_tool(args)
heavy = [m for m in {heavy!r} if m in sys.modules]
print(" ".join(heavy))
"""


@pytest.mark.parametrize("tool,argv,renderer,tool_class", [
    ("oomkill", [], "sys.modules['memlens.tools.oomkill'].text_renderer(False)",
     "OomkillTool"),
    ("oomkill", ["--json"], "None", "OomkillTool"),
    ("mmapsnoop", ["-T"], "sys.modules['memlens.tools.mmapsnoop'].TextRenderer(args)",
     "MmapsnoopTool"),
    ("mmapsnoop", ["--json"], "None", "MmapsnoopTool"),
])
def test_no_heavy_module_before_the_banner(tool, argv, renderer, tool_class):
    code = CODE.replace("tool = command_tool(args)",
                        f"tool = sys.modules['memlens.tools.{tool}'].{tool_class}(args)")
    code = code.format(tool=tool, argv=argv, renderer=renderer, heavy=HEAVY)
    words = fresh_python(code)
    assert words == [], f"imported before the banner: {' '.join(words)}"


ENGINE_CODE = """
import sys
import memlens.cli as cli
from memlens.output import sinks
command = cli.load_command({tool!r})
args = cli.parse_args({tool!r}, command, {argv!r})
# what Engine.start imports on its way to attaching (the numpy-free part of core/unwind:
# the store is imported only for the walk, after the banner unless -p)
from memlens.core import (btfcache, drops, engine, kernel, libbpf, loader, maps, perf,
                          ringbuf, runner, stackresolve, tpformat, unwind)
from memlens.core.probespec import parse_all
probes = parse_all({probes!r})
eng = engine.Engine(probes, keys={keys!r}, trace={trace!r})
heavy = [m for m in {heavy!r} if m in sys.modules]
print(" ".join(heavy))
"""


@pytest.mark.parametrize("tool,argv,probes,keys,trace", [
    ("funccount", ["t:syscalls:sys_enter_getppid"], ["sw:page-faults"], ("probe",), False),
    ("brkstack", [], ["sw:page-faults"], ("pid", "comm", "ustack"), False),
    ("trace", ["t:syscalls:sys_exit_mmap"], ["sw:page-faults"], (), True),
])
def test_engine_tools_attach_without_numpy_or_dataclasses(tool, argv, probes, keys, trace):
    """The engine tools (counting, stacks, trace) reach their banner without numpy (the
    first poll imports it), dataclasses/inspect (core/record), typing (core/stacks' and
    stackresolve's frames are collections.namedtuple), subprocess or shutil."""
    code = ENGINE_CODE.format(tool=tool, argv=argv, probes=probes, keys=keys, trace=trace,
                              heavy=HEAVY)
    words = fresh_python(code)
    assert words == [], f"imported before the banner: {' '.join(words)}"


def test_memleak_imports_numpy_only_beside_its_load():
    """memleak -p reads its allocator's symbols (numpy's ELF reader) in a thread while
    libbpf loads: the command, its sink and its tool are made without numpy."""
    code = """
import os, sys
import memlens.cli as cli
command = cli.load_command("memleak")
args = cli.parse_args("memleak", command, ["-p", str(os.getpid())])
mod = sys.modules["memlens.tools.memleak"]
tool = mod.MemleakTool(args)
sink = mod.make_memleak_sink(args, tool)
print(" ".join(m for m in ("numpy", "dataclasses") if m in sys.modules))
"""
    words = fresh_python(code)
    assert words == [], f"imported before the load: {' '.join(words)}"


# The counting tools of issue 12 (time to attached): the command line, the sink, the tool,
# then what their start imports and does without privileges (libbpf loaded, the engine's
# object opened).  Besides the heavy modules, the small ones cut from this path are kept
# out: signal (its enums: _signal does), contextlib, importlib, fnmatch (only wildcards).
# (the command line parsed by core/quickargs: no argparse, so no re, enum, gettext, locale;
# threading, functools and collections cut too: tests/kernel/test_startup_banner_imports.py
# checks the real commands under -X importtime)
START_CODE = """
import sys
import memlens.cli as cli
from memlens.output import sinks
command = cli.load_command({tool!r})
args = cli.parse_args({tool!r}, command, {argv!r})
{make}
from memlens.core import (btfcache, drops, engine, kernel, lazy, libbpf, loader, maps, perf,
                          privileges, ringbuf, runner, tpformat, unwind)
libbpf.lib()
with loader.BpfObject.open("core/engine.bpf.o"):
    pass
print(" ".join(m for m in {heavy!r} if m in sys.modules))
"""
COUNTING = """
if getattr(command.spec, "plans", None):  # faults: its first plan (probing needs root)
    command._plan = next(iter(command.spec.plans.values()))
tool = command.make_tool(args)
sink = sinks.make_sink(args, command.renderer(args))
"""
DRSNOOP = """
mod = sys.modules["memlens.tools.drsnoop"]
tool = mod.DrsnoopTool(args, list(mod.KINDS), [])
sink = sinks.make_sink(args, mod.Renderer(args))
"""
NOT_BEFORE_ATTACH = (*HEAVY, "rich", "psutil", "prometheus_client", "elftools", "json",
                     "signal", "contextlib", "importlib", "fnmatch", "argparse", "re", "enum",
                     "gettext", "locale", "threading", "functools", "collections")


@pytest.mark.parametrize("tool,argv,make", [
    ("count", ["sw:page-faults", "--by", "comm,pid"], COUNTING),
    ("funccount", ["t:syscalls:sys_enter_getppid"], COUNTING),
    ("faults", [], COUNTING),
    ("brkstack", [], COUNTING),
    ("stackcount", ["-U", "t:syscalls:sys_enter_brk"], COUNTING),
    ("drsnoop", [], DRSNOOP),
])
def test_counting_tools_reach_attach_without_heavy_or_cut_modules(tool, argv, make):
    code = START_CODE.format(tool=tool, argv=argv, make=make, heavy=NOT_BEFORE_ATTACH)
    words = fresh_python(code)
    assert words == [], f"imported before the banner: {' '.join(words)}"


def test_the_cli_imports_neither_signal_nor_importlib():
    """memlens.cli installs its handlers through _signal (the signal module builds enums at
    import) and imports commands with __import__."""
    code = ("import sys, memlens.cli\n"
            "print(' '.join(m for m in ('signal', 'importlib', 'contextlib', 'ctypes')"
            " if m in sys.modules))")
    words = fresh_python(code)
    assert words == []


PREFETCH_CODE = """
import sys, threading
from memlens.core import lazy
from memlens.core.runner import Runner

def prefetching():
    return any(t.name == "numpy-prefetch" for t in threading.enumerate()) or "numpy" in sys.modules

from tests.runner_stub import IdleTool

class Tool(IdleTool):
    def start(self):
        lazy.prefetch_numpy()  # as Engine.start does, at the end of its start

seen = {{}}
runner = Runner(duration=0.01)
if {stopped}:  # a signal while attaching: the run ends without a banner
    Tool.start = lambda self: (lazy.prefetch_numpy(), runner.stop.set())
runner.run(Tool(), lambda rec: None, ready=lambda what: seen.setdefault("banner", prefetching()))
print(seen.get("banner"), prefetching())
"""


def test_numpys_prefetch_waits_for_the_banner():
    """A prefetch asked by a tool's start begins once the banner is out: its thread held the
    GIL the banner's print needed (2-5 ms, up to 16, of every engine tool's start)."""
    code = PREFETCH_CODE.format(stopped=False)
    words = fresh_python(code)
    assert words == ["False", "True"]  # not at the banner; started after it


def test_no_prefetch_when_the_start_is_stopped_before_attaching():
    code = PREFETCH_CODE.format(stopped=True)
    words = fresh_python(code)
    assert words == ["None", "False"]  # no banner, no import for nothing
