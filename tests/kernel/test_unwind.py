# SPDX-License-Identifier: GPL-2.0-only
"""User stacks unwound with .eh_frame (bpf/include/memlens.bpf.h, memlens.core.unwind) through
code built without frame pointers: tests/workloads/unwind_chain.c's 8-deep chain
(main -> chain1 -> ... -> chain8) mallocs, brks (glibc's sbrk) or faults 23 times, and
memleak, brkstack, stackcount and faults must show chain8 ... chain1 then main, exactly, in
one stack holding all 23 events; the same with chain5..chain8 in a shared library, in a
library dlopen'd while tracing, and for a command memleak starts (-c).

Witnesses: the workload's own count of its actions; gdb's `bt` at the same call (the frames
equal ours, in order); and the frame-pointer walk (--stack-unwind fp) on the same program,
which does not reach the chain (else the test would prove nothing)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from memlens.core.stacks import Frame
from tests import unwind_workloads
from tests.conftest import require
from tests.kernel.helpers import Bpftrace, ToolRun, memory_cgroup

N = 23
CHAIN = unwind_workloads.CHAIN            # chain8 ... chain1, leaf first
WHOLE = [*CHAIN, "main"]


@pytest.fixture(scope="module")
def bins():
    require(shutil.which("gcc") is not None, "gcc is needed to build the workloads")
    return unwind_workloads.build()


class Workload:
    """unwind_chain started first (so the tool can be told its PID), held at a stdin gate."""

    def __init__(self, exe, mode: str, n: int = N, preexec=None):
        self.proc = subprocess.Popen([str(exe), mode, str(n)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, preexec_fn=preexec)
        ready = self.proc.stdout.readline()
        m = re.match(r"ready pid=(\d+)", ready)
        assert m, ready
        self.pid = int(m.group(1))

    def go(self) -> None:
        self.proc.stdin.write("g")
        self.proc.stdin.flush()
        done = self.proc.stdout.readline()
        assert done.startswith(f"done n={N} "), done

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def tool_maps(tool_pid: int, name: str) -> list[dict]:
    """bpftool's account of each map of that name the tool holds (its fds' fdinfo show map
    ids): a system-wide stack tool holds two of the walk's maps, its first program's
    (attached before the walk was loaded) and the walk's, which it hands over to
    (core/engine.py)."""
    return [m for m in held_maps(tool_pid) if m.get("name") == name]


def held_maps(tool_pid: int) -> list[dict]:
    """bpftool's account of every map the tool holds."""
    base = f"/proc/{tool_pid}/fdinfo"
    found: dict[int, dict] = {}
    for fd in os.listdir(base):
        try:
            with open(f"{base}/{fd}") as f:
                m = re.search(r"^map_id:\s*(\d+)", f.read(), re.MULTILINE)
        except OSError:
            continue
        if m is None or int(m.group(1)) in found:
            continue
        show = subprocess.run(["bpftool", "map", "show", "id", m.group(1), "--json"],
                              capture_output=True, text=True)
        if show.returncode == 0:
            found[int(m.group(1))] = json.loads(show.stdout)
    return list(found.values())


def handed_over(maps: list[dict]) -> bool:
    """The whole program is in its twin's program array (core/handover.py's install), or
    the tool has none (no hand-over): from here every event runs the walk."""
    arrays = [m for m in maps if m.get("type") == "prog_array"]
    return not arrays or any(
        subprocess.run(["bpftool", "map", "lookup", "id", str(m["id"]), "key", "0", "0", "0",
                        "0"], capture_output=True).returncode == 0 for m in arrays)


def unwind_procs_maps(tool_pid: int) -> list[int]:
    """Ids of the unwind_procs maps the tool holds."""
    return [m["id"] for m in tool_maps(tool_pid, "unwind_procs")]


def proc_entry(run: ToolRun, pid: int) -> bytes | None:
    """The tool's unwind_procs entry for pid (in whichever of its maps has one), or None."""
    key = [str(b) for b in pid.to_bytes(4, "little")]
    map_ids = unwind_procs_maps(run.proc.pid)
    assert map_ids, "the tool holds no unwind_procs map"
    for map_id in map_ids:
        got = subprocess.run(["bpftool", "map", "lookup", "id", str(map_id), "key", *key,
                              "--json"], capture_output=True, text=True)
        if got.returncode == 0:
            return bytes(int(b, 16) for b in json.loads(got.stdout)["value"])
    return None


def wait_walk(run: ToolRun, timeout: float = 30.0) -> None:
    """Until the tool's walk is loaded and runs: it holds an unwind_rows array of more than
    one row and the whole program is in its program array (system wide, a stack tool
    attaches first a program without the walk and loads the walk after its banner,
    core/engine.py's hand-over; a process whose events all come before that is asked for
    at its next event only, and a gated workload has none).  The rows alone were not
    enough: they are made before the whole program's load and its install, and a loaded
    machine (two CPU hogs and a system-wide uretprobe beside the tests) ran the gated
    instance's start-up events in between: never asked for, its tables never loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        maps = held_maps(run.proc.pid)
        if any(m.get("name") == "unwind_rows" and m.get("max_entries", 0) > 1
               for m in maps) and handed_over(maps):
            return
        time.sleep(0.05)
    raise AssertionError(f"the tool's walk not loaded within {timeout} s")


def wait_loaded(run: ToolRun, pid: int, timeout: float = 60.0) -> None:
    """Until the tool has written the process's entry (its tables are loaded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc_entry(run, pid) is not None:
            return
        time.sleep(0.1)
    raise AssertionError(f"PID {pid}'s tables not loaded within {timeout} s")


