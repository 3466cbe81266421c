# SPDX-License-Identifier: GPL-2.0-only
"""mmapsnoop against a program that makes 23 mmaps of a named file, 5 anonymous maps and 2
failing mmaps (tests/workloads/mmap_named.c), each printed with its result by the program
itself; strace of the same run is the independent witness for every argument and result."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import build_workload, memlens_cmd, require
from tests.kernel.helpers import ToolRun

FILE_MAPS, ANON_MAPS, FAILS = 23, 5, 2
TARGET = "mmap_named_target.dat"
PROT = {0: "---", 1: "R--", 3: "RW-", 5: "R-E", 7: "RWE"}
MAP_PRIVATE, MAP_SHARED, MAP_ANONYMOUS = 0x02, 0x01, 0x20
MAP_NORESERVE, MAP_POPULATE = 0x4000, 0x8000


def _flag_letters(flags: int) -> str:
    """The letters the --help epilog documents, computed independently of the tool."""
    out = "S" if flags & 3 == MAP_SHARED else "P"
    for bit, letter in ((MAP_ANONYMOUS, "A"), (MAP_NORESERVE, "R"), (MAP_POPULATE, "O")):
        if flags & bit:
            out += letter
    return out


class Workload:
    def __init__(self, tmp: Path, strace_log: Path | None = None):
        argv = [str(build_workload("mmap_named")), str(tmp)]
        if strace_log is not None:
            argv = ["strace", "-qq", "-X", "raw", "-e", "trace=mmap", "-o", str(strace_log),
                    *argv]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        m = re.match(r"ready pid=(\d+) file=(.*)", self.proc.stdout.readline())
        assert m
        self.pid = int(m.group(1))
        self.path = os.path.realpath(m.group(2))

    def go_and_exit(self) -> list[dict]:
        self.proc.stdin.write("g")
        self.proc.stdin.flush()
        calls = []
        for line in self.proc.stdout:
            if line.strip() == "done":
                break
            kind, rest = line.split(" ", 1)
            fields = dict(kv.split("=", 1) for kv in rest.split())
            call = {k: (v if k in ("what",) else int(v, 0)) for k, v in fields.items()}
            call["kind"] = kind
            calls.append(call)
        self.proc.stdin.close()
        assert self.proc.wait(timeout=20) == 0
        return calls

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _traced(tmp: Path, *tool_args: str, strace_log: Path | None = None, pid_filter=True):
    wl = Workload(tmp, strace_log)
    args = ("-p", str(wl.pid), *tool_args) if pid_filter else tool_args
    run = ToolRun("mmapsnoop", *args)
    try:
        run.wait_attached()
        calls = wl.go_and_exit()
    finally:
        wl.kill()
    assert run.stop() == 0, run.stderr
    run.assert_detached()
    assert len(calls) == FILE_MAPS + ANON_MAPS + FAILS
    return run, wl, calls


def _strace_calls(log: Path) -> list[dict]:
    pat = re.compile(r"^mmap\((\w+), (\d+), (0x[0-9a-f]+|0), (0x[0-9a-f]+|0), (-?\d+), "
                     r"(0x[0-9a-f]+|0)\)\s+= (?:(0x[0-9a-f]+)|-1 (E\w+))")
    out = []
    for line in log.read_text().splitlines():
        m = pat.match(line)
        if m:
            out.append({"len": int(m[2]), "prot": int(m[3], 0), "flags": int(m[4], 0),
                        "fd": int(m[5]), "off": int(m[6], 0),
                        "addr": int(m[7], 16) if m[7] else None, "error": m[8]})
    return out


def _check_event(ev: dict, call: dict, wl: Workload) -> None:
    assert ev["pid"] == wl.pid and ev["tid"] == wl.pid
    assert ev["comm"] == "mmap_named"
    assert ev["size_bytes"] == call["len"]
    assert ev["prot_raw"] == call["prot"] and ev["prot"] == PROT[call["prot"]]
    assert ev["flags_raw"] == call["flags"] and ev["flags"] == _flag_letters(call["flags"])
    if call["kind"] == "anon":
        assert ev["anonymous"] is True and ev["file"] is None and ev["fd"] is None
        assert ev["offset"] == 0
    else:
        assert ev["anonymous"] is False and ev["fd"] == call["fd"]
        assert ev["offset"] == call["off"]
    if call["kind"] == "fail":
        assert ev["error"] == {"badfd": "EBADF", "eacces": "EACCES"}[call["what"]]
        assert ev["errno"] == call["errno"] and ev["ret"] == -call["errno"]
        assert ev["addr"] is None
        # EBADF: the fd named nothing; EACCES: the file is known even though the call failed
        assert ev["file"] == (None if call["what"] == "badfd" else wl.path)
    else:
        assert ev["error"] is None
        assert ev["ret"] == call["addr"] and ev["addr"] == hex(call["addr"])
        if call["kind"] == "file":
            assert ev["file"] == wl.path and ev["file"].endswith("/" + TARGET)
            assert ev["deleted"] is False


def test_every_field_of_every_call_matches_the_program_and_strace(tmp_path):
    require(shutil.which("strace") is not None, "strace (the witness) is not installed")
    log = tmp_path / "strace.log"
    run, wl, calls = _traced(tmp_path, "--json", strace_log=log)
    records = run.records()
    events = [r for r in records if r["type"] == "event"]
    # the tool was attached only after the program's own start-up maps: exactly our calls
    assert len(events) == len(calls), run.stdout
    for ev, call in zip(events, calls):
        _check_event(ev, call, wl)
    assert [e["anonymous"] for e in events].count(True) == ANON_MAPS
    # witness: strace saw the same arguments and results, in the same order
    witness = _strace_calls(log)[-len(calls):]
    assert len(witness) == len(calls)
    for ev, st in zip(events, witness):
        assert (ev["size_bytes"], ev["prot_raw"], ev["flags_raw"], ev["offset"]) == \
               (st["len"], st["prot"], st["flags"], st["off"])
        assert (ev["fd"] if ev["fd"] is not None else -1) == st["fd"]
        assert ev["error"] == st["error"]
        assert ev["ret"] == (st["addr"] if st["addr"] is not None else ev["ret"])
    (summary,) = [r for r in records if r["type"] == "summary"]
    assert summary["events"] == len(calls) and summary["lost"] == {}
    assert not any(r["type"] == "lost" for r in records)


def test_file_only_hides_anonymous_maps_and_name_filter_selects_comm(tmp_path):
    # system wide (no -p), selected by comm: the name filter must keep our 25 non-anonymous
    # calls and nothing else
    run, wl, calls = _traced(tmp_path, "--json", "--file-only", "--name", "mmap_nam",
                             pid_filter=False)
    events = [r for r in run.records() if r["type"] == "event"]
    assert all("mmap_nam" in e["comm"] for e in events), events
    mine = [e for e in events if e["pid"] == wl.pid]
    expected = [c for c in calls if c["kind"] != "anon"]
    assert len(mine) == len(expected) == FILE_MAPS + FAILS
    for ev, call in zip(mine, expected):
        _check_event(ev, call, wl)


@pytest.mark.parametrize("with_time", [False, True])
def test_text_columns(tmp_path, with_time):
    run, wl, calls = _traced(tmp_path, *(["-T"] if with_time else []))
    lines = run.stdout.splitlines()
    header = ["PID", "COMM", "PROT", "MAP", "OFFS(KB)", "SIZE(KB)", "FILE"]
    assert lines[0].split() == (["TIME"] if with_time else []) + header
    skip = 1 if with_time else 0
    rows = [ln for ln in lines[1:] if ln.split()[skip] == str(wl.pid)]
    assert len(rows) == len(calls)
    assert all(len(ln) < 80 for ln in lines), [ln for ln in lines if len(ln) >= 80]
    for ln, call in zip(rows, calls):
        cells = ln.split(None, 6 + skip)
        if with_time:
            assert re.fullmatch(r"\d\d:\d\d:\d\d", cells.pop(0))
        _pid, comm, prot, flags, offs, size, where = cells
        assert (comm, prot, flags) == ("mmap_named", PROT[call["prot"]],
                                      _flag_letters(call["flags"]))
        assert int(size) == call["len"] // 1024
        assert int(offs) == call.get("off", 0) // 1024
        if call["kind"] == "anon":
            assert where == "[anon]"
        elif call["kind"] == "file":
            # cut from the left when long: always a tail of the real path
            assert where == wl.path or (where.startswith("...")
                                        and wl.path.endswith(where[3:])), where
            if not with_time:  # 25 columns left: the file name is whole
                assert where.endswith("/" + TARGET) or where == "..." + TARGET, where
        elif call["what"] == "badfd":
            full = f"[bad fd {call['fd']}] (EBADF)"
            assert where == full or (with_time and full.endswith(where.removeprefix("...")))
        else:
            assert where.endswith(" (EACCES)")
            assert (wl.path + " (EACCES)").endswith(where.removeprefix("...")), where


@pytest.mark.parametrize("args", [("-p", "999999"), ("--bogus",), ("-d", "-1")])
def test_bad_input_is_one_line_usage_error(args):
    r = subprocess.run(memlens_cmd("mmapsnoop", *args), capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    if args[0] == "-p":
        assert r.stderr.strip() == "memlens: no process with PID 999999"


def test_wide_text_keeps_whole_paths(tmp_path):
    # a deep directory makes the path longer than the FILE column of an 80-column line
    deep = tmp_path / ("d" * 40) / ("e" * 40)
    deep.mkdir(parents=True)
    run, wl, calls = _traced(deep, "-T", "-w")
    lines = run.stdout.splitlines()
    assert sum(ln.endswith(wl.path) for ln in lines) == FILE_MAPS
    assert sum(ln.endswith(f"{wl.path} (EACCES)") for ln in lines) == 1  # the failed call
    run, wl, calls = _traced(deep, "-T")
    assert all(len(ln) <= 79 for ln in run.stdout.splitlines())


def test_memlens_leaves_itself_out(tmp_path):
    """System wide, the tool's own mmaps (numpy's import happens after attach, ring buffer
    maps) would be noise: they are filtered in the kernel."""
    run = ToolRun("mmapsnoop", "--json")
    run.wait_attached()
    wl = Workload(tmp_path)  # starts after attach: its loader's mmaps are seen too
    try:
        calls = wl.go_and_exit()
    finally:
        wl.kill()
    assert run.stop() == 0
    pids = {r["pid"] for r in run.records() if r["type"] == "event"}
    assert wl.pid in pids and len(calls) == FILE_MAPS + ANON_MAPS + FAILS
    assert run.proc.pid not in pids


def test_runs_in_a_thread_under_the_runner(tmp_path):
    """The tool protocol without the CLI (as a test or an exporter thread runs it): records
    go to a callback, an Event stops it, no signal handler is touched, nothing stays
    attached, and the final report drains what the last poll left."""
    import argparse
    import signal
    import threading

    from memlens.core.runner import Runner
    from memlens.tools.mmapsnoop import MmapsnoopTool
    from tests.kernel.helpers import owned_prog_ids

    wl = Workload(tmp_path)
    args = argparse.Namespace(pid=wl.pid, cgroup=None, name=None, file_only=False)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    records: list[dict] = []
    attached = threading.Event()
    runner = Runner()
    thread = threading.Thread(target=runner.run, args=(MmapsnoopTool(args), records.append,
                                                       lambda what: attached.set()))
    thread.start()
    try:
        assert attached.wait(20), "never attached"
        held = owned_prog_ids(os.getpid())
        calls = wl.go_and_exit()
    finally:
        wl.kill()
        runner.stop.set()
        thread.join(20)
    assert not thread.is_alive()
    events = [r for r in records if r["type"] == "event"]
    assert len(events) == len(calls) == FILE_MAPS + ANON_MAPS + FAILS
    for ev, call in zip(events, calls):
        _check_event(ev, call, wl)
    assert records[-1] == {"type": "summary", "events": len(calls), "lost": {},
                           "hook": "tracepoint/syscalls/sys_enter_mmap+sys_exit_mmap"}
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert held and not (held & owned_prog_ids(os.getpid()))
