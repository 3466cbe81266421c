# SPDX-License-Identifier: GPL-2.0-only
"""brkstack against a program that makes exactly 23 brk() expansions from a known call chain
(tests/workloads/brk_levels.c).  Witness: the program checks every brk() result itself and
prints the start and end of its heap, so the kernel's own break moved 23 pages."""
from __future__ import annotations

import re
import subprocess

import pytest

from memlens.output.folded import read_folded
from tests.conftest import build_workload, memlens_cmd
from tests.kernel.helpers import ToolRun

CALLS = 23
STEP = 4096
CHAIN = ["grow_heap_level3", "grow_heap_level2", "grow_heap_level1", "main"]  # leaf first


class Workload:
    """brk_levels started first (so the tool can be told its PID), held at a stdin gate."""

    def __init__(self, calls: int = CALLS):
        self.proc = subprocess.Popen([str(build_workload("brk_levels")), str(calls)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline()
        m = re.match(r"ready pid=(\d+) brk=(0x[0-9a-f]+)", ready)
        assert m, ready
        self.pid = int(m.group(1))
        assert self.pid == self.proc.pid

    def go_and_exit(self) -> dict[str, int]:
        """Release the gate, read the witness line, then let the process exit: the tool
        must report frames of a process that is gone by the time it prints."""
        self.proc.stdin.write("g")
        self.proc.stdin.flush()
        done = self.proc.stdout.readline()
        m = re.match(r"done brk_start=(0x[0-9a-f]+) brk_end=(0x[0-9a-f]+) calls=(\d+)", done)
        assert m, done
        self.proc.stdin.close()
        assert self.proc.wait(timeout=10) == 0
        return {"start": int(m.group(1), 16), "end": int(m.group(2), 16),
                "calls": int(m.group(3))}


def _traced(*tool_args: str) -> tuple[ToolRun, Workload, dict[str, int]]:
    wl = Workload()
    run = ToolRun("brkstack", "-p", str(wl.pid), *tool_args)
    try:
        run.wait_attached()
        witness = wl.go_and_exit()
    finally:
        if wl.proc.poll() is None:
            wl.proc.kill()
    assert run.stop() == 0, run.stderr
    run.assert_detached()
    # the kernel's break moved exactly 23 pages: the workload made 23 successful expansions
    assert witness["calls"] == CALLS
    assert witness["end"] - witness["start"] == CALLS * STEP
    return run, wl, witness


def _function_names(stack: list[str]) -> list[str]:
    return [re.sub(r"\+0x[0-9a-f]+.*$", "", f) for f in stack]


def test_json_counts_23_for_the_pid_stack_and_comm():
    run, wl, _ = _traced("--json")
    records = run.records()
    reports = [r for r in records if r["type"] == "report"]
    assert len(reports) == 1 and reports[0]["final"] is True, run.stdout
    entries = reports[0]["entries"]
    # nothing else was called by this PID after the gate: every brk() is one of the 23
    assert {e["pid"] for e in entries} == {wl.pid}, entries
    assert sum(e["count"] for e in entries) == CALLS, entries
    assert len(entries) == 1, entries
    (entry,) = entries
    assert entry["comm"] == "brk_levels"
    assert entry["count"] == CALLS
    names = _function_names(entry["stack"])
    # leaf first; the binary's own frames name the module
    assert names[:4] == CHAIN, entry["stack"]
    assert all(f.endswith("[brk_levels]") for f in entry["stack"][:4]), entry["stack"]
    assert not any(r["type"] == "lost" for r in records), records
    (summary,) = [r for r in records if r["type"] == "summary"]
    assert summary["brk_calls"] == CALLS and summary["lost"] == {}


def test_folded_total_equals_json_count():
    run, _, _ = _traced("--folded")
    folded = read_folded(run.stdout)
    mine = {stack: n for stack, n in folded.items() if stack.startswith("brk_levels;")}
    assert sum(mine.values()) == CALLS, run.stdout
    (stack,) = mine
    # root first: ...;main;grow_heap_level1;grow_heap_level2;grow_heap_level3
    assert stack.endswith(";" + ";".join(reversed(CHAIN))), stack
    assert "Tracing brk() calls" in run.stderr and "Tracing" not in run.stdout


def test_text_is_stackcount_layout():
    run, wl, _ = _traced()
    lines = run.stdout.splitlines()
    idx = lines.index(f"    brk_levels [{wl.pid}]")
    assert lines[idx + 1] == f"    {CALLS}"
    frames = [ln.strip() for ln in lines[:idx] if ln.startswith("  ") and not ln.startswith("    ")]
    assert _function_names(frames)[:4] == CHAIN, run.stdout


def test_intervals_sum_to_the_total():
    """Per-interval reports hold the increase since the previous one: over the run they
    must add up to the 23 calls, none counted twice, none lost between reads."""
    run, wl, _ = _traced("--json", "0.05")
    reports = [r for r in run.records() if r["type"] == "report"]
    assert len(reports) >= 2, run.stdout
    total = sum(e["count"] for r in reports for e in r["entries"] if e["pid"] == wl.pid)
    assert total == CALLS


def test_html_flame_graph(tmp_path):
    out = tmp_path / "brk.html"
    _traced("--html", str(out))
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "grow_heap_level3" in page and "brk_levels" in page


@pytest.mark.parametrize("args", [("-p", "999999"), ("--json", "--folded")])
def test_bad_input_is_one_line_usage_error(args):
    r = subprocess.run(memlens_cmd("brkstack", *args), capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
