# SPDX-License-Identifier: GPL-2.0-only
"""Ring-buffer consumers at increasing event rates: memlens's numpy batch reader on a 20 ms
timer vs libbpf's ring_buffer__poll with a per-event ctypes callback (the peer, what a naive
Python binding does), same BPF program, same generator, same minute.

Events: one 40-byte record per getppid() of a generator process pinned to CPU 1; the
consumer runs here, pinned to CPU 0.  Reports consumed, lost (counted by the BPF side when
bpf_ringbuf_reserve fails) and the generator's achieved rate.
"""
from __future__ import annotations

import ctypes as C
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import emit_result  # noqa: E402
from memlens.core import kernel  # noqa: E402
from memlens.core import libbpf as L  # noqa: E402
from memlens.core.drops import Losses  # noqa: E402
from memlens.core.loader import BpfObject  # noqa: E402
from tests.conftest import build_workload  # noqa: E402

N = int(os.environ.get("BENCH_RINGBUF_N", "3000000"))
RATES = [250_000, 500_000, 1_000_000, 0]  # 0 = as fast as the generator goes


def start_generator(n: int, rate: int) -> subprocess.Popen:
    """core_gen pinned to CPU 1, waiting for "go" on stdin before it starts."""
    gen = subprocess.Popen(["taskset", "-c", "1", str(build_workload("core_gen")), "rate",
                            str(n), str(rate)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True)
    gen.stdout.readline()
    return gen


def attach_getppid(pid: int) -> BpfObject:
    obj = BpfObject.open("core/selftest.bpf.o")
    obj.rodata["targ_tgid"] = pid
    for p in obj.programs():
        obj.set_autoload(p, p == "on_getppid")
    obj.load()
    obj.attach_tracepoint("on_getppid", "syscalls", "sys_enter_getppid")
    return obj


def run(rate: int, consumer: str) -> dict:
    gen = start_generator(N, rate)
    with attach_getppid(gen.pid) as obj:
        dtype = obj.struct_dtype("selftest_event")
        consumed = 0
        cpu0 = time.process_time()
        done = threading.Event()

        def finish() -> None:
            gen.stdin.write("go\n")
            gen.stdin.flush()
            line = gen.stdout.readline()
            gen.result = float(line.split()[-2])  # type: ignore[attr-defined]
            done.set()

        threading.Thread(target=finish, daemon=True).start()
        if consumer == "numpy-batch":
            ring = obj.map("events").ringbuf()
            while not done.is_set():
                time.sleep(0.02)
                consumed += len(ring.consume_fixed(dtype))
            consumed += len(ring.consume_fixed(dtype))
        else:
            lib = L.lib()._cdll
            cb_t = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_void_p, C.c_size_t)
            count = [0]

            @cb_t
            def on_sample(ctx, data, size):
                count[0] += 1
                return 0

            lib.ring_buffer__new.restype = C.c_void_p
            lib.ring_buffer__new.argtypes = [C.c_int, cb_t, C.c_void_p, C.c_void_p]
            lib.ring_buffer__poll.argtypes = [C.c_void_p, C.c_int]
            lib.ring_buffer__free.argtypes = [C.c_void_p]
            rb = lib.ring_buffer__new(obj.map("events").fd, on_sample, None, None)
            while not done.is_set():
                lib.ring_buffer__poll(rb, 20)
            while lib.ring_buffer__poll(rb, 0) > 0:
                pass
            lib.ring_buffer__free(rb)
            consumed = count[0]
        cpu = time.process_time() - cpu0
        lost = sum(r["count"] for r in Losses(obj).new() if r["what"] == "events")
    gen.stdin.write("end\n")
    gen.stdin.flush()
    gen.wait()
    return {"rate": rate, "consumer": consumer, "consumed": consumed, "lost": lost,
            "gen_rate": N / gen.result, "cpu_s": cpu}  # type: ignore[attr-defined]


