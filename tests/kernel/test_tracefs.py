# SPDX-License-Identifier: GPL-2.0-only
"""tracefs not mounted (as at boot on this machine): a tool mounts it once and says so."""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import memlens_cmd

TRACEFS = "/sys/kernel/tracing"


def _mounted() -> bool:
    with open("/proc/mounts") as f:
        return any(line.split()[1] == TRACEFS and line.split()[2] == "tracefs" for line in f)


def test_tool_mounts_tracefs_and_says_so():
    if _mounted():
        r = subprocess.run(["umount", TRACEFS], capture_output=True, text=True)
        if r.returncode != 0:  # someone is using it right now: leave it alone
            pytest.skip(f"tracefs busy, not unmounting it: {r.stderr.strip()}")
    try:
        assert not os.path.isdir(os.path.join(TRACEFS, "events"))
        r = subprocess.run(memlens_cmd("brkstack", "-d", "0.2", "--json"), capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert f"memlens: mounted tracefs at {TRACEFS} (needed to attach tracepoints)" in r.stderr
        assert _mounted()
        # once mounted, nothing more is said
        r = subprocess.run(memlens_cmd("brkstack", "-d", "0.2", "--json"), capture_output=True,
                           text=True, timeout=60)
        assert "mounted tracefs" not in r.stderr
    finally:
        if not _mounted():
            subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=True)
