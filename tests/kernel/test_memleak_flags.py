# SPDX-License-Identifier: GPL-2.0-only
"""memleak's flags against workloads whose allocations are known exactly
(tests/workloads/leakflags*.c): -O OBJ --symbols-prefix je_ on a library built here, --sort
and -T, -o/--older, -a/--show-allocs against the pointers the workload prints, positional
`interval count`, --percpu --kernel -p against fork's per-CPU counters (and the kernel's
own percpu tracepoint as witness), and --json's lost accounting and summary.

Where several flags are compared on one workload, several memleak instances trace the same
run at once (each has its own BPF objects): one workload run, one set of facts, and the
file stays fast (uprobe hits cost microseconds here, KERNEL.md §10: the workloads make a
few dozen calls)."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import WORKLOADS, build_workload
from tests.kernel.helpers import ToolRun

LEAKS, SIZE = 23, 4099
SMALL, BIG, NBIG = 64, 4099, 3            # leakflags sort: 23 x 64 B vs 3 x 4099 B
YOUNG = 7                                 # leakflags older: blocks leaked after the pause
CFLAGS = ["-O2", "-g", "-fno-omit-frame-pointer", "-mno-omit-leaf-frame-pointer"]


def fn(frame: str) -> str:
    """'leak_old+0x23 [leakflags]' -> 'leak_old'."""
    return re.sub(r"(\(\))?\+0x[0-9a-f]+.*$", "", frame).split(" [")[0]


def module(frame: str) -> str:
    m = re.search(r"\[([^\]]+)\]$", frame)
    return m.group(1) if m else ""


def by_caller(rep: dict) -> dict[str, tuple[int, int]]:
    """User-mode report -> {direct caller of the allocator: (bytes, allocs)}; each caller
    must head exactly one stack."""
    out: dict[str, tuple[int, int]] = {}
    for s in rep["stacks"]:
        caller = fn(s["stack"][1]) if len(s["stack"]) > 1 else "?"
        assert caller not in out, rep["stacks"]
        out[caller] = (s["bytes"], s["allocs"])
    return out


class Target:
    """A leakflags workload: prints `ready`, then does one step per byte on stdin."""

    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.proc.stdout.readline()
        assert line == b"ready\n", line

    @property
    def pid(self) -> int:
        return self.proc.pid

    def step(self, until: str = "done") -> list[str]:
        """Release the next step; the lines printed up to `until` (exclusive)."""
        self.proc.stdin.write(b"x")
        self.proc.stdin.flush()
        lines = []
        while True:
            line = self.proc.stdout.readline().decode()
            assert line, f"workload ended early after {lines}"
            if line.strip() == until:
                return lines
            lines.append(line.strip())

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def traced(argv: list[str], *arg_lists: list[str], pid_args=("-p",)):
    """Start the workload, attach one memleak per argument list (all attached before it is
    released), yield (target, runs); stop what still runs and end the workload after."""
    tgt = Target(argv)
    runs: list[ToolRun] = []
    try:
        for extra in arg_lists:  # started together, so that their start-ups overlap
            runs.append(ToolRun("memleak", *pid_args, str(tgt.pid), "--max-allocs", "4096",
                                *extra))
        for run in runs:
            run.wait_attached()
        yield tgt, runs
    finally:
        for run in runs:
            if run.proc.poll() is None:
                run.stop()
        tgt.close()


def stop_all(runs: list[ToolRun]) -> None:
    """SIGINT every tracer at once (their final reports are taken at the same moment),
    then collect each."""
    for run in runs:
        run.proc.send_signal(signal.SIGINT)
    for run in runs:  # (a second SIGINT would interrupt the clean exit)
        assert run.wait(timeout=30) == 0, run.stderr


def final_report(run: ToolRun) -> dict:
    reps = [r for r in run.records() if r["type"] == "report"]
    assert reps, run.stdout + run.stderr
    return reps[-1]


@pytest.fixture(scope="module")
def leakflags() -> str:
    return str(build_workload("leakflags"))


@pytest.fixture(scope="module")
def je_build(tmp_path_factory) -> tuple[str, str]:
    """libleakflags_alloc.so (je_malloc & co. forwarding to libc) and a program linked
    against it; built in a temporary directory."""
    d = tmp_path_factory.mktemp("je")
    lib = d / "libleakflags_alloc.so"
    prog = d / "leakflags_je"
    subprocess.run(["gcc", *CFLAGS, "-shared", "-fPIC", "-o", str(lib),
                    str(WORKLOADS / "leakflags_alloc.c")], check=True)
    subprocess.run(["gcc", *CFLAGS, "-o", str(prog), str(WORKLOADS / "leakflags_je.c"),
                    f"-L{d}", "-lleakflags_alloc", f"-Wl,-rpath,{d}"], check=True)
    return str(lib), str(prog)


# ------------------------------------------------------------------------------------------
def test_symbols_prefix_probes_only_the_named_allocator(je_build):
    """-O lib --symbols-prefix je_: exactly the 23 je_malloc leaks, with the caller; the 11
    blocks leaked straight from libc's malloc are not seen and libc is not probed (a libc
    tracer on the same run, the witness, sees both: 23 via je_malloc -> malloc, and 11)."""
    lib, prog = je_build
    je_args = ["-O", lib, "--symbols-prefix", "je_", "--json", "-o", "0", "-T", "100"]
    with traced([prog], je_args, ["--json", "-o", "0", "-T", "100"]) as (tgt, runs):
        tgt.step()
        time.sleep(0.2)
        stop_all(runs)
    je, libc = runs
    # 4 entry probes + 3 uretprobes (je_free has none), all in the library
    assert re.search(r"Tracing outstanding allocations of PID \d+: 7 probes in "
                     r"libleakflags_alloc\.so\.\.\. Hit Ctrl-C to end\.", je.stderr), je.stderr
    rep = final_report(je)
    assert (rep["total_allocs"], rep["total_bytes"], rep["nr_stacks"]) == (LEAKS, LEAKS * SIZE, 1)
    stack = rep["stacks"][0]["stack"]
    # leaf: the allocator called, in the library; then its direct caller in the program
    assert (fn(stack[0]), module(stack[0])) == ("je_malloc", "libleakflags_alloc.so"), stack
    assert rep["stacks"][0]["allocator"] == "je_malloc"
    assert (fn(stack[1]), module(stack[1])) == ("leak_je_malloc", "leakflags_je"), stack
    assert fn(stack[2]) == "main"
    # je_* calls after attach: 23 + 7 + 5 + 3 x 2 recorded, 7 + 5 + 3 (realloc) + 3 freed;
    # nothing nested: libc's malloc below je_malloc has no probe of this tracer
    assert rep["counters"] == {"recorded": 41, "freed": 18, "missed_frees": 0, "nested": 0,
                               "sampled_out": 0, "failed": 0}
    summary = je.records()[-1]
    assert summary["type"] == "summary" and summary["pid"] == tgt.pid
    probes = {(p["binary"], p["symbol"]) for p in summary["probes"]}
    assert probes == {(os.path.realpath(lib), s)
                      for s in ("je_malloc", "je_calloc", "je_realloc", "je_free")}
    # the libc tracer: the je_malloc blocks through libc's malloc, plus libc-only leaks
    w = final_report(libc)
    direct = {fn(s["stack"][1]): (s["bytes"], s["allocs"]) for s in w["stacks"]}
    assert direct["leak_libc_malloc"] == (11 * SIZE, 11)
    assert direct["je_malloc"] == (LEAKS * SIZE, LEAKS)


# ------------------------------------------------------------------------------------------
def test_sort_and_top(leakflags):
    """Two leak sites: 23 x 64 B (more allocations) and 3 x 4099 B (more bytes).
    --sort count puts the small ones first; the default (size) the big ones, and with -T 1
    prints only that one stack (the total still counts both).  Two tracers on one run:
    every libc tracer costs ~2 s of uprobe detaching at exit."""
    small, big = (LEAKS * SMALL, LEAKS), (NBIG * BIG, NBIG)
    with traced([leakflags, "sort"],
                ["--json", "-o", "0", "-T", "100", "--sort", "count"],
                ["-o", "0", "-T", "1", "60"]) as (tgt, runs):
        tgt.step()
        time.sleep(0.2)
        stop_all(runs)
    by_count, top_size = runs
    assert [(fn(s["stack"][1]), s["bytes"], s["allocs"])
            for s in final_report(by_count)["stacks"]] == \
        [("leak_many_small", *small), ("leak_few_big", *big)]
    out = top_size.stdout
    assert out.count("Top 1 stacks with outstanding allocations:") == 1, out
    heads = re.findall(r"^\t(\d+) bytes in (\d+) allocations from stack\n\t\t.*\n"
                       r"\t\t(\w+)\+", out, re.MULTILINE)
    assert [(name, int(b), int(n)) for b, n, name in heads] == [("leak_few_big", *big)], out
    assert re.search(rf"\ttotal: {LEAKS * SMALL + NBIG * BIG} bytes in {LEAKS + NBIG} "
                     r"allocations from 2 stacks;", out), out


# ------------------------------------------------------------------------------------------
def test_older_hides_young_blocks(leakflags):
    """23 blocks leaked, a 1.3 s pause, 7 more, report at once: -o 0 shows all 30,
    -o 1000 only the 23 old ones, -o 60000 none."""
    with traced([leakflags, "older"], ["--json", "-o", "0"], ["--json", "-o", "1000"],
                ["--json", "-o", "60000"]) as (tgt, runs):
        tgt.step(until="old")
        time.sleep(1.3)
        t0 = time.monotonic()
        tgt.step()
        for run in runs:
            run.proc.send_signal(signal.SIGINT)
        # the final reports are taken within 0.1 s of SIGINT: the young blocks are < 1 s old
        assert time.monotonic() - t0 < 0.5
        for run in runs:
            assert run.wait(timeout=30) == 0, run.stderr
    all_, old, none = (final_report(r) for r in runs)
    assert by_caller(all_) == {"leak_old": (LEAKS * SIZE, LEAKS),
                               "leak_young": (YOUNG * SIZE, YOUNG)}
    assert by_caller(old) == {"leak_old": (LEAKS * SIZE, LEAKS)}
    assert (none["nr_stacks"], none["total_allocs"], none["total_bytes"]) == (0, 0, 0)
    assert none["stacks"] == []


# ------------------------------------------------------------------------------------------
def test_show_allocs_lists_the_printed_pointers(leakflags):
    """-a: every outstanding block's address and size, i.e. exactly the 23 pointers the
    workload printed; the 7 blocks it freed are not listed."""
    with traced([leakflags, "addrs"], ["-a", "-o", "0", "60"]) as (tgt, runs):
        lines = tgt.step()
        time.sleep(0.2)
        stop_all(runs)
    leaked, freed = printed_pointers(lines)
    out = runs[0].stdout
    listed = [(int(a, 16), int(s)) for a, s in
              re.findall(r"^\taddr = ([0-9a-f]+) size = (\d+)$", out, re.MULTILINE)]
    assert listed == sorted((a, SIZE) for a in leaked), out  # in address order
    assert not set(freed) & {a for a, _ in listed}
    assert re.search(rf"^\t{LEAKS * SIZE} bytes in {LEAKS} allocations from stack\n"
                     r"\t\tmalloc\+0x0 \[libc\.so\.6\]\n\t\tleak_addrs\+", out, re.MULTILINE), out


def printed_pointers(lines: list[str]) -> tuple[list[int], list[int]]:
    leaked = [int(x.split()[1], 16) for x in lines if x.startswith("leak ")]
    freed = [int(x.split()[1], 16) for x in lines if x.startswith("freed ")]
    assert len(set(leaked)) == LEAKS and len(set(freed)) == YOUNG, lines
    return leaked, freed


# ------------------------------------------------------------------------------------------
def test_interval_count_exits_by_itself(leakflags):
    """`memleak -p PID 1 2`: two reports a second apart, then exit 0 while the target
    still runs (nobody signals it)."""
    with traced([leakflags, "addrs"], ["-o", "0", "1", "2"],
                ["--json", "-o", "0", "1", "2"]) as (tgt, runs):
        tgt.step()
        for run in runs:
            # the reports are a second apart; detaching the uprobes takes a few more
            assert run.wait(timeout=20) == 0, run.stderr
        assert tgt.proc.poll() is None  # ended by the count, not by the target's exit
    text, js = runs
    assert len(re.findall(r"^\[\d\d:\d\d:\d\d\] Top \d+ stacks with outstanding allocations:$",
                          text.stdout, re.MULTILINE)) == 2, text.stdout
    assert text.stdout.count("\ttotal: ") == 2
    recs = js.records()
    reps = [r for r in recs if r["type"] == "report"]
    assert len(reps) == 2, recs
    assert 0.8 < reps[1]["timestamp"] - reps[0]["timestamp"] < 1.5
    for rep in reps:
        assert by_caller(rep) == {"leak_addrs": (LEAKS * SIZE, LEAKS)}
    assert recs[-1]["type"] == "summary"


# ------------------------------------------------------------------------------------------
def _tracefs_witness(pid: int):
    """A private tracefs instance recording percpu_alloc_percpu events of `pid` only."""
    from memlens.core import kernel

    inst = Path(kernel.ensure_tracefs(quiet=True)) / "instances" / f"memlens_lf_{os.getpid()}"
    inst.mkdir()
    ev = inst / "events" / "percpu" / "percpu_alloc_percpu"
    (ev / "filter").write_text(f"common_pid == {pid}\n")
    (ev / "enable").write_text("1\n")
    return inst


def test_percpu_kernel_mode_of_one_process(leakflags):
    """--percpu --kernel -p PID while PID forks 23 children that stay alive (their mms, and
    the per-CPU memory allocated for them, are not freed).

    What this kernel (6.18) does per fork, in the parent's context: mm_init() makes one
    percpu allocation for the rss_stat counters (__percpu_counter_init_many) and, with
    CONFIG_SCHED_MM_CID, one for mm->pcpu_cid (mm_alloc_cid, inlined into mm_init): 2 x 23
    = 46 blocks in 2 stacks, each of exactly 23.  `bytes` is the tracepoint's bytes_alloc
    (size x possible CPUs + memcg obj_cgroup pointers).  The exact count and bytes are
    checked against the kernel's own percpu_alloc_percpu events of that PID."""
    n = LEAKS
    tgt = Target([leakflags, "fork", str(n)])
    inst = None
    run = None
    try:
        inst = _tracefs_witness(tgt.pid)
        run = ToolRun("memleak", "--percpu", "--kernel", "-p", str(tgt.pid), "--json",
                      "-o", "0", "-T", "100", "--max-allocs", "4096")
        run.wait_attached()
        tgt.step()
        time.sleep(0.2)
        assert run.stop() == 0, run.stderr
        trace = (inst / "trace").read_text()
    finally:
        if run is not None and run.proc.poll() is None:
            run.stop()
        if inst is not None:
            (inst / "events" / "percpu" / "percpu_alloc_percpu" / "enable").write_text("0\n")
            inst.rmdir()
        tgt.close()
    assert "Tracing outstanding kernel percpu allocations made by PID" in run.stderr
    witness = [int(m) for m in re.findall(r"percpu_alloc_percpu:.*bytes_alloc=(\d+)", trace)]
    rep = final_report(run)
    assert rep["mode"] == "kernel" and rep["pid"] == tgt.pid
    # every fork made the same allocations: each stack holds exactly n blocks
    assert [s["allocs"] for s in rep["stacks"]] == [n] * rep["nr_stacks"], rep["stacks"]
    assert rep["total_allocs"] == len(witness) and rep["total_bytes"] == sum(witness)
    assert rep["total_allocs"] % n == 0 and rep["total_allocs"] >= n
    stacks = [[fn(f) for f in s["stack"]] for s in rep["stacks"]]
    for st in stacks:
        # the percpu allocator, called from mm_init in fork (copy_process)
        assert st[0].startswith("pcpu_alloc"), st
        assert "mm_init" in st and "copy_process" in st, st
    # the direct callers of the percpu allocator: rss_stat's, and mm_init's own (pcpu_cid)
    # when the scheduler's mm concurrency IDs are built in (sched_mm_cid_fork exists)
    callers = sorted(st[1] for st in stacks)
    with open("/proc/kallsyms") as f:
        mm_cid = " sched_mm_cid_fork\n" in f.read()
    assert callers == (["__percpu_counter_init_many", "mm_init"] if mm_cid
                       else ["__percpu_counter_init_many"]), stacks
    assert rep["total_allocs"] == n * len(callers)
    # the children live on: nothing recorded was freed
    assert (rep["counters"]["recorded"], rep["counters"]["freed"]) == (rep["total_allocs"], 0)
    assert rep["lost"] == {"events": 0, "stacks": 0, "stacks_missing": 0, "entries": 0,
                           "missed_frees": 0, "symbols": 0}


