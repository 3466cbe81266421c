# SPDX-License-Identifier: GPL-2.0-only
"""Shared test fixtures.

Kernel tests (tests/kernel, marker `kernel`) need root and BTF.  They skip with the reason
when those are missing, except under MEMLENS_REQUIRE_KERNEL=1 (set by .ci/run), where the
skip becomes a failure: CI must not pass by skipping.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ROOT / "tests" / "workloads"
WORKLOAD_BIN = WORKLOADS / "bin"
REQUIRE_KERNEL = os.environ.get("MEMLENS_REQUIRE_KERNEL") == "1"


def kernel_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (BPF programs are loaded)"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "needs kernel BTF (/sys/kernel/btf/vmlinux)"
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/kernel" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.kernel)


def pytest_runtest_setup(item):
    if item.get_closest_marker("kernel") is None:
        return
    reason = kernel_unavailable_reason()
    if reason:
        if REQUIRE_KERNEL:
            pytest.fail(f"MEMLENS_REQUIRE_KERNEL=1 but kernel test cannot run: {reason}")
        pytest.skip(reason)


def require(condition: bool, reason: str) -> None:
    """Skip (or, under MEMLENS_REQUIRE_KERNEL=1, fail) a test whose environment is missing."""
    if not condition:
        if REQUIRE_KERNEL:
            pytest.fail(f"MEMLENS_REQUIRE_KERNEL=1 but: {reason}")
        pytest.skip(reason)


def build_workload(name: str, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile tests/workloads/<name>.c (or .cc) with frame pointers; cached by mtime."""
    WORKLOAD_BIN.mkdir(parents=True, exist_ok=True)
    src = WORKLOADS / f"{name}.c"
    compiler = "gcc"
    if not src.exists():
        src = WORKLOADS / f"{name}.cc"
        compiler = "g++"
    out = WORKLOAD_BIN / name
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        subprocess.run([compiler, "-O2", "-g", "-fno-omit-frame-pointer",
                        "-mno-omit-leaf-frame-pointer", "-o", str(out), str(src), *extra_flags],
                       check=True)
    return out


def fresh_python(code: str) -> list[str]:
    """`code` run by a fresh interpreter (none of this process's imports): the words it
    printed; it must exit 0 (its stderr shown otherwise).  What a command imports on its way
    to attaching is asserted this way."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def memlens_cmd(*args: str) -> list[str]:
    """argv running memlens from this interpreter (the venv's), as a user would."""
    return [sys.executable, "-m", "memlens", *args]


@pytest.fixture
def workload():
    return build_workload
