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


def test_report_text_of_a_stack_is_one_tuple_shared_until_its_process_is_forgotten():
    """Every report key holding a stack holds the same tuple of frame texts (under churn a
    report's keys share a few hundred kernel stacks; each made its own copy before), and
    the tuple goes with the process's frames (forget) or with the cache's bound."""
    import os

    resolver = StackResolver(_Stacks(), max_cache=2)
    me = os.getpid()
    first = resolver.user_texts(me, 7)
    assert first is resolver.user_texts(me, 7)
    assert [str(t) for t in first] == [str(f) for f in resolver.user_frames(me, 7)]
    assert all(t.frame is not None for t in first)  # --pprof reads the frame behind it
    kernel = resolver.kernel_texts(9)
    assert kernel is resolver.kernel_texts(9)
    resolver.forget(me)
    assert resolver.user_texts(me, 7) is not first
    assert resolver.kernel_texts(9) is kernel  # the kernel's stacks belong to no process
    resolver.user_texts(me, 8)
    resolver.user_texts(me, 10)  # past the bound of 2: the oldest (the kernel's) goes
    assert resolver.kernel_texts(9) is not kernel
    assert len(resolver._texts) <= 2
