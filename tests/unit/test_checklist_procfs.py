# SPDX-License-Identifier: GPL-2.0-only
"""The checklist's parsers and figures on fake /proc and /sys trees (no privileges).

tests/unit/data/procfs/modern: a 6.x kernel with cgroup v2, PSI, smaps_rollup, swap, and two
OOM kills (one memcg, one global) in dev/kmsg.
tests/unit/data/procfs/old: what a 3.10-era kernel lacks: MemAvailable, PSI, VmSwap,
smaps_rollup, per-type pgsteal lines (it has per-zone ones), memory.oom_control's oom_kill,
the `oom-kill:` summary line; cgroup v1 and /proc/mounts only.
"""
from __future__ import annotations

import json
import re
import sys
import textwrap
from io import StringIO
from pathlib import Path

import pytest

from memlens.checklist import cgroups, check, figures, kmsg, pmap, procfs, procs, top
from memlens.errors import MemlensError, UsageError

DATA = Path(__file__).parent / "data" / "procfs"
KB = 1024


@pytest.fixture
def modern():
    with procfs.using_root(str(DATA / "modern")):
        yield DATA / "modern"


@pytest.fixture
def old():
    with procfs.using_root(str(DATA / "old")):
        yield DATA / "old"


class TestMeminfo:
    def test_kb_fields_are_bytes_and_counts_are_not(self, modern):
        mi = procfs.read_meminfo()
        assert mi["MemTotal"] == 8000000 * KB
        assert mi["HugePages_Total"] == 4          # no kB suffix: a count
        assert mi["Hugepagesize"] == 2048 * KB

    def test_missing_file_is_none(self, tmp_path):
        with procfs.using_root(str(tmp_path)):
            assert procfs.read_meminfo() is None
            assert procfs.read_vmstat() is None
            assert procfs.read_swaps() is None


class TestFreeMimicsProcps4:
    def test_used_is_total_minus_available(self, modern):
        fig = figures.free_figures(procfs.read_meminfo())
        assert fig["used_bytes"] == (8000000 - 3000000) * KB
        assert fig["buff_cache_bytes"] == (100000 + 2000000 + 200000) * KB
        assert fig["cache_bytes"] == (2000000 + 200000) * KB
        assert fig["shared_bytes"] == 50000 * KB
        assert fig["swap_used_bytes"] == (2097148 - 1048574) * KB

    def test_no_memavailable_falls_back_to_free(self, old):
        fig = figures.free_figures(procfs.read_meminfo())
        assert fig["available_bytes"] == 512000 * KB
        assert fig["used_bytes"] == (2048000 - 512000) * KB
        assert fig["available_is_estimate"] is False
        assert fig["shared_bytes"] == 0            # no Shmem line (< 2.6.32)

    def test_container_available_above_total(self):
        mi = procfs.parse_meminfo(textwrap.dedent("""\
            MemTotal: 1000 kB
            MemFree: 400 kB
            MemAvailable: 5000 kB
            """))
        fig = figures.free_figures(mi)
        assert fig["available_bytes"] == 400 * KB
        assert fig["used_bytes"] == 600 * KB


class TestVmstat:
    def test_memory_columns(self, modern):
        v = figures.vmstat_memory(procfs.read_meminfo(), procfs.read_stat())
        assert v["r"] == 3 and v["b"] == 1
        assert v["cache_bytes"] == (2000000 + 200000) * KB
        assert v["swpd_bytes"] == (2097148 - 1048574) * KB

    def test_rates(self):
        a = figures.Sample(10.0, {"pswpin": 0, "pswpout": 0, "pgpgin": 100, "pgpgout": 0},
                           {"intr": 1000, "ctxt": 50})
        b = figures.Sample(12.0, {"pswpin": 10, "pswpout": 4, "pgpgin": 300, "pgpgout": 8},
                           {"intr": 1600, "ctxt": 250})
        r = figures.vmstat_rates(a, b)
        page_kib = procfs.PAGESIZE / 1024
        assert r["si_kib_s"] == 5 * page_kib and r["so_kib_s"] == 2 * page_kib
        assert r["bi_kib_s"] == 100 and r["bo_kib_s"] == 4
        assert r["in_s"] == 300 and r["cs_s"] == 100

    def test_missing_counter_is_none(self):
        a = figures.Sample(1.0, {"pgpgin": 1}, {})
        b = figures.Sample(2.0, {"pgpgin": 2}, {})
        r = figures.vmstat_rates(a, b)
        assert r["si_kib_s"] is None and r["in_s"] is None and r["bi_kib_s"] == 1


