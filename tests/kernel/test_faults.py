# SPDX-License-Identifier: GPL-2.0-only
"""faults against a program that writes to 4099 fresh anonymous pages from a known function
(tests/workloads/fault_touch.c), held between stdin gates.

Witnesses: the program's own getrusage() minflt+majflt delta around exactly the touch loop,
/proc/PID/stat's minflt+majflt around the traced window, and `perf stat -e page-faults`
for a whole command.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from memlens.output.folded import frame_name, read_folded
from tests.conftest import build_workload, memlens_cmd, require
from tests.kernel.helpers import ToolRun, bpf_maps_of

PAGES = 4099  # prime


def proc_faults(pid: int) -> int:
    """minflt + majflt of /proc/PID/stat (fields 10 and 12)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[7]) + int(fields[9])


class Workload:
    """fault_touch started first (so the tool can be told its PID), held at a stdin gate;
    `argv_prefix` runs it under another program (perf stat)."""

    def __init__(self, pages: int = PAGES, argv_prefix: tuple[str, ...] = (),
                 argv_suffix: tuple[str, ...] = ()):
        argv = [*argv_prefix, str(build_workload("fault_touch")), str(pages), *argv_suffix]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        ready = self.proc.stdout.readline()
        m = re.match(r"ready pid=(\d+)", ready)
        assert m, ready
        self.pid = int(m.group(1))

    def touch(self) -> dict[str, int]:
        """Release gate 1; the program touches its pages and reports its own fault delta."""
        self.proc.stdin.write("g")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        m = re.match(r"touched pages=(\d+) minflt=(\d+) majflt=(\d+)", line)
        assert m, line
        return {"pages": int(m.group(1)), "minflt": int(m.group(2)),
                "majflt": int(m.group(3))}

    def finish(self) -> None:
        self.proc.stdin.close()  # gate 2: the program exits when its stdin ends
        assert self.proc.wait(timeout=30) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _traced(*tool_args: str) -> tuple[ToolRun, Workload, dict[str, int]]:
    """The tool on the workload's PID: attached before gate 1, stopped after the touch loop
    and before the process exits (its frames are resolved while it lives, and its exit
    faults nothing into the window).  The witness: its own delta and /proc/PID/stat's."""
    wl = Workload()
    try:
        before = proc_faults(wl.pid)
        run = ToolRun("faults", "-p", str(wl.pid), *tool_args)
        run.wait_attached()
        witness = wl.touch()
        witness["proc_stat"] = proc_faults(wl.pid) - before
        assert run.stop() == 0, run.stderr
        wl.finish()
    finally:
        wl.kill()
    run.assert_detached()
    # the program made exactly its PAGES faults in the loop, all minor, and nothing else
    # between the tool's attach and its stop
    assert witness == {"pages": PAGES, "minflt": PAGES, "majflt": 0, "proc_stat": PAGES}, \
        (witness, run.stdout)
    return run, wl, witness


def _names(stack: list[str]) -> list[str]:
    return [frame_name(f) for f in stack]


def test_json_user_stacks_total_equals_the_programs_own_counters():
    run, wl, witness = _traced("--json", "-U")
    records = run.records()
    reports = [r for r in records if r["type"] == "report"]
    assert len(reports) == 1 and reports[0]["final"] is True, run.stdout
    entries = reports[0]["entries"]
    assert entries and {e["pid"] for e in entries} == {wl.pid}, entries
    assert {e["comm"] for e in entries} == {"fault_touch"}
    total = sum(e["count"] for e in entries)
    assert total == witness["minflt"] + witness["majflt"] == PAGES
    assert sum(e["minor"] for e in entries) == total
    assert sum(e["major"] for e in entries) == 0
    largest = entries[-1]  # largest last
    assert largest["count"] == max(e["count"] for e in entries) == PAGES
    assert "kernel_stack" not in largest  # -U: user frames only
    names = _names(largest["user_stack"])
    assert names[0] == "touch_pages", largest["user_stack"]
    assert names[:3] == ["touch_pages", "touch_region", "main"], largest["user_stack"]
    assert largest["stack"][0].endswith("[fault_touch]")
    assert not any(r["type"] == "lost" for r in records), records
    (summary,) = [r for r in records if r["type"] == "summary"]
    assert summary["faults"] == PAGES and summary["lost"] == {}
    assert summary["probes"] == ["sw:minor-faults", "sw:major-faults"]


