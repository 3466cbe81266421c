# SPDX-License-Identifier: GPL-2.0-only
"""shmsnoop against a program doing a known System V shm sequence (tests/workloads/shm_seq.c:
shmget create, shmget EEXIST, shmat, shmat SHM_RDONLY, shmdt x2, shmctl IPC_STAT, IPC_RMID),
each call printed with its result by the program itself; strace of the same run is the
independent witness for every id, key, size, flag, command and return value."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from memlens.tools.shmsnoop import SYSCALLS
from tests.conftest import build_workload, require
from tests.kernel.helpers import ToolRun

CALLS = ["shmget", "shmget", "shmat", "shmat", "shmdt", "shmdt", "shmctl", "shmctl"]
SIZE = 200005


class Workload:
    def __init__(self, strace_log: Path | None = None):
        argv = [str(build_workload("shm_seq"))]
        if strace_log is not None:
            argv = ["strace", "-qq", "-e", "trace=shmget,shmat,shmdt,shmctl",
                    "-o", str(strace_log), *argv]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        m = re.match(r"ready pid=(\d+) key=(0x[0-9a-f]+) size=(\d+)", self.proc.stdout.readline())
        assert m
        self.pid, self.key, self.size = int(m[1]), int(m[2], 16), int(m[3])

    def go_and_exit(self) -> list[dict]:
        self.proc.stdin.write("g")
        self.proc.stdin.flush()
        calls = []
        for line in self.proc.stdout:
            if line.strip() == "done":
                break
            name, rest = line.split(" ", 1)
            fields = dict(kv.split("=", 1) for kv in rest.split())
            calls.append({"name": name, "ret": int(fields["ret"]),
                          "errno": int(fields["errno"])})
        self.proc.stdin.close()
        assert self.proc.wait(timeout=20) == 0
        return calls

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _traced(*tool_args: str, strace_log: Path | None = None, pid_filter: bool = True,
            tid_filter: bool = False):
    wl = Workload(strace_log)
    args = tool_args
    if pid_filter:
        args = ("-p", str(wl.pid), *args)
    if tid_filter:  # the program is single-threaded: its one thread has the PID's number
        args = ("-t", str(wl.pid), *args)
    run = ToolRun("shmsnoop", *args)
    try:
        run.wait_attached()
        calls = wl.go_and_exit()
    finally:
        wl.kill()
    assert run.stop() == 0, run.stderr
    run.assert_detached()
    assert [c["name"] for c in calls] == CALLS
    return run, wl, calls


_STRACE = re.compile(r"^(?P<name>shm\w+)\((?P<args>.*)\)\s+= (?P<ret>0x[0-9a-f]+|-?\d+)"
                     r"(?: (?P<err>E\w+))?")


def _strace_calls(log: Path) -> list[dict]:
    out = []
    for line in log.read_text().splitlines():
        m = _STRACE.match(line)
        if not m:
            continue
        # shmctl IPC_STAT's buffer is printed decoded ({shm_perm=..., ...}): keep it whole
        args = [a.strip() for a in m["args"].split(", ", 2 if m["name"] == "shmctl" else -1)]
        out.append({"name": m["name"], "args": args, "ret": int(m["ret"], 0),
                    "error": m["err"]})
    return out


def _strace_args_of(ev: dict) -> list[str]:
    """The arguments as strace spells them, from the tool's record."""
    flags = "|".join(ev.get("flag_names", [])) or "0"
    ptr = {0: "NULL"}
    if ev["syscall"] == "shmget":
        return [f"{ev['key']:#x}", str(ev["size_bytes"]), flags]
    if ev["syscall"] == "shmat":
        return [str(ev["shmid"]), ptr.get(ev["shmaddr"], f"{ev['shmaddr']:#x}"), flags]
    if ev["syscall"] == "shmdt":
        return [f"{ev['shmaddr']:#x}"]
    return [str(ev["shmid"]), ev["cmd_name"]]


