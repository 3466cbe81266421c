# SPDX-License-Identifier: GPL-2.0-only
"""Cached stacks share their frames' text (core/stacks.SharedTexts): under process churn the
same libc, ld.so and kernel frames come back in every new process's stacks, and each cached
stack held its own Frame and FrameText for each (~680 B a frame: faults held ~330 MB)."""
from __future__ import annotations

import ctypes
import gc
import os
import tracemalloc

from memlens.core.stackresolve import MISSED_USER, StackResolver
from memlens.core.stacks import Frame, FrameText, MapInfo, SharedTexts


def _libc_addrs() -> list[int]:
    libc = ctypes.CDLL("libc.so.6")
    return [ctypes.cast(getattr(libc, n), ctypes.c_void_p).value + 8
            for n in ("malloc", "free", "memcpy", "memset", "strlen", "read", "write",
                      "mmap", "open", "close", "qsort", "calloc", "realloc", "getpid")]


class _Stacks:
    """A stack map whose every stack id holds the same addresses."""

    def __init__(self, ips: list[int]):
        self.ips = ips

    def stack(self, stack_id: int) -> list[int]:
        return list(self.ips)


def _frame(addr: int, path: str = "/lib/libc.so.6", build_id: bytes | None = b"\x01" * 20,
           start: int = 0x7F0000000000) -> Frame:
    return Frame(addr, "malloc", 0x1A, os.path.basename(path), False, None, 0x1234,
                 MapInfo(path, start, start + 0x10000, 0, build_id))


def test_the_same_frame_in_two_processes_is_one_text():
    """Two processes' malloc+0x1a in one libc (two addresses: ASLR) print the same: one
    FrameText, holding the first one's frame (its address and mapping, for --pprof)."""
    shared = SharedTexts()
    a = shared.text(_frame(0x7F0000001234))
    b = shared.text(_frame(0x7F1111111234, start=0x7F1111110000))
    assert a is b and isinstance(a, FrameText) and a == "malloc+0x1a [libc.so.6]"
    assert a.frame.addr == 0x7F0000001234
    assert a.frame.mapping.start <= a.frame.addr < a.frame.mapping.end


def test_frames_of_two_files_of_one_name_stay_apart():
    """The same text in another file (another build id, or another path) is another frame:
    its mapping is not the first one's."""
    shared = SharedTexts()
    a = shared.text(_frame(0x7F0000001234))
    other_build = shared.text(_frame(0x7F0000001234, build_id=b"\x02" * 20))
    other_path = shared.text(_frame(0x7F0000001234, path="/srv/root/lib/libc.so.6"))
    assert a == other_build == other_path
    assert len({id(a), id(other_build), id(other_path)}) == 3
    assert other_build.frame.mapping.build_id == b"\x02" * 20
    assert shared.text(_frame(0x7F2222221234, build_id=b"\x02" * 20)) is other_build


def test_a_text_no_stack_holds_is_let_go():
    """Held weakly: the table keeps no frame alive, and sweeps its dead entries."""
    shared = SharedTexts()
    kept = [shared.text(_frame(0x7F0000000000 + i)._replace(offset=i)) for i in range(5000)]
    assert len(shared) == 5000
    del kept
    gc.collect()
    for i in range(5000):
        shared.text(_frame(0x7F0000100000 + i)._replace(offset=0x10000 + i))
    assert len(shared) < 8000  # the first 5000 swept when the table reached its bound


def test_stacks_of_many_processes_share_their_frames():
    """200 cached user stacks of the same libc frames (as short processes running one
    program make): each frame held once, each stack ~30 B a frame (was ~680)."""
    ips = _libc_addrs() * 2
    resolver = StackResolver(_Stacks(ips))
    me = os.getpid()
    first = resolver.user_texts(me, 1)
    assert [str(t) for t in first] == [str(f) for f in resolver.user_frames(me, 1)]
    assert all(t.frame is not None for t in first)  # --pprof reads the frame behind it
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        stacks = [resolver.user_texts(me, sid) for sid in range(2, 202)]
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert all(s == first for s in stacks)
    assert all(a is b for s in stacks for a, b in zip(s, first))
    assert held / (200 * len(ips)) < 64, held


def test_missed_and_kernel_stacks_keep_their_shape():
    """A missed stack is its marker; a kernel stack is one tuple per stack id, its frames
    shared with every other kernel stack printing them."""
    resolver = StackResolver(_Stacks([0xFFFFFFFF81000010, 0xFFFFFFFF81000020]))
    assert [str(t) for t in resolver.user_texts(os.getpid(), -14)] == [MISSED_USER]
    assert resolver.user_texts(1, -14) is resolver.user_texts(2, -17)
    k1, k2 = resolver.kernel_texts(5), resolver.kernel_texts(6)
    assert k1 is resolver.kernel_texts(5) and k1 == k2
    assert all(a is b for a, b in zip(k1, k2))
    assert [str(f) for f in resolver.kernel_frames(5)] == list(k1)
    resolver.forget_stacks()
    assert resolver.kernel_texts(5) is not k1


def test_the_cache_is_bounded_by_the_frames_it_holds():
    """Deep stacks fill the cache by frames, not by count: past max_frames the oldest
    stacks go (and a process's forget gives its frames back)."""
    me = os.getpid()
    resolver = StackResolver(_Stacks(list(range(0x1000, 0x1000 + 16 * 50, 16))),
                             max_frames=120)
    first = resolver.user_texts(me, 1)
    resolver.user_texts(me, 2)
    assert resolver._held == 100
    resolver.user_texts(me, 3)  # 150 > 120: stack 1 goes
    assert resolver._held == 100 and resolver.user_texts(me, 2) is resolver.user_texts(me, 2)
    assert resolver.user_texts(me, 1) is not first
    resolver.forget(me)
    assert resolver._held == 0 and not resolver._texts