class TestSarPagingMimicsSysstat:
    def test_prefix_sums_like_read_vmstat_paging(self, modern):
        c = figures.sar_paging_counters(procfs.read_vmstat())
        # every pgsteal_* line: kswapd+direct+khugepaged+proactive+anon+file
        assert c["pgsteal"] == 400 + 100 + 200 + 300
        assert c["pgscan_kswapd"] == 800
        assert c["pgscan_direct"] == 200 + 5          # pgscan_direct_throttle matches too

    def test_per_zone_counters_of_old_kernels(self, old):
        c = figures.sar_paging_counters(procfs.read_vmstat())
        assert (c["pgsteal"], c["pgscan_kswapd"], c["pgscan_direct"]) == (11, 22, 4)

    def test_rates_and_vmeff(self):
        a = figures.Sample(100.00, {"pgpgin": 0, "pgpgout": 0, "pgfault": 0, "pgmajfault": 0,
                                    "pgfree": 0, "pgscan_kswapd": 0, "pgscan_direct": 0,
                                    "pgsteal_kswapd": 0}, {})
        b = figures.Sample(102.00, {"pgpgin": 4000, "pgpgout": 10, "pgfault": 23000,
                                    "pgmajfault": 46, "pgfree": 9000, "pgscan_kswapd": 300,
                                    "pgscan_direct": 100, "pgsteal_kswapd": 100}, {})
        s = figures.sar_paging(a, b)
        assert s["pgpgin_kib_per_s"] == 2000.0
        assert s["pgpgout_kib_per_s"] == 5.0
        assert s["fault_per_s"] == 11500.0
        assert s["majflt_per_s"] == 23.0
        assert s["pgfree_per_s"] == 4500.0
        assert s["pgscank_per_s"] == 150.0 and s["pgscand_per_s"] == 50.0
        assert s["pgsteal_per_s"] == 50.0
        assert s["vmeff_percent"] == 25.0             # 100 stolen / 400 scanned

    def test_vmeff_zero_without_scanning(self):
        a = figures.Sample(1.0, {}, {})
        b = figures.Sample(2.0, {"pgsteal_file": 5}, {})
        assert figures.sar_paging(a, b)["vmeff_percent"] == 0.0


class TestSwapsAndPressure:
    def test_swaps(self, modern):
        devs = procfs.read_swaps()
        assert [d.filename for d in devs] == ["/dev/vda2", "/swap file"]
        assert devs[0].size_bytes == 2097148 * KB and devs[0].used_bytes == 1048574 * KB
        assert devs[0].priority == -2

    def test_no_swap(self, old):
        assert procfs.read_swaps() == []

    def test_psi(self, modern):
        p = procfs.read_pressure()
        assert p["some"]["avg10"] == 1.5 and p["full"]["total"] == 65432

    def test_psi_missing_on_old_kernels(self, old):
        assert procfs.read_pressure() is None

    def test_psi_without_full_line(self):
        p = procfs.parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n")
        assert "full" not in p and p["some"]["total"] == 7


class TestProcesses:
    def test_stat_with_parentheses_in_comm(self, modern):
        st = procfs.read_pid_stat(4242)
        assert st.comm == "my (odd) app"
        assert (st.minflt, st.majflt, st.ppid) == (1500, 7, 1)
        assert st.vsize_bytes == 104857600 and st.rss_pages == 2560

    def test_read_proc_with_swap_and_pss(self, modern):
        p = procs.read_proc(4242, with_pss=True)
        assert p.rss_bytes == 10244 * KB           # status VmRSS wins over stat's rss
        assert p.swap_bytes == 512 * KB
        assert p.pss_bytes == 344 * KB
        assert p.uss_bytes == (8 + 80) * KB

    def test_old_kernel_no_vmswap_no_rollup(self, old):
        p = procs.read_proc(77, with_pss=True)
        assert p.swap_bytes is None                     # VmSwap: 2.6.34+
        assert p.pss_bytes == (4 + 64000) * KB          # summed from smaps
        assert p.uss_bytes == (4 + 64000) * KB

    def test_snapshot_and_cmdline(self, modern):
        top_ = procs.top_by_rss(5)
        assert [p.pid for p in top_] == [4242]
        assert top_[0].cmdline == "my-app --serve"

    def test_vanished_pid(self, modern):
        assert procs.read_proc(999999) is None


