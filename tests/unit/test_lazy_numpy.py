# SPDX-License-Identifier: GPL-2.0-only
"""numpy imported through core/lazy: its BLAS (OpenBLAS) starts no threads of its own (they
spun ~0.1 s of CPU at every tool's start), the variable that says so is gone once the
import is done (the processes memlens starts do not inherit it), and a user's own setting
is left alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = ("import json, os; from memlens.core.lazy import np; "
         "before = len(os.listdir('/proc/self/task')); np.ndarray; "
         "print(json.dumps([before, len(os.listdir('/proc/self/task')), "
         "os.environ.get('OPENBLAS_NUM_THREADS')]))")


def _run(env: dict) -> list:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, env=env).stdout
    return json.loads(out)


def test_no_blas_threads_and_nothing_left_in_the_environment():
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    before, after, var = _run(env)
    assert (before, after, var) == (1, 1, None)


def test_a_users_setting_is_kept():
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    before, after, var = _run(env)
    assert var == "2" and before == 1
    if os.cpu_count() and os.cpu_count() > 1:
        assert after == 2  # OpenBLAS's own worker: as the user asked