def main() -> None:
    kernel.ensure_tracefs(quiet=True)
    os.sched_setaffinity(0, {0})
    print(f"{N} events per run; consumer on CPU 0, generator on CPU 1")
    print(f"{'target/s':>10} {'consumer':<16} {'achieved/s':>11} {'consumed':>9} "
          f"{'lost':>9} {'lost%':>6} {'cpu s':>6}")
    for rate in RATES:
        rows = [run(rate, c) for c in ("numpy-batch", "libbpf-callback")]
        for r in rows:
            print(f"{r['rate'] or 'max':>10} {r['consumer']:<16} {r['gen_rate']:>11,.0f} "
                  f"{r['consumed']:>9} {r['lost']:>9} {100 * r['lost'] / N:>6.2f} "
                  f"{r['cpu_s']:>6.2f}")
        a, b = rows
        print(f"{'':>10} consumer CPU callback/numpy = {b['cpu_s'] / max(a['cpu_s'], 1e-9):.1f}x")
        emit_result("ringbuf", {"rate": rate, "achieved": round(a["gen_rate"]),
                                "lost": a["lost"], "cpu_s": round(a["cpu_s"], 3),
                                "peer_lost": b["lost"], "peer_cpu_s": round(b["cpu_s"], 3)})
    both_cpus()
    drain()


def both_cpus() -> None:
    """Over 1 M events/s: one generator per CPU at full speed, the consumer sharing the
    CPUs with them (numpy batches only: this is the configuration memlens runs in)."""
    os.sched_setaffinity(0, set(range(os.cpu_count() or 2)))
    gens = []
    for cpu in (0, 1):
        g = subprocess.Popen(["taskset", "-c", str(cpu), str(build_workload("core_gen")), "rate",
                              str(N), "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
        g.stdout.readline()
        gens.append(g)
    obj = BpfObject.open("core/selftest.bpf.o")  # no pid filter: both generators
    for p in obj.programs():
        obj.set_autoload(p, p == "on_getppid")
    obj.load()
    obj.attach_tracepoint("on_getppid", "syscalls", "sys_enter_getppid")
    with obj:
        dtype = obj.struct_dtype("selftest_event")
        ring = obj.map("events").ringbuf()
        pids = [g.pid for g in gens]
        secs: list[float] = []

        def go(g: subprocess.Popen) -> None:
            g.stdin.write("go\n")
            g.stdin.flush()
            secs.append(float(g.stdout.readline().split()[-2]))

        threads = [threading.Thread(target=go, args=(g,)) for g in gens]
        for t in threads:
            t.start()
        ours = 0
        while any(t.is_alive() for t in threads):
            time.sleep(0.02)
            recs = ring.consume_fixed(dtype)
            ours += int(sum((recs["pid"] == p).sum() for p in pids))
        recs = ring.consume_fixed(dtype)
        ours += int(sum((recs["pid"] == p).sum() for p in pids))
        lost = sum(r["count"] for r in Losses(obj).new() if r["what"] == "events")
    for g in gens:
        g.stdin.write("end\n")
        g.stdin.flush()
        g.wait()
    print(f"two generators (one per CPU): {2 * N} events at {2 * N / max(secs):,.0f}/s "
          f"aggregate: consumed {ours}, lost {lost}")


def drain() -> None:
    """Pure consumer capacity: fill the ring with nobody reading, then time one drain."""
    gen = start_generator(340_000, 0)
    with attach_getppid(gen.pid) as obj:
        dtype = obj.struct_dtype("selftest_event")
        ring = obj.map("events").ringbuf()
        gen.stdin.write("go\n")
        gen.stdin.flush()
        gen.stdout.readline()
        t = time.perf_counter()
        n = len(ring.consume_fixed(dtype))
        dt = time.perf_counter() - t
    gen.stdin.write("end\n")
    gen.stdin.flush()
    gen.wait()
    print(f"drain of a pre-filled ring: {n} records in {dt * 1e3:.1f} ms = {n / dt / 1e6:.1f} M/s")
    emit_result("ringbuf", {"drain_records_per_s": round(n / dt)})


if __name__ == "__main__":
    main()