class TestPmapMimicsProcps:
    def test_rows_and_totals(self, modern):
        rows, total = pmap.pmap_rows(4242)
        assert [r["mapping"] for r in rows] == ["my-app", "[ anon ]", "memfd:pool (deleted)",
                                                "[ stack ]"]
        assert [r["mode"] for r in rows] == ["r----", "rw---", "r--s-", "rw---"]
        assert total["size_bytes"] == (8 + 132 + 1024 + 132) * KB
        assert total["rss_bytes"] == 600 * KB
        assert total["dirty_bytes"] == (64 + 512 + 16) * KB
        assert total["swap_bytes"] == 32 * KB

    def test_text_totals_line(self, modern):
        rows, total = pmap.pmap_rows(4242)
        out = StringIO()
        pmap.render_text(4242, rows, total, out)
        lines = out.getvalue().splitlines()
        assert lines[0] == "4242:   my-app --serve"
        assert lines[-1].split() == ["total", "kB", "1296", "600", "592", "32"]
        assert all(len(line) < 80 for line in lines)

    def test_nameless_mapping_without_trailing_space(self, old):
        rows, _ = pmap.pmap_rows(77)
        assert rows[1]["mapping"] == "[ anon ]"

    def test_no_such_process(self, modern):
        with pytest.raises(MemlensError, match="no such process: 31337"):
            pmap.pmap_rows(31337)

    @pytest.mark.parametrize("bad", ["abc", "-5", "0", "12x"])
    def test_bad_pid_is_usage_error(self, bad):
        with pytest.raises(UsageError):
            pmap.parse_pid(bad)


class TestCgroupsV2:
    def test_found_from_mounts(self, modern):
        assert cgroups.hierarchies() == [(2, str(DATA / "modern" / "sys/fs/cgroup"))]

    def test_limited_cgroup(self, modern):
        cg = {c.path: c for c in cgroups.read_all()}
        app = cg["/app"]
        assert (app.version, app.usage_bytes, app.limit_bytes) == (2, 500000000, 536870912)
        assert app.high_bytes is None and app.max_usage_bytes == 600000000
        assert app.swap_usage_bytes == 4096 and app.swap_limit_bytes is None
        assert (app.oom, app.oom_kill, app.failcnt) == (3, 2, 17)
        assert (app.pgscan, app.pgsteal, app.workingset_refault) == (300, 250, 12)
        assert app.nr_procs == 1

    def test_nested_and_unlimited(self, modern):
        cg = {c.path: c for c in cgroups.read_all()}
        assert cg["/app/web"].limit_bytes == 100 << 20
        assert cg["/app/web"].pgscan is None               # no memory.stat file
        assert cg["/idle"].limit_bytes is None and cg["/idle"].limit_known
        assert cg["/"].usage_bytes is None                  # the root has no memory.current

    def test_v2_without_memory_controller_is_ignored(self, tmp_path):
        (tmp_path / "proc").mkdir()
        (tmp_path / "proc" / "mounts").write_text("cgroup2 /cg cgroup2 rw 0 0\n")
        (tmp_path / "cg").mkdir()
        (tmp_path / "cg" / "cgroup.controllers").write_text("cpu pids\n")
        with procfs.using_root(str(tmp_path)):
            assert cgroups.hierarchies() == []


class TestCgroupsV1:
    def test_box(self, old):
        cg = {c.path: c for c in cgroups.read_all()}
        box = cg["/box"]
        assert (box.version, box.limit_bytes, box.failcnt) == (1, 64 << 20, 42)
        assert box.oom_kill is None and box.under_oom == 0    # oom_kill line: 4.13+
        assert box.swap_usage_bytes is None                   # no memsw accounting
        assert box.workingset_refault == 9                    # one counter before 5.9
        assert cg["/"].limit_bytes is None                    # 9223372036854771712


