# SPDX-License-Identifier: GPL-2.0-only
"""ruff over the package, tests and benchmarks (rules in pyproject.toml): the code stays as
clean as it is now, whoever edits it next."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed (pip install -e '.[test]')")
    r = subprocess.run([ruff, "check", "--output-format", "concise", "src", "tests", "bench"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