# ------------------------------------------------------------------------------------------
def test_json_records_and_lost_accounting(leakflags):
    """--json: report records with bytes/allocs/stack and a `lost` object, `lost` records,
    and the summary at exit.  A second tracer with --max-allocs 16 on the same run loses a
    known number of allocations: 7 held + 23 leaked = 30 recorded in order, 16 fit, so 14
    of the leaks are "entries" lost; the 7 held are freed, 9 leaks remain."""
    with traced([leakflags, "addrs"], ["--json", "-o", "0", "-a"]) as (tgt, runs):
        full = ToolRun("memleak", "-p", str(tgt.pid), "--json", "-o", "0", "--max-allocs",
                       "16")
        runs.append(full)
        full.wait_attached()
        lines = tgt.step()
        time.sleep(0.2)
        stop_all(runs)
    leaked, freed = printed_pointers(lines)
    ok, lossy = runs
    recs = ok.records()
    assert [r["type"] for r in recs] == ["report", "summary"], recs
    rep, summary = recs
    assert rep["final"] is True and rep["mode"] == "user" and rep["pid"] == tgt.pid
    assert [(s["bytes"], s["allocs"], fn(s["stack"][1])) for s in rep["stacks"]] == \
        [(LEAKS * SIZE, LEAKS, "leak_addrs")]
    assert (rep["total_bytes"], rep["total_allocs"]) == (LEAKS * SIZE, LEAKS)
    assert rep["lost"] == {"events": 0, "stacks": 0, "stacks_missing": 0, "entries": 0,
                           "missed_frees": 0, "symbols": 0}
    counters = {"recorded": YOUNG + LEAKS, "freed": YOUNG, "missed_frees": 0, "nested": 0,
                "sampled_out": 0, "failed": 0}
    assert rep["counters"] == counters
    # -a: the blocks are the pointers the workload printed as leaked, none it freed
    assert sorted((b["addr"], b["size_bytes"]) for b in rep["blocks"]) == \
        sorted((a, SIZE) for a in leaked)
    assert all(0 < b["age_ns"] < 30e9 for b in rep["blocks"])
    assert not set(freed) & {b["addr"] for b in rep["blocks"]}
    # the summary lists only the kinds of loss that happened: none here
    assert summary == {**summary, "type": "summary", "mode": "user", "pid": tgt.pid,
                       "lost": {}, "counters": counters}

    recs = lossy.records()
    assert [r["type"] for r in recs] == ["report", "lost", "summary"], recs
    rep, lost, summary = recs
    kept = 16 - YOUNG
    assert [(s["bytes"], s["allocs"], fn(s["stack"][1])) for s in rep["stacks"]] == \
        [(kept * SIZE, kept, "leak_addrs")]
    assert rep["lost"] == {"events": 0, "stacks": 0, "stacks_missing": 0,
                           "entries": LEAKS - kept, "missed_frees": 0, "symbols": 0}
    assert lost == {"type": "lost", "what": "entries", "reason": "map full",
                    "count": LEAKS - kept, "total": LEAKS - kept}
    assert summary["lost"] == {"entries": LEAKS - kept}
    assert summary["counters"] == {**counters, "recorded": 16}