class TestKmsgOom:
    def test_memcg_and_global_kills(self, modern):
        kills = kmsg.oom_kills()
        assert [k.pid for k in kills] == [11995, 777]
        k = kills[0]
        assert (k.comm, k.constraint, k.oom_memcg, k.task_memcg, k.uid) == (
            "python3", "CONSTRAINT_MEMCG", "/envm_oom", "/envm_oom", 0)
        assert k.trigger_comm == "python3" and k.scope == "memcg"
        assert k.anon_rss_bytes == 65280 * KB and k.total_vm_bytes == 538144 * KB
        assert k.file_rss_bytes == 1024 * KB and k.pgtables_bytes == 200 * KB
        assert k.ts_us == 446486750
        g = kills[1]
        assert (g.constraint, g.scope, g.uid, g.trigger_comm) == (
            "CONSTRAINT_NONE", "system", 1000, "stress")
        assert g.task_memcg == "/user.slice/user-1000.slice"

    def test_pre_4_19_format(self, old):
        kills = kmsg.oom_kills()
        assert len(kills) == 1
        k = kills[0]
        assert (k.pid, k.comm, k.task_memcg, k.constraint) == (77, "stress", "/box",
                                                               "CONSTRAINT_MEMCG")
        assert k.anon_rss_bytes == 64000 * KB and k.file_rss_bytes == 4 * KB

    def test_no_kmsg(self, tmp_path):
        with procfs.using_root(str(tmp_path)), pytest.raises(kmsg.KmsgUnavailable):
            kmsg.read_kmsg()

    def test_continuation_lines_and_garbage_are_skipped(self):
        recs = kmsg.parse_records("6,1,2,-;hello\n SUBSYSTEM=x\nnonsense\n6,x,2,-;bad\n")
        assert [r.message for r in recs] == ["hello"]


SNAKE = re.compile(r"^[a-z0-9_]+$")


