# SPDX-License-Identifier: GPL-2.0-only
"""brkstack resolves stacks the moment a process is first seen, which can be while it is a
zombie or mid-exec: an empty /proc/PID/maps must give unresolved frames, not an error."""
from __future__ import annotations

import subprocess
import time

from memlens.core.stackresolve import StackResolver


class _Stacks:
    def stack(self, stack_id: int) -> list[int]:
        return [0x1234, 0x7F0000001000]


def test_zombie_with_empty_maps_resolves_to_unknown_frames():
    child = subprocess.Popen(["true"])
    try:
        for _ in range(100):  # until it is a zombie (exited, not reaped)
            with open(f"/proc/{child.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        with open(f"/proc/{child.pid}/maps") as f:
            assert f.read() == ""
        resolver = StackResolver(_Stacks())
        resolver.watch(child.pid)
        frames = resolver.user_frames(child.pid, 7)
        assert [str(f) for f in frames] == ["0x1234 [unknown]", "0x7f0000001000 [unknown]"]
        resolver.forget(child.pid)
        assert resolver.user_frames(child.pid, 7) == frames
    finally:
        child.wait()