def test_every_call_matches_the_program_and_strace(tmp_path):
    require(shutil.which("strace") is not None, "strace (the witness) is not installed")
    log = tmp_path / "strace.log"
    run, wl, calls = _traced("--json", strace_log=log)
    records = run.records()
    events = [r for r in records if r["type"] == "event"]
    assert [e["syscall"] for e in events] == CALLS, run.stdout
    shmid = calls[0]["ret"]
    addr_rw, addr_ro = calls[2]["ret"], calls[3]["ret"]
    for ev, call in zip(events, calls):
        assert ev["pid"] == wl.pid and ev["tid"] == wl.pid and ev["comm"] == "shm_seq"
        assert ev["ret"] == (call["ret"] if call["ret"] >= 0 else -call["errno"])
        assert ev["latency_ns"] > 0
    get, get_again, at_rw, at_ro, dt_rw, dt_ro, stat, rmid = events
    for ev in (get, get_again):
        assert (ev["key"], ev["size_bytes"]) == (wl.key, SIZE)
        assert ev["shmflg"] == 0o3600 and ev["mode"] == "0600"
        assert ev["flag_names"] == ["IPC_CREAT", "IPC_EXCL", "0600"]
    assert get["shmid"] == shmid and get["error"] is None
    assert get_again["error"] == "EEXIST" and get_again["errno"] == 17
    assert get_again["ret"] == -17 and get_again["shmid"] is None
    assert (at_rw["shmid"], at_rw["shmaddr"], at_rw["shmflg"]) == (shmid, 0, 0)
    assert at_rw["flag_names"] == [] and at_rw["addr"] == hex(addr_rw)
    assert (at_ro["shmid"], at_ro["shmflg"], at_ro["flag_names"]) == (shmid, 0o10000,
                                                                    ["SHM_RDONLY"])
    assert at_ro["addr"] == hex(addr_ro)
    assert (dt_rw["shmaddr"], dt_ro["shmaddr"]) == (addr_rw, addr_ro)
    assert (stat["shmid"], stat["cmd"], stat["cmd_name"]) == (shmid, 2, "IPC_STAT")
    assert stat["buf"] != 0
    assert (rmid["shmid"], rmid["cmd"], rmid["cmd_name"], rmid["buf"]) == (shmid, 0,
                                                                         "IPC_RMID", 0)
    # witness: strace saw the same calls, arguments and results, in the same order
    witness = _strace_calls(log)
    assert [w["name"] for w in witness] == CALLS, log.read_text()
    for ev, st in zip(events, witness):
        assert _strace_args_of(ev) == st["args"][:len(_strace_args_of(ev))], (ev, st)
        assert ev["error"] == st["error"]
        assert ev["ret"] == (st["ret"] if st["error"] is None else -17)
    assert witness[7]["args"][2] == "NULL"
    (summary,) = [r for r in records if r["type"] == "summary"]
    assert summary["events"] == len(CALLS) and summary["lost"] == {}
    assert not any(r["type"] == "lost" for r in records)


def test_text_lines_system_wide_by_name_and_by_thread():
    # -t (in the kernel) and -n (by comm) instead of -p: exactly the program's 8 calls, in
    # BCC's columns with a TIME(s) column counting from the first
    run, wl, calls = _traced("-T", "-n", "shm_se", pid_filter=False, tid_filter=True)
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["TIME(s)", "TID", "COMM", "SYS", "RET", "ARGs"]
    rows = lines[1:]
    assert len(rows) == len(CALLS), run.stdout
    shmid, a, b = calls[0]["ret"], calls[2]["ret"], calls[3]["ret"]
    flags = "shmflg: 0x780 (IPC_CREAT|IPC_EXCL|0600)"
    want = [
        ("SHMGET", str(shmid), f"key: {wl.key:#x}, size: {SIZE}, {flags}"),
        ("SHMGET", "-EEXIST", f"key: {wl.key:#x}, size: {SIZE}, {flags}"),
        ("SHMAT", hex(a), f"shmid: {shmid}, shmaddr: 0x0, shmflg: 0x0"),
        ("SHMAT", hex(b), f"shmid: {shmid}, shmaddr: 0x0, shmflg: 0x1000 (SHM_RDONLY)"),
        ("SHMDT", "0", f"shmaddr: {hex(a)}"),
        ("SHMDT", "0", f"shmaddr: {hex(b)}"),
        ("SHMCTL", "0", f"shmid: {shmid}, cmd: 2 (IPC_STAT), buf: 0x"),
        ("SHMCTL", "0", f"shmid: {shmid}, cmd: 0 (IPC_RMID), buf: 0x0"),
    ]
    times = []
    for row, (sysname, ret, args) in zip(rows, want):
        t, tid, comm, sys_, r, rest = row.split(None, 5)
        times.append(float(t))
        assert (int(tid), comm, sys_, r) == (wl.pid, "shm_seq", sysname, ret), row
        assert rest.startswith(args), row
    assert times[0] == 0.0 and times == sorted(times) and times[-1] < 5


