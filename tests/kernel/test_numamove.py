# SPDX-License-Identifier: GPL-2.0-only
"""numamove against real page migrations: a compaction pass (`echo 1 >
/proc/sys/vm/compact_memory`, KERNEL.md §7: this one-node machine has no NUMA migration to
trigger, and compaction migrates through the same migrate_pages()) over memory the test
fragments first, with /proc/vmstat's pgmigrate_success / pgmigrate_fail as witnesses.

Two runs watch the same pass: a system-wide one (every migration between attach and detach,
by reason) and one with -p on the shell that writes compact_memory (the pass runs in its
context).  The machine may be shared (another test may compact, kcompactd may wake), so the
vmstat counters are read four times: before the tools start (pre), after they are attached
and before the pass (v0), after the pass (v1) and after the tools stopped (post).  Always:
v1 - v0 <= system-wide total <= post - pre.  When nothing migrated outside the pass's window
(pre == v0 and v1 == post) the system-wide figures must equal the vmstat deltas exactly; the
test retries a few times to get such a window in which the pass migrated something (a pass
can find nothing to move), and fails if it never does.
"""
from __future__ import annotations

import subprocess
import sys
import time

from tests.kernel.helpers import ToolRun

FRAGMENT = """
import mmap, sys
n = 64 << 20
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for off in range(0, n, 4096):
    m[off] = 1
for off in range(0, n, 8192):          # every other page freed: half-used page blocks
    m.madvise(mmap.MADV_DONTNEED, off, 4096)
print("READY", flush=True)
sys.stdin.read()
"""


def _vmstat() -> dict[str, int]:
    out = {}
    with open("/proc/vmstat") as f:
        for line in f:
            k, v = line.split()
            if k in ("pgmigrate_success", "pgmigrate_fail", "compact_migrate_scanned"):
                out[k] = int(v)
    return out


def _by_reason(run: ToolRun) -> tuple[dict[str, dict], dict]:
    """Rows summed over every report of the run, and its summary."""
    rows: dict[str, dict] = {}
    summary = {}
    for rec in run.records():
        if rec["type"] == "report":
            for e in rec["entries"]:
                r = rows.setdefault(e["reason"], {"calls": 0, "migrated_pages": 0,
                                                  "failed_pages": 0, "time_ns": 0,
                                                  "max_ns": 0})
                for k in r:
                    r[k] = max(r[k], e[k]) if k == "max_ns" else r[k] + e[k]
        elif rec["type"] == "summary":
            summary = rec
        assert rec["type"] != "lost", rec
    return rows, summary


