# SPDX-License-Identifier: GPL-2.0-only
"""The runtime core on the real kernel: every attach kind and map kind, exact counts."""
from __future__ import annotations

import os
import subprocess
import time

import numpy as np
import pytest

from memlens.core import kernel, perf
from memlens.core.drops import Losses
from memlens.core.loader import BpfObject
from memlens.core.stackresolve import StackResolver
from memlens.errors import KernelLacks, MemlensError
from tests.conftest import build_workload

N = 23


class Gen:
    """core_gen in the background, stepped through its stdin."""

    def __init__(self, mode: str, n: int):
        self.proc = subprocess.Popen([str(build_workload("core_gen")), mode, str(n)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().startswith("ready")
        self.pid = self.proc.pid

    def work(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "done"

    def finish(self) -> None:
        self.proc.stdin.write("end\n")
        self.proc.stdin.flush()
        self.proc.wait(10)


def open_selftest(pid: int | None, only: tuple[str, ...]) -> BpfObject:
    kernel.ensure_tracefs()
    obj = BpfObject.open("core/selftest.bpf.o")
    if pid:
        obj.rodata["targ_tgid"] = pid
    for p in obj.programs():
        obj.set_autoload(p, p in only)
    return obj


def test_ringbuf_records_are_exact_and_decoded_from_btf():
    gen = Gen("getppid", N)
    with open_selftest(gen.pid, ("on_getppid",)) as obj:
        obj.load()
        obj.attach_tracepoint("on_getppid", "syscalls", "sys_enter_getppid")
        gen.work()
        dtype = obj.struct_dtype("selftest_event")
        assert dtype.itemsize == 40 and dtype["comm"] == np.dtype("S16")
        recs = obj.map("events").ringbuf().consume_fixed(dtype)
        assert len(recs) == N
        assert set(recs["pid"].tolist()) == {gen.pid}
        assert set(recs["comm"].tolist()) == {b"core_gen"}
        assert np.all(np.diff(recs["ts_ns"].astype(np.int64)) > 0)
        # the per-CPU counter, summed over CPUs
        assert int(obj.map("counts").array_values("<u8")[0]) == N
        # the user stack of each record names the function that made the syscall
        resolver = StackResolver(obj.map("stacks"))
        resolver.watch(gen.pid)
        frames = [str(f) for f in resolver.user_frames(gen.pid, int(recs["stack_id"][0]))]
        assert any(f.startswith("emit_getppid+") and f.endswith("[core_gen]")
                   for f in frames), frames
        # nothing more once consumed; ctypes decoding of the same struct agrees
        assert len(obj.map("events").ringbuf().consume_fixed(dtype)) == 0
        assert obj.struct_ctype("selftest_event").from_buffer_copy(recs[0].tobytes()).pid == gen.pid
    gen.finish()


def test_hash_map_batch_read_returns_every_key():
    n = 5003  # more than one batch chunk, prime
    gen = Gen("getpgid", n)
    with open_selftest(gen.pid, ("on_getpgid",)) as obj:
        obj.load()
        obj.attach_tracepoint("on_getpgid", "syscalls", "sys_enter_getpgid")
        gen.work()
        vdt = obj.struct_dtype("selftest_value")
        keys, vals = obj.map("by_arg").items("<u8", vdt)
        assert sorted(keys.tolist()) == list(range(1, n + 1))
        assert set(vals["count"].tolist()) == {1} and set(vals["pid"].tolist()) == {gen.pid}
        assert obj.map("by_arg").clear() == n
        assert len(obj.map("by_arg").items("<u8", vdt)[0]) == 0
    gen.finish()


def test_full_ring_counts_every_lost_event():
    gen = Gen("getppid", 20000)
    with open_selftest(gen.pid, ("on_getppid",)) as obj:
        obj.set_max_entries("events", 4096)  # holds 73 records of 48 bytes + header
        obj.load()
        obj.attach_tracepoint("on_getppid", "syscalls", "sys_enter_getppid")
        gen.work()  # nobody consumes while the generator runs
        got = len(obj.map("events").ringbuf().consume_fixed(obj.struct_dtype("selftest_event")))
        lost = Losses(obj).new()
        assert got > 0
        assert [r for r in lost if r["what"] == "events"][0]["count"] == 20000 - got
    gen.finish()


def test_uprobe_is_scoped_to_the_pid_given():
    traced, other = Gen("call", N), Gen("call", 7)
    binary = str(build_workload("core_gen"))
    with open_selftest(None, ("on_uprobe",)) as obj:
        obj.load()
        obj.attach_uprobe("on_uprobe", binary, "target_function", pid=traced.pid)
        other.work()
        traced.work()
        assert int(obj.map("counts").array_values("<u8")[1]) == N
    traced.finish()
    other.finish()


def test_usdt_probe_in_python_gc():
    python = "/usr/bin/python3.11"
    if not os.path.exists(python):
        pytest.skip("Debian's python3.11 (with USDT notes) is not installed")
    proc = subprocess.Popen([python, "-c", "import gc,sys; sys.stdin.readline(); "
                             "[gc.collect() for _ in range(23)]; sys.stdin.readline()"],
                            stdin=subprocess.PIPE, text=True)
    time.sleep(0.3)
    with open_selftest(None, ("on_usdt",)) as obj:
        obj.load()
        obj.attach_usdt("on_usdt", python, "python", "gc__start", pid=proc.pid)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        time.sleep(0.5)
        assert int(obj.map("counts").array_values("<u8")[2]) >= N
    proc.communicate("end\n", timeout=10)


def test_perf_event_page_faults_on_every_cpu():
    gen = Gen("call", 1)
    with open_selftest(gen.pid, ("on_perf_event",)) as obj:
        obj.load()
        for cpu in perf.online_cpus():
            fd = perf.open_event(perf.PERF_TYPE_SOFTWARE, perf.PERF_COUNT_SW_PAGE_FAULTS, cpu)
            obj.attach_perf_event("on_perf_event", fd)  # the link owns (and closes) fd
        before = _faults(gen.pid)
        gen.work()
        after = _faults(gen.pid)
        counted = int(obj.map("counts").array_values("<u8")[3])
    gen.finish()
    # every fault the kernel charged to the process between the two readings was seen
    assert counted == after - before


def _faults(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[7]) + int(fields[9])  # minflt + majflt


def test_each_phase_reports_its_own_error():
    with pytest.raises(MemlensError, match="opening BPF object"):
        BpfObject("/nonexistent.bpf.o")
    with open_selftest(None, ("on_missing",)) as obj:
        obj.load()
        with pytest.raises(KernelLacks, match="tracepoint nonexistent_category:nonexistent_event"):
            obj.attach_tracepoint("on_missing", "nonexistent_category", "nonexistent_event")
    with open_selftest(None, ("on_getppid",)) as obj:
        with pytest.raises(MemlensError, match="no global variable"):
            obj.rodata["no_such_var"] = 1
        obj.load()
        with pytest.raises(MemlensError, match="fixed once the object is loaded"):
            obj.rodata["targ_tgid"] = 1


def test_hash_maps_allocate_on_insert_where_the_kernel_has_its_allocator():
    """The probe (a perf_event program referring to a hash map without preallocation)
    says yes exactly where the kernel has the any-context BPF allocator that made such
    maps safe in tracing programs (6.1: struct bpf_mem_alloc in its BTF, an independent
    witness); the engine's count table and stack store are then made that way, and a
    program using them loads and counts."""
    from memlens.core import loader

    loader.hash_maps_may_allocate.cache_clear()
    allowed = loader.hash_maps_may_allocate()
    assert allowed == kernel.btf_has_name("bpf_mem_alloc")
    obj = BpfObject.open("core/engine.bpf.o")
    try:
        obj.allocate_on_insert("counts", "stacks", "starts", "scratch")
        flags = {name: obj.map_spec(name)[4] for name in ("counts", "stacks", "starts",
                                                           "scratch")}
    finally:
        obj.close()
    # an LRU hash and an array keep their flags: only plain hashes may allocate
    assert flags == {"counts": int(allowed), "stacks": int(allowed), "starts": 0,
                     "scratch": 0}