def traced(exe, mode: str, *tool: str, pid: bool = True) -> ToolRun:
    """Run the tool on the workload: with -p, or (pid=False) system wide, started before
    the workload, which is released once the tool has loaded it; the records."""
    wl = Workload(exe, mode) if pid else None
    run = ToolRun(*tool, *(("-p", str(wl.pid)) if wl else ()), "--json")
    try:
        run.wait_attached()
        if wl is None:
            wait_walk(run)
            wl = Workload(exe, mode)  # its start-up brk (malloc's first) meets no tables
            wait_loaded(run, wl.pid)
        wl.go()
        time.sleep(0.3)  # the last events' announcements reach user space
    finally:
        rc = run.stop()
        if wl is not None:
            wl.end()
    assert rc == 0, run.stderr
    run.assert_detached()
    run.pid = wl.pid  # type: ignore[attr-defined,union-attr]
    return run


def names(stack: list[str]) -> list[str]:
    return [re.sub(r"\+0x[0-9a-f]+.*$", "", f) for f in stack]


def chain_at(stack: list[str]) -> int:
    """Where chain8 ... chain1, main stand in the stack, contiguous (-1 if not)."""
    n = names(stack)
    for i in range(len(n)):
        if n[i:i + len(WHOLE)] == WHOLE:
            return i
    return -1


def entries_of(run: ToolRun) -> list[dict]:
    reports = [r for r in run.records() if r["type"] == "report"]
    return [e for r in reports for e in r["entries"] if e.get("pid", run.pid) == run.pid]


def lost_of(run: ToolRun) -> dict:
    (summary,) = [r for r in run.records() if r["type"] == "summary"]
    return summary["lost"]


# -- each tool, whole stacks ---------------------------------------------------------------

@pytest.mark.parametrize("which", ["chain", "split"])
def test_brkstack_shows_the_whole_chain(bins, which):
    run = traced(bins[which], "brk", "brkstack")
    entries = [e for e in entries_of(run) if chain_at(e["stack"]) >= 0]
    assert len(entries) == 1, run.stdout
    (e,) = entries
    assert e["count"] == N
    n = names(e["stack"])
    # brk() is glibc's sbrk -> __brk: the syscall's frame, sbrk, then the chain
    assert n[:2] == ["brk", "sbrk"] or n[:2] == ["__brk", "__sbrk"], e["stack"]
    assert chain_at(e["stack"]) == 2, e["stack"]
    lib = "libunwind_levels.so" if which == "split" else "unwind_chain"
    assert all(f.endswith(f"[{lib}]") for f in e["stack"][2:6]), e["stack"]
    # and it ends at the program's entry: nothing after _start
    assert n[-1] == "_start", e["stack"]
    assert not {"unwind_fallback", "unwind_truncated"} & set(lost_of(run)), lost_of(run)


@pytest.mark.parametrize("which", ["chain", "split"])
def test_memleak_shows_the_whole_chain(bins, which):
    run = traced(bins[which], "malloc", "memleak", "-o", "0")
    reports = [r for r in run.records() if r["type"] == "report"]
    final = reports[-1]
    stacks = [s for s in final["stacks"] if chain_at(s["stack"]) >= 0]
    assert len(stacks) == 1, final
    (s,) = stacks
    assert s["allocs"] == N
    assert s["bytes"] == sum(1000 + i for i in range(N))
    # the allocator, then its caller chain8 (found at malloc's return) and the rest
    assert names(s["stack"])[0] == "malloc" and chain_at(s["stack"]) == 1, s["stack"]


@pytest.mark.parametrize("which", ["chain", "split"])
def test_stackcount_page_faults_show_the_whole_chain(bins, which):
    run = traced(bins[which], "fault", "stackcount", "-U", "sw:page-faults")
    entries = [e for e in entries_of(run) if chain_at(e["stack"]) >= 0]
    assert sum(e["count"] for e in entries) == N, run.stdout
    assert len(entries) == 1
    # the store in chain8 faults: chain8 is the first frame
    assert chain_at(entries[0]["stack"]) == 0, entries[0]["stack"]


def test_faults_tool_shows_the_whole_chain(bins):
    run = traced(bins["split"], "fault", "faults", "-U")
    entries = [e for e in entries_of(run) if chain_at(e["stack"]) >= 0]
    assert sum(e["count"] for e in entries) == N, run.stdout
    assert chain_at(entries[0]["stack"]) == 0


def test_through_a_signal_frame(bins):
    """chain8 raises SIGUSR1; the handler brks.  The stack goes from the handler through the
    signal frame the kernel pushed (glibc's __restore_rt: every register from the
    sigcontext) back into raise() and the whole chain."""
    run = traced(bins["split"], "signal", "brkstack")
    entries = [e for e in entries_of(run) if "on_signal" in names(e["stack"])]
    assert sum(e["count"] for e in entries) == N, run.stdout
    (e,) = entries
    n = names(e["stack"])
    handler, chain = n.index("on_signal"), chain_at(e["stack"])
    assert 0 < handler < chain, e["stack"]
    # between them: the trampoline (no symbol in libc's tables: `libc.so.6+0x...`) and
    # raise()'s frames in libc
    assert all(f.endswith("[libc.so.6]") or re.fullmatch(r"libc\.so\.6\+0x[0-9a-f]+", f)
               for f in e["stack"][handler + 1:chain]), e["stack"]
    assert n[-1] == "_start"
    assert not {"unwind_fallback", "unwind_truncated"} & set(lost_of(run)), lost_of(run)