def _one_pass():
    frag = subprocess.Popen([sys.executable, "-c", FRAGMENT], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    writer = subprocess.Popen(["sh", "-c", "read go; echo 1 > /proc/sys/vm/compact_memory"],
                              stdin=subprocess.PIPE, text=True)
    runs = []
    try:
        assert frag.stdout.readline().strip() == "READY"
        pre = _vmstat()
        runs = [ToolRun("numamove", "--json", "-i", "1"),
                ToolRun("numamove", "--json", "-i", "1", "-p", str(writer.pid))]
        for r in runs:
            r.wait_attached()
        v0 = _vmstat()
        t0 = time.monotonic_ns()
        writer.stdin.write("go\n")
        writer.stdin.close()
        assert writer.wait(timeout=25) == 0
        elapsed_ns = time.monotonic_ns() - t0
        v1 = _vmstat()
        for r in runs:
            assert r.stop() == 0, r.stderr
        post = _vmstat()
    finally:
        for p in (frag, writer):
            if p.poll() is None:
                p.kill()
            p.wait()
        for r in runs:
            if r.proc.poll() is None:
                r.stop()
    return runs, (pre, v0, v1, post), elapsed_ns


def test_compaction_against_vmstat():
    seen = []
    for _attempt in range(5):
        (sysrun, prun), (pre, v0, v1, post), elapsed_ns = _one_pass()
        rows, summary = _by_reason(sysrun)
        prow, psummary = _by_reason(prun)
        moved = v1["pgmigrate_success"] - v0["pgmigrate_success"]
        failed = v1["pgmigrate_fail"] - v0["pgmigrate_fail"]
        total = sum(r["migrated_pages"] for r in rows.values())
        total_failed = sum(r["failed_pages"] for r in rows.values())
        # the reports add up to the summary
        assert total == summary["migrated_pages"]
        assert total_failed == summary["failed_pages"]
        # always, whatever else migrates meanwhile: the window inside the tool's, inside ours
        assert moved <= total <= post["pgmigrate_success"] - pre["pgmigrate_success"]
        assert failed <= total_failed <= post["pgmigrate_fail"] - pre["pgmigrate_fail"]
        quiet = all(pre[k] == v0[k] and v1[k] == post[k]
                    for k in ("pgmigrate_success", "pgmigrate_fail"))
        seen.append((quiet, moved, failed,
                     v1["compact_migrate_scanned"] - v0["compact_migrate_scanned"]))
        # a pass can find nothing to move (CI once: a quiet pass, 0 migrated): the pages
        # the fragmenter got may all lie where the free scanner stops; a new one retries
        if quiet and moved > 0:
            break
    # (quiet, migrated, failed, pages scanned) of every pass, for the failure message
    assert quiet, f"something else migrated pages around every pass: {seen}"
    assert moved > 0, f"no compaction pass migrated anything: {seen}"
    comp = rows["compaction"]
    others = {k: v for k, v in rows.items() if k != "compaction"}
    # the compaction row: the vmstat deltas, less what other reasons migrated in the window
    # (nothing, unless something migrated for another reason during the pass itself)
    assert comp["migrated_pages"] == moved - sum(v["migrated_pages"] for v in others.values())
    assert comp["failed_pages"] == failed - sum(v["failed_pages"] for v in others.values())
    assert total == moved and total_failed == failed
    # the time: every call of the pass began after attach (timed in the kernel, start ->
    # end of its thread), and their sum lies inside the writer's own lifetime; sub-ms calls
    # add up in ns
    pcomp = prow["compaction"]
    assert set(prow) == {"compaction"}, prow
    assert pcomp["calls"] > 0
    assert 0 < pcomp["max_ns"] <= pcomp["time_ns"] <= elapsed_ns
    assert pcomp["migrated_pages"] <= comp["migrated_pages"]
    if comp["calls"] == pcomp["calls"]:  # nobody else compacted during the pass
        same = ("calls", "migrated_pages", "failed_pages")
        assert {k: pcomp[k] for k in same} == {k: comp[k] for k in same}
        # the same calls timed by two programs: each stamps its own records
        assert abs(pcomp["time_ns"] - comp["time_ns"]) <= (comp["time_ns"] // 20
                                                           + 50_000 * comp["calls"])
    assert psummary["by_reason"][0]["reason"] == "compaction"
    print(f"\ncompaction: {comp['calls']} calls, {comp['migrated_pages']} pages "
          f"(pgmigrate_success +{moved}), {comp['failed_pages']} failed "
          f"(pgmigrate_fail +{failed}), {pcomp['time_ns']} ns in migrate_pages "
          f"of {elapsed_ns} ns")


def test_reason_names_from_btf_and_format():
    from memlens.core import btfenum
    from memlens.tools import numamove

    names = numamove.reason_names()
    values = btfenum.values("MR_COMPACTION", "MR_NUMA_MISPLACED", enum="migrate_reason")
    assert names[values["MR_COMPACTION"]] == "compaction"
    assert names[values["MR_NUMA_MISPLACED"]] == "numa_misplaced"
    # the tracepoint's print format numbers the same reasons
    from memlens.core import kernel

    with open(f"{kernel.tracefs_path()}/events/migrate/mm_migrate_pages/format") as f:
        text = f.read()
    import re

    fmt_names = {int(v): n
                 for v, n in re.findall(numamove._PAIR, text.split("REC->reason,")[-1])}
    assert set(fmt_names) == set(names)
    assert fmt_names[values["MR_COMPACTION"]] == "compaction"


def test_text_intervals_and_count():
    """`numamove 1 2`: one header, a row per interval (a "-" row when quiet), then it ends
    by itself after two reports."""
    run = ToolRun("numamove", "1", "2")
    run.wait_attached()
    assert run.wait(timeout=10) == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["TIME", "REASON", "CALLS", "MIGRATED", "FAILED", "TIME_MS"]
    rows = [ln.split() for ln in lines[1:]]
    assert len({r[0] for r in rows}) == 2, lines   # two intervals, each stamped
    for r in rows:
        assert len(r) == 6 and r[2].isdigit() and r[3].isdigit() and r[4].isdigit()
        assert r[5].count(".") == 1 and len(r[5].split(".")[1]) == 3
    assert all(len(ln) < 80 for ln in lines)
