# SPDX-License-Identifier: GPL-2.0-only
"""The counting engine's pruning: keys idle for PRUNE_TICKS reads are deleted from the kernel
map with lookup-and-delete (no count lost), so a run over thousands of short-lived
processes keeps a small map and a flat RSS.

The workloads run in a memory cgroup of their own and the tool is scoped to it
(`--cgroup`): every event in the tool's map is then one of ours, and the accounting is
exact — what the reports count plus what the "lost" records count equals what the
processes did.  Witnesses: the workloads' own counts (each getppid result checked), the
kernel map itself read with bpftool (its size and its key count), /proc/PID/status VmRSS.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import build_workload
from tests.kernel.helpers import ToolRun, fdinfo_ids, memory_cgroup

GETPPID = "t:syscalls:sys_enter_getppid"
CHILDREN = 5000
CHILD_CALLS = 3
FORK_RATE = 700          # forks per second: about 7 s of churn
LONG_CALLS = 97
LONG_SPREAD_US = 80_000  # one call every 80 ms: about 7.8 s, never idle for a 0.5 s read
MAX_KEYS = 256
RSS_GROWTH_KB = 4096


def _start_in(cg: Path, argv: list[str]) -> tuple[subprocess.Popen, int]:
    def join() -> None:
        (cg / "cgroup.procs").write_text(str(os.getpid()))

    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            preexec_fn=join)
    m = re.match(r"ready pid=(\d+)", proc.stdout.readline())
    assert m and int(m.group(1)) == proc.pid
    return proc, proc.pid


def _go(proc: subprocess.Popen) -> None:
    proc.stdin.write("g")
    proc.stdin.flush()


def _end(proc: subprocess.Popen) -> None:
    """The workload told to exit (its stdin closed): it exits 0."""
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0


@contextlib.contextmanager
def _reaped(proc: subprocess.Popen):
    """The workload killed and waited for if it is still running when the block ends."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))


def _counts_map(tool_pid: int) -> int:
    """Id of the tool's `counts` map (the kernel side of the engine), from its fds."""
    ids = set(fdinfo_ids(tool_pid, "map_id"))
    for map_id in ids:
        info = json.loads(subprocess.run(["bpftool", "map", "show", "id", str(map_id),
                                          "--json"], capture_output=True, text=True,
                                         check=True).stdout)
        if info.get("name") == "counts":
            return map_id
    raise AssertionError(f"no 'counts' map among the tool's maps {sorted(ids)}")


def _map_info(map_id: int) -> dict:
    return json.loads(subprocess.run(["bpftool", "map", "show", "id", str(map_id), "--json"],
                                     capture_output=True, text=True, check=True).stdout)


def _map_keys(map_id: int) -> int:
    out = subprocess.run(["bpftool", "map", "dump", "id", str(map_id), "--json"],
                         capture_output=True, text=True, check=True).stdout
    return len(json.loads(out))