def test_a_stack_deeper_than_the_store_is_marked_truncated(bins):
    """150 recursive frames under the chain: the walk stops at the store's 127 frames, the
    stack ends with a [truncated stack] frame (in every output: it is a frame) and each one
    is counted (unwind_truncated)."""
    run = traced(bins["chain"], "deep", "brkstack")
    entries = [e for e in entries_of(run) if "deeper" in names(e["stack"])]
    assert sum(e["count"] for e in entries) == N
    (e,) = entries
    assert e["stack"][-1] == "[truncated stack]" and len(e["stack"]) == 127, e["stack"]
    assert names(e["stack"])[:2] == ["brk", "sbrk"]
    assert set(names(e["stack"])[2:-1]) == {"deeper"}
    assert lost_of(run).get("unwind_truncated") == N, lost_of(run)


# -- witnesses -------------------------------------------------------------------------------

def test_frame_pointers_alone_do_not_reach_the_chain(bins):
    """The same run with --stack-unwind fp: the kernel's walk stops early (so the tests
    above show the unwinder's work, not the compiler's)."""
    run = traced(bins["chain"], "brk", "brkstack", "--stack-unwind", "fp")
    entries = entries_of(run)
    assert sum(e["count"] for e in entries) == N
    assert not any(chain_at(e["stack"]) >= 0 for e in entries), run.stdout


