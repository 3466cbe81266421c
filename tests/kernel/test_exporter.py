# SPDX-License-Identifier: GPL-2.0-only
"""memlens exporter against real events in memory cgroups the tests make (removed after),
scraped over HTTP like Prometheus does, the text read by prometheus-client's parsers.

The machine is shared: every assertion is on the series of the test's own cgroup (or a
sum that includes every cgroup), never on the machine's totals.  Witnesses, independent of
memlens:
- page faults: the workload's own getrusage() around its touch loop (tests/workloads/
  touch_pages.c), the only task of its cgroup, held at stdin gates between scrapes;
- OOM kills: the cgroup's own oom_kill counter (memory.oom_control / memory.events) and the
  victim's SIGKILL status;
- reclaim: bpftrace timing the same vmscan begin/end pair for the workload's PID (as the
  drsnoop test does), and the histogram's count against the episodes of every cgroup.
"""
from __future__ import annotations

import math
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import build_workload, memlens_cmd
from tests.kernel.helpers import (
    CacheReader,
    ToolRun,
    data_file,
    memory_cgroup,
    pair_witness,
)

LIMIT = "32M"  # helpers.cache_reclaim's: a 96 MiB file read twice in 32 MiB
PAGES = 23


def cgroup_name(cg: Path) -> str:
    root = Path("/sys/fs/cgroup/memory") if "/sys/fs/cgroup/memory/" in str(cg) \
        else Path("/sys/fs/cgroup")
    return "/" + str(cg.relative_to(root))


