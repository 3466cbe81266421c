# SPDX-License-Identifier: GPL-2.0-only
"""What each tracing tool really imports before its banner, end to end: the installed
`memlens` command run under `python -X importtime` (one line per module imported, on
stderr, in order), its stderr cut at the banner.  The modules listed here were measured as
the costly ones on this 2-core VM (bench/bench_launch.py, issue 12): argparse with re, enum
and gettext ~16-20 ms, threading with functools and collections ~5 ms, typing ~7-16 ms,
numpy ~100 ms.  The unit tests (tests/unit/test_startup_imports.py) walk the same path by
hand without root; this one runs the real command, its probes attached."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

MEMLENS = Path(sys.executable).parent / "memlens"

# never before any of these tools' banner
NOT_BEFORE_BANNER = ("numpy", "argparse", "re", "enum", "gettext", "locale", "typing",
                     "dataclasses", "inspect", "threading", "functools", "collections",
                     "subprocess", "shutil", "pathlib", "json", "contextlib", "importlib",
                     "signal", "tempfile", "mmap")


def modules_before_banner(*argv: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-X", "importtime", str(MEMLENS), *argv,
                           "-d", "0.05"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    mods = []
    for line in proc.stderr.splitlines():
        if line.startswith("Tracing "):
            return mods
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if not name.startswith("imported package"):
                mods.append(name)
    raise AssertionError(f"no banner: {proc.stderr[-2000:]}")


# re (with enum, functools and collections) where a tool compiles a tracepoint filter or
# reads flag names from a print format before attaching: swapin's memcg filter, slabratetop's
# __GFP_ bit (both are below half of bpftrace's time anyway, bench/)
RE_FAMILY = ("re", "enum", "functools", "collections")
# threading (with functools and collections) where a tool starts a thread before its banner:
# oomkill's preload of the largest processes' unwind tables
# mmap (a shared library, ~0.3 ms) where a ring's reader is made before the banner
# (mmapsnoop's); libbpf's log filter page is mapped through libc (core/libbpf.py)
ALLOWED = {"swapin": RE_FAMILY, "slabratetop": RE_FAMILY,
           "oomkill": ("threading", "functools", "collections"), "mmapsnoop": ("mmap",)}


@pytest.mark.parametrize("argv", [
    ["count", "sw:page-faults", "--by", "comm,pid"],
    ["funccount", "t:syscalls:sys_enter_getppid"],
    ["stackcount", "-U", "t:syscalls:sys_enter_brk"],
    ["brkstack"],
    ["faults"],
    ["drsnoop"],
    ["numamove"],
    ["trace", "t:syscalls:sys_exit_mmap"],
    ["slabratetop"],
    ["shmsnoop"],
    ["mmapsnoop"],
    ["vmscan"],
    ["swapin"],
    # options whose type functions run on every parse (argparse only for their errors)
    ["drsnoop", "--ring-size", "64k"],
    ["shmsnoop", "--ring-size", "8M"],
    ["mmapsnoop", "--ring-size", "2M"],
    ["faults", "--stack-storage-size", "4096", "--max-keys", "2048"],
    ["oomkill"],
], ids=lambda a: " ".join(a))
def test_tools_reach_their_banner_without_the_costly_modules(argv):
    if not MEMLENS.exists():
        pytest.skip(f"no installed command at {MEMLENS}")
    mods = modules_before_banner(*argv)
    assert "memlens.cli" in mods  # the cut is where it should be
    bad = [m for m in NOT_BEFORE_BANNER if m in mods and m not in ALLOWED.get(argv[0], ())]
    assert bad == [], f"{' '.join(argv)} imports before its banner: {bad}"


def test_tracepoints_alone_import_neither_the_uprobe_warmup_nor_perf_events():
    """funccount (its tool can take u: probes) on a tracepoint: the uprobe warm-up module and
    the perf-event one are not needed before its banner (~0.3 ms of its start)."""
    if not MEMLENS.exists():
        pytest.skip(f"no installed command at {MEMLENS}")
    mods = modules_before_banner("funccount", "t:syscalls:sys_enter_getppid")
    assert "memlens.core.engine" in mods
    assert "memlens.core.uprobewarm" not in mods and "memlens.core.perf" not in mods, mods
    mods = modules_before_banner("count", "sw:page-faults")
    assert "memlens.core.perf" in mods  # (the test can see it when it is there)


@pytest.mark.parametrize("argv", [["drsnoop"], ["shmsnoop"], ["compactsnoop"],
                                  ["trace", "t:syscalls:sys_exit_mmap"],
                                  ["drsnoop", "--ring-size", "64k"]],
                         ids=lambda a: " ".join(a))
def test_event_tools_import_neither_the_ring_reader_nor_the_counting_commands(argv):
    """The snoops and trace size their ring (core/ringsize) and check privileges and tracefs
    (probespec.prepare_tracing) before the banner, and read the ring only after it: the
    reader (core/ringbuf, with struct and the lazy numpy) and the counting commands'
    module (core/countingtool) were ~1 ms of these starts."""
    if not MEMLENS.exists():
        pytest.skip(f"no installed command at {MEMLENS}")
    mods = modules_before_banner(*argv)
    assert "memlens.core.ringsize" in mods  # (the test can see a module of the path)
    assert "memlens.core.ringbuf" not in mods and "memlens.core.countingtool" not in mods, \
        mods
    if argv[0] != "trace":  # (whose --stack-unwind option is core/unwind's)
        # stackless programs alone: the walk is not configured (its maps are not made)
        assert "memlens.core.unwind" not in mods, mods


def test_only_stack_runs_import_the_walk():
    """core/unwind (the walk's configuration) before the banner only where a program with
    the walk is loaded, or an option names the walk (count's and trace's --stack-unwind):
    not for stackless runs without it (~0.2 ms of their start)."""
    if not MEMLENS.exists():
        pytest.skip(f"no installed command at {MEMLENS}")
    assert "memlens.core.unwind" not in modules_before_banner(
        "funccount", "t:syscalls:sys_enter_getppid")
    assert "memlens.core.unwind" not in modules_before_banner("vmscan")
    assert "memlens.core.unwind" in modules_before_banner(
        "stackcount", "-U", "t:syscalls:sys_enter_brk")


def test_user_probes_by_library_name_import_neither_re_nor_subprocess():
    """A u: probe names its library (`u:c:getppid`, `u:libc:malloc`): found in the process's
    map with -p and in the linker's cache file without (core/ldcache.py), by a string test:
    re and subprocess (`ldconfig -p`) were ~6 and ~10 ms of these starts."""
    if not MEMLENS.exists():
        pytest.skip(f"no installed command at {MEMLENS}")
    mods = modules_before_banner("funccount", "u:c:getppid")
    assert "memlens.core.ldcache" in mods  # the library came from the cache file
    bad = [m for m in NOT_BEFORE_BANNER if m in mods and m != "mmap"]  # (core/elf's)
    assert bad == [], f"funccount u:c:getppid imports before its banner: {bad}"
    target = subprocess.Popen(["sleep", "30"])
    try:
        mods = modules_before_banner("trace", "-p", str(target.pid), "u:libc:malloc")
    finally:
        target.kill()
        target.wait()
    assert "memlens.core.ldcache" not in mods  # found in the process's map
    bad = [m for m in NOT_BEFORE_BANNER if m in mods and m != "mmap"]
    assert bad == [], f"trace -p PID u:libc:malloc imports before its banner: {bad}"


MAIN_THREAD_IMPORTS = """
import _thread, os, sys
main = _thread.get_ident()
seen = []

class Finder:  # notes each module's first import, and which thread imported it
    def find_spec(self, name, path=None, target=None):
        if name not in sys.modules and _thread.get_ident() == main:
            seen.append(name)

sys.meta_path.insert(0, Finder())
sys.argv[0] = "memlens"
import memlens.cli as cli
import memlens.core.runner as runner

def banner(what):
    print(" ".join(seen), flush=True)
    os._exit(0)

runner.banner = banner
cli.main(sys.argv[1:])
"""


def test_memleak_p_main_thread_reaches_its_banner_without_threading():
    """memleak -p plans its probes and reads unwind tables in a thread beside the load
    (core/background.py, on _thread): its main thread, the one the banner waits for,
    imports neither threading, functools nor collections (~5 ms here) -- the planning
    thread may (symbols, stacks), in parallel with the verifier."""
    target = subprocess.Popen(["sleep", "30"])
    try:
        out = subprocess.run([sys.executable, "-c", MAIN_THREAD_IMPORTS, "memleak", "-p",
                              str(target.pid)], capture_output=True, text=True, timeout=60)
    finally:
        target.kill()
        target.wait()
    assert out.returncode == 0, out.stderr[-2000:]
    mods = out.stdout.split()
    assert "memlens.tools.memleak" in mods  # (the loader: by core/earlymaps' thread first)
    bad = [m for m in NOT_BEFORE_BANNER if m in mods]
    assert bad == [], f"memleak -p's main thread imports before its banner: {bad}"
