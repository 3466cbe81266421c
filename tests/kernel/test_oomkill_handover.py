# SPDX-License-Identifier: GPL-2.0-only
"""oomkill's hand-over (core/handover.py, oomkill.bpf.c): system wide, the program attached
at the banner is verified without the DWARF walk of the trigger's user stack; the whole
program is loaded after the banner and every kill is handed over to it.  No kill may be
recorded twice or lost across it, and once it is done the trigger's stack is walked whole.

Workload: a trigger built without frame pointers (its frame-pointer walk cannot reach main:
test_unwind.py's oomkill test shows it) touching 24 MB each time it is told to, in a 64 MB
memory cgroup where a bigger idle task is killed each time (oom_score_adj 1000 makes it the
one chosen).  Kill 1 right after the banner (before, during or after the
hand-over), kill 2 after it, the trigger loaded in between (met by the first program, or
asked for by the whole one).  Witnesses: the victims' exit by SIGKILL, the kernel log."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import unwind_workloads
from tests.conftest import WORKLOAD_BIN, build_workload, require
from tests.kernel.helpers import (
    ToolRun,
    loaded_prog_ids,
    memory_cgroup,
    owned_prog_ids,
    read_kmsg,
)

STEPS_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

__attribute__((noinline)) void touch_pages(volatile char *p, size_t n)
{
    for (size_t i = 0; i < n; i += 4096)
        p[i] = 1;
    __asm__ volatile("" ::: "memory");
}

/* argv: MB per step, steps.  Prints "ready", then touches one step per byte read */
int main(int argc, char **argv)
{
    size_t step = (size_t)atol(argv[1]) << 20;
    int steps = atoi(argv[2]);
    char *p = mmap(0, step * steps, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return 1;
    printf("ready\n");
    fflush(stdout);
    char c;
    for (int i = 0; i < steps; i++) {
        if (read(0, &c, 1) != 1)
            return 1;
        touch_pages(p + i * step, step);
        printf("touched\n");
        fflush(stdout);
    }
    while (read(0, &c, 1) > 0)
        ;
    return 0;
}
"""


def _steps_binary() -> Path:
    WORKLOAD_BIN.mkdir(parents=True, exist_ok=True)
    src, exe = WORKLOAD_BIN / "oom_steps_nofp.c", WORKLOAD_BIN / "oom_steps_nofp"
    if not src.exists() or src.read_text() != STEPS_C:
        src.write_text(STEPS_C)
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["gcc", *unwind_workloads.NOFP, "-o", str(exe), str(src)], check=True)
    return exe


def _names(stack: list[str]) -> list[str]:
    return [f.split("+")[0] for f in stack]


def _programs(pid: int) -> dict[int, int]:
    """The BPF programs `pid` holds: id -> translated size."""
    ids = owned_prog_ids(pid)
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True,
                         check=True).stdout
    return {p["id"]: p.get("bytes_xlated", 0) for p in json.loads(out) if p["id"] in ids}