class Exporter:
    """memlens exporter on a free port of 127.0.0.1, until stop() (SIGTERM)."""

    def __init__(self, *args: str):
        self.run = ToolRun("exporter", "--listen", "127.0.0.1:0", *args)
        try:
            self.run.wait_attached()
            m = re.search(r"at (http://\S+/metrics)\.\.\.", self.run.stderr)
            assert m, self.run.stderr
            self.url = m.group(1)
        except BaseException:
            self.run.stop(timeout=20)
            raise

    def text(self, openmetrics: bool = False) -> str:
        req = urllib.request.Request(self.url, headers={
            "Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {})
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.read().decode()

    def scrape(self) -> dict[tuple[str, frozenset], float]:
        """{(sample name, its labels): value}, by prometheus-client's text parser."""
        from prometheus_client.parser import text_string_to_metric_families

        out = {}
        for fam in text_string_to_metric_families(self.text()):
            for s in fam.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def stop(self) -> int:
        return self.run.stop(sig=15)



def touch_pages_in(cg) -> subprocess.Popen:
    """touch_pages (PAGES pages), the only task of cgroup `cg`, held at its first gate."""
    return subprocess.Popen([str(build_workload("touch_pages")), str(PAGES)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: (cg / "cgroup.procs").write_text("0"))


def gate(wl: subprocess.Popen) -> None:
    """Let the workload past its next gate."""
    wl.stdin.write("g")
    wl.stdin.flush()

def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: dict, name: str, **labels) -> float:
    """The sum of `name` over every series carrying `labels` (and any others)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@pytest.fixture
def exporter():
    exp = Exporter()
    try:
        yield exp
    finally:
        rc = exp.stop()
        assert rc == 0, exp.run.stderr
        exp.run.assert_detached()
        assert "Traceback" not in exp.run.stderr


def test_faults_of_a_cgroup_move_by_the_pages_touched_and_stay_after_pruning(exporter):
    """touch_pages in a fresh cgroup, held between gates: the cgroup's minor-fault counter
    moves by exactly its getrusage() count (PAGES: one fault a page), major by 0; after the
    engine has pruned the idle key from the kernel map the counter stays where it was."""
    with memory_cgroup("mlt_exp_faults", "64M") as cg:
        name = cgroup_name(cg)
        wl = touch_pages_in(cg)
        try:
            assert wl.stdout.readline().startswith("ready pid=")
            before = exporter.scrape()
            gate(wl)
            assert wl.stdout.readline() == "t\n"
            after = exporter.scrape()
            gate(wl)
            m = re.match(r"done pages=(\d+) minflt=(\d+) majflt=(\d+)", wl.stdout.readline())
            assert m, "workload did not report"
            pages, minflt, majflt = (int(x) for x in m.groups())
            time.sleep(2.5)  # > PRUNE_TICKS engine ticks: the idle keys leave the kernel map
            # the "done" line's own faults (printf) come after `after`: read them again
            later = exporter.scrape()
            time.sleep(1.5)
            latest = exporter.scrape()
        finally:
            wl.stdin.close()
            wl.wait(10)
        # the first scrape already knew the cgroup (its exec's faults)
        assert value(before, "memlens_page_faults_total", cgroup=name, type="minor") > 0
        d_minor = (value(after, "memlens_page_faults_total", cgroup=name, type="minor")
                   - value(before, "memlens_page_faults_total", cgroup=name, type="minor"))
        d_major = (value(after, "memlens_page_faults_total", cgroup=name, type="major")
                   - value(before, "memlens_page_faults_total", cgroup=name, type="major"))
        assert (d_minor, d_major) == (pages, 0) == (minflt, majflt) == (PAGES, 0), \
            (d_minor, d_major, minflt, majflt)
        # monotonic across the engine's pruning: nothing moved, nothing went away
        for t in ("minor", "major"):
            assert value(latest, "memlens_page_faults_total", cgroup=name, type=t) == \
                value(later, "memlens_page_faults_total", cgroup=name, type=t) >= \
                value(after, "memlens_page_faults_total", cgroup=name, type=t)
        # the checklist's reader of the same cgroup: its limit
        assert value(latest, "memlens_cgroup_memory_limit_bytes", cgroup=name) == 64 << 20
        assert value(latest, "memlens_probe_attached", source="faults",
                     probe="sw:minor-faults") == 1
    print(f"\nexporter: {name}: minor +{d_minor} (getrusage {minflt}), major +{d_major}")


def _oom_kill_count(cg: Path) -> int:
    from memlens.checklist import cgroups

    base = cg.parent
    read = cgroups.read_v1 if "/memory/" in str(cg) else cgroups.read_v2
    return read(str(base), "/" + cg.name).oom_kill


def test_an_oom_kill_moves_its_cgroup_by_exactly_one(exporter):
    hog = build_workload("oom_hog")
    with memory_cgroup("mlt_exp_oom", "64M") as cg:
        name = cgroup_name(cg)
        before = exporter.scrape()
        assert value(before, "memlens_oom_kills_total", cgroup=name) == 0
        victim = subprocess.Popen([str(hog), "512"], preexec_fn=lambda: (
            cg / "cgroup.procs").write_text("0"))
        assert victim.wait(timeout=60) == -9
        witness = _oom_kill_count(cg)
        deadline = time.monotonic() + 10
        while True:
            after = exporter.scrape()
            kills = value(after, "memlens_oom_kills_total", cgroup=name)
            if kills or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        again = exporter.scrape()
    assert witness == 1
    assert kills == 1 == value(again, "memlens_oom_kills_total", cgroup=name)
    assert value(again, "memlens_lost_total", source="oom", what="events",
                 cause="ring_full") == 0
    # the hog's faults are counted under the same name
    assert value(again, "memlens_page_faults_total", cgroup=name, type="minor") > 1000


def test_reclaim_histogram_counts_the_episodes_bpftrace_sees():
    """reclaim_cache in a 32 MiB cgroup reads a 96 MiB file twice: memory-cgroup limit
    reclaim in its own context (helpers.cache_reclaim's workload).  The cgroup's episodes
    and pages equal bpftrace's for the PID, its time is within 5 % or 25 us an episode of
    bpftrace's (the exporter's programs, attached just before bpftrace's, stream nothing:
    no reader's wakeup between the stamps), and the memcg histogram counts every
    cgroup's episodes."""
    with data_file() as path, memory_cgroup("mlt_exp_reclaim", LIMIT) as cg:
        name = cgroup_name(cg)
        w = CacheReader(cg, path)
        exp = bt = None
        try:
            exp = Exporter()
            bt = pair_witness(w.pid, "mm_vmscan_memcg_reclaim_begin",
                              "mm_vmscan_memcg_reclaim_end")
            before = exp.scrape()
            w.run()
            seen = bt.stop()
            # settle: the last episodes ended before the gate; scrape until nothing moves
            after = exp.scrape()
            for _ in range(20):
                nxt = exp.scrape()
                if total(nxt, "memlens_direct_reclaim_episodes_total", reclaim="memcg") == \
                        total(after, "memlens_direct_reclaim_episodes_total", reclaim="memcg") \
                        and value(nxt, "memlens_direct_reclaim_seconds_count",
                                  reclaim="memcg") == value(after,
                                                            "memlens_direct_reclaim_seconds_count",
                                                            reclaim="memcg"):
                    break
                after = nxt
                time.sleep(0.3)
            w.finish()
        finally:
            if bt is not None:
                bt.close()
            w.kill()
            if exp is not None:
                assert exp.stop() == 0, exp.run.stderr
        exp.run.assert_detached()

    def d(name_, **labels):
        return value(after, name_, **labels) - value(before, name_, **labels)

    episodes = d("memlens_direct_reclaim_episodes_total", cgroup=name, reclaim="memcg")
    pages = d("memlens_direct_reclaim_pages_total", cgroup=name, reclaim="memcg")
    assert seen["@n"] >= 10 and episodes == seen["@n"], (episodes, seen)
    assert pages == seen["@pages"], (pages, seen)
    # every cgroup's memcg episodes (others may reclaim on a shared machine) = the histogram
    all_eps = (total(after, "memlens_direct_reclaim_episodes_total", reclaim="memcg")
               - total(before, "memlens_direct_reclaim_episodes_total", reclaim="memcg"))
    count = d("memlens_direct_reclaim_seconds_count", reclaim="memcg")
    assert count == all_eps >= episodes, (count, all_eps, episodes)
    assert d("memlens_direct_reclaim_seconds_bucket", reclaim="memcg", le="+Inf") == count
    # cumulative buckets, never decreasing
    les = sorted((float(dict(ls)["le"]), v) for (n, ls), v in after.items()
                 if n == "memlens_direct_reclaim_seconds_bucket"
                 and dict(ls).get("reclaim") == "memcg")
    assert all(a[1] <= b[1] for a, b in zip(les, les[1:])) and math.isinf(les[-1][0])
    if all_eps == episodes:  # ours were all: the time is theirs, within that bound
        secs = d("memlens_direct_reclaim_seconds_sum", reclaim="memcg")
        assert abs(secs * 1e9 - seen["@ns"]) <= max(0.05 * seen["@ns"], 25_000 * episodes), \
            (secs, seen)
        assert secs * 1e9 < w.read_ns
    print(f"\nexporter: {name}: {episodes:.0f} memcg reclaim episodes (bpftrace {seen['@n']}),"
          f" {pages:.0f} pages (bpftrace {seen['@pages']}); histogram count +{count:.0f} "
          f"for {all_eps:.0f} episodes of every cgroup")


def test_metrics_text_is_valid_and_named_by_the_rules(exporter):
    """Both exposition formats read back by prometheus-client's parsers (the OpenMetrics
    one is strict: types, suffixes, # EOF); one prefix, _total counters, no _created, no
    unbounded label; a scrape is cheap."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
    from prometheus_client.parser import text_string_to_metric_families as prom

    text = exporter.text()
    fams = list(prom(text))
    om_fams = list(om(exporter.text(openmetrics=True)))
    assert {f.name for f in fams} == {f.name for f in om_fams}
    names = {f.name for f in fams}
    assert {"memlens_page_faults", "memlens_oom_kills", "memlens_direct_reclaim_seconds",
            "memlens_lost", "memlens_probe_attached"} <= names
    for f in fams:
        assert f.name.startswith(("memlens_", "process_")), f.name
        for s in f.samples:
            assert not s.name.endswith("_created"), s.name
            assert not {"pid", "comm", "tid"} & set(s.labels), s
            if f.type == "counter":
                assert s.name.endswith("_total"), s.name
    assert "# TYPE memlens_direct_reclaim_seconds histogram" in text
    # scrape cost, as the exporter measured it (a shared, loaded machine: generous bound)
    took = [s.value for f in fams if f.name == "memlens_exporter_collect_seconds"
            for s in f.samples]
    assert took and took[0] < 0.5, took


def test_bad_listen_and_port_in_use_are_one_line_and_load_nothing():
    for bad in ("9435", "127.0.0.1:70000", "::1:9435", "no.such.host.invalid:9435"):
        r = subprocess.run(memlens_cmd("exporter", "--listen", bad), capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, (bad, r.stderr)
        assert "Traceback" not in r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(memlens_cmd("exporter", "--listen", f"127.0.0.1:{port}"),
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert r.stderr == (f"memlens: exporter: cannot listen on 127.0.0.1:{port}: Address "
                        "already in use (another exporter? choose a port with --listen)\n")
    assert "Tracing" not in r.stderr  # bound first: no probe was ever attached


def test_sigint_and_duration_end_cleanly():
    exp = Exporter("--disable", "reclaim,swap")
    assert exp.run.stop() == 0, exp.run.stderr  # SIGINT
    exp.run.assert_detached()
    assert "page faults, OOM kills by memory cgroup" in exp.run.stderr
    r = subprocess.run(memlens_cmd("exporter", "--listen", "127.0.0.1:0", "-d", "0.5"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Hit Ctrl-C to end." in r.stderr, r.stderr


def _minflt_majflt(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[7]), int(fields[9])  # fields 10 and 12: minflt, majflt


def test_swap_ins_and_outs_of_a_cgroup_match_the_kernel_counters(exporter):
    """swapin's workload (64 MiB filled in a 32 MiB cgroup with a swap file of the test's,
    then read back): the cgroup's swap-in/out pages equal /proc/vmstat's pswpin/pswpout
    deltas when no other cgroup swapped (else within 95 %), and its minor and major faults
    equal the process's own /proc/PID/stat counters, gate to gate."""
    from tests.kernel.test_swapin import Workload, swap_file, swapping_cgroup

    names = ("memlens_swapin_pages_total", "memlens_swapout_pages_total")
    with swap_file(), swapping_cgroup() as cg:
        name = cgroup_name(cg)
        w = Workload(cg)
        try:
            flt0 = _minflt_majflt(w.pid)
            with open("/proc/vmstat") as f:
                v0 = {k: int(v) for k, v in (ln.split() for ln in f)}
            s0 = exporter.scrape()
            assert w.step() == "written"
            assert re.fullmatch(r"reread bad=0 majflt=\d+ wait_ns=\d+ max_ns=\d+", w.step())
            flt1 = _minflt_majflt(w.pid)
            with open("/proc/vmstat") as f:
                v1 = {k: int(v) for k, v in (ln.split() for ln in f)}
            s1 = exporter.scrape()
            assert w.finish() == 0
        finally:
            w.kill()
    for metric, vm in zip(names, ("pswpin", "pswpout")):
        ours = value(s1, metric, cgroup=name) - value(s0, metric, cgroup=name)
        others = (total(s1, metric) - total(s0, metric)) - ours
        witness = v1[vm] - v0[vm]
        assert ours >= w.pages // 2, (metric, ours, w.pages)
        if others == 0:
            assert ours == witness, (metric, ours, witness)
        else:
            assert 0.95 * witness <= ours <= witness, (metric, ours, witness, others)
    d = {t: value(s1, "memlens_page_faults_total", cgroup=name, type=t)
         - value(s0, "memlens_page_faults_total", cgroup=name, type=t) for t in ("minor", "major")}
    assert (d["minor"], d["major"]) == (flt1[0] - flt0[0], flt1[1] - flt0[1]) and d["major"] > 0
    print(f"\nexporter: {name}: swap-in +{value(s1, names[0], cgroup=name):.0f}, out "
          f"+{value(s1, names[1], cgroup=name):.0f} (vmstat +{v1['pswpin'] - v0['pswpin']}, "
          f"+{v1['pswpout'] - v0['pswpout']}); faults {d} = /proc/PID/stat")


def test_cgroup_filter_depth_and_forgetting_removed_cgroups():
    """--cgroup PARENT --cgroup-depth 1: a child's faults are counted under the parent's
    label, nothing outside the parent is counted; once both are removed and idle past
    --forget-after, the parent's series are gone."""
    exp = None
    try:
        with memory_cgroup("mlt_exp_parent", "64M") as parent:
            pname = cgroup_name(parent)
            child = parent / "child"
            child.mkdir()
            wl = None
            try:
                exp = Exporter("--cgroup", str(parent), "--cgroup-depth", "1",
                               "--forget-after", "1")
                wl = touch_pages_in(child)
                assert wl.stdout.readline().startswith("ready pid=")
                before = exp.scrape()
                gate(wl)
                assert wl.stdout.readline() == "t\n"
                after = exp.scrape()
            finally:
                if wl is not None:
                    wl.kill()
                    wl.wait(10)
                child.rmdir()
        d = (value(after, "memlens_page_faults_total", cgroup=pname, type="minor")
             - value(before, "memlens_page_faults_total", cgroup=pname, type="minor"))
        assert d == PAGES
        labels = {dict(ls)["cgroup"] for (n, ls), _ in after.items()
                  if n == "memlens_page_faults_total"}
        assert labels == {pname}, labels
        # both removed: the scrape after 1 s without a change has none of their series
        time.sleep(1.5)
        gone = exp.scrape()
        assert not [k for k in gone if dict(k[1]).get("cgroup") == pname], gone
    finally:
        if exp is not None:
            assert exp.stop() == 0, exp.run.stderr
            exp.run.assert_detached()


def test_without_privileges_exit_3_before_binding():
    import shutil

    from tests.kernel.test_privileges import NOBODY

    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) not installed")
    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run(NOBODY + memlens_cmd("exporter", "--listen", f"127.0.0.1:{port}"),
                       capture_output=True, text=True, timeout=60)
    if "Permission denied" in r.stderr and "memlens" not in r.stderr:
        pytest.skip("the checkout or venv is not readable by uid 65534")
    assert r.returncode == 3, r.stderr
    assert "run as root, or grant CAP_BPF and CAP_PERFMON" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def _enable_bpf_stats() -> int:
    """BPF_ENABLE_STATS: the kernel's run-time statistics on while the fd is open (closed,
    or this process gone: off again; no sysctl to restore on a shared machine)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(321, 32, ctypes.create_string_buffer(16), 16)  # x86-64 SYS_bpf
    if fd < 0:
        pytest.skip(f"BPF_ENABLE_STATS refused (errno {ctypes.get_errno()})")
    return fd


def test_bpf_program_run_time_and_count_while_stats_are_on():
    """With bpf_stats on (an fd of the test's), the faults program's runs move by at least
    the pages touched (it runs for every fault of the machine) and its run time by > 0.
    (Whether the series are shown before depends on whether anything else on the shared
    machine has stats on: not checked.)"""
    import os

    exp = Exporter("--disable", "oom,reclaim,swap")
    fd = None
    try:
        fd = _enable_bpf_stats()
        before = exp.scrape()
        with memory_cgroup("mlt_exp_stats", "64M") as cg:
            wl = touch_pages_in(cg)
            try:
                wl.stdout.readline()
                gate(wl)
                assert wl.stdout.readline() == "t\n"
            finally:
                wl.kill()
                wl.wait(10)
        after = exp.scrape()
    finally:
        if fd is not None:
            os.close(fd)
        assert exp.stop() == 0, exp.run.stderr
        exp.run.assert_detached()
    # the engine's counting program for a software event (core/engine.STACKLESS)
    labels = {"source": "faults", "program": "count_perf_simple"}
    runs = (value(after, "memlens_bpf_program_runs_total", **labels)
            - value(before, "memlens_bpf_program_runs_total", **labels))
    secs = (value(after, "memlens_bpf_program_run_seconds_total", **labels)
            - value(before, "memlens_bpf_program_run_seconds_total", **labels))
    assert runs >= PAGES and secs > 0, (runs, secs)
    print(f"\nexporter: count_perf_simple {runs:.0f} runs, {secs * 1e9 / runs:.0f} ns a run")
