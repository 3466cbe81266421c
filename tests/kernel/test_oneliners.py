# SPDX-License-Identifier: GPL-2.0-only
"""The one-liner tools (funccount, stackcount, count, trace) against workloads that make
their event happen a known number of times, between stdin gates:

  syscall_loop N [raw|libc]   N getppid calls from main -> ppid_level1 -> ppid_level2
  touch_pages N               N first writes to fresh anonymous pages (N page faults)
  madvise_mix H O             H madvise(MADV_HUGEPAGE) among 3*O other madvise calls

Witnesses, independent of memlens: `perf stat` counting the same kernel event for the same
PID over the same window (enabled through its control FIFO after the tool is attached,
stopped before the workload is let go again), the kernel's own tracepoint filter
(`perf stat --filter`), the workloads' own counts (getrusage fault counters, checked
results), and for uprobes the breakpoint itself in /proc/PID/mem and the `[uprobes]` area
the kernel maps into a process that hit one.
"""
from __future__ import annotations

import glob
import json
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from memlens.output.folded import read_folded
from tests.conftest import build_workload, memlens_cmd, require
from tests.kernel.helpers import ToolRun, fdinfo_links

GETPPID = "t:syscalls:sys_enter_getppid"
MADVISE = "t:syscalls:sys_enter_madvise"
CALLS = 23
OTHER_CALLS = 31
PAGES = 4099
MADV_HUGEPAGE = 14
NR_GETPPID, NR_MADVISE = 110, 28  # x86_64
MADV_BEHAVIORS = {0: "MADV_NORMAL", 4: "MADV_DONTNEED", 15: "MADV_NOHUGEPAGE",
                  MADV_HUGEPAGE: "MADV_HUGEPAGE"}
PPID_CHAIN = ["ppid_level2", "ppid_level1", "main"]           # leaf first
TOUCH_CHAIN = ["touch_each_page", "touch_region", "main"]     # leaf first


# -- workloads and witnesses ------------------------------------------------------------------