def _handed_over(run: ToolRun, timeout: float = 20.0) -> dict[int, int]:
    """Wait until the tool holds its second program (the whole one); its programs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progs = _programs(run.proc.pid)
        if len(progs) >= 2:
            return progs
        time.sleep(0.05)
    raise AssertionError(f"no second program within {timeout}s: {_programs(run.proc.pid)}")


def _step(proc: subprocess.Popen) -> None:
    proc.stdin.write("g")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "touched"


def _idle(victim: Path, mb: int, join) -> subprocess.Popen:
    """An idle task of `mb` MB touched, the memory cgroup's first choice (oom_score_adj
    1000: lowering the trigger's instead needs CAP_SYS_RESOURCE)."""
    def chosen() -> None:
        join()
        Path("/proc/self/oom_score_adj").write_text("1000")

    p = subprocess.Popen([str(victim), str(mb)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, preexec_fn=chosen)
    assert p.stdout.readline().strip() == "touched"
    return p


# the fallback hook: oomkill in a child whose hook probe reads 6.1's mark_victim(int pid)
# BTF (test_hooks.py's), so the tracepoint program and its twin are the ones loaded
_SEEING_PRE68 = ("import sys; import memlens.core.hooks as h; h.VMLINUX_BTF = sys.argv[1]; "
                 "from memlens.cli import main; sys.exit(main(sys.argv[2:]))")
PRE68_BTF = Path(__file__).resolve().parents[1] / "unit" / "data" / "btf" / \
    "mark_victim_pre68.btf"


@pytest.mark.parametrize("hook", ["raw_tp/mark_victim", "tracepoint/oom/mark_victim"])
def test_kills_across_the_hand_over_recorded_once_the_second_walked_whole(hook, monkeypatch):
    if hook.startswith("tracepoint"):
        from tests.kernel import helpers

        require(PRE68_BTF.exists(), f"{PRE68_BTF} is made by tests/unit/test_hooks.py")
        monkeypatch.setattr(helpers, "memlens_cmd", lambda *a: [
            sys.executable, "-c", _SEEING_PRE68, str(PRE68_BTF), *a])
    steps, victim = _steps_binary(), build_workload("oom_trigger")
    procs: list[subprocess.Popen] = []
    run = None
    with memory_cgroup("mlt_oom_handover") as cg:
        def join() -> None:
            (cg / "cgroup.procs").write_text("0")

        try:
            first = _idle(victim, 48, join)
            procs.append(first)
            trigger = subprocess.Popen([str(steps), "24", "2"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, preexec_fn=join)
            procs.append(trigger)
            assert trigger.stdout.readline().strip() == "ready"
            run = ToolRun("oomkill", "--json")
            run.wait_attached()
            at_banner = run.prog_ids
            # a small idle task the OOM killer takes only when the victim is gone: a second
            # OOM in the same step, while the victim's memory was still being uncharged, found
            # no one but the trigger and killed it (2 of 3 full runs once; the trigger's
            # oom_score_adj cannot be lowered here, CAP_SYS_RESOURCE is not held)
            procs.append(_idle(victim, 4, join))
            _step(trigger)  # kill 1, at the banner
            assert first.wait(timeout=30) == -9
            progs = _handed_over(run)
            time.sleep(1.0)  # the trigger's tables, loaded by a poll after kill 1
            second = _idle(victim, 28, join)
            procs.append(second)
            if procs[-2].poll() is not None:  # the spare went in step 1's second OOM
                procs.append(_idle(victim, 4, join))
            _step(trigger)  # kill 2, after the hand-over
            assert second.wait(timeout=30) == -9
            time.sleep(0.5)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            rc = run.stop() if run is not None else None
    assert rc == 0, run.stderr
    # the banner came with the first program (held then: the whole one, the walk, many
    # times its size, is loaded next, ~50 ms later; not asserted absent at the banner, a
    # loaded machine may wake this thread later than that)
    assert len(progs) == 2, progs
    twin, whole = sorted(progs, key=progs.get)
    assert twin in at_banner and whole > twin and progs[whole] > 3 * progs[twin], \
        (at_banner, progs)
    events = [r for r in run.records() if r["type"] == "event"]
    for p in (first, second):
        mine = [e for e in events if e["victim_pid"] == p.pid]
        assert len(mine) == 1, (p.pid, events)  # once: by the twin or the whole program
        assert mine[0]["trigger_pid"] == trigger.pid
        assert f"Killed process {p.pid} (oom_trigger)" in "\n".join(read_kmsg())
    ev1 = next(e for e in events if e["victim_pid"] == first.pid)
    ev2 = next(e for e in events if e["victim_pid"] == second.pid)
    assert _names(ev1["trigger_user_stack"])[0] == "touch_pages", ev1
    assert ev1["trigger_user_stack_walk"] in ("fp", "dwarf+fp"), ev1
    # after the hand-over: the tables' walk, whole down to _start
    user = ev2["trigger_user_stack"]
    assert ev2["trigger_user_stack_walk"] == "dwarf", ev2
    assert _names(user)[:2] == ["touch_pages", "main"] and _names(user)[-1] == "_start", user
    (summary,) = [r for r in run.records() if r["type"] == "summary"]
    assert summary["hook"] == hook, summary
    run.assert_detached()


def test_a_whole_program_that_does_not_load_leaves_tracing_on(monkeypatch, capsys):
    """The second copy's load fails (as a verifier's refusal would): one line says so, and
    the first program goes on recording kills, walking by frame pointers."""
    import argparse
    import os

    from memlens.core import handover
    from memlens.core.loader import BpfError
    from memlens.tools.oomkill import OomkillCommand, OomkillTool

    def refused(self, stack_unwind):
        raise BpfError("loading BPF object oomkill.bpf.o failed (Permission denied)")

    monkeypatch.setattr(handover.HandOver, "load_whole", refused)
    parser = argparse.ArgumentParser()
    OomkillCommand().add_arguments(parser)
    tool = OomkillTool(parser.parse_args([]))
    victim = build_workload("oom_trigger")
    events = []
    with memory_cgroup("mlt_oom_noload") as cg:
        def join() -> None:
            (cg / "cgroup.procs").write_text("0")

        big = small = None
        before = owned_prog_ids(os.getpid())
        mine = set()
        try:
            tool.start()
            mine = owned_prog_ids(os.getpid()) - before
            assert len(mine) == 1, mine  # the first program, attached
            events += tool.poll(0.05)  # the hand-over, failing
            big = _idle(victim, 48, join)
            small = subprocess.Popen([str(victim), "32", "wait"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, preexec_fn=join)
            _step(small)
            assert big.wait(timeout=30) == -9
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(
                    e.get("victim_pid") == big.pid for e in events):
                events += tool.poll(0.2)
        finally:
            for p in (big, small):
                if p is not None and p.poll() is None:
                    p.kill()
            tool.close()
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "DWARF walk did not load" in ln]
    assert len(lines) == 1 and "Permission denied" in lines[0], err
    kills = [e for e in events if e.get("victim_pid") == big.pid]
    assert len(kills) == 1 and kills[0]["trigger_pid"] == small.pid, events
    assert kills[0]["trigger_user_stack_walk"] == "fp"
    assert _names(kills[0]["trigger_user_stack"])[0] == "touch_pages"
    deadline = time.monotonic() + 5  # a program's teardown after its last fd is deferred
    while mine & loaded_prog_ids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (mine & loaded_prog_ids()), "programs left loaded"
