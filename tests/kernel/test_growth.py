# SPDX-License-Identifier: GPL-2.0-only
"""growth against a program that grows RSS in two functions at known rates
(tests/workloads/grow_two.c): each step grow_fast() touches 3 MiB of new anonymous memory
and grow_slow() 1 MiB, one order-0 fault per page (MADV_NOHUGEPAGE), nothing freed.

Witnesses: the workload counts the pages it touched, and reads its own RssAnon from
/proc/self/status before and after the steps.  The tool must tie the growth to both
functions, grow_fast ranked first, each with the pages it touched (within 5 %), and its
anon growth must match the workload's own (within 5 %)."""
from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from tests.conftest import build_workload, memlens_cmd
from tests.kernel.helpers import ToolRun

STEPS = 8
DONE = re.compile(r"done steps=(\d+) fast_pages=(\d+) slow_pages=(\d+) "
                  r"rss_anon_before=(\d+) rss_anon_after=(\d+)")


def _witness(line: str) -> dict[str, int]:
    m = DONE.search(line)
    assert m, line
    steps, fast, slow, before, after = (int(x) for x in m.groups())
    assert steps == STEPS and before > 0 and after > before
    return {"fast": fast, "slow": slow, "before": before, "after": after}


class Workload:
    """grow_two started first, held at its stdin gate until the tool is attached."""

    def __init__(self, delay_ms: int = 60):
        self.proc = subprocess.Popen([str(build_workload("grow_two")), str(STEPS),
                                      str(delay_ms)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline()
        m = re.match(r"ready pid=(\d+)", ready)
        assert m, ready
        self.pid = int(m.group(1))

    def grow(self) -> dict[str, int]:
        self.proc.stdin.write("g")
        self.proc.stdin.flush()
        return _witness(self.proc.stdout.readline())

    def exit(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=10) == 0


def _within(value: int, expected: int, pct: float = 5.0) -> bool:
    return abs(value - expected) <= expected * pct / 100


def _rank(paths: list[dict], func: str) -> int:
    for i, p in enumerate(paths):
        if any(f.startswith(func + "+") for f in p["stack"]):
            return i
    raise AssertionError(f"{func} in no path: {[p['stack'][:2] for p in paths]}")


def _check_paths(paths: list[dict], w: dict[str, int]) -> tuple[dict, dict]:
    fast, slow = paths[_rank(paths, "grow_fast")], paths[_rank(paths, "grow_slow")]
    assert _rank(paths, "grow_fast") < _rank(paths, "grow_slow"), paths[:3]
    for p, touched in ((fast, w["fast"]), (slow, w["slow"])):
        assert p["vma"] == "anon" and not p["truncated"], p
        assert "main" in [re.sub(r"\+0x.*", "", f) for f in p["stack"]], p["stack"]
        assert _within(p["pages"], touched), (p["pages"], touched)
    return fast, slow


def test_pid_json_ties_growth_to_both_functions():
    wl = Workload()
    run = ToolRun("growth", "-p", str(wl.pid), "--json", "0.2")
    try:
        run.wait_attached()
        w = wl.grow()
        time.sleep(0.3)  # the tool samples RSS every ~50 ms: one after the growth
        wl.exit()
        rc = run.wait(timeout=20)  # ends by itself when the process exits
    finally:
        if wl.proc.poll() is None:
            wl.proc.kill()
        if run.proc.poll() is None:
            run.stop()
    assert rc == 0, run.stderr
    run.assert_detached()
    recs = run.records()
    reports = [r for r in recs if r["type"] == "report"]
    (summary,) = [r for r in recs if r["type"] == "summary"]
    assert summary["pid"] == wl.pid and summary["comm"] == "grow_two"
    fast, slow = _check_paths(summary["paths"], w)
    # anon growth as the tool saw it == the workload's own RssAnon growth (the start figure
    # is read after attach, before the gate; RSS counters are per-CPU batched)
    assert _within(summary["growth_anon_bytes"], w["after"] - w["before"]), \
        (summary["growth_anon_bytes"], w)
    # the pages faulted in both functions are what RssAnon grew by
    assert _within((fast["pages"] + slow["pages"]) * summary["page_size"],
                   summary["growth_anon_bytes"])
    assert summary["faulted_pages"]["anon"] >= w["fast"] + w["slow"]
    # several intervals, chained: their growth adds up to the run's, their paths to its
    assert len([r for r in reports if r["faulted_pages"]]) >= 2, reports
    assert sum(r["growth_anon_bytes"] for r in reports) == summary["growth_anon_bytes"]
    per_interval = sum(p["pages"] for r in reports for p in r["paths"]
                       if p["stack"] and p["stack"][0].startswith("grow_fast+"))
    assert per_interval == fast["pages"]
    assert reports[-1]["final"] is True and reports[-1]["alive"] is False
    for r in reports:
        assert {"rss_anon_bytes", "rss_file_bytes", "rss_shmem_bytes", "growth_anon_bytes",
                "growth_file_bytes", "growth_shmem_bytes"} <= set(r)
        assert len(r["paths"]) <= 5
    print(f"\n-p: fast {fast['pages']}/{w['fast']} pages, slow {slow['pages']}/{w['slow']}, "
          f"anon growth {summary['growth_anon_bytes']} vs workload "
          f"{w['after'] - w['before']} bytes, {len(reports)} reports")


def _run_command(*options: str) -> ToolRun:
    """growth -c on grow_two (STEPS steps, 20 ms apart, no gate), to the command's end."""
    binary = build_workload("grow_two")
    run = ToolRun("growth", *options, "-c", f"{binary} {STEPS} 20 nogate", "0.2")
    try:
        rc = run.wait(timeout=30)  # ends when the command ends
    finally:
        if run.proc.poll() is None:
            run.stop()
    assert rc == 0, run.stderr
    return run


def test_command_json_from_exec_to_exit():
    run = _run_command("--json", "-T", "1000")
    # with --json the command's stdout goes to our stderr
    w = _witness(run.stderr)
    (summary,) = [r for r in run.records() if r["type"] == "summary"]
    assert summary["command_status"] == 0 and summary["comm"] == "grow_two"
    _check_paths(summary["paths"], w)
    # RSS counted from the exec: the last figure is read with the command stopped at its
    # exit (memory still mapped), so it is the workload's own final RssAnon
    assert summary["rss_start_anon_bytes"] == 0
    assert _within(summary["rss_end_anon_bytes"], w["after"]), (summary, w)
    assert _within(summary["growth_anon_bytes"], w["after"] - w["before"])
    # the forked memlens's faults before the exec are not the command's
    assert not any("python" in f.lower() for p in summary["paths"] for f in p["stack"]), \
        [p["stack"] for p in summary["paths"] if any("python" in f for f in p["stack"])]
    # the loader and libc start-up are the command's too: file faults, from its exec
    assert summary["faulted_pages"]["file"] > 0 and summary["rss_end_file_bytes"] > 0
    # the command's files' unwind tables were loaded before it ran: its stacks are walked
    # by them from its first faults (70-91 by frame pointers, in the loader's start-up;
    # 1000-2000 when its tables were loaded on its first request)
    assert summary["lost"].get("unwind_fallback", 0) < 400, summary["lost"]
    print(f"\n-c: end RssAnon {summary['rss_end_anon_bytes']} vs workload {w['after']}, "
          f"{summary['prexec_pages']} pre-exec faults left out")


def test_command_execs_an_image_it_did_not_name():
    """-c "sh -c 'exec grow_two ...'": the image that grows is not on the command line (a
    pyenv shim, a wrapper script).  The command stops at each exec and the new image's
    tables are loaded before it runs: its stacks whole from its first faults (without the
    exec stop 953-8386 frames were walked by frame pointers, with it 165)."""
    binary = build_workload("grow_two")
    run = ToolRun("growth", "--json", "-c", f"sh -c 'exec {binary} {STEPS} 20 nogate'",
                  "0.2")
    try:
        rc = run.wait(timeout=30)
    finally:
        if run.proc.poll() is None:
            run.stop()
    assert rc == 0, run.stderr
    w = _witness(run.stderr)
    (summary,) = [r for r in run.records() if r["type"] == "summary"]
    assert summary["comm"] == "grow_two" and summary["command_status"] == 0
    _check_paths(summary["paths"], w)
    assert summary["lost"].get("unwind_fallback", 0) < 400, summary["lost"]


def test_text_fits_80_columns_and_html(tmp_path):
    html = tmp_path / "growth.html"
    run = _run_command("--html", str(html))
    out = run.stdout
    assert "Summary of PID" in out and "grow_fast" in out and "grow_slow" in out
    # (in text mode the command writes to our stdout: its own line is left out)
    too_wide = [line for line in out.splitlines()
                if len(line) >= 80 and not line.startswith("done steps=")]
    assert not too_wide, too_wide
    page = html.read_text()
    assert "grow_fast" in page and "grow_slow" in page and "pages faulted" in page


@pytest.mark.parametrize("args", [("-p", "1", "--json", "--folded"), ()])
def test_usage_errors(args):
    r = subprocess.run(memlens_cmd("growth", *args),
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2, r.stderr


# -- the figures' text, from plain records (no kernel needed; kept here with the tool's test)

def test_truncation_rules():
    from memlens.tools.growth.paths import TRUNCATED_ROOT, cut_astray, kind_of, truncation

    assert truncation(["_int_malloc+0xda9 [libc.so.6]"], "sqlite3") == "ended in libc.so.6"
    # a whole stack ends at the bottom of the stack, in libc: not truncated
    assert truncation(["clock_nanosleep+0x0 [libc.so.6]",
                       "__libc_start_call_main+0x7a [libc.so.6]"], "grow_two") is None
    assert truncation(["grow_fast+0x40 [grow_two]"], "grow_two") is None
    assert truncation(["[missed user stack]"], "grow_two") is None
    cut = cut_astray(("_PyUnicode_JoinArray+0x705 [python3.11]", "0x7fa5f6756830 [unknown]",
                      "[unknown] [python3.11]"))
    assert cut == ("_PyUnicode_JoinArray+0x705 [python3.11]", TRUNCATED_ROOT)
    assert truncation(list(cut), "python3.11") == "went astray"
    assert kind_of("file", "/dev/zero (deleted)", ()) == "shmem"
    assert kind_of("file", "/dev/shm/x", ("/dev/shm",)) == "shmem"
    assert kind_of("file", "/usr/lib/libc.so.6", ("/dev/shm", "/run")) == "file"


def test_text_widths_with_large_figures():
    from memlens.tools.growth.paths import human, render_report, render_summary

    assert [human(0), human(4096), human(33_554_432), human(-127 << 20, True),
            human(5 << 40)] == ["0", "4.00K", "32.0M", "-127M", "5.00T"]
    big = 1023 << 30
    path = {"stack": ["a_very_long_function_name_" * 4 + "+0x1 [prog]"] * 9, "vma": "shmem",
            "pages": 9_999_999, "bytes": big, "truncated": True,
            "truncated_why": "went astray", "file": "/dev/shm/" + "x" * 200,
            "share_of_peak_growth": 12.5}
    rep = {"time": "12:00:00", "paths": [path], "paths_total": 1, "other_pages": 0,
           "faulted_pages": 99_999_999,
           **{f"{p}_{k}bytes": -big for p in ("rss", "growth")
              for k in ("", "anon_", "file_", "shmem_")}}
    summ = {"pid": 4194304, "comm": "c" * 15, "duration_s": 86400.0, "page_size": 4096,
            "faulted_pages": {"anon": 10**9, "file": 1, "shmem": 2, "hugetlb": 3, "none": 4},
            "paths": [path], "paths_total": 3, "other_pages": 7, "prexec_pages": 5,
            **{f"{p}_{k}bytes": big for p in ("rss_start", "rss_peak", "rss_end", "growth")
               for k in ("", "anon_", "file_", "shmem_", "hugetlb_")}}
    lines = render_report(rep) + render_summary(summ)
    assert not [line for line in lines if len(line) >= 80], lines
    assert any("[truncated" in line for line in lines)


def test_pprof_holds_every_path_with_its_mappings(tmp_path):
    """--pprof: the whole run's paths weighted by pages, frames with their addresses and
    mappings (pprof can symbolize them again): grow_fast's and grow_slow's samples hold the
    pages each touched (within 5 %), under main and _start, with grow_two's mapping and the
    build id `readelf -n` reads."""
    from tests.unit.test_output_pprof import decode
    from tests.unit.test_symbols import _readelf_build_id

    binary = build_workload("grow_two")
    out = tmp_path / "growth.pb.gz"
    run = _run_command("--json", "--pprof", str(out))
    w = _witness(run.stderr)
    p = decode(out)
    s = p.string_table
    assert [s[t.type] for t in p.sample_type] == ["pages"]
    funcs = {f.id: s[f.name] for f in p.function}
    locs = {loc.id: loc for loc in p.location}
    mappings = {m.id: m for m in p.mapping}

    def names(sample):
        return [funcs[locs[i].line[0].function_id] if locs[i].line else None
                for i in sample.location_id]

    for func, touched in (("grow_fast", w["fast"]), ("grow_slow", w["slow"])):
        pages = sum(x.value[0] for x in p.sample if names(x)[:1] == [func])
        assert _within(pages, touched), (func, pages, touched)
        (x,) = [x for x in p.sample if names(x)[:1] == [func] and "_start" in names(x)]
        n = names(x)
        assert n[1] == "main" and n[-3:] == ["_start", "anon", "grow_two"], n
        m = mappings[locs[x.location_id[0]].mapping_id]
        assert os.path.realpath(s[m.filename]) == str(binary.resolve())
        assert m.memory_start <= locs[x.location_id[0]].address < m.memory_limit
        assert s[m.build_id] == _readelf_build_id(str(binary))