def test_thousands_of_short_lived_processes(capsys):
    storm_bin = str(build_workload("fork_storm"))
    loop_bin = str(build_workload("syscall_loop"))
    with memory_cgroup("memlens_prune", limit="512M") as cg:
        procs: list[subprocess.Popen] = []
        try:
            long, long_pid = _start_in(cg, [loop_bin, str(LONG_CALLS), "raw",
                                            str(LONG_SPREAD_US)])
            procs.append(long)
            storm, _ = _start_in(cg, [storm_bin, str(CHILDREN), str(CHILD_CALLS),
                                      str(FORK_RATE)])
            procs.append(storm)
            run = ToolRun("count", GETPPID, "--by", "pid,comm", "--max-keys", str(MAX_KEYS),
                          "-i", "1", "--json", "--cgroup", str(cg))
            run.wait_attached()
            tool_pid = run.proc.pid
            counts_id = _counts_map(tool_pid)
            assert _map_info(counts_id)["max_entries"] == MAX_KEYS
            t0 = time.monotonic()
            _go(long)
            time.sleep(0.3)       # the long-lived key is in the map before the churn
            _go(storm)
            expected_s = CHILDREN / FORK_RATE
            time.sleep(0.25 * expected_s)
            rss_quarter = _rss_kb(tool_pid)
            keys_during = _map_keys(counts_id)
            storm_done = storm.stdout.readline()
            long_done = long.stdout.readline()
            elapsed = time.monotonic() - t0
            time.sleep(2.0)       # every key idle for more than PRUNE_TICKS reads
            keys_after = _map_keys(counts_id)
            rss_end = _rss_kb(tool_pid)
            assert run.proc.poll() is None, run.stderr   # still running after the churn
            assert run.stop() == 0, run.stderr
            long.stdin.close()
            assert long.wait(timeout=10) == 0
            assert storm.wait(timeout=10) == 0
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)
    run.assert_detached()
    assert storm_done.strip() == f"done children={CHILDREN} calls={CHILDREN * CHILD_CALLS}"
    assert re.match(rf"done calls={LONG_CALLS} ", long_done), long_done

    records = run.records()
    reports = [r for r in records if r["type"] == "report"]
    lost = [r for r in records if r["type"] == "lost"]
    (summary,) = [r for r in records if r["type"] == "summary"]
    assert reports[-1]["final"] and all(not r["final"] for r in reports[:-1])
    assert len(reports) >= int(elapsed)           # one report a second, -i 1

    long_total = sum(e["count"] for r in reports for e in r["entries"] if e["pid"] == long_pid)
    assert {e["comm"] for r in reports for e in r["entries"] if e["pid"] == long_pid} == \
        {"syscall_loop"}
    children = [e for r in reports for e in r["entries"] if e["pid"] != long_pid]
    assert {e["comm"] for e in children} <= {"fork_storm"}, {e["comm"] for e in children}
    counted = sum(e["count"] for e in children)
    # every lost record is a full table, counted; with the lost events, the accounting is
    # exact: our cgroup's processes made these calls and no others
    assert all((r["what"], r["reason"]) == ("entries", "map full") for r in lost), lost
    dropped = sum(r["count"] for r in lost)
    assert counted + long_total + dropped == CHILDREN * CHILD_CALLS + LONG_CALLS, \
        (counted, long_total, dropped)
    # the long-lived key survives the churn: every call counted, unless the table was
    # full at one of them (crowded, reads come every 50 ms and prune a key idle for one:
    # its next call makes it anew, and a full table refuses it, counted lost)
    assert long_total == LONG_CALLS or LONG_CALLS - dropped <= long_total < LONG_CALLS, \
        (long_total, dropped)
    assert summary["lost"] == ({"entries": dropped} if dropped else {})
    assert summary["events"] == counted + long_total
    assert counted > 0

    # the kernel map never outgrows --max-keys, and is emptied once everything is idle
    assert keys_during <= MAX_KEYS
    assert keys_after == 0
    assert rss_end - rss_quarter < RSS_GROWTH_KB, (rss_quarter, rss_end)
    with capsys.disabled():
        print(f"\n[pruning] {CHILDREN} children x {CHILD_CALLS} calls in {elapsed:.1f}s: "
              f"counted {counted}, lost (map full) {dropped} in {len(lost)} records; "
              f"long-lived {long_total}/{LONG_CALLS}; map keys {keys_during} during, "
              f"{keys_after} after; RSS {rss_quarter} -> {rss_end} kB; "
              f"{len(reports)} reports")


