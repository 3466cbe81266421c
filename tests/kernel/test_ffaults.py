# SPDX-License-Identifier: GPL-2.0-only
"""ffaults against a program that reads a 16 MiB file written by the test through a shared
mapping, one byte per page (tests/workloads/fault_file.c):

- cold (posix_fadvise DONTNEED, MADV_RANDOM: KERNEL.md §5 "cold random"): every page is one
  fault and one page-cache miss, 4096 and 4096, exactly;
- warm (a second mapping of the now cached pages): faults (fault-around maps 16 pages each)
  and no miss.

Witnesses: the program's own getrusage() counters around each read — the cold read's major
faults are its page-cache misses, its minor faults are its 23 anonymous writes (which
ffaults must not count); the warm read's minor faults are its file faults.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import build_workload, memlens_cmd, require
from tests.kernel.helpers import ToolRun, memory_cgroup

SIZE = 16 << 20
PAGES = SIZE // 4096   # 4096
ANON = 23              # anonymous pages the file reader also writes in its cold window
TOUCH_PAGES = 4099     # the anonymous toucher's pages (fault_touch)


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "f16.dat"
    with open(path, "wb") as f:
        f.write(os.urandom(SIZE))
        f.flush()
        os.fsync(f.fileno())  # clean pages: DONTNEED can drop them all
    return Path(os.path.realpath(path))  # the name /proc/PID/maps shows


def _join(cg: Path | None):
    if cg is None:
        return None
    return lambda: (cg / "cgroup.procs").write_text(str(os.getpid()))


class FileReader:
    """fault_file on `path`, held at its stdin gates; optionally started inside cgroup cg."""

    def __init__(self, path: Path, cg: Path | None = None):
        self.proc = subprocess.Popen([str(build_workload("fault_file")), str(path), str(ANON)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     preexec_fn=_join(cg))
        ready = self.proc.stdout.readline()
        m = re.match(r"ready pid=(\d+) ino=(\d+) pages=(\d+)", ready)
        assert m, ready
        self.pid = int(m.group(1))
        assert int(m.group(2)) == path.stat().st_ino and int(m.group(3)) == PAGES

    def read(self, phase: str) -> dict[str, int]:
        """Release the next gate: the cold or the warm read; its own fault counters."""
        self.proc.stdin.write("g")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        m = re.match(phase + r" pages=(\d+) minflt=(\d+) majflt=(\d+) sum=\d+", line)
        assert m, line
        return {"pages": int(m.group(1)), "minflt": int(m.group(2)), "majflt": int(m.group(3))}

    def finish(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class AnonToucher:
    """fault_touch: 4099 fresh anonymous pages written between gates."""

    def __init__(self, cg: Path | None = None):
        self.proc = subprocess.Popen([str(build_workload("fault_touch")), str(TOUCH_PAGES)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     preexec_fn=_join(cg))
        ready = self.proc.stdout.readline()
        assert ready.startswith("ready pid="), ready

    def touch(self) -> dict[str, int]:
        self.proc.stdin.write("g")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        m = re.match(r"touched pages=(\d+) minflt=(\d+) majflt=(\d+)", line)
        assert m, line
        return {"pages": int(m.group(1)), "minflt": int(m.group(2)), "majflt": int(m.group(3))}

    def finish(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


COLD_WITNESS = {"pages": PAGES, "minflt": ANON, "majflt": PAGES}


def _trace_cold(path: Path, *tool_args: str) -> tuple[ToolRun, FileReader, dict[str, int]]:
    """ffaults on the reader's PID around its cold read; stopped while the reader lives."""
    wl = FileReader(path)
    try:
        run = ToolRun("ffaults", "-p", str(wl.pid), *tool_args)
        run.wait_attached()
        witness = wl.read("cold")
        assert run.stop() == 0, run.stderr
        wl.finish()
    finally:
        wl.kill()
    run.assert_detached()
    # every page was a major fault (read from the file: a page-cache miss), and the only
    # minor faults were the 23 anonymous writes
    assert witness == COLD_WITNESS
    return run, wl, witness


def _report(run: ToolRun) -> dict:
    (report,) = [r for r in run.records() if r["type"] == "report"]
    assert report["final"] is True
    return report


def test_cold_read_names_the_file_with_4096_faults_and_4096_misses(data_file):
    run, _, _ = _trace_cold(data_file, "--json")
    records = run.records()
    # one row: the file, whole path; the 23 anonymous faults are not mixed in (no [anon])
    assert _report(run)["entries"] == [{"file": str(data_file), "faults": PAGES,
                                        "cache_misses": PAGES, "count": PAGES}], run.stdout
    assert not any(r["type"] == "lost" for r in records), records
    (summary,) = [r for r in records if r["type"] == "summary"]
    assert summary["faults"] == PAGES and summary["cache_misses"] == PAGES
    assert summary["lost"] == {}
    assert summary["probes"] == ["sw:page-faults", "t:filemap:mm_filemap_fault"]
    assert "Tracing page faults on file mappings by file for PID" in run.stderr