def test_no_stacks_is_one_row_with_the_same_totals():
    run, wl, _ = _traced("--json", "-S")
    (report,) = [r for r in run.records() if r["type"] == "report"]
    assert report["entries"] == [{"pid": wl.pid, "comm": "fault_touch", "minor": PAGES,
                                  "major": 0, "count": PAGES}]


def test_folded_total_equals_json_total():
    run, _, _ = _traced("--folded", "-U")
    folded = read_folded(run.stdout)
    assert sum(folded.values()) == PAGES, run.stdout
    stack = max(folded, key=folded.get)
    assert folded[stack] == PAGES
    # comm first, then root ... leaf
    assert stack.startswith("fault_touch;") and stack.endswith(";main;touch_region;touch_pages")
    assert "Tracing page faults" in run.stderr and "Tracing" not in run.stdout


def test_text_shows_the_minor_major_split():
    run, wl, _ = _traced("-U")
    lines = run.stdout.splitlines()
    idx = lines.index(f"    fault_touch [{wl.pid}]")
    assert lines[idx + 1] == f"    {PAGES} (minor {PAGES}, major 0)"
    frames = [ln.strip() for ln in lines[:idx] if ln.startswith("  ") and not ln.startswith("    ")]
    assert _names(frames)[:3] == ["touch_pages", "touch_region", "main"], run.stdout
    assert all(len(ln) < 80 for ln in lines)


def test_kernel_stacks_of_user_faults_are_empty_not_lost():
    """Both stacks asked (the default): a fault taken in user mode has no kernel stack of
    its own (the perf event's registers are the user's), which is not a loss."""
    run, wl, _ = _traced("--json")
    records = run.records()
    (report,) = [r for r in records if r["type"] == "report"]
    assert sum(e["count"] for e in report["entries"]) == PAGES
    largest = report["entries"][-1]
    assert _names(largest["user_stack"])[0] == "touch_pages"
    assert not any(r["type"] == "lost" for r in records), records


def test_command_total_equals_perf_stat(tmp_path):
    """The whole life of a command, from its exec: traced system wide (before it starts),
    keyed by PID and comm, against perf stat -e page-faults counting the same command."""
    perf = shutil.which("perf")
    require(perf is not None, "perf (Debian linux-perf, scripts/setup.sh) is not installed")
    out = tmp_path / "perf.csv"
    run = ToolRun("faults", "-S", "--json")
    wl = None
    try:
        run.wait_attached()
        wl = Workload(argv_prefix=(perf, "stat", "-x,", "-o", str(out), "-e",
                                   "page-faults,minor-faults,major-faults", "--"))
        witness = wl.touch()
        wl.finish()
        assert run.stop() == 0, run.stderr
    finally:
        if wl is not None:
            wl.kill()
        run.stop()
    assert witness["minflt"] == PAGES
    perf_counts = {}
    for line in out.read_text().splitlines():
        cells = line.split(",")
        if len(cells) > 2 and cells[2] in ("page-faults", "minor-faults", "major-faults"):
            perf_counts[cells[2]] = int(cells[0])
    assert perf_counts["page-faults"] > PAGES, out.read_text()
    reports = [r for r in run.records() if r["type"] == "report"]
    # perf counts from the exec on (enable_on_exec): the forked child's faults before it,
    # under perf's comm ("perf", "perf-exec"), are not the command's
    mine = [e for r in reports for e in r["entries"]
            if e["pid"] == wl.pid and e["comm"] == "fault_touch"]
    assert sum(e["count"] for e in mine) == perf_counts["page-faults"], (mine, perf_counts)
    assert sum(e["minor"] for e in mine) == perf_counts["minor-faults"]
    assert sum(e["major"] for e in mine) == perf_counts["major-faults"]


PY_CHILD = ("import sys\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read(1)\n"
            "import json, decimal, email.parser, http.client\n"
            "x = [bytearray(4096 * (i + 1)) for i in range(200)]\n"
            "print('done', flush=True)\n"
            "sys.stdin.read(1)\n")