def test_idle_key_pruned_and_counted_again():
    """A process idle longer than PRUNE_TICKS reads between calls: its key is deleted from
    the kernel map (seen with bpftool while it sleeps) and inserted again at its next call;
    the reports still add up to every call, none counted twice."""
    calls, spread_us = 5, 1_700_000
    proc = subprocess.Popen([str(build_workload("syscall_loop")), str(calls), "raw",
                             str(spread_us)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    with _reaped(proc):
        assert proc.stdout.readline().startswith(f"ready pid={proc.pid} ")
        run = ToolRun("count", GETPPID, "--by", "pid", "-p", str(proc.pid), "-i", "1",
                      "--json")
        run.wait_attached()
        counts_id = _counts_map(run.proc.pid)
        proc.stdin.write("g")
        proc.stdin.flush()
        samples = []
        deadline = time.monotonic() + calls * spread_us / 1e6 + 1
        while time.monotonic() < deadline:
            samples.append(_map_keys(counts_id))
            time.sleep(0.1)
        done = proc.stdout.readline()
        assert run.stop() == 0, run.stderr
        _end(proc)
    run.assert_detached()
    assert done.startswith(f"done calls={calls} "), done
    # the key came and went: present after a call, pruned during the idle stretch
    assert 1 in samples and 0 in samples[samples.index(1):], samples
    reports = [r for r in run.records() if r["type"] == "report"]
    assert sum(e["count"] for r in reports for e in r["entries"]) == calls
    assert all(e["pid"] == proc.pid for r in reports for e in r["entries"])
    assert not [r for r in run.records() if r["type"] == "lost"]


def test_reads_past_their_time_budget_leave_counts_in_the_kernel_for_the_report():
    """A tick out of time defers the keys it has not folded in (under churn, symbolizing
    new keys kept Ctrl-C waiting for seconds): their counts stay in the kernel map and the
    report's read, which has no budget, counts every call."""
    from memlens.core.engine import Engine
    from memlens.core.probespec import parse_all

    procs = 12
    eng = Engine(parse_all([GETPPID]), keys=("pid",))
    children = []
    try:
        eng.start(include_self=True)
        me = os.getpid()
        for _ in range(procs):
            child = subprocess.Popen(
                [sys.executable, "-c", "import os\nfor _ in range(7): os.getppid()"])
            assert child.wait(30) == 0
            children.append(child.pid)
        # this process too: 5 calls of its own
        for _ in range(5):
            os.getppid()
        time.sleep(0.05)
        eng._read_tick(budget_s=0.0)  # out of time at once: every key deferred
        assert eng._deferred_reads > 0
        assert not eng._acc, "a deferred key was folded in"
        entries = eng.collect()
    finally:
        eng.close()
    mine = {e.parts["pid"]: e.count for e in entries}
    assert mine.get(me) == 5, mine
    # the children: 7 calls each (the interpreter's start-up makes none)
    assert [mine.get(pid) for pid in children] == [7] * procs, mine


def test_processes_gone_are_forgotten_after_their_last_count():
    """System wide with user stacks (the DWARF walk on), what the engine keeps of each
    process it meets — its comm, its symbolizers, its resolved stacks, the mappings the
    unwinder kept of it — goes one tick after the process does, its counts and named
    stacks folded in first: a long run under process churn holds what the live processes
    need, not every process it ever met (brkstack grew 200 MB in 10 minutes of 35 short
    processes a second, each cache up to its bound).  Workload: unwind_chain calling
    sbrk() N times, K times in turn, in a memory cgroup the engine is limited to, each
    gone before the engine reads its counts.  Witness: the program's own count of its
    calls (each run makes the same number of brk calls: its N and its start-up's)."""
    import shutil

    from memlens.core.engine import TICK_S, Engine
    from memlens.core.probespec import parse_all
    from tests import unwind_workloads
    from tests.conftest import require

    require(shutil.which("gcc") is not None, "gcc is needed to build the workloads")
    exe = str(unwind_workloads.build()["chain"])
    calls, runs = 23, 6
    with memory_cgroup("memlens_forget", limit="256M") as cg:
        eng = Engine(parse_all(["t:syscalls:sys_enter_brk"]), keys=("pid", "comm", "ustack"),
                     stack_unwind="dwarf")
        gone: list[int] = []

        def run_once() -> None:
            proc, pid = _start_in(cg, [exe, "brk", str(calls)])
            with _reaped(proc):
                _go(proc)
                assert proc.stdout.readline().startswith(f"done n={calls} ")
                _end(proc)
            gone.append(pid)

        try:
            eng.start(cgroup=str(cg))
            for _ in range(5):          # the hand-over to the whole walk
                eng.poll(0.1)
            entries = []
            for _ in range(runs):
                run_once()
                eng.poll(0.05)
            deadline = time.monotonic() + 4 * TICK_S + 1.0
            while time.monotonic() < deadline:  # a tick finds them gone, the next forgets
                eng.poll(0.1)
                entries += eng.collect()
            kept = {
                "comms": set(eng._comms),
                "symbolizers": set(eng.resolver._procs) | set(eng.resolver._kept),
                "stacks": set(eng.resolver._cached_of),
                "mappings": set(eng.unwind._vmas) if eng.unwind is not None else set(),
            }
            walk_on = eng.unwind is not None
        finally:
            eng.close()
    # every run's calls counted (the same number each: its N, and its start-up's), each
    # stack's first frame named though read after its process was gone
    totals = {pid: sum(e.count for e in entries if e.parts["pid"] == pid) for pid in gone}
    assert len(set(totals.values())) == 1 and min(totals.values()) >= calls, totals
    stacks = [[str(f) for f in e.parts["ustack"]] for e in entries if e.parts["pid"] in gone]
    # (named through the mappings kept of them; past libc the frame-pointer walk of a
    # program without frame pointers finds what it finds)
    assert stacks and all(re.match(r"brk\+0x\w+ \[(libc\.so\.6|ld-linux-x86-64\.so\.2)\]",
                                   s[0]) for s in stacks), stacks
    assert walk_on, "the walk was not on"
    for what, pids in kept.items():
        assert not pids & set(gone), (what, sorted(pids & set(gone)))
