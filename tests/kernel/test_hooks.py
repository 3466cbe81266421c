# SPDX-License-Identifier: GPL-2.0-only
"""Hook probes against this machine's kernel (6.18: mark_victim(task, uid), no kprobes)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from memlens.core import hooks, kernel
from memlens.core.hooks import Kprobe, PerfSoftware, TpBtf, Tracepoint, choose
from tests.conftest import ROOT, require

BTF_DIR = ROOT / "tests" / "unit" / "data" / "btf"  # synthesized by tests/unit/test_hooks.py


@pytest.fixture(autouse=True)
def _fresh_probes():
    hooks.clear_cache()
    kernel.ensure_tracefs(quiet=True)  # another test may have unmounted it
    yield
    hooks.clear_cache()


def test_mark_victim_prototype_is_task_uid_not_int():
    assert TpBtf("mark_victim", ("struct task_struct *", "uid_t")).probe() == (True, "")
    ok, why = TpBtf("mark_victim", ("int",)).probe()
    assert not ok
    assert why == "BTF prototype is (struct task_struct *, uid_t), this program needs (int)"


def test_page_fault_software_event_opens():
    assert PerfSoftware("page-faults", 2).probe() == (True, "")


def test_kprobe_reason_names_the_missing_pmu():
    require(not kernel.kprobes_supported(), "this kernel has kprobes")
    ok, why = Kprobe("handle_mm_fault").probe()
    assert not ok
    assert why == "no kprobe PMU (CONFIG_KPROBES off)"


def test_tracepoint_fields_from_the_real_format():
    assert Tracepoint("syscalls", "sys_enter_brk", fields=("brk",)).probe() == (True, "")
    assert Tracepoint("syscalls", "sys_enter_brk", fields=("nonexistent",)).probe() == (
        False, "syscalls:sys_enter_brk has no field nonexistent")


def test_oomkill_chooses_tp_btf_here():
    from memlens.tools.oomkill import HOOKS

    assert choose(HOOKS, "oomkill") is HOOKS[0]


# oomkill in a child whose hook probes read another BTF (or tracefs) than the kernel's: the
# kernel is this one, only what the probes see differs
_RUN_WITH = ("import sys; import memlens.core.hooks as h; "
             "h.VMLINUX_BTF, h.TRACEFS_ROOT = sys.argv[1], sys.argv[2] or None; "
             "from memlens.cli import main; sys.exit(main(sys.argv[3:]))")


def _oomkill_seeing(btf: str, tracefs: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _RUN_WITH, btf, tracefs, "oomkill", "-d",
                           "0.5", "--json"], capture_output=True, text=True, timeout=60)


def test_oomkill_attaches_the_tracepoint_where_btf_says_int_pid():
    # GIVEN probes that see 6.1's mark_victim(int pid)
    r = _oomkill_seeing(str(BTF_DIR / "mark_victim_pre68.btf"))
    # THEN oomkill runs on the tracepoint instead of failing at load
    assert r.returncode == 0, r.stderr
    assert "Tracing OOM kills... Hit Ctrl-C to end." in r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["type"] == "summary" and summary["hook"] == "tracepoint/oom/mark_victim"


def test_oomkill_without_any_hook_exits_4_naming_both(tmp_path):
    (tmp_path / "events").mkdir()
    r = _oomkill_seeing(str(BTF_DIR / "mark_victim_pre68.btf"), str(tmp_path))
    assert r.returncode == 4, r.stderr
    assert "Traceback" not in r.stderr
    assert ("the kernel lacks every hook oomkill can use: "
            "tp_btf/mark_victim(struct task_struct *, uid_t): BTF prototype is (int), this "
            "program needs (struct task_struct *, uid_t); "
            "tracepoint oom:mark_victim: no oom:mark_victim in tracefs") in r.stderr