def test_frames_equal_gdbs_backtrace(bins):
    """gdb (which unwinds with the same .eh_frame, and DWARF) stopped in chain8: its `bt`
    frames from chain8 to main equal ours."""
    gdb = shutil.which("gdb")
    require(gdb is not None, "gdb is the witness here")
    out = subprocess.run([gdb, "-batch", "-nx", "-ex", "set breakpoint pending on",
                          "-ex", "break chain8", "-ex", "run",
                          "-ex", "bt", "--args", str(bins["split"]), "brk", "1"],
                         input="g", capture_output=True, text=True, timeout=60).stdout
    frames = re.findall(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(\w+)", out, re.MULTILINE)
    assert frames, out
    run = traced(bins["split"], "brk", "brkstack")
    (e,) = [e for e in entries_of(run) if chain_at(e["stack"]) >= 0]
    ours = names(e["stack"])
    ours = ours[ours.index("chain8"):ours.index("main") + 1]
    theirs = frames[frames.index("chain8"):frames.index("main") + 1]
    assert ours == theirs == WHOLE, (ours, theirs)


PYTHON = "/usr/bin/python3.11"  # Debian's: no frame pointers, stripped, not built here
GROW = "import sys\nsys.stdin.read(1)\nkeep = [bytearray(100000) for i in range(200)]\n"


def gdb_frames(script: str) -> list[Frame]:
    """gdb's backtrace at the first brk under PyByteArray_Resize, physical frames only
    (an inlined frame shares its caller's pc: printed without an address), each address
    named by our symbolizer through gdb's own map of the process."""
    from memlens.core.symbols import ProcessSymbolizer

    out = subprocess.run(
        ["gdb", "-batch", "-nx", "-ex", "set breakpoint pending on",
         "-ex", "break PyByteArray_Resize", "-ex", f"run {script} < /dev/zero",
         "-ex", "delete", "-ex", "break brk", "-ex", "continue", "-ex", "bt",
         "-ex", "info proc mappings", PYTHON],
        capture_output=True, text=True, timeout=120).stdout
    pcs, first = [], True
    for m in re.finditer(r"^#(\d+)\s+(0x[0-9a-f]+ in )?", out, re.MULTILINE):
        if m.group(2):
            pcs.append(int(m.group(2)[:-4], 16))
        elif first and pcs == []:
            pcs.append(None)  # frame 0 (the breakpoint): its pc is not ours anyway
        first = False
    maps = []
    for m in re.finditer(r"^\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)"
                         r"\s+(\S{4})\s+(/\S+)$", out, re.MULTILINE):
        lo, hi, off, perms, path = m.groups()
        maps.append(f"{lo[2:]}-{hi[2:]} {perms} {int(off, 16):08x} 00:00 "
                    f"{os.stat(path).st_ino} {path}")
    assert pcs and maps, out
    with tempfile.TemporaryDirectory() as proc:
        os.makedirs(f"{proc}/1")
        with open(f"{proc}/1/maps", "w") as f:
            f.write("\n".join(maps) + "\n")
        sym = ProcessSymbolizer(1, proc=proc)
        frames = sym.resolve([p or 0 for p in pcs], [i > 0 for i in range(len(pcs))])
    return frames


def test_python3_frames_equal_gdbs(bins, tmp_path):
    """A Debian binary no test built: python3.11 (no frame pointers, stripped; glibc's
    debug symbols are installed) growing its heap.  gdb's backtrace at the same brk, its
    addresses named by the same symbolizer, equals brkstack's stack frame for frame (the
    first by name only: gdb stops at brk's entry, the tracepoint after its syscall); at
    least 95 % of gdb's frames, in order (the issue's bar), and in fact all."""
    require(shutil.which("gdb") is not None, "gdb is the witness here")
    require(os.path.exists(PYTHON), f"{PYTHON} (Debian's python3) is the program here")
    script = tmp_path / "grow.py"
    script.write_text(GROW)
    theirs = [str(f) for f in gdb_frames(str(script))]
    p = subprocess.Popen([PYTHON, str(script)], stdin=subprocess.PIPE)
    run = ToolRun("brkstack", "-p", str(p.pid), "--json")
    try:
        run.wait_attached()
        p.stdin.write(b"g")
        p.stdin.close()
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
        rc = run.stop()
    assert rc == 0, run.stderr
    entries = [e for e in entries_of_pid(run, p.pid)
               if "PyByteArray_Resize" in names(e["stack"])]
    (e,) = sorted(entries, key=lambda e: e["count"])[-1:]
    ours = e["stack"]
    assert names(ours)[0] in ("brk", "__brk")
    same = sum(a == b for a, b in zip(ours[1:], theirs[1:]))
    assert same >= 0.95 * (len(theirs) - 1), (ours, theirs)
    assert ours[1:] == theirs[1:], (ours, theirs)
    print(f"\n{len(theirs)} frames equal to gdb's:", *ours, sep="\n  ")


def entries_of_pid(run: ToolRun, pid: int) -> list[dict]:
    reports = [r for r in run.records() if r["type"] == "report"]
    return [e for r in reports for e in r["entries"] if e.get("pid") == pid]


def stacks_text(entries: list[dict]) -> str:
    """Every entry's count and whole stack, a frame a line: a failure's message (pytest
    cuts an assertion's message at 640 characters, the first stack or two)."""
    return "\n".join(f"count {e['count']}:\n  " + "\n  ".join(e["stack"]) for e in entries)


def check(ok: bool, what: str, entries: list[dict]) -> None:
    """pytest.fail with every stack when not ok (pytest.fail's message is not cut)."""
    if not ok:
        pytest.fail(f"{what}\n{stacks_text(entries)}", pytrace=False)


# -- mappings and processes met before their tables are loaded --------------------------------

def test_dlopen_is_picked_up_while_tracing(bins):
    """The library is dlopen'd after the tool loaded the process: the first brk under it
    (one, at once) finds no table for its frames (walked by frame pointers, counted as a
    fallback, and user space asked to read the process again); the 23 a second later are
    whole, chain8..chain5 in the library."""
    run = traced(bins["dlopen"], "brk", "brkstack")
    entries = entries_of(run)
    whole = [e for e in entries if chain_at(e["stack"]) >= 0]
    assert sum(e["count"] for e in whole) == N, entries
    assert sum(e["count"] for e in entries) == N + 1
    (e,) = whole
    assert all(f.endswith("[libunwind_levels.so]") for f in e["stack"][2:6]), e["stack"]
    assert lost_of(run).get("unwind_fallback", 0) >= 1, lost_of(run)


def wait_exe(run: ToolRun, pid: int, exe: str, timeout: float = 60.0) -> None:
    """Until the tool's entry for pid is the one of `exe` (read again after an exec)."""
    ino = os.stat(exe).st_ino
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = proc_entry(run, pid)  # raw bytes: exe_ino is the first 8
        if value is not None and int.from_bytes(value[:8], "little") == ino:
            return
        time.sleep(0.1)
    raise AssertionError(f"PID {pid} not read again as {exe} within {timeout} s")


def test_exec_is_picked_up_while_tracing(bins):
    """A process loaded as python3 execs the chain (same PID): the entry it had no longer
    applies (it names the old program); the new program's first events are unwound through
    its mappings (the loader's and libc's tables are known, its own not yet: those frames
    by frame pointers, counted) and ask for it to be read again; then the 23 brks are
    whole."""
    code = f"import os, sys\nsys.stdin.read(1)\nos.execv({str(bins['chain'])!r}, " \
           f"[{str(bins['chain'])!r}, 'brk', '{N}'])\n"
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    run = ToolRun("brkstack", "-p", str(p.pid), "--json")
    try:
        run.wait_attached()
        p.stdin.write("x")        # exec
        p.stdin.flush()
        assert p.stdout.readline().startswith("ready pid=")
        wait_exe(run, p.pid, str(bins["chain"]))
        p.stdin.write("g")        # the chain's gate
        p.stdin.flush()
        assert p.stdout.readline().startswith(f"done n={N} ")
        time.sleep(0.3)
    finally:
        rc = run.stop()
        p.stdin.close()
        p.wait(timeout=10)
    assert rc == 0, run.stderr
    run.pid = p.pid  # type: ignore[attr-defined]
    whole = [e for e in entries_of(run) if chain_at(e["stack"]) >= 0]
    assert sum(e["count"] for e in whole) == N, entries_of(run)


def test_memleak_command_is_whole_from_its_first_allocation(bins):
    """memleak -c: the command's files (ldd's list) are loaded before it runs, so its
    stacks are whole from its first event, though its own entry comes later: the kernel
    side finds each frame's file from its mapping.  Nothing falls back."""
    run = ToolRun("memleak", "-c", f"{bins['split']} malloc {N} nogate", "--json")
    try:
        run.wait_attached()
        assert run.wait(timeout=60) == 0, run.stderr  # ends with the command
    finally:
        if run.proc.poll() is None:
            run.stop()
    final = [r for r in run.records() if r["type"] == "report"][-1]
    stacks = [s for s in final["stacks"] if chain_at(s["stack"]) >= 0]
    assert len(stacks) == 1 and stacks[0]["allocs"] == N, final
    assert chain_at(stacks[0]["stack"]) == 1
    (summary,) = [r for r in run.records() if r["type"] == "summary"]
    assert "unwind_fallback" not in summary["lost"], summary


def _memleak_quick_start(bins, wait_for_walk: bool):
    """memleak -p --quick-start on the split workload, released after the hand-over
    (wait_for_walk) or right after the banner: (final report, summary's lost, its
    records)."""
    wl = Workload(bins["split"], "malloc")
    run = ToolRun("memleak", "-p", str(wl.pid), "--quick-start", "-o", "0", "-T", "100",
                  "--json")
    try:
        run.wait_attached()
        if wait_for_walk:
            wait_walk(run)               # the whole program loaded
            wait_loaded(run, wl.pid)     # and the target's tables written
        wl.go()
        time.sleep(0.3)
    finally:
        rc = run.stop()
        wl.end()
    assert rc == 0, run.stderr
    run.assert_detached()
    final = [r for r in run.records() if r["type"] == "report"][-1]
    return final, lost_of(run), run


def test_memleak_quick_start_hands_over_to_the_whole_walk(bins):
    """--quick-start attaches ml_return_handing, walked by frame pointers, and loads the
    whole program after the banner; allocations made once it is in the program array are
    whole stacks, none counted as fallback."""
    final, lost, run = _memleak_quick_start(bins, wait_for_walk=True)
    stacks = [s for s in final["stacks"] if chain_at(s["stack"]) >= 0]
    assert len(stacks) == 1 and stacks[0]["allocs"] == N, final
    assert chain_at(stacks[0]["stack"]) == 1
    assert "unwind_fallback" not in lost, lost


def test_memleak_quick_start_counts_the_stacks_before_the_hand_over(bins):
    """Released right after the banner, the 23 allocations may all come before the whole
    program is in place: every one is still recorded (its first frame, the direct caller
    chain8, found at malloc's return), and each one not walked whole is counted as an
    unwind_fallback, never silently short."""
    final, lost, _ = _memleak_quick_start(bins, wait_for_walk=False)
    ours = [s for s in final["stacks"] if names(s["stack"])[:2] == ["malloc", "chain8"]]
    assert sum(s["allocs"] for s in ours) == N, final
    whole = sum(s["allocs"] for s in ours if chain_at(s["stack"]) == 1)
    assert N - whole <= lost.get("unwind_fallback", 0), (whole, lost)


# -- a process met before its tables are loaded ----------------------------------------------

def test_a_new_process_falls_back_then_is_whole(bins):
    """System wide (no -p): the workload's first brk (glibc's malloc setting up, before it
    prints "ready") meets no table for its program: that frame is walked by its frame
    pointer, counted as unwind_fallback, and a request makes user space load the process;
    the 23 brks after the gate are whole."""
    run = traced(bins["chain"], "brk", "brkstack", pid=False)
    entries = entries_of(run)
    whole = [e for e in entries if chain_at(e["stack"]) >= 0]
    assert sum(e["count"] for e in whole) == N, entries
    lost = [r for r in run.records() if r["type"] == "lost" and r["what"] == "unwind_fallback"]
    assert lost and lost_of(run).get("unwind_fallback", 0) >= 1, run.records()


def short_run_while_stopped(tool_args: list[str], exe: str, mode: str) -> tuple[ToolRun, int]:
    """System wide: `tool_args` attached, a gated instance of `exe` alive (its start-up
    events make user space load its files' tables), then the tool stopped (SIGSTOP) while
    `exe mode N nogate` runs, exits and is reaped: user space reads nothing of that short
    process while it lives.  The stopped run (ended) and the short process's PID.  Both
    instances run in a cgroup of their own that the tool is limited to (--cgroup): a busy
    machine's other processes would fill its maps (a per-process page-fault count lost the
    short process's keys with the map full)."""
    import signal

    with memory_cgroup("mlt_unwind", limit="1G") as cg:
        def join() -> None:
            (cg / "cgroup.procs").write_text("0")

        run = ToolRun(*tool_args, "--cgroup", str(cg))
        live = None
        try:
            run.wait_attached()
            wait_walk(run)
            live = Workload(exe, mode, preexec=join)
            wait_loaded(run, live.pid)
            run.proc.send_signal(signal.SIGSTOP)
            try:
                done = subprocess.run([exe, mode, str(N), "nogate"], capture_output=True,
                                      text=True, timeout=60, preexec_fn=join)
            finally:
                run.proc.send_signal(signal.SIGCONT)
            m = re.match(r"ready pid=(\d+)", done.stdout)
            assert done.returncode == 0 and m, done
            short = int(m.group(1))
            assert not os.path.exists(f"/proc/{short}")
            time.sleep(0.5)  # its announcements reach user space
        finally:
            rc = run.stop()
            if live is not None:
                live.end()
    assert rc == 0, run.stderr
    return run, short


def test_a_short_command_gone_before_it_is_read_keeps_its_symbols(bins):
    """System wide, brkstack stopped (SIGSTOP) while `unwind_chain_split brk 23 nogate`
    runs, exits and is reaped: user space reads nothing of it while it lives, and the
    announcements of its keys are read after it is gone.  Its files' tables are loaded
    (a gated instance of the same program is alive), so the kernel side walks it whole
    through its mappings (bpf_find_vma) and sends them: the stack is named by file, the
    whole chain from sbrk to _start, 23 in one stack, no symbol lost."""
    run, short = short_run_while_stopped(["brkstack", "--json"], str(bins["split"]), "brk")
    entries = entries_of_pid(run, short)
    whole = [e for e in entries if chain_at(e["stack"]) >= 0]
    check(len(whole) == 1 and whole[0]["count"] == N, f"not one stack of {N} whole", entries)
    stack = whole[0]["stack"]
    n = names(stack)
    check(n[:2] == ["brk", "sbrk"] and chain_at(stack) == 2 and n[-1] == "_start",
          "not brk, sbrk, the chain, ..., _start", whole)
    check(all(f.endswith("[libunwind_levels.so]") for f in stack[2:6]),
          "chain8..chain5 not in the library", whole)
    check(all(f.endswith("[unwind_chain_split]") for f in stack[6:10]),
          "chain4..chain1 not in the program", whole)
    # (the run's count of lost symbols is system wide: other processes' too)
    check(not any("[unknown]" in f for e in entries for f in e["stack"]),
          "a frame [unknown]", entries)


class Uretprobes(Bpftrace):
    """bpftrace's uretprobes on `funcs` of `binary`, for one process (-p: the kernel sets
    the breakpoints in its address space only), counting their returns: while one of those
    functions runs, its return address on the stack is the uretprobe trampoline's."""

    def __init__(self, pid: int, binary: str, funcs: list[str]):
        require(shutil.which("bpftrace") is not None, "needs bpftrace to set uretprobes")
        prog = " ".join(f"uretprobe:{binary}:{f} {{ @{f} = count(); }}" for f in funcs)
        self.proc = subprocess.Popen(["bpftrace", "-p", str(pid), "-e",
                                      'BEGIN { printf("READY\\n"); } ' + prog],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        for line in self.proc.stdout:  # BEGIN runs once every probe is attached
            if line.strip() == "READY":
                return
        raise AssertionError(f"bpftrace did not start: {self.proc.stderr.read()}")


def under_uretprobes(bins, which: str, *tool: str) -> tuple[ToolRun, int]:
    """`tool -p` on the brk chain of bins[which] with uretprobes on chain8 and chain6
    (in the library for `split`): the run (ended) and the workload's PID."""
    exe = bins[which]
    binary = str(bins["lib"] if which == "split" else exe)
    wl = Workload(exe, "brk")
    probes = Uretprobes(wl.pid, binary, ["chain8", "chain6"])
    counts: dict[str, int] = {}
    run = ToolRun(*tool, "-p", str(wl.pid), "--json")
    try:
        run.wait_attached()
        wl.go()
        time.sleep(0.3)  # the last events' announcements reach user space
    finally:
        rc = run.stop()
        try:
            counts = probes.stop()
        finally:
            wl.end()
    assert rc == 0, run.stderr
    assert counts == {"@chain8": N, "@chain6": N}, counts  # the trampoline was there
    return run, wl.pid


@pytest.mark.parametrize("which", ["split", "chain_fp_notables"])
def test_a_return_address_a_uretprobe_replaced_is_the_callers(bins, which):
    """A uretprobe replaces its function's return address on the stack with its trampoline's
    (the process's [uprobes] page, 0x7fffffffe000) until the function returns; the walk
    takes the real one from the kernel's pending return instances.  Uretprobes on chain8
    and chain6 (two pending at each brk, matched by stack slot), brkstack on the brk chain:
    the 23 stacks are whole, chain8's caller chain7, no frame [unknown].  `split`: those
    frames walked by the library's table; `chain_fp_notables` (frame pointers, no tables of
    its own): by frame pointer.  Without it every stack ended chain8, 0x7fffffffe000
    [unknown] (a system-wide `uretprobe:libc:malloc` beside the tests, bench_launch's
    bpftrace peer of memleak, cut every process's start-up brk stacks after malloc: the
    flaky test above)."""
    run, pid = under_uretprobes(bins, which, "brkstack")
    entries = entries_of_pid(run, pid)
    check(len(entries) == 1 and entries[0]["count"] == N, f"not one stack of {N}", entries)
    check(names(entries[0]["stack"]) == ["brk", "sbrk", *WHOLE, "__libc_start_call_main",
                                         "__libc_start_main", "_start"],
          "not brk, sbrk, the chain, libc's start, _start", entries)
    assert lost_of(run).get("unwind_truncated", 0) == 0, lost_of(run)


def test_a_stack_in_the_uretprobe_trampoline_goes_on_from_its_caller(bins):
    """The trampoline itself runs when a probed function returns, and calls the uretprobe
    syscall (x86, 6.11): a stack taken there (its tracepoint; a sample) starts in the
    [uprobes] page, its function's slot popped.  The walk starts at the caller's return
    address, the pending instance's: at chain8's return chain7 ... _start, at chain6's
    chain5 ... _start (the first still pending: chain8's caller, placed by its slot), 23
    each.  Without: 0x7fffffffe00d [unknown], then a frame-pointer walk's junk."""
    if not os.path.exists("/sys/kernel/tracing/events/syscalls/sys_enter_uretprobe"):
        pytest.skip("no uretprobe syscall here (x86 kernels before 6.11 trap instead)")
    run, _ = under_uretprobes(bins, "split", "stackcount", "-U",
                              "t:syscalls:sys_enter_uretprobe")
    entries = [e for r in run.records() if r["type"] == "report" for e in r["entries"]]
    tail = WHOLE[WHOLE.index("chain4"):] + ["__libc_start_call_main", "__libc_start_main",
                                             "_start"]
    got = sorted((names(e["stack"]), e["count"]) for e in entries)
    check(got == [(["chain5", *tail], N), (["chain7", "chain6", "chain5", *tail], N)],
          "not chain7 ... _start and chain5 ... _start, 23 each", entries)


def test_a_new_process_faults_whole_through_its_vma(bins):
    """System wide, stackcount -U sw:page-faults stopped (SIGSTOP) while `unwind_chain fault
    23 nogate` (no frame pointers) runs and exits: it never gets an entry of its own, and
    every frame's mapping is found from its vma, its file's table by device and inode (a
    gated instance of the same program made user space load them).  A page fault's event
    runs with interrupts off, where bpf_find_vma finds one mapping an event (the mmap
    lock's unlock waits for them): the program's own code is placed without it, so the
    walk reaches libc's frames and _start.  Every one of the 23 faults has the whole stack,
    frame by frame: chain8 ... chain1, main, libc's start of main, _start."""
    run, short = short_run_while_stopped(
        ["stackcount", "-U", "-P", "sw:page-faults", "--json"], str(bins["chain"]), "fault")
    entries = entries_of_pid(run, short)
    chained = [e for e in entries if "chain8" in names(e["stack"])]
    assert len(chained) == 1 and chained[0]["count"] == N, chained
    assert names(chained[0]["stack"]) == [*WHOLE, "__libc_start_call_main",
                                          "__libc_start_main", "_start"], chained[0]["stack"]


def test_a_new_process_faults_whole_through_two_libraries(bins):
    """As above, with chain5..chain8 in libunwind_levels.so: each fault's walk needs two
    libraries' mappings from the vma (the library's, libc's), and bpf_find_vma finds one an
    event there.  The mappings the walk met are kept per process (unwind_met), so a later
    event finds without bpf_find_vma those an earlier one found: each of the 23 faults in
    the library (the process's start-up faults found libc before them) is whole, through
    both libraries to _start; without that each is cut at libc, its second library."""
    run, short = short_run_while_stopped(
        ["stackcount", "-U", "-P", "sw:page-faults", "--json"], str(bins["split"]), "fault")
    entries = entries_of_pid(run, short)
    chained = [e for e in entries if "chain8" in names(e["stack"])]
    whole = [e for e in chained if names(e["stack"]) == [
        *WHOLE, "__libc_start_call_main", "__libc_start_main", "_start"]]
    assert sum(e["count"] for e in chained) == N, chained
    assert len(whole) == 1 and whole[0]["count"] == N, chained
    stack = whole[0]["stack"]
    assert all(f.endswith("[libunwind_levels.so]") for f in stack[:4]), stack
    assert all(f.endswith("[unwind_chain_split]") for f in stack[4:9]), stack


@pytest.mark.parametrize("tool", [("faults", "-U"), ("stackcount", "-U", "sw:page-faults")])
def test_engine_pprof_carries_mappings_and_addresses(bins, tool, tmp_path):
    """The engine tools' --pprof is made of the frames (core/stacks.FrameText), as
    memleak's: the 23 faults' sample is chain8 ... chain1, main by name, each Location's
    address in its Mapping, and the Mappings of the program and of its library are their
    /proc/PID/maps lines (start, limit, offset, path) with the build id `readelf -n`
    reads."""
    from memlens.core.symbols import parse_maps
    from tests.unit.test_output_pprof import decode
    from tests.unit.test_symbols import _readelf_build_id

    path = tmp_path / "faults.pb.gz"
    wl = Workload(bins["split"], "fault")
    run = ToolRun(*tool, "-p", str(wl.pid), "--pprof", str(path))
    try:
        run.wait_attached()
        wl.go()
        with open(f"/proc/{wl.pid}/maps") as f:
            maps = parse_maps(f.read())
        time.sleep(0.3)
    finally:
        rc = run.stop()
        wl.end()
    assert rc == 0, run.stderr
    p = decode(path)
    s = p.string_table
    funcs = {f.id: s[f.name] for f in p.function}
    locs = {loc.id: loc for loc in p.location}
    mappings = {m.id: m for m in p.mapping}

    def name(loc_id):
        loc = locs[loc_id]
        return funcs[loc.line[0].function_id] if loc.line else None

    chains = [x for x in p.sample
              if [name(i) for i in x.location_id[:len(WHOLE)]] == WHOLE]
    assert len(chains) == 1 and list(chains[0].value) == [N], [
        [name(i) for i in x.location_id] for x in p.sample]
    for loc_id in chains[0].location_id[:len(WHOLE)]:
        loc = locs[loc_id]
        m = mappings[loc.mapping_id]
        assert m.memory_start <= loc.address < m.memory_limit
        (line,) = [x for x in maps if x.start == m.memory_start]
        assert (s[m.filename], m.memory_limit, m.file_offset) == (line.path, line.end,
                                                                  line.pgoff)
        assert s[m.build_id] == _readelf_build_id(line.path)
    files = {os.path.basename(s[mappings[locs[i].mapping_id].filename])
             for i in chains[0].location_id[:len(WHOLE)]}
    assert files == {"unwind_chain_split", "libunwind_levels.so"}


# -- the engine's other stack tools: trace, count, growth ------------------------------------

def test_trace_user_stacks_show_the_whole_chain(bins):
    """trace -U: one event per brk() call, each with the whole chain under sbrk."""
    run = traced(bins["split"], "brk", "trace", "-U", "t:syscalls:sys_enter_brk")
    events = [r for r in run.records() if r["type"] == "event" and r["pid"] == run.pid]
    whole = [e for e in events if chain_at(e["user_stack"]) >= 0]
    assert len(whole) == N, [e["user_stack"] for e in events]
    assert all(chain_at(e["user_stack"]) == 2 for e in whole), whole[0]["user_stack"]
    assert all(names(e["user_stack"])[-1] == "_start" for e in whole)


def test_count_by_ustack_shows_the_whole_chain(bins):
    """count --by ustack: the 23 faults of chain8's stores under one key, the chain whole."""
    run = traced(bins["chain"], "fault", "count", "--by", "ustack", "sw:page-faults")
    entries = [e for e in entries_of(run) if chain_at(e["user_stack"]) >= 0]
    assert sum(e["count"] for e in entries) == N, run.stdout
    assert len(entries) == 1 and chain_at(entries[0]["user_stack"]) == 0, entries


def test_growth_ties_pages_to_the_whole_chain(bins):
    """growth -p: the 23 pages chain8 touches are one path, the chain whole."""
    run = traced(bins["split"], "fault", "growth")
    (summary,) = [r for r in run.records() if r["type"] == "summary"]
    paths = [p for p in summary["paths"] if chain_at(p["stack"]) >= 0]
    assert sum(p["pages"] for p in paths) == N, summary["paths"]
    assert len(paths) == 1 and chain_at(paths[0]["stack"]) == 0, paths
    assert not paths[0]["truncated"], paths


@pytest.mark.parametrize("tool", [("trace", "-U", "t:syscalls:sys_enter_brk"),
                                  ("count", "--by", "ustack", "t:syscalls:sys_enter_brk")])
def test_trace_and_count_with_frame_pointers_do_not_reach_the_chain(bins, tool):
    """Their witness: --stack-unwind fp walks the same program short of the chain."""
    run = traced(bins["chain"], "brk", *tool, "--stack-unwind", "fp")
    recs = run.records()
    stacks = [r["user_stack"] for r in recs if r["type"] == "event"] or \
        [e["user_stack"] for e in entries_of(run)]
    assert stacks and not any(chain_at(s) >= 0 for s in stacks), stacks


# -- oomkill: the trigger's user stack -------------------------------------------------------

def test_oomkill_trigger_stack_is_whole_without_frame_pointers():
    """oom_trigger built without frame pointers: a small task's faults (touch_pages) trigger
    a memcg OOM that kills a bigger idle one.  With --cgroup, oomkill loads the cgroup's
    processes before attaching: the trigger's user stack is touch_pages, main, then libc's
    start frames down to _start (Debian's libc has no frame pointers either).  The
    frame-pointer walk on the same kill (a second oomkill, --stack-unwind fp) does not
    reach main."""
    from tests.conftest import WORKLOAD_BIN, WORKLOADS
    from tests.kernel.helpers import memory_cgroup

    prog = WORKLOAD_BIN / "oom_trigger_nofp"
    WORKLOAD_BIN.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", *unwind_workloads.NOFP, "-o", str(prog),
                    str(WORKLOADS / "oom_trigger.c")], check=True)
    with memory_cgroup("mlt_oom_unwind") as cg:
        def join() -> None:
            (cg / "cgroup.procs").write_text("0")

        big = subprocess.Popen([str(prog), "48"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, preexec_fn=join)
        assert big.stdout.readline().strip() == "touched"
        small = subprocess.Popen([str(prog), "32", "wait"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, preexec_fn=join)
        dwarf = ToolRun("oomkill", "--json", "--cgroup", str(cg))
        fp = ToolRun("oomkill", "--json", "--stack-unwind", "fp")
        try:
            dwarf.wait_attached()
            fp.wait_attached()
            small.stdin.write("g")
            small.stdin.flush()
            assert small.stdout.readline().strip() == "touched"
            assert big.wait(timeout=30) == -9
            time.sleep(0.5)
        finally:
            assert dwarf.stop() == 0 and fp.stop() == 0, dwarf.stderr + fp.stderr
            small.stdin.close()
            small.wait(timeout=10)
    (ev,) = [r for r in dwarf.records() if r["type"] == "event"]
    assert (ev["victim_pid"], ev["trigger_pid"]) == (big.pid, small.pid)
    user = ev["trigger_user_stack"]
    n = names(user)
    assert n[:2] == ["touch_pages", "main"], user
    assert user[0].endswith("[oom_trigger_nofp]") and n[-1] == "_start", user
    assert all(f.endswith("[libc.so.6]") for f in user[2:-1]) and len(user) >= 4, user
    (summary,) = [r for r in dwarf.records() if r["type"] == "summary"]
    assert "unwind_fallback" not in summary["lost"], summary
    (ev_fp,) = [r for r in fp.records() if r["type"] == "event"
                and r["victim_pid"] == big.pid]
    assert names(ev_fp["trigger_user_stack"])[0] == "touch_pages"
    assert "main" not in names(ev_fp["trigger_user_stack"]), ev_fp["trigger_user_stack"]


def test_oomkill_trigger_reaped_before_its_kill_is_read_keeps_its_symbols():
    """The trigger is its own victim and is reaped while oomkill is stopped (SIGSTOP): its
    memory map is gone when the kill is read.  Loaded with --cgroup before attaching, its
    map was snapshotted then: the stack is still named, and no symbols are lost."""
    import signal

    from tests.conftest import WORKLOAD_BIN, WORKLOADS
    from tests.kernel.helpers import memory_cgroup

    prog = WORKLOAD_BIN / "oom_trigger_nofp"
    subprocess.run(["gcc", *unwind_workloads.NOFP, "-o", str(prog),
                    str(WORKLOADS / "oom_trigger.c")], check=True)
    with memory_cgroup("mlt_oom_reaped") as cg:
        hog = subprocess.Popen([str(prog), "96", "wait"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True,
                               preexec_fn=lambda: (cg / "cgroup.procs").write_text("0"))
        run = ToolRun("oomkill", "--json", "--cgroup", str(cg))
        try:
            run.wait_attached()
            run.proc.send_signal(signal.SIGSTOP)
            hog.stdin.write("g")
            hog.stdin.flush()
            assert hog.wait(timeout=60) == -9  # killed and reaped: /proc/PID is gone
        finally:
            run.proc.send_signal(signal.SIGCONT)
        time.sleep(0.5)
        assert run.stop() == 0, run.stderr
    (ev,) = [r for r in run.records() if r["type"] == "event" and r["victim_pid"] == hog.pid]
    assert ev["trigger_pid"] == hog.pid and not os.path.exists(f"/proc/{hog.pid}")
    n = names(ev["trigger_user_stack"])
    assert n[:2] == ["touch_pages", "main"] and n[-1] == "_start", ev["trigger_user_stack"]
    (summary,) = [r for r in run.records() if r["type"] == "summary"]
    assert "symbols" not in summary["lost"], summary