def _wait_blocked_in_read(pid: int, timeout: float = 10.0) -> None:
    """Until the process sleeps in read(2) (/proc/PID/syscall: x86-64's number 0)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/syscall") as f:
            if f.read().split(" ", 1)[0] == "0":
                return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} never blocked in read()")


def _python_child_faults(*tool_args: str) -> tuple[ToolRun, int, int]:
    """faults -p on python3 importing modules (PY_CHILD); (the run, the child's pid, its
    fault delta over the traced window from /proc)."""
    child = subprocess.Popen(["/usr/bin/python3", "-c", PY_CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        before = proc_faults(child.pid)
        run = ToolRun("faults", "-p", str(child.pid), "--json", *tool_args)
        run.wait_attached()
        child.stdin.write("g")
        child.stdin.flush()
        assert child.stdout.readline() == "done\n"
        _wait_blocked_in_read(child.pid)  # no fault of its own until stdin says so
        delta = proc_faults(child.pid) - before
        assert run.stop() == 0, run.stderr
        child.stdin.close()
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    run.assert_detached()
    return run, child.pid, delta


def test_the_first_event_storing_two_new_stacks_loses_neither():
    """The stack store allocates its entries as they are inserted (6.1+): the kernel's
    allocator starts each CPU with one free entry of its size and refills later, so the
    first event storing two new stacks on a CPU (a kernel-mode fault: a kernel and a user
    stack) found no memory for the second: a stack lost at every start, until the tool
    filled each CPU's cache before attaching (loader.warm_allocation).  fault_touch's
    "read" mode: its faults are the kernel's, filling the pages read(2) writes (with -p,
    only its events insert: its first one is that double insert)."""
    wl = Workload(argv_suffix=("read",))
    try:
        run = ToolRun("faults", "-p", str(wl.pid), "--json")
        run.wait_attached()
        witness = wl.touch()
        assert run.stop() == 0, run.stderr
        wl.finish()
    finally:
        wl.kill()
    run.assert_detached()
    assert witness == {"pages": PAGES, "minflt": PAGES, "majflt": 0}, witness
    records = run.records()
    (report,) = [r for r in records if r["type"] == "report"]
    mine = [e for e in report["entries"] if e["pid"] == wl.pid]
    assert sum(e["count"] for e in mine) == PAGES, mine
    assert all(e.get("kernel_stack") and "[missed" not in " ".join(e["stack"])
               for e in mine), mine
    lost = [r for r in records if r["type"] == "lost" and r["what"] in ("stacks", "entries")]
    assert lost == [], lost


def test_a_full_stack_store_loses_stacks_not_faults_and_names_its_option():
    """--stack-storage-size 1 on python3 importing modules (faults from many places of
    the interpreter): one stack fits, the others are lost, counted with the option that
    sizes the store, and every fault is still counted, under `[missed user stack]`: the
    total is /proc's fault delta and the faults without a stack are the stacks lost."""
    run, pid, delta = _python_child_faults("-U", "--stack-storage-size", "1")
    records = run.records()
    (report,) = [r for r in records if r["type"] == "report"]
    mine = [e for e in report["entries"] if e["pid"] == pid]
    assert sum(e["count"] for e in mine) == delta, (delta, mine)
    missed = sum(e["count"] for e in mine if e["user_stack"] == ["[missed user stack]"])
    lost = [r for r in records if r["type"] == "lost" and r["what"] == "stacks"]
    assert lost and all(r["reason"] == "stack map full" and
                        r["hint"] == "raise --stack-storage-size, now 1" for r in lost), lost
    assert sum(r["count"] for r in lost) == missed > 0, (lost, missed)
    assert len(mine) > 1  # the stored stack(s) beside the missed ones


def _stack_store_sizes(pid: int) -> list[int]:
    """max_entries of the stack stores (hash maps of 8-byte keys and 127-frame values)
    among the BPF maps a process holds."""
    return [m["max_entries"] for m in bpf_maps_of(pid)
            if (m["map_type"], m["key_size"], m["value_size"]) == (1, 8, 1016)]


@pytest.mark.parametrize("option, expected", [((), None), (("--stack-storage-size", "4096"),
                                                           4096)])
def test_the_stack_store_is_sized_by_its_option_or_by_what_the_kernel_allows(option,
                                                                              expected):
    """32768 stacks by default where the kernel allocates hash entries as stored (6.1+,
    asked of the kernel: loader.hash_maps_may_allocate), 10240 where it preallocates them;
    --stack-storage-size sets it."""
    from memlens.core.loader import hash_maps_may_allocate

    if expected is None:
        expected = 32768 if hash_maps_may_allocate() else 10240
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        run = ToolRun("faults", "-p", str(sleeper.pid), *option)
        run.wait_attached()
        sizes = _stack_store_sizes(run.proc.pid)
        assert run.stop() == 0, run.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
    run.assert_detached()
    assert sizes and set(sizes) == {expected}, sizes


@pytest.mark.parametrize("args", [("-p", "999999"), ("-U", "-K"), ("--json", "--folded")])
def test_bad_input_is_one_line_usage_error(args):
    r = subprocess.run(memlens_cmd("faults", *args), capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
