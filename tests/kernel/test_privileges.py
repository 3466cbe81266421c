# SPDX-License-Identifier: GPL-2.0-only
"""Without root or CAP_BPF+CAP_PERFMON: exit 3 with what is needed, before loading anything;
the /proc-only commands still work."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import memlens_cmd

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture(autouse=True)
def _need_setpriv():
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) not installed")
    probe = subprocess.run(NOBODY + memlens_cmd("--version"), capture_output=True)
    if probe.returncode != 0:
        pytest.skip("the checkout or venv is not readable by uid 65534 (e.g. under /root)")


@pytest.mark.parametrize("args", [["oomkill", "-d", "0.1"], ["brkstack", "-d", "0.1"],
                                  ["mmapsnoop", "-d", "0.1"], ["memleak", "-p", "1"],
                                  ["funccount", "t:syscalls:sys_enter_brk", "-d", "0.1"],
                                  ["stackcount", "sw:page-faults", "-d", "0.1"],
                                  ["count", "t:kmem:kmalloc", "-d", "0.1"],
                                  ["trace", "t:oom:mark_victim", "-d", "0.1"]])
def test_tracing_tools_exit_3_without_privileges(args):
    r = subprocess.run(NOBODY + memlens_cmd(*args), capture_output=True, text=True, timeout=30)
    assert r.returncode == 3, r.stderr
    assert "run as root, or grant CAP_BPF and CAP_PERFMON" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def test_doctor_and_checklist_work_unprivileged():
    r = subprocess.run(NOBODY + memlens_cmd("doctor"), capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0
    assert "can_trace  no" in r.stdout
    assert re.search(r"NOT READY +needs root \(or CAP_BPF\+CAP_PERFMON\)", r.stdout), r.stdout
    r = subprocess.run(NOBODY + memlens_cmd("check", "--interval", "0.2"), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "== Memory (free" in r.stdout
