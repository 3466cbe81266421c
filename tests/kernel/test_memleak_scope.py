# SPDX-License-Identifier: GPL-2.0-only
"""memleak's uprobes are installed in the target only, through uprobe_multi links (one per
program) and through the one-link-per-function fallback alike.

Witness: the kernel maps an `[uprobes]` area (the out-of-line single-step slots) into a
process the first time it hits a uprobe.  The target gets one; a bystander that calls the
same libc functions while memleak runs must not."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import memlens_cmd
from tests.kernel.test_memleak import LEAKS, SIZE, final_report, leaker, stacks_with  # noqa: F401

BYSTANDER = ("import sys; sys.stdin.readline(); "
             "x = [bytearray(4099) for _ in range(2000)]; del x; "
             "print(open('/proc/self/maps').read(), flush=True); sys.stdin.readline()")


@pytest.mark.parametrize("multi", ["1", "0"], ids=["uprobe_multi", "one-link-per-function"])
def test_only_the_target_is_probed(leaker, multi):  # noqa: F811
    env = {**os.environ, "MEMLENS_UPROBE_MULTI": multi}
    tgt = subprocess.Popen([leaker], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    other = subprocess.Popen([sys.executable, "-c", BYSTANDER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert tgt.stdout.readline().startswith("ready")
        ml = subprocess.Popen(memlens_cmd("memleak", "-p", str(tgt.pid), "-o", "0", "--json",
                                          "-T", "1000"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env)
        assert ml.stderr.readline().startswith("Tracing")
        other.stdin.write("go\n")
        other.stdin.flush()
        lines = []
        for line in other.stdout:
            if not line.strip():
                break
            lines.append(line)
        other_maps = "".join(lines)
        tgt.stdin.write("x")
        tgt.stdin.flush()
        assert tgt.stdout.readline().strip() == "done"
        with open(f"/proc/{tgt.pid}/maps") as f:
            target_maps = f.read()
        ml.send_signal(signal.SIGINT)
        out, err = ml.communicate(timeout=60)
        assert ml.returncode == 0, err
    finally:
        for p in (tgt, other):
            try:
                p.stdin.close()
            except BrokenPipeError:
                pass
            p.wait(timeout=10)
    assert "[uprobes]" in target_maps       # the witness works: the target hit our probes
    assert "[uprobes]" not in other_maps    # the bystander never did
    rep = final_report(out)
    (s,) = stacks_with(rep, "leak_malloc")
    assert (s["allocs"], s["bytes"]) == (LEAKS, LEAKS * SIZE)
