# SPDX-License-Identifier: GPL-2.0-only
"""core/earlymaps: memleak -p's allocs made from the command line's first step (the
registry's early_maps), in a thread, and taken by the tool -- or closed when no one takes
it.  Each case runs in a fresh interpreter (the module's state is the process's); the
witness is the kernel's account of the maps the process holds (/proc/PID/fdinfo: a map's
type, sizes, entries and flags; bpftool for the running tool's)."""
from __future__ import annotations

import subprocess

import pytest

from tests.conftest import fresh_python

CASE = """
import os, re
from memlens import registry
from memlens.core import earlymaps

def held():  # (max_entries, key_size, value_size, map_flags) of this process's hash maps
    out = []
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            text = open(f"/proc/self/fdinfo/{{fd}}").read()
        except OSError:
            continue
        if re.search(r"^map_type:\\s*1$", text, re.M):
            get = lambda k: int(re.search(rf"^{{k}}:\\s*(\\w+)", text, re.M).group(1), 0)
            out.append((get("max_entries"), get("key_size"), get("value_size"),
                        get("map_flags")))
    return sorted(out)

early = registry.find("memleak").early_maps
{body}
"""


def run(body: str) -> list[str]:
    return fresh_python(CASE.format(body=body))


def test_p_makes_allocs_for_the_tool_to_take():
    words = run("""
from memlens.core.loader import hash_maps_may_allocate
print(earlymaps.start_for(early, ["-p", "1234"]))
spec, fd = earlymaps.take("allocs")
print(held() == [(1000000, 8, 32, 1 if hash_maps_may_allocate() else 0)])
print(earlymaps.take("allocs"))          # once
print(earlymaps.start_for(early, ["-p", "1"]))  # once a process
os.close(fd)
""")
    assert words == ["True", "True", "None", "False"]


@pytest.mark.parametrize("argv,started", [
    (["-p1234"], True), (["--pid=1234"], True), (["--pid", "1234"], True),
    (["-c", "ls"], False), (["--kernel"], False), ([], False), (["--pidfile"], False),
])
def test_only_with_a_pid(argv, started):
    """The registry's `when` options, alone or with their value glued."""
    from memlens import registry
    from memlens.core import earlymaps

    maps = earlymaps.wanted(registry.find("memleak").early_maps, argv)
    assert bool(maps) is started


def test_a_map_no_one_takes_is_closed_at_the_load():
    """-p with --kernel (or a tool that made its own): the map made at the start is closed
    when an object loads, also one still being made then (closed once made)."""
    words = run("""
earlymaps.start_for(early, ["-p", "1"])
earlymaps._done.wait(30)
print(len(held()))
earlymaps.close_unclaimed()
print(len(held()), earlymaps.take("allocs"))
""")
    assert words == ["1", "0", "None"]
    words = run("""
earlymaps.start_for(early, ["-p", "1"])
earlymaps.close_unclaimed()   # before the thread has made it
earlymaps._done.wait(30)
print(len(held()))
""")
    assert words == ["0"]


def test_memleak_p_holds_one_allocs_as_its_options_say():
    """The running tool: with the default --max-allocs it holds the map made at the start
    (1M entries), with another size one map of that size (the early one closed)."""
    from tests.kernel.helpers import ToolRun
    from tests.kernel.test_unwind import tool_maps

    target = subprocess.Popen(["sleep", "60"])
    try:
        for extra, entries in (([], 1000000), (["--max-allocs", "4096"], 4096)):
            tool = ToolRun("memleak", "-p", str(target.pid), *extra)
            try:
                tool.wait_attached()
                maps = tool_maps(tool.proc.pid, "allocs")
            finally:
                rc = tool.stop()
            assert rc == 0, tool.stderr
            assert [m["max_entries"] for m in maps] == [entries]
    finally:
        target.kill()
        target.wait()