def _keys(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{path}.{k}", k
            yield from _keys(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for v in obj:
            yield from _keys(v, path)


class TestCheckOnFakeTrees:
    def test_json_sections(self, modern):
        out = StringIO()
        check.run_checklist(out, json_mode=True, interval=0.05, top=5, pss=True)
        recs = [json.loads(line) for line in out.getvalue().splitlines()]
        assert all("type" in r for r in recs)
        by = {r["section"]: r for r in recs if r["type"] == "report"}
        assert list(by) == ["oom", "swap", "free", "vmstat", "processes", "psi", "cgroups",
                            "paging", "llc"]
        assert recs[-1]["type"] == "summary"
        assert by["oom"]["count"] == 2 and by["oom"]["finding"]["level"] == "crit"
        assert by["oom"]["finding"]["next"] == "memlens oomkill"
        assert by["free"]["used_bytes"] == (8000000 - 3000000) * KB
        assert by["swap"]["finding"]["level"] == "ok"           # exactly 50%: not above
        assert by["processes"]["processes"][0]["pss_bytes"] == 344 * KB
        assert by["psi"]["some"]["avg10_percent"] == 1.5
        assert by["cgroups"]["finding"]["level"] == "warn"      # /app had OOM kills
        assert "/app" in by["cgroups"]["finding"]["next"]
        for where, key in _keys(recs):
            assert SNAKE.match(key), f"{where}: {key} is not lower snake_case"

    def test_text_under_80_columns(self, modern):
        out = StringIO()
        check.run_checklist(out, interval=0.05, pss=True)
        text = out.getvalue()
        assert "== OOM kills" in text and "pid 11995 (python3)" in text
        assert "/envm_oom" in text
        long = [line for line in text.splitlines() if len(line) >= 80]
        assert not long, long

    def test_old_kernel_degrades(self, old):
        out = StringIO()
        check.run_checklist(out, json_mode=True, interval=0.05)
        by = {r.get("section"): r for r in map(json.loads, out.getvalue().splitlines())}
        assert by["psi"]["finding"]["level"] == "unavailable"
        assert by["free"]["finding"]["level"] == "warn"          # no MemAvailable
        assert by["oom"]["kills"][0]["task_memcg"] == "/box"
        assert by["oom"]["oom_kill_counter"] is None             # vmstat oom_kill: 4.13+
        assert by["swap"]["finding"]["reason"].startswith("no swap configured")
        assert all(r["finding"]["level"] != "unavailable" or r["section"] in ("psi", "llc")
                   for r in by.values() if r.get("type") == "report")

    def test_empty_root_never_raises(self, tmp_path):
        with procfs.using_root(str(tmp_path)):
            out = StringIO()
            assert check.run_checklist(out, json_mode=True, interval=0.01) == 0
        levels = {r.get("section"): r.get("finding", {}).get("level")
                  for r in map(json.loads, out.getvalue().splitlines())}
        assert levels["oom"] == "unavailable" and levels["paging"] == "unavailable"


class TestTopOnFakeTrees:
    def test_frame_and_plain_block(self, modern):
        s = top.Sampler()
        f = s.frame()
        assert f.free["total_bytes"] == 8000000 * KB
        assert [p.pid for p in f.procs] == [4242]
        assert f.procs[0].growth_bytes_per_s == 0.0 and f.procs[0].swap_bytes == 512 * KB
        block = top.plain_block(f, "majflt", 5)
        assert "Memory:" in block and "Paging:" in block and "Pressure:" in block
        assert "my (odd) app" in block
        assert all(len(line) < 80 for line in block.splitlines())

    def test_rates_between_frames(self, modern, monkeypatch):
        s = top.Sampler()
        # the process faulted 46 more times and grew by 10 pages in the interval
        real_stat, real_status = procfs.read_pid_stat, procfs.read_pid_status

        def later(pid):
            st = real_stat(pid)
            if st:
                st.minflt += 46
            return st

        def grown(pid):
            st = real_status(pid)
            if st:
                st["VmRSS"] += 10 * procfs.PAGESIZE
            return st
        monkeypatch.setattr(procfs, "read_pid_stat", later)
        monkeypatch.setattr(procfs, "read_pid_status", grown)
        f = s.frame()
        p = f.procs[0]
        assert p.minflt_per_s == pytest.approx(46 / f.interval_s)
        assert p.growth_bytes_per_s == pytest.approx(10 * procfs.PAGESIZE / f.interval_s)
        assert top.top_rows(f, "growth", 1)[0].pid == 4242

    def test_sort_keys(self):
        assert {v[0] for v in top.SORTS.values()} == {"rss", "growth", "minflt", "majflt",
                                                       "swap", "swapin"}
        assert "q" not in top.SORTS


def test_module_has_no_stdout_side_effects():
    # run_checklist writes only to the stream it is given (the main job passes its own)
    assert check.run_checklist.__defaults__[0] is sys.stdout


class TestCommandLineErrors:
    """Bad input: one line on stderr, the documented exit code, never a traceback."""

    @pytest.mark.parametrize("argv, code, message", [
        (("pmap", "abc"), 2, "PID must be a number"),
        (("pmap", "999999999"), 2, "no such process: 999999999"),
        (("check", "--interval", "0"), 2, "--interval must be"),
        (("top", "-d", "0"), 2, "--delay must be"),
        (("top", "-n", "0"), 2, "--iterations must be"),
    ])
    def test_one_line_and_exit_code(self, argv, code, message):
        import subprocess

        from tests.conftest import memlens_cmd

        res = subprocess.run(memlens_cmd(*argv), capture_output=True, text=True, timeout=60)
        assert res.returncode == code, res.stderr
        assert res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
        assert "Traceback" not in res.stderr

    def test_top_on_a_pipe_prints_plain_blocks(self):
        import subprocess

        from tests.conftest import memlens_cmd

        res = subprocess.run(memlens_cmd("top", "-n", "2", "-d", "0.2", "-p", "3"),
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert res.stdout.count("memlens top - ") == 2
        assert "\x1b[" not in res.stdout                  # no terminal escapes on a pipe
        assert res.stdout.count("Processes (top 3 by rss):") == 2
