# SPDX-License-Identifier: GPL-2.0-only
"""The uprobe warm-up (core/uprobewarm.py): while a tool's programs load, a thread registers
uprobes on the object file (mapped executable by no process: nothing installed anywhere)
so that the tool's first uprobe link finds the kernel's grace period passed.  What is
checked here is what it leaves behind: its links exist while it runs, at most MAX_LINKS of
them, and every link and its program are closed once it is stopped; a link the kernel
refuses ends it cleanly.  (What it saves is a time: bench/bench_launch.py's memleak.)"""
from __future__ import annotations

import os
import time
from pathlib import Path

import memlens
from memlens.core import uprobewarm
from memlens.core.uprobewarm import UprobeWarmup
from tests.kernel.helpers import fdinfo_ids

OBJECT = str(Path(memlens.__file__).parent / "tools" / "memleak" / "memleak.bpf.o")


def _uprobe_multi_links() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            with open(f"/proc/self/fdinfo/{fd}") as f:
                if "link_type:\tuprobe_multi" in f.read():
                    n += 1
        except OSError:
            continue
    return n


def _until(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def test_links_while_it_runs_none_once_stopped():
    progs_before = set(fdinfo_ids(os.getpid(), "prog_id"))
    assert _uprobe_multi_links() == 0
    warm = UprobeWarmup.start(OBJECT)
    try:
        assert _until(lambda: warm.links >= 2), (warm.links, warm.error)
        assert warm.error == 0
        assert _uprobe_multi_links() >= 2
    finally:
        warm.finish(30)
    assert not warm.alive()
    assert _uprobe_multi_links() == 0
    assert set(fdinfo_ids(os.getpid(), "prog_id")) == progs_before  # its program closed


def test_at_most_max_links():
    warm = UprobeWarmup.start(OBJECT)
    try:
        assert _until(lambda: warm.links >= uprobewarm.MAX_LINKS)
        time.sleep(uprobewarm.PERIOD_S * 4)
        assert warm.links == uprobewarm.MAX_LINKS
        assert _uprobe_multi_links() == uprobewarm.MAX_LINKS
    finally:
        warm.finish(60)
    assert _uprobe_multi_links() == 0


def test_a_refused_link_ends_it():
    warm = UprobeWarmup.start("/nonexistent/memlens-warmup")
    assert _until(lambda: warm.error != 0)
    assert warm.links == 0 and warm.error < 0
    warm.finish(10)
    assert not warm.alive()
    assert _uprobe_multi_links() == 0


def test_an_early_start_is_taken_by_the_tools_start(monkeypatch):
    """start_early (the engine's u: probes, after the privileges check) and the start at
    the object's open: one warm-up, begun at the first; the maps' check still made at the
    second, which stops it (still to be finished) where they do not fit; an early one for
    another file finished, not left running."""
    from memlens.core import kernel

    monkeypatch.setattr(uprobewarm, "_early", None)
    UprobeWarmup.start_early(OBJECT)
    early = uprobewarm._early
    assert early is not None and _until(lambda: early.links >= 1)
    UprobeWarmup.start_early(OBJECT)  # a second call: the same one
    assert uprobewarm._early is early
    try:
        assert UprobeWarmup.start_if_room(OBJECT, 1 << 20) is early
        assert uprobewarm._early is None and not early.stopped()
    finally:
        early.finish()
    assert _uprobe_multi_links() == 0

    UprobeWarmup.start_early(OBJECT)
    early = uprobewarm._early
    monkeypatch.setattr(kernel, "maps_fit", lambda nbytes, margin=0: False)
    got = UprobeWarmup.start_if_room(OBJECT, 1 << 40)
    assert got is early and early.stopped()
    got.finish()
    assert not early.alive() and _uprobe_multi_links() == 0

    monkeypatch.undo()
    monkeypatch.setattr(uprobewarm, "_early", None)
    UprobeWarmup.start_early("/nonexistent/memlens-warmup")
    other = uprobewarm._early
    got = UprobeWarmup.start_if_room(OBJECT, 1 << 20)
    try:
        assert got is not other and got is not None and got.path == OBJECT
        assert not other.alive()  # finished by start_if_room
    finally:
        got.finish()
    assert _uprobe_multi_links() == 0


def test_no_early_start_near_the_memory_limit(monkeypatch):
    from memlens.core import kernel

    monkeypatch.setattr(uprobewarm, "_early", None)
    monkeypatch.setattr(kernel, "maps_fit", lambda nbytes, margin=0: False)
    UprobeWarmup.start_early(OBJECT)
    assert uprobewarm._early is None


def test_started_early_only_for_a_user_space_probe(monkeypatch):
    """The command line's early start (cli._main, for the tools taking probe specs): only
    where a word names a user-space probe, on the engine's object."""
    from memlens.core.engine import OBJECT
    from memlens.core.loader import object_path
    from memlens.core.probespec import names_user_probe

    assert not names_user_probe(["-p", "123", "t:syscalls:sys_enter_brk", "sw:page-faults",
                                 "--by", "comm,pid", "k:do_mmap"])
    for spec in ("u:c:malloc", "uprobe:/lib/x86_64-linux-gnu/libc.so.6:free",
                 "usdt:python3:python:function__entry"):
        assert names_user_probe(["-p", "123", spec]), spec
    monkeypatch.setattr(uprobewarm, "_early", None)
    UprobeWarmup.start_early_for_specs(["-p", "123", "t:syscalls:sys_enter_brk"])
    assert uprobewarm._early is None
    UprobeWarmup.start_early_for_specs(["-p", "123", "u:c:malloc"])
    early = uprobewarm._early
    try:
        assert early is not None and early.path == object_path(OBJECT)
    finally:
        monkeypatch.setattr(uprobewarm, "_early", None)
        early.finish()
    assert _uprobe_multi_links() == 0