class Gated:
    """A workload started first (so the tool can be given its PID), held at a stdin gate;
    its "ready pid=P key=value..." line is parsed into `ready`."""

    def __init__(self, name: str, *args: str):
        self.name = name
        self.proc = subprocess.Popen([str(build_workload(name)), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"ready pid=(\d+)(.*)$", line)
        assert m, line
        self.pid = int(m.group(1))
        assert self.pid == self.proc.pid
        self.ready = dict(kv.split("=", 1) for kv in m.group(2).split())

    def go(self) -> None:
        self.proc.stdin.write("g")
        self.proc.stdin.flush()

    def line(self, pattern: str) -> dict[str, str]:
        """The next stdout line, matched against `pattern` (named groups returned)."""
        text = self.proc.stdout.readline()
        m = re.match(pattern, text)
        assert m, f"{self.name}: {text!r} does not match {pattern!r}"
        return m.groupdict()

    def finish(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=10) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class PerfStat:
    """`perf stat -p PID` started with its events disabled, enabled on demand through its
    control FIFO (the 'ack' is awaited), stopped with SIGINT: counts over an exact window."""

    def __init__(self, tmp: Path, pid: int, *events: str):
        require(shutil.which("perf") is not None, "needs perf (linux-perf) as a witness")
        self.ctl_path, self.ack_path = tmp / f"perf{pid}.ctl", tmp / f"perf{pid}.ack"
        os.mkfifo(self.ctl_path)
        os.mkfifo(self.ack_path)
        # O_RDWR never blocks on a FIFO: no hang if perf dies before opening its ends
        self.ctl = os.open(self.ctl_path, os.O_RDWR)
        self.ack = os.open(self.ack_path, os.O_RDWR)
        self.proc = subprocess.Popen(
            ["perf", "stat", "-x,", "--no-big-num", *events, "-p", str(pid),
             "--control", f"fifo:{self.ctl_path},{self.ack_path}", "-D", "-1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def enable(self) -> None:
        os.write(self.ctl, b"enable\n")
        ready, _, _ = select.select([self.ack], [], [], 20)
        assert ready, "perf stat did not acknowledge 'enable'"
        assert os.read(self.ack, 16).startswith(b"ack"), "perf stat control failed"

    def stop(self) -> list[tuple[str, int]]:
        """[(event, count)] in the order given to perf."""
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=30)
        self.close()
        counts = []
        for line in err.splitlines():
            cols = line.split(",")
            if len(cols) >= 3 and cols[0].isdigit():
                counts.append((cols[2], int(cols[0])))
        assert counts, err
        return counts

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self.ctl, self.ack):
            try:
                os.close(fd)
            except OSError:
                pass
        self.ctl = self.ack = -1


def syscall_witness(nr: int) -> tuple[str, ...]:
    """perf events counting syscall `nr` through raw_syscalls:sys_enter, not through the
    syscalls:sys_enter_* tracepoint the tool attaches to: a BPF program attached to a
    tracepoint that returns 0 hides that tracepoint's events from every perf user (the
    kernel's perf_syscall_enter / perf_trace_run_bpf_submit), so perf stat of the same
    tracepoint reads 0 while the tool runs."""
    require(platform.machine() == "x86_64", "syscall numbers of the witness are x86_64's")
    return ("-e", "raw_syscalls:sys_enter", "--filter", f"id == {nr}")


def _names(stack: list[str]) -> list[str]:
    return [re.sub(r"\+0x[0-9a-f]+.*$", "", f) for f in stack]


def _wait_lines(run: ToolRun, pattern: str, n: int, timeout: float = 10.0) -> None:
    """Until the tool has printed `n` lines matching `pattern` (or the timeout): events
    still in the ring buffer at SIGINT are not printed (see test_trace_prints_every_event_
    that_happened_before_sigint), and this test is about something else."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(1 for ln in run.stdout.splitlines() if re.search(pattern, ln)) >= n:
            return
        time.sleep(0.02)


def _final(run: ToolRun) -> dict:
    reports = [r for r in run.records() if r["type"] == "report"]
    assert reports and reports[-1]["final"] is True, run.stdout
    return reports[-1]


def _summary(run: ToolRun) -> dict:
    (summary,) = [r for r in run.records() if r["type"] == "summary"]
    return summary


def _no_loss(run: ToolRun) -> None:
    lost = [r for r in run.records() if r["type"] == "lost"]
    assert not lost, lost
    assert _summary(run)["lost"] == {}


def _getppid_window(tmp: Path, tool_args: list[str], *, mode: str = "raw",
                    calls: int = CALLS, pid_arg: bool = True) -> tuple[ToolRun, Gated, int]:
    """syscall_loop making `calls` getppid calls while the tool and perf stat watch it;
    the tool is stopped while the process is still alive (its maps resolve the frames).
    Returns the run, the workload, and perf's count."""
    wl = Gated("syscall_loop", str(calls), mode)
    perf = None
    try:
        run = ToolRun(*tool_args[:1], *(["-p", str(wl.pid)] if pid_arg else []),
                      *tool_args[1:])
        run.wait_attached()
        perf = PerfStat(tmp, wl.pid, *syscall_witness(NR_GETPPID))
        perf.enable()
        wl.go()
        wl.line(rf"done calls={calls} ppid=\d+$")
        ((_, perf_count),) = perf.stop()
        assert run.stop() == 0, run.stderr
        wl.finish()
    finally:
        if perf is not None:
            perf.close()
        wl.kill()
    run.assert_detached()
    return run, wl, perf_count


# -- 1. funccount -----------------------------------------------------------------------------

def test_funccount_getppid_exact_and_equal_to_perf(tmp_path):
    run, wl, perf_count = _getppid_window(tmp_path, ["funccount", "--json", GETPPID])
    assert perf_count == CALLS
    assert _final(run)["entries"] == [{"probe": GETPPID, "count": CALLS}]
    summary = _summary(run)
    assert summary["events"] == CALLS and summary["probes"] == [GETPPID]
    _no_loss(run)
    assert f"Tracing 1 probe for PID {wl.pid}... Hit Ctrl-C to end." in run.stderr
    assert "Tracing" not in run.stdout


def test_funccount_text_table(tmp_path):
    run, _, _ = _getppid_window(tmp_path, ["funccount", GETPPID])
    lines = [ln for ln in run.stdout.splitlines() if ln.strip()]
    assert re.fullmatch(r"FUNC\s+COUNT", lines[0]), run.stdout
    assert re.fullmatch(rf"{GETPPID}\s+{CALLS}", lines[1]), run.stdout
    assert len(lines) == 2 and all(len(ln) < 80 for ln in lines), run.stdout


def test_funccount_wildcard_names_every_match_and_counts_ours(tmp_path):
    pattern = "t:syscalls:sys_enter_getp*"
    expected = sorted("t:syscalls:" + os.path.basename(d) for d in
                      glob.glob("/sys/kernel/tracing/events/syscalls/sys_enter_getp*"))
    assert len(expected) >= 3 and GETPPID in expected, expected  # getpid, getppid, getpgid...
    run, _, perf_count = _getppid_window(tmp_path, ["funccount", "--json", pattern])
    assert perf_count == CALLS
    summary = _summary(run)
    assert sorted(summary["probes"]) == expected
    # between the gates the program makes no other getp* syscall: ours is the only entry
    assert _final(run)["entries"] == [{"probe": GETPPID, "count": CALLS}]
    assert re.search(rf"Tracing {len(expected)} probes for PID", run.stderr), run.stderr
    _no_loss(run)


# -- 2. stackcount ----------------------------------------------------------------------------

def test_stackcount_user_stack_per_pid(tmp_path):
    run, wl, perf_count = _getppid_window(tmp_path, ["stackcount", "-U", "-P", "--json",
                                                     GETPPID])
    assert perf_count == CALLS
    entries = _final(run)["entries"]
    assert len(entries) == 1, entries
    (e,) = entries
    assert (e["pid"], e["comm"], e["count"]) == (wl.pid, "syscall_loop", CALLS)
    assert _names(e["user_stack"])[:3] == PPID_CHAIN, e["user_stack"]
    assert all(f.endswith(" [syscall_loop]") for f in e["user_stack"][:3]), e["user_stack"]
    assert e["stack"] == e["user_stack"] and "kernel_stack" not in e
    _no_loss(run)


def test_stackcount_kernel_and_user_stack(tmp_path):
    run, wl, _ = _getppid_window(tmp_path, ["stackcount", "-P", "--json", GETPPID])
    (e,) = _final(run)["entries"]
    assert e["count"] == CALLS and e["pid"] == wl.pid
    kst, ust = e["kernel_stack"], e["user_stack"]
    assert e["stack"] == kst + ust
    # the kernel half ends at the syscall entry; the user half starts at our leaf
    assert any(n.startswith("entry_SYSCALL_64") for n in _names(kst)), kst
    assert all("[" not in f for f in kst), kst   # kernel frames name no module here
    assert _names(ust)[:3] == PPID_CHAIN, ust


def test_syscall_kernel_stack_has_no_tracing_frames(tmp_path):
    run, _, _ = _getppid_window(tmp_path, ["stackcount", "-K", "--json", GETPPID])
    (e,) = _final(run)["entries"]
    names = _names(e["kernel_stack"])
    assert "entry_SYSCALL_64_after_hwframe" in names, names
    assert not [n for n in names if n.startswith("perf_")], names


def test_stackcount_folded_total_equals_json_total(tmp_path):
    json_run, _, _ = _getppid_window(tmp_path, ["stackcount", "-U", "-P", "--json", GETPPID])
    json_total = sum(e["count"] for e in _final(json_run)["entries"])
    fold_run, _, perf_count = _getppid_window(tmp_path, ["stackcount", "-U", "-P", "-f",
                                                         GETPPID])
    folded = read_folded(fold_run.stdout)
    assert perf_count == json_total == sum(folded.values()) == CALLS, fold_run.stdout
    (stack,) = folded
    # root first, the comm as the root frame, function names without offsets
    assert stack.startswith("syscall_loop;"), stack
    assert stack.endswith(";" + ";".join(reversed(PPID_CHAIN))), stack


# -- 3. page faults ---------------------------------------------------------------------------

def _fault_window(tmp: Path, tool_args: list[str]) -> tuple[ToolRun, Gated, dict, dict]:
    """touch_pages: the tool and perf stat watch exactly the window between its two gates,
    in which it only writes to PAGES fresh pages.  Returns the run, the workload, perf's
    counts and the workload's own getrusage delta over the touch loop."""
    wl = Gated("touch_pages", str(PAGES))
    perf = None
    try:
        run = ToolRun(tool_args[0], "-p", str(wl.pid), *tool_args[1:])
        run.wait_attached()
        perf = PerfStat(tmp, wl.pid, "-e", "page-faults", "-e", "minor-faults",
                        "-e", "major-faults")
        perf.enable()
        wl.go()
        wl.line(r"t$")                    # loop over; the process waits at gate 2
        perf_counts = dict(perf.stop())
        assert run.stop() == 0, run.stderr
        wl.go()
        own = wl.line(rf"done pages={PAGES} minflt=(?P<minflt>\d+) majflt=(?P<majflt>\d+)$")
        wl.finish()
    finally:
        if perf is not None:
            perf.close()
        wl.kill()
    run.assert_detached()
    return run, wl, perf_counts, {k: int(v) for k, v in own.items()}


def test_count_page_faults_by_comm_pid_equals_perf_and_getrusage(tmp_path):
    run, wl, perf, own = _fault_window(tmp_path, ["count", "sw:page-faults", "--by",
                                                  "comm,pid", "--json"])
    assert own == {"minflt": PAGES, "majflt": 0}     # one fault per fresh page
    assert perf == {"page-faults": PAGES, "minor-faults": PAGES, "major-faults": 0}
    assert _final(run)["entries"] == [{"comm": "touch_pages", "pid": wl.pid, "count": PAGES}]
    _no_loss(run)


def test_stackcount_page_faults_user_stack_equals_perf(tmp_path):
    run, wl, perf, own = _fault_window(tmp_path, ["stackcount", "-U", "-P", "--json",
                                                  "sw:page-faults"])
    assert own["minflt"] + own["majflt"] == perf["page-faults"] == PAGES
    entries = _final(run)["entries"]
    assert sum(e["count"] for e in entries) == PAGES, entries
    (e,) = entries
    assert (e["pid"], e["comm"]) == (wl.pid, "touch_pages")
    assert _names(e["user_stack"])[:3] == TOUCH_CHAIN, e["user_stack"]


# -- 4. trace with a field filter -------------------------------------------------------------

def test_trace_madvise_hugepage_filter(tmp_path):
    wl = Gated("madvise_mix", str(CALLS), str(OTHER_CALLS))
    perf = None
    try:
        run = ToolRun("trace", "--json", "-p", str(wl.pid), MADVISE,
                      "behavior == MADV_HUGEPAGE")
        run.wait_attached()
        perf = PerfStat(tmp_path, wl.pid, *syscall_witness(NR_MADVISE))
        perf.enable()
        wl.go()
        done = wl.line(r"done huge=(?P<huge>\d+) other=(?P<other>\d+) len=(?P<len>\d+)$")
        ((_, perf_all),) = perf.stop()
        _wait_lines(run, r'"type": ?"event"', CALLS)
        assert run.stop() == 0, run.stderr
        wl.finish()
    finally:
        if perf is not None:
            perf.close()
        wl.kill()
    run.assert_detached()
    length = int(done["len"])
    assert (int(done["huge"]), int(done["other"])) == (CALLS, 3 * OTHER_CALLS)
    assert perf_all == CALLS + 3 * OTHER_CALLS        # every madvise call in the window
    events = [r for r in run.records() if r["type"] == "event"]
    assert len(events) == CALLS, run.stdout
    for ev in events:
        assert (ev["pid"], ev["tid"], ev["comm"], ev["probe"]) == \
            (wl.pid, wl.pid, "madvise_mix", MADVISE), ev
        assert ev["fields"]["behavior"] == MADV_HUGEPAGE, ev
        assert ev["fields"]["__syscall_nr"] == NR_MADVISE, ev
        assert ev["fields"]["len_in"] == length, ev
    assert len({ev["fields"]["start"] for ev in events}) == 1   # one region, 23 times
    assert [ev["ts_ns"] for ev in events] == sorted(ev["ts_ns"] for ev in events)
    summary = _summary(run)
    assert summary["events"] == CALLS and summary["filter"] == "behavior == MADV_HUGEPAGE"
    _no_loss(run)


def test_trace_text_line_per_event(tmp_path):
    wl = Gated("madvise_mix", str(CALLS), str(OTHER_CALLS))
    try:
        run = ToolRun("trace", "-p", str(wl.pid), MADVISE, "behavior == MADV_HUGEPAGE")
        run.wait_attached()
        wl.go()
        wl.line(r"done ")
        _wait_lines(run, r"sys_enter_madvise", CALLS)
        assert run.stop() == 0, run.stderr
        wl.finish()
    finally:
        wl.kill()
    lines = run.stdout.splitlines()
    assert re.fullmatch(r"PID\s+TID\s+COMM\s+FUNC\s+FIELDS", lines[0]), run.stdout
    rows = lines[1:]
    assert len(rows) == CALLS, run.stdout
    for row in rows:
        assert re.fullmatch(rf"{wl.pid}\s+{wl.pid}\s+madvise_mix\s+sys_enter_madvise\s+"
                            rf"start=0x[0-9a-f]+ len_in=4194304 behavior={MADV_HUGEPAGE}",
                            row), row


def test_trace_prints_every_event_that_happened_before_sigint(tmp_path):
    """Made deterministic: nobody reads the tool's stdout at first, so it blocks writing
    the first burst (more than a pipe holds); a second process's calls then wait in the
    ring buffer; SIGINT; only then is stdout read.  Every event happened before the signal:
    each must be printed or counted as lost."""
    first, second = 1009, CALLS
    a = Gated("madvise_mix", str(first), "0")
    b = Gated("madvise_mix", str(second), "0")
    with open(tmp_path / "stderr", "w") as err:
        tool = subprocess.Popen(memlens_cmd("trace", "--json", MADVISE,
                                            "behavior == MADV_HUGEPAGE"),
                                stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        deadline = time.monotonic() + 20
        while "Hit Ctrl-C" not in (tmp_path / "stderr").read_text():
            assert tool.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "stderr").read_text()
            time.sleep(0.05)
        a.go()
        a.line(rf"done huge={first} other=0 ")
        deadline = time.monotonic() + 10   # the tool blocks writing: the pipe is full
        while not _wchan(tool.pid).endswith("pipe_write") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _wchan(tool.pid).endswith("pipe_write"), _wchan(tool.pid)  # (anon_)pipe_write
        b.go()
        b.line(rf"done huge={second} other=0 ")
        tool.send_signal(signal.SIGINT)
        out, _ = tool.communicate(timeout=60)
        a.finish()
        b.finish()
    finally:
        if tool.poll() is None:
            tool.kill()
            tool.wait(timeout=10)
        a.kill()
        b.kill()
    assert tool.returncode == 0
    records = [json.loads(ln) for ln in out.splitlines() if ln.strip()]
    printed = {pid: sum(1 for r in records if r["type"] == "event" and r["pid"] == pid)
               for pid in (a.pid, b.pid)}
    lost = sum(r["count"] for r in records if r["type"] == "lost")
    assert printed[a.pid] + printed[b.pid] + lost >= first + second, (printed, lost)


def _wchan(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read().strip()
    except OSError:
        return ""


@pytest.mark.parametrize("tool", ["trace", "funccount", "count", "stackcount"])
def test_kernel_function_without_kprobes_names_the_tracepoint(tool):
    kprobes = os.path.exists("/sys/bus/event_source/devices/kprobe")
    require(not kprobes, "this kernel has kprobes: the fallback message is not shown")
    r = subprocess.run(memlens_cmd(tool, "hugepage_madvise"), capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 4, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "t:syscalls:sys_enter_madvise" in line and "MADV_HUGEPAGE" in line, line
    assert "behavior == MADV_HUGEPAGE" in line and "kprobe" in line, line


# -- 5. count by comm,pid for two processes ---------------------------------------------------

def test_count_by_comm_pid_two_processes(tmp_path):
    a = Gated("syscall_loop", str(CALLS))
    b = Gated("syscall_loop", str(OTHER_CALLS))
    perfs: list[PerfStat] = []
    try:
        run = ToolRun("count", GETPPID, "--by", "comm,pid", "--json")
        run.wait_attached()
        for i, wl in enumerate((a, b)):
            (tmp_path / str(i)).mkdir()
            perfs.append(PerfStat(tmp_path / str(i), wl.pid, *syscall_witness(NR_GETPPID)))
            perfs[-1].enable()
        a.go()
        b.go()
        a.line(rf"done calls={CALLS} ")
        b.line(rf"done calls={OTHER_CALLS} ")
        witness = {wl.pid: p.stop()[0][1] for wl, p in zip((a, b), perfs)}
        assert run.stop() == 0, run.stderr
        a.finish()
        b.finish()
    finally:
        for p in perfs:
            p.close()
        a.kill()
        b.kill()
    run.assert_detached()
    assert witness == {a.pid: CALLS, b.pid: OTHER_CALLS}
    mine = [e for e in _final(run)["entries"] if e["pid"] in (a.pid, b.pid)]
    # largest last
    assert mine == [{"comm": "syscall_loop", "pid": a.pid, "count": CALLS},
                    {"comm": "syscall_loop", "pid": b.pid, "count": OTHER_CALLS}], mine


# -- 6. count with a sum, a filter and a field key --------------------------------------------

def _madvise_count(*tool_args: str) -> tuple[ToolRun, Gated, int]:
    wl = Gated("madvise_mix", str(CALLS), str(OTHER_CALLS))
    try:
        run = ToolRun("count", *tool_args)
        run.wait_attached()
        wl.go()
        done = wl.line(rf"done huge={CALLS} other={3 * OTHER_CALLS} len=(?P<len>\d+)$")
        assert run.stop() == 0, run.stderr
        wl.finish()
    finally:
        wl.kill()
    run.assert_detached()
    return run, wl, int(done["len"])


def test_count_sum_len_in_of_hugepage_calls():
    run, wl, length = _madvise_count("--json", "--by", "pid", "--sum", "len_in", "--filter",
                                     "behavior == MADV_HUGEPAGE", MADVISE)
    mine = [e for e in _final(run)["entries"] if e["pid"] == wl.pid]
    assert mine == [{"pid": wl.pid, "count": CALLS, "sum": CALLS * length}], mine
    _no_loss(run)


def test_count_by_field_behavior():
    run, wl, _ = _madvise_count_pid("--json", "--by", "pid,field:behavior", MADVISE)
    got = {e["behavior"]: e["count"] for e in _final(run)["entries"] if e["pid"] == wl.pid}
    assert got == {b: (CALLS if b == MADV_HUGEPAGE else OTHER_CALLS) for b in MADV_BEHAVIORS}


def _madvise_count_pid(*tool_args: str) -> tuple[ToolRun, Gated, int]:
    wl = Gated("madvise_mix", str(CALLS), str(OTHER_CALLS))
    try:
        run = ToolRun("count", "-p", str(wl.pid), *tool_args)
        run.wait_attached()
        wl.go()
        done = wl.line(rf"done huge={CALLS} other={3 * OTHER_CALLS} len=(?P<len>\d+)$")
        assert run.stop() == 0, run.stderr
        wl.finish()
    finally:
        wl.kill()
    run.assert_detached()
    return run, wl, int(done["len"])


# -- 7. uprobe, scoped to the PID -------------------------------------------------------------

def _read_mem(pid: int, addr: int, n: int = 1) -> bytes:
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as f:
        f.seek(addr)
        return f.read(n)


def _maps(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


def _in_libc(pid: int, addr: int) -> bool:
    for line in _maps(pid).splitlines():
        cols = line.split()
        lo, hi = (int(x, 16) for x in cols[0].split("-"))
        if lo <= addr < hi:
            return "libc.so" in line
    return False


INT3 = b"\xcc"


@pytest.mark.parametrize("attach", ["uprobe_multi", "perf"])
def test_uprobe_libc_getppid_counts_the_target_only(tmp_path, attach):
    """The breakpoint in the target alone, each call counted once: attached as a
    uprobe_multi link with getppid's offset (kernel >= 6.6; the default) and as a
    perf-event uprobe that libbpf finds by name (MEMLENS_UPROBE_MULTI=0, as on 6.1)."""
    if attach == "uprobe_multi":
        from memlens.core.kernel import uprobe_multi_supported

        require(uprobe_multi_supported(), "needs uprobe_multi links (kernel >= 6.6)")
    env = {"MEMLENS_UPROBE_MULTI": "0"} if attach == "perf" else {}
    target = Gated("syscall_loop", str(CALLS), "libc")
    bystander = Gated("syscall_loop", str(OTHER_CALLS), "libc")
    perf = None
    try:
        t_addr = int(target.ready["getppid"], 16)
        b_addr = int(bystander.ready["getppid"], 16)
        assert _in_libc(target.pid, t_addr) and _in_libc(bystander.pid, b_addr)
        original = _read_mem(target.pid, t_addr)
        assert original != INT3 and _read_mem(bystander.pid, b_addr) == original
        run = ToolRun("funccount", "-p", str(target.pid), "--json", "u:c:getppid", env=env)
        run.wait_attached()
        # (the uprobe warm-up's links, on the engine's object file, are not libc's)
        links = [li for li in fdinfo_links(run.proc.pid)
                 if li.get("path", "").endswith("libc.so.6") or li["link_type"] == "perf"]
        assert [li["link_type"] for li in links] == [attach], links
        if attach == "uprobe_multi":
            assert (links[0]["pid"], links[0]["uprobe_cnt"]) == (str(target.pid), "1")
        # the breakpoint is in the target's copy of libc's text, not in the bystander's
        assert _read_mem(target.pid, t_addr) == INT3
        assert _read_mem(bystander.pid, b_addr) == original
        perf = PerfStat(tmp_path, target.pid, *syscall_witness(NR_GETPPID))
        perf.enable()
        target.go()
        bystander.go()
        target.line(rf"done calls={CALLS} ")
        bystander.line(rf"done calls={OTHER_CALLS} ")
        ((_, perf_count),) = perf.stop()
        target_maps, bystander_maps = _maps(target.pid), _maps(bystander.pid)
        assert run.stop() == 0, run.stderr
        run.assert_detached()
        # the breakpoint is gone once the tool has exited
        deadline = time.monotonic() + 5
        while _read_mem(target.pid, t_addr) != original and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _read_mem(target.pid, t_addr) == original
        target.finish()
        bystander.finish()
    finally:
        if perf is not None:
            perf.close()
        target.kill()
        bystander.kill()
    assert perf_count == CALLS
    # the kernel maps the out-of-line single-step area into a process that hit a uprobe
    assert "[uprobes]" in target_maps and "[uprobes]" not in bystander_maps
    assert _final(run)["entries"] == [{"probe": "u:c:getppid", "count": CALLS}]
    _no_loss(run)


def test_two_uprobes_in_one_file_each_their_own_count(tmp_path):
    """Two u: probes on libc, one uprobe_multi link with a cookie each (the engine's
    default on 6.6+): getppid's calls counted under getppid, the second probe, and not
    under getpid, the first (a cookie lost would put them there); getpid is not called
    by the loop."""
    run, _, perf_count = _getppid_window(tmp_path, ["funccount", "--json", "u:c:getpid",
                                                    "u:c:getppid"], mode="libc")
    assert perf_count == CALLS
    entries = {e["probe"]: e["count"] for e in _final(run)["entries"]}
    assert entries == {"u:c:getppid": CALLS}, entries


def test_uprobe_and_tracepoint_together(tmp_path):
    """The libc wrapper and the syscall it makes, counted by one run: one count each."""
    run, _, perf_count = _getppid_window(tmp_path, ["funccount", "--json", "u:c:getppid",
                                                    GETPPID], mode="libc")
    assert perf_count == CALLS
    entries = {e["probe"]: e["count"] for e in _final(run)["entries"]}
    assert entries == {"u:c:getppid": CALLS, GETPPID: CALLS}


# -- 8. usage errors --------------------------------------------------------------------------

USAGE_ERRORS = [
    (("count", "bogus:x:y"), "bogus:x:y"),
    (("funccount", "t:syscalls"), "t:syscalls"),
    (("stackcount", "-U", "sw:no-such-event"), "no-such-event"),
    (("count", "sw:page-faults:0"), "period"),
    (("count", "--by", "comm,bogus", GETPPID), "bogus"),
    (("count", "--by", "field:", GETPPID), "field"),
    (("count", "--by", "field:nosuch", GETPPID), "nosuch"),
    (("count", "--by", "field:behavior,field:start", MADVISE), "one field"),
    (("count", "--filter", "nosuch == 1", MADVISE), "nosuch"),
    (("trace", MADVISE, "nosuch == 1"), "nosuch"),
    (("trace", MADVISE, "behavior == MADV_BOGUS"), "MADV_BOGUS"),
    (("trace", MADVISE, "behavior ~ 3"), "OP"),
    (("count", "--sum", "nosuch", MADVISE), "nosuch"),
    (("count", "--sum", "len_in", "sw:page-faults"), "sw:page-faults"),
    (("stackcount", "-U", "-K", "t:syscalls:sys_enter_brk"), "-U and -K"),
    (("funccount", "u:nosuchlib_xyz:foo"), "nosuchlib_xyz"),
    (("funccount", "-p", "999999", GETPPID), "999999"),
]


@pytest.mark.parametrize("args, named", USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_error_is_one_line_exit_2(args, named):
    r = subprocess.run(memlens_cmd(*args), capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert named in line, line


def test_unknown_library_function_is_a_usage_error():
    r = subprocess.run(memlens_cmd("funccount", "-d", "1", "u:c:no_such_function_xyz"),
                       capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "no_such_function_xyz" in line
    assert r.returncode == 2, (r.returncode, r.stderr)


@pytest.mark.parametrize("argv,announce_ring", [
    (["funccount", "t:syscalls:sys_enter_getppid"], False),
    (["count", "sw:page-faults", "--by", "comm,pid"], False),
    (["stackcount", "-U", "t:syscalls:sys_enter_brk"], True),
])
def test_the_new_keys_ring_is_made_only_where_keys_are_announced(argv, announce_ring):
    """The engine announces a new key (its process's maps and symbols read while it lives)
    only for user stacks and files: without them the announcements' ring is one page
    (256 KiB was ~0.3 ms of each start).  Witness: the rings the running tool holds."""
    from tests.kernel.helpers import ToolRun, bpf_maps_of

    run = ToolRun(*argv)
    run.wait_attached()
    maps = bpf_maps_of(run.proc.pid)
    assert run.stop() == 0, run.stderr
    rings = sorted(m["max_entries"] for m in maps if m["map_type"] == 27)  # RINGBUF
    assert (262144 in rings) is announce_ring, rings
    if not announce_ring:
        assert max(rings) == 4096, rings


@pytest.mark.parametrize("argv,program", [
    (["funccount", "t:syscalls:sys_enter_getppid"], "count_tp_simple"),
    (["count", "t:syscalls:sys_enter_brk", "--by", "comm,pid,cgroup"], "count_tp_simple"),
    (["count", "sw:page-faults", "--by", "comm,pid"], "count_perf_simple"),
    (["trace", "t:syscalls:sys_exit_mmap"], "count_tp_trace"),
    (["trace", "t:syscalls:sys_enter_madvise", "behavior == 14"], "count_tp_trace"),
    (["drsnoop"], "count_tp_episodes"),
    # the record's fields (a sum, a filter, a file key), a mapping: the whole program
    (["count", "t:kmem:kmalloc", "--sum", "bytes_alloc"], "count_tp_nostack"),
    (["count", "t:syscalls:sys_enter_brk", "--filter", "brk != 0"], "count_tp_nostack"),
    (["count", "sw:page-faults", "--by", "vma"], "count_perf_nostack"),
    (["compactsnoop"], "count_tp_nostack"),  # begin, end and a filtered check
])
def test_each_run_loads_the_smallest_program_holding_what_it_needs(argv, program):
    """engine.bpf.c's stackless programs each hold a part of the engine (SHAPE_*): the
    verifier checks every instruction loaded, used by the run or not (funccount's check
    ~1.1 -> ~0.4 ms).  Witness: the programs the running tool holds, named by bpftool; the
    tools' own tests show each variant counting and streaming exactly."""
    from tests.kernel.helpers import ToolRun, bpf_prog_names_of

    run = ToolRun(*argv)
    run.wait_attached()
    names = bpf_prog_names_of(run.proc.pid)
    assert run.stop() == 0, run.stderr
    engine = [n for n in names if n.startswith("count_")]
    assert engine == [program], names


@pytest.mark.parametrize("argv,walk_maps", [
    (["drsnoop"], False),
    (["funccount", "t:syscalls:sys_enter_getppid"], False),
    (["count", "sw:page-faults", "--by", "comm,pid"], False),
    (["stackcount", "-U", "t:syscalls:sys_enter_brk"], True),
], ids=lambda a: " ".join(a) if isinstance(a, list) else str(a))
def test_stackless_runs_make_none_of_the_walks_maps(argv, walk_maps):
    """A run whose programs are all stackless makes none of the maps only the stack walk,
    the hand-over and USDT use (engine.NOT_MADE_WITHOUT_STACKS: 17 of engine.bpf.o's 31);
    a run with user stacks makes them.  Witness: the maps the running tool holds, named by
    bpftool (the kernel keeps 15 characters of a name)."""
    from memlens.core.engine import NOT_MADE_WITHOUT_STACKS
    from tests.kernel.helpers import ToolRun, bpf_map_names_of

    run = ToolRun(*argv)
    run.wait_attached()
    names = bpf_map_names_of(run.proc.pid)
    assert run.stop() == 0, run.stderr
    assert "events" in names and "drops" in names, names  # the engine's own are there
    walk = sorted(n for n in names if n.startswith(NOT_MADE_WITHOUT_STACKS))
    assert bool(walk) is walk_maps, walk
    if walk_maps:
        assert "unwind_procs" in walk and "hand_over_tp" in walk, walk


def test_stackless_variants_are_ordered_smallest_first_and_hold_what_they_say():
    """The choice takes the first variant holding a run's needs: each holds no less than
    the ones before it would need, and the last holds everything."""
    from memlens.core.engine import ALL_PARTS, STACKLESS, stackless_program

    for kind, variants in STACKLESS.items():
        assert variants[-1][1] == ALL_PARTS
        assert stackless_program(kind, set(ALL_PARTS)) == variants[-1][0]
        assert stackless_program(kind, {"count"}) == variants[0][0]
    assert stackless_program("tracepoint", {"trace", "record"}) == "count_tp_trace"
    assert stackless_program("tracepoint", {"trace", "record", "pairs"}) == "count_tp_episodes"
    assert stackless_program("tracepoint", {"count", "record"}) == "count_tp_nostack"
    assert stackless_program("perf", {"count", "pairs"}) == "count_perf_nostack"
