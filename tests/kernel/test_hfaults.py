# SPDX-License-Identifier: GPL-2.0-only
"""hfaults against programs that fault huge pages a known number of times.

- hugetlb (tests/workloads/huge_tlb.c): 8 MAP_HUGETLB 2 MiB pages, one byte written in each
  → 8 hugetlb faults for its PID, no THP.  Witness: the mapping's Private_Hugetlb in the
  program's own /proc/self/smaps grows by 8 x 2048 kB.
- THP (huge_thp.c): a 2 MiB-aligned 64 MiB MADV_HUGEPAGE region, one byte written per 2 MiB
  → its THP column equals the huge pages it got, by its own smaps AnonHugePages delta.
- control (huge_small.c): 23 ordinary 4 KiB faults (MADV_NOHUGEPAGE) → in neither column;
  and a process growing the hugetlb pool (order-9 allocations in its context that are not
  faults) → in neither column either.

The 2 MiB hugetlb pool is grown by what the tests need and set back to the exact value it
had, whatever happens (the machine may be shared: other users may hold pages of it).
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from memlens.tools.hfaults import gfp_bit, pmd_order, thp_filter
from tests.conftest import build_workload, memlens_cmd, require
from tests.kernel.helpers import ToolRun

HUGETLB_PAGES = 8
POOL_EXTRA = 16          # huge pages added to the pool for the tests
THP_MB = 64
SMALL_PAGES = 23
NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _meminfo_kb(name: str) -> int | None:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return None


@pytest.fixture(scope="module")
def hugetlb_pool():
    """POOL_EXTRA more 2 MiB hugetlb pages in the pool for the module; the old value is
    written back afterwards even when a test fails (or the pool cannot grow)."""
    require(_meminfo_kb("Hugepagesize") == 2048,
            "the default hugetlb page size is not 2 MiB (vm.nr_hugepages sizes another pool)")
    old = NR_HUGEPAGES.read_text().strip()
    try:
        NR_HUGEPAGES.write_text(str(int(old) + POOL_EXTRA))
        free = _meminfo_kb("HugePages_Free") or 0
        require(free >= HUGETLB_PAGES,
                f"the hugetlb pool grew to {NR_HUGEPAGES.read_text().strip()} pages but only "
                f"{free} are free; {HUGETLB_PAGES} are needed (memory too fragmented?)")
        yield int(old)
    finally:
        NR_HUGEPAGES.write_text(old)


def require_thp() -> None:
    modes = THP_ENABLED.read_text() if THP_ENABLED.exists() else ""
    require(bool(modes), f"no {THP_ENABLED}: this kernel has no transparent huge pages")
    require("[never]" not in modes,
            f"transparent huge pages are disabled ({THP_ENABLED}: {modes.strip()}); "
            "MADV_HUGEPAGE needs [madvise] or [always]")


class Workload:
    """A tests/workloads program held at a stdin gate: `ready pid=P ...`, one byte, the work,
    `done key=value ...`, then it waits for stdin's end."""

    def __init__(self, name: str, *argv: str, cmd: list[str] | None = None):
        self.name = name
        self.proc = subprocess.Popen(cmd or [str(build_workload(name)), *argv],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline()
        m = re.match(r"ready pid=(\d+)", ready)
        if not m:
            self.proc.kill()
            self.proc.wait()
        assert m, f"{name}: {ready!r}"
        self.pid = int(m.group(1))
        assert self.pid == self.proc.pid

    def go(self) -> dict[str, int]:
        """Release the gate; the witness figures of the `done` line."""
        self.proc.stdin.write("g\n")
        self.proc.stdin.flush()
        done = self.proc.stdout.readline()
        assert done.startswith("done "), f"{self.name}: {done!r}"
        return {k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)", done)}

    def finish(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.returncode == 0, f"{self.name} exited {self.proc.returncode}"


def _traced(workloads: list[Workload], *tool_args: str,
            hold_s: float = 0.0) -> tuple[ToolRun, list[dict]]:
    """hfaults attached, then each workload's gate released in turn; the witnesses.  The
    workloads live `hold_s` after their work (a -p run ends when its target exits)."""
    import time

    run = ToolRun("hfaults", *tool_args)
    witnesses = []
    try:
        run.wait_attached()
        for wl in workloads:
            witnesses.append(wl.go())
        time.sleep(hold_s)
    finally:
        for wl in workloads:
            wl.finish()
    assert run.stop() == 0, run.stderr
    run.assert_detached()
    return run, witnesses


def _rows(run: ToolRun) -> dict[int, dict]:
    """The final report's rows by PID (each PID has one row: comm is fixed here)."""
    reports = [r for r in run.records() if r["type"] == "report"]
    assert len(reports) == 1 and reports[0]["final"] is True, run.stdout
    rows: dict[int, dict] = {}
    for e in reports[0]["entries"]:
        assert e["pid"] not in rows, reports[0]
        assert e["count"] == e["hugetlb"] + e["thp"], e
        rows[e["pid"]] = e
    return rows


def test_hugetlb_8_faults_for_the_pid(hugetlb_pool):
    wl = Workload("huge_tlb", str(HUGETLB_PAGES))
    run, (witness,) = _traced([wl], "-p", str(wl.pid), "--json")
    # the program's own smaps: 8 huge pages of 2048 kB mapped from the pool by its writes
    assert witness["hugetlb_kb_after"] - witness["hugetlb_kb_before"] == HUGETLB_PAGES * 2048
    records = run.records()
    entries = [e for r in records if r["type"] == "report" for e in r["entries"]]
    assert entries == [{"pid": wl.pid, "comm": "huge_tlb", "hugetlb": HUGETLB_PAGES,
                        "thp": 0, "count": HUGETLB_PAGES}], records
    assert not any(r["type"] == "lost" for r in records), records
    (summary,) = [r for r in records if r["type"] == "summary"]
    assert summary["huge_faults"] == HUGETLB_PAGES and summary["lost"] == {}
    assert summary["probes"] == ["sw:page-faults", "t:kmem:mm_page_alloc"]
    assert summary["thp_filter"].startswith(f"order == {pmd_order()} && pfn != -1")
    assert "Tracing huge page faults (hugetlb, THP) for PID" in run.stderr


def test_thp_faults_equal_the_anon_huge_pages_it_got():
    require_thp()
    wl = Workload("huge_thp", str(THP_MB))
    run, (witness,) = _traced([wl], "-p", str(wl.pid), "--json")
    assert witness["touched"] == THP_MB // 2 and witness["anon_huge_kb_before"] == 0
    got = witness["thp_pages"]
    assert got * 2048 == witness["anon_huge_kb_after"] - witness["anon_huge_kb_before"]
    require(got > 0, "the kernel gave the MADV_HUGEPAGE region no huge page (memory too "
                     "fragmented?): nothing to count")
    rows = _rows(run)
    assert rows == {wl.pid: {"pid": wl.pid, "comm": "huge_thp", "hugetlb": 0, "thp": got,
                             "count": got}}, run.stdout
    assert not any(r["type"] == "lost" for r in run.records()), run.stdout


def test_one_run_tells_hugetlb_thp_and_4k_faults_apart(hugetlb_pool):
    """System wide: each workload is in its own column and only there; 4 KiB faults and the
    order-9 allocations of a process growing the hugetlb pool are in neither."""
    require_thp()
    tlb = Workload("huge_tlb", str(HUGETLB_PAGES))
    thp = Workload("huge_thp", str(THP_MB))
    small = Workload("huge_small", str(SMALL_PAGES))
    grow_to = hugetlb_pool + POOL_EXTRA + 2
    # grows the pool by 2 pages after its gate (fresh order-9 pages, in its own context)
    gw = Workload("pool grower", cmd=[
        "sh", "-c", f'echo "ready pid=$$"; read g; echo {grow_to} > {NR_HUGEPAGES}; '
                    f'echo "done pool=$(cat {NR_HUGEPAGES})"; cat >/dev/null'])
    run, (w_tlb, w_thp, w_small, w_grow) = _traced([tlb, thp, small, gw], "--json")

    rows = _rows(run)
    assert w_tlb["hugetlb_kb_after"] - w_tlb["hugetlb_kb_before"] == HUGETLB_PAGES * 2048
    assert rows[tlb.pid] == {"pid": tlb.pid, "comm": "huge_tlb", "hugetlb": HUGETLB_PAGES,
                             "thp": 0, "count": HUGETLB_PAGES}, rows
    got = w_thp["thp_pages"]
    require(got > 0, "the kernel gave the MADV_HUGEPAGE region no huge page")
    assert rows[thp.pid] == {"pid": thp.pid, "comm": "huge_thp", "hugetlb": 0, "thp": got,
                             "count": got}, rows
    # the control faulted its 23 pages (its own getrusage), none of them huge
    assert w_small["minflt"] >= SMALL_PAGES
    assert small.pid not in rows, rows[small.pid]
    # the pool grew (order-9 pages allocated in the grower's context): not a fault
    assert w_grow["pool"] >= hugetlb_pool + POOL_EXTRA, w_grow
    assert gw.pid not in rows, rows[gw.pid]


def test_text_columns():
    require_thp()
    wl = Workload("huge_thp", "8")
    run, (witness,) = _traced([wl], "-p", str(wl.pid))
    lines = [ln for ln in run.stdout.splitlines() if ln.strip()]
    assert lines[0].split() == ["PID", "COMM", "HUGETLB", "THP"], run.stdout
    assert lines[1].split() == [str(wl.pid), "huge_thp", "0", str(witness["thp_pages"])]
    assert len(lines) == 2 and max(len(ln) for ln in lines) < 80, run.stdout


def test_intervals_sum_to_the_total(hugetlb_pool):
    """Positional interval (BCC style): per-interval reports add up to the 8 faults."""
    wl = Workload("huge_tlb", str(HUGETLB_PAGES))
    # the target lives four intervals after its faults: the run (ended by its exit) has
    # more than the final report whatever the timing
    run, _ = _traced([wl], "-p", str(wl.pid), "--json", "0.05", hold_s=0.2)
    reports = [r for r in run.records() if r["type"] == "report"]
    assert len(reports) >= 2, run.stdout
    assert all(r["interval_s"] == 0.05 for r in reports)
    mine = [e for r in reports for e in r["entries"] if e["pid"] == wl.pid]
    assert sum(e["hugetlb"] for e in mine) == HUGETLB_PAGES, reports
    assert sum(e["thp"] for e in mine) == 0


def test_thp_filter_from_format_files():
    """The THP filter's gfp bit comes from the event's own print fmt, in both spellings the
    kernel has used; without the bit it is still order and success."""
    new = ('{( unsigned long)(( gfp_t)((((1UL))) << (19))), "__GFP_NOMEMALLOC"}, '
           '{( unsigned long)(( gfp_t)((((1UL))) << (20))), "__GFP_HARDWALL"}')
    old = '{(unsigned long)((__force gfp_t)0x80000u), "__GFP_NOMEMALLOC"}'
    assert gfp_bit(new, "__GFP_NOMEMALLOC") == 0x80000
    assert gfp_bit(new, "__GFP_HARDWALL") == 0x100000
    assert gfp_bit(old, "__GFP_NOMEMALLOC") == 0x80000
    assert gfp_bit(old, "__GFP_COMP") is None
    assert thp_filter(old, 9) == "order == 9 && pfn != -1 && gfp_flags & 0x80000"
    assert thp_filter(None, 13) == "order == 13 && pfn != -1"
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    pmd = Path("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size")
    if pmd.exists():
        assert 1 << pmd_order() == int(pmd.read_text()) // 1024 // page_kb


@pytest.mark.parametrize("args", [("-p", "999999"), ("--cgroup", "/nonexistent")])
def test_bad_input_is_one_line_usage_error(args):
    r = subprocess.run(memlens_cmd("hfaults", *args), capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