def test_warm_read_faults_without_cache_misses(data_file):
    wl = FileReader(data_file)
    try:
        assert wl.read("cold") == COLD_WITNESS  # brings the file into the page cache
        run = ToolRun("ffaults", "-p", str(wl.pid), "--json")
        run.wait_attached()
        witness = wl.read("warm")
        assert run.stop() == 0, run.stderr
        wl.finish()
    finally:
        wl.kill()
    assert witness["majflt"] == 0
    faults = witness["minflt"]
    # fault-around maps up to 16 cached pages per fault: fewer faults than pages
    assert PAGES // 16 <= faults < PAGES
    (row,) = _report(run)["entries"]
    assert row["file"] == str(data_file)
    assert row["faults"] == faults, (row, witness)
    assert row["cache_misses"] <= 1, row  # KERNEL.md §5: 0-1 on a warm read


def test_anonymous_toucher_in_the_same_run_does_not_appear(data_file):
    """Both programs in one memory cgroup, traced by --cgroup: 4099 + 23 anonymous faults
    and 4096 file faults happen in the window; only the file is reported."""
    with memory_cgroup("ffaults", "512M") as cg:
        reader = FileReader(data_file, cg)
        toucher = AnonToucher(cg)
        try:
            run = ToolRun("ffaults", "--cgroup", str(cg), "--json")
            run.wait_attached()
            touched = toucher.touch()
            cold = reader.read("cold")
            assert run.stop() == 0, run.stderr
            reader.finish()
            toucher.finish()
        finally:
            reader.kill()
            toucher.kill()
    assert touched == {"pages": TOUCH_PAGES, "minflt": TOUCH_PAGES, "majflt": 0}
    assert cold == COLD_WITNESS
    assert _report(run)["entries"] == [{"file": str(data_file), "faults": PAGES,
                                        "cache_misses": PAGES, "count": PAGES}], run.stdout


def test_intervals_sum_to_the_total(data_file):
    """Positional interval (as BCC's tools take it): the reports hold the increase since
    the previous one and add up to the whole read."""
    run, _, _ = _trace_cold(data_file, "--json", "0.05")
    reports = [r for r in run.records() if r["type"] == "report"]
    assert len(reports) >= 2, run.stdout
    rows = [e for r in reports for e in r["entries"]]
    assert {e["file"] for e in rows} == {str(data_file)}
    assert sum(e["faults"] for e in rows) == PAGES
    assert sum(e["cache_misses"] for e in rows) == PAGES


def test_text_cuts_long_paths_at_the_left(tmp_path):
    deep = tmp_path / ("long_directory_name_" * 4) / "more"
    deep.mkdir(parents=True)
    path = deep / "f16.dat"
    with open(path, "wb") as f:
        f.write(os.urandom(SIZE))
        os.fsync(f.fileno())
    path = Path(os.path.realpath(path))
    assert len(str(path)) > 79
    run, _, _ = _trace_cold(path)
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["FILE", "FAULTS", "CACHE_MISSES"], run.stdout
    assert all(len(ln) <= 79 for ln in lines), run.stdout
    (row,) = lines[1:]
    cells = row.split()
    assert cells[1:] == [str(PAGES), str(PAGES)], row
    # the name is kept, the start of the path gives way
    assert cells[0].startswith("...") and cells[0].endswith("/more/f16.dat"), row
    assert str(path).endswith(cells[0][3:])
    assert len(row) == 79


def test_file_on_overlayfs_is_named_by_its_overlay_path(tmp_path):
    """Containers map files through overlayfs: the kernel side sees the layer's file (its
    device), /proc/PID/maps the overlay's device with the same inode number."""
    with open("/proc/filesystems") as f:
        require("overlay" in f.read().split(), "no overlay filesystem in this kernel")
    lower, upper, work, merged = (tmp_path / d for d in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    with open(lower / "f16.dat", "wb") as f:
        f.write(os.urandom(SIZE))
        os.fsync(f.fileno())
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)],
                   check=True)
    try:
        path = Path(os.path.realpath(merged / "f16.dat"))
        assert path.stat().st_dev != (lower / "f16.dat").stat().st_dev
        run, _, _ = _trace_cold(path, "--json")
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    assert _report(run)["entries"] == [{"file": str(path), "faults": PAGES,
                                        "cache_misses": PAGES, "count": PAGES}], run.stdout


@pytest.mark.parametrize("args", [("-p", "999999"), ("--folded",), ("-t", "0")])
def test_bad_input_is_one_line_usage_error(args):
    r = subprocess.run(memlens_cmd("ffaults", *args), capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.strip(), r.stderr
    assert "Traceback" not in r.stdout