@pytest.mark.parametrize("flg,names", [
    (0, ()), (0o600, ("0600",)), (0o1000, ("IPC_CREAT",)),
    (0o1000 | 0o4000 | (21 << 26) | 0o600, ("IPC_CREAT", "SHM_HUGETLB", "SHM_HUGE_2MB", "0600")),
    (0o4000 | (30 << 26), ("SHM_HUGETLB", "SHM_HUGE_1GB")),
    (0o10000 | 0o644, ("SHM_NORESERVE", "0644")),
])
def test_shmget_flag_names(flg, names):
    from memlens.tools.shmsnoop import shmget_flags

    assert shmget_flags(flg) == names


def test_shmat_flags_and_shmctl_commands():
    from memlens.tools.shmsnoop import shmat_flags, shmctl_cmd

    assert shmat_flags(0o10000 | 0o20000 | 0o40000 | 0o100000) == (
        "SHM_RDONLY", "SHM_RND", "SHM_REMAP", "SHM_EXEC")
    assert shmat_flags(0) == ()
    assert [shmctl_cmd(c) for c in (0, 1, 2, 3, 11, 12, 13, 14, 15, 0x102, 99)] == [
        "IPC_RMID", "IPC_SET", "IPC_STAT", "IPC_INFO", "SHM_LOCK", "SHM_UNLOCK", "SHM_STAT",
        "SHM_INFO", "SHM_STAT_ANY", "IPC_64|IPC_STAT", "99"]


# -- an unpaced burst: every call shown, or counted lost -------------------------------------

BURST_PAIRS = 50_000  # shmat+shmdt pairs: 100,002 calls with the shmget and the IPC_RMID
LOST_RE = re.compile(r"memlens: lost (\d+) events \(ring buffer full\)")


@pytest.mark.parametrize("ring,json_out", [(None, True), ("64K", True), ("64K", False),
                                           ("128M", True)],
                         ids=["default-ring", "64K-ring", "64K-ring-text", "128M-ring"])
def test_burst_shown_plus_counted_lost_equals_made(ring, json_out):
    """tests/workloads/shm_burst makes 2N+2 shm calls as fast as they go: the calls shown for
    its PID plus the calls counted lost equal the calls it made, exactly.  A 64 KiB ring
    cannot hold the burst (losses must be counted to the call); 128 MiB holds it whole
    (nothing lost)."""
    proc = subprocess.Popen([str(build_workload("shm_burst")), str(BURST_PAIRS)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    run = None
    try:
        m = re.match(r"ready pid=(\d+)", proc.stdout.readline())
        assert m
        pid = int(m[1])
        run = ToolRun("shmsnoop", "-p", str(pid), *(["--json"] if json_out else []),
                      *(["--ring-size", ring] if ring else []))
        run.wait_attached()
        proc.stdin.write("g")
        proc.stdin.flush()
        m = re.match(r"done calls=(\d+) failed=(\d+) ", proc.stdout.readline())
        assert m, "shm_burst did not finish"
        made, failed = int(m[1]), int(m[2])
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        # -p: the tool ends by itself once the program has exited, after a last read
        assert run.wait(timeout=300) == 0, run.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if run is not None and run.proc.poll() is None:
            run.stop(timeout=30)
    assert made == 2 * BURST_PAIRS + 2 and failed == 0
    if json_out:
        records = run.records()
        events = [r for r in records if r["type"] == "event"]
        assert {r["pid"] for r in events} <= {pid}
        shown = len(events)
        lost = sum(r["count"] for r in records if r["type"] == "lost" and r["what"] == "events")
        summary = records[-1]
        assert summary["type"] == "summary" and summary["events"] == shown
        assert summary["lost"].get("events", 0) == lost
        # what is shown is the calls themselves, in order of their kind
        kinds = {s: sum(1 for r in events if r["syscall"] == s) for s in SYSCALLS}
        assert kinds["shmget"] <= 1 and kinds["shmctl"] <= 1
        assert not any(r["error"] for r in events)
    else:
        rows = run.stdout.splitlines()
        shown = len(rows) - 1 if rows else 0  # the header
        assert all(row.split()[0] == str(pid) for row in rows[1:])
        lost = sum(int(x) for x in LOST_RE.findall(run.stderr))
    assert shown + lost == made, (shown, lost, run.stderr[-500:])
    if ring == "64K":
        assert lost > 0  # 64 KiB (~70 calls) cannot hold the burst: the count was exercised
    if ring == "128M":
        assert lost == 0 and shown == made
