# SPDX-License-Identifier: GPL-2.0-only
"""Event streams at the producer's limit: `memlens mmapsnoop` and `memlens trace
t:syscalls:sys_exit_mmap`, text and JSON, to a file and to a pipe, against bpftrace printing
one line per sys_exit_mmap of the same program, all in one run.

The producer (tests/workloads/mmap_burst) makes N anonymous mmap(4 KiB)+munmap pairs as
fast as it can, timing itself; untraced runs are interleaved with the traced ones.  For
each tracer: the producer's rate, its slowdown against the untraced runs (per-event cost =
1/rate_traced - 1/rate_untraced), the events shown (lines in the output), the events the
tool counted lost, and whether shown + lost = made (exact accounting).  Zero loss at the
producer's maximum rate is the goal (issue 12); the tool's own CPU time per event is shown
too (ru_utime + ru_stime from wait4, less the same run's with a producer making no call:
start-up and exit are not per-event costs), and its peak RSS over the burst.

    python -m bench events          (root; bpftrace for the peer; ~1 minute)
    BENCH_EVENTS_N / _RUNS override N (200000) and the rounds (1).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import PeakRss, emit_result, memlens_argv  # noqa: E402
from tests.conftest import build_workload  # noqa: E402

N = int(os.environ.get("BENCH_EVENTS_N", "200000"))
RUNS = int(os.environ.get("BENCH_EVENTS_RUNS", "1"))
LOST_RE = re.compile(r"memlens: lost (\d+) events")

CASES = [  # (name, tool argv after -p PID, json, pipe)
    ("mmapsnoop text > file", ["mmapsnoop"], False, False),
    ("mmapsnoop --json > file", ["mmapsnoop", "--json"], True, False),
    ("mmapsnoop text | cat", ["mmapsnoop"], False, True),
    ("mmapsnoop --json | cat", ["mmapsnoop", "--json"], True, True),
    ("trace text > file", ["trace", "t:syscalls:sys_exit_mmap"], False, False),
    ("trace --json > file", ["trace", "--json", "t:syscalls:sys_exit_mmap"], True, False),
    ("trace text | cat", ["trace", "t:syscalls:sys_exit_mmap"], False, True),
    ("trace --json | cat", ["trace", "--json", "t:syscalls:sys_exit_mmap"], True, True),
]


class Producer:
    def __init__(self, n: int = N):
        self.n = n
        self.proc = subprocess.Popen([str(build_workload("mmap_burst")), str(n)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = int(self.proc.stdout.readline().split("=")[1])

    def run(self) -> float:
        self.proc.stdin.write("g")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        self.proc.stdin.close()
        self.proc.wait(timeout=120)
        return float(line.split("rate=")[1])


def _wait(proc: subprocess.Popen, timeout: float, peak: PeakRss) -> tuple[float, float]:
    """Wait for `proc`; its CPU time (user + system) in seconds and peak RSS in MB."""
    deadline = time.monotonic() + timeout
    while True:
        pid, _, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = 0
            return usage.ru_utime + usage.ru_stime, peak.stop()
        if time.monotonic() > deadline:
            proc.kill()
            deadline = float("inf")
        time.sleep(0.01)


def untraced() -> float:
    return Producer(N).run()


def run_memlens(argv: list[str], json_out: bool, pipe: bool, tmp: Path, n: int = N) -> dict:
    prod = Producer(n)
    out_path, err_path = tmp / "out", tmp / "err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        tool = subprocess.Popen(memlens_argv(argv[0], "-p", str(prod.pid), *argv[1:]),
                                stdout=subprocess.PIPE if pipe else out, stderr=err)
        reader = subprocess.Popen(["cat"], stdin=tool.stdout, stdout=out) if pipe else None
        if tool.stdout is not None:
            tool.stdout.close()
        peak = PeakRss(tool.pid)
        deadline = time.monotonic() + 30
        while "Hit Ctrl-C" not in err_path.read_text():
            if tool.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv}: no banner: {err_path.read_text()}")
            time.sleep(0.01)
        rate = prod.run()
        cpu, rss = _wait(tool, 120, peak)  # -p: ends by itself once the producer exits
        if reader is not None:
            reader.wait(timeout=60)
    text = out_path.read_text()
    if json_out:
        recs = [json.loads(x) for x in text.splitlines()]
        shown = sum(1 for r in recs if r["type"] == "event")
        lost = sum(r["count"] for r in recs if r["type"] == "lost" and r["what"] == "events")
    else:
        shown = max(len(text.splitlines()) - 1, 0)  # the header
        lost = sum(int(x) for x in LOST_RE.findall(err_path.read_text()))
    return {"rate": rate, "shown": shown, "lost": lost, "cpu_s": cpu, "rss_mb": rss}


def run_bpftrace(pid_pipe: bool, tmp: Path) -> dict:
    prod = Producer()
    prog = ('BEGIN { printf("READY\\n"); } tracepoint:syscalls:sys_exit_mmap '
            f'/pid == {prod.pid}/ {{ printf("%d %s %d\\n", pid, comm, args->ret); }}')
    out_path = tmp / "bt.out"
    with open(out_path, "w") as out:
        bt = subprocess.Popen(["bpftrace", "-e", prog], stdout=subprocess.PIPE if pid_pipe
                              else out, stderr=subprocess.DEVNULL)
        reader = subprocess.Popen(["cat"], stdin=bt.stdout, stdout=out) if pid_pipe else None
        if bt.stdout is not None:
            bt.stdout.close()
        peak = PeakRss(bt.pid)
        deadline = time.monotonic() + 60
        while "READY" not in out_path.read_text():
            if bt.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("bpftrace: no READY")
            time.sleep(0.01)
        rate = prod.run()
        # bpftrace does not end with its target: let its buffers drain, then stop it
        last, still = -1, 0
        while still < 3:
            size = out_path.stat().st_size
            still = still + 1 if size == last else 0
            last = size
            time.sleep(0.2)
        bt.send_signal(signal.SIGINT)
        cpu, rss = _wait(bt, 20, peak)
        if reader is not None:
            reader.wait(timeout=60)
    lines = out_path.read_text().splitlines()
    shown = sum(1 for x in lines if x[:1].isdigit())
    return {"rate": rate, "shown": shown, "lost": None, "cpu_s": cpu, "rss_mb": rss}


def main() -> None:
    have_bpftrace = shutil.which("bpftrace") is not None
    results: dict[str, list[dict]] = {}
    base: list[float] = []
    idle: dict[tuple, float] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for _, argv, json_out, _ in CASES:
            if tuple(argv) not in idle:
                idle[tuple(argv)] = run_memlens(argv, json_out, False, tmp, n=0)["cpu_s"]
        for _ in range(RUNS):
            base.append(untraced())
            if have_bpftrace:
                results.setdefault("bpftrace printf > file", []).append(run_bpftrace(False, tmp))
                base.append(untraced())
            for name, argv, json_out, pipe in CASES:
                r = run_memlens(argv, json_out, pipe, tmp)
                r["cpu_s"] -= idle[tuple(argv)]
                results.setdefault(name, []).append(r)
                base.append(untraced())
    rate0 = statistics.median(base)
    print(f"producer: {N:,} mmap+munmap pairs; untraced {rate0:,.0f} pairs/s "
          f"(median of {len(base)})")
    print(f"{'tracer':<26} {'pairs/s':>9} {'slowdown':>8} {'ns/event':>8} {'shown':>8} "
          f"{'lost':>7} {'exact':>5} {'CPU us/ev':>9} {'peak MB':>7}")
    peer_cost = None
    rows = []
    for name, runs in results.items():
        rate = statistics.median(r["rate"] for r in runs)
        shown = min(r["shown"] for r in runs)
        lost = max((r["lost"] or 0) for r in runs)
        exact = all(r["lost"] is None or r["shown"] + r["lost"] == N for r in runs)
        cost_ns = (1 / rate - 1 / rate0) * 1e9
        cpu_us = statistics.median(r["cpu_s"] for r in runs) / N * 1e6
        rss = max(r["rss_mb"] for r in runs)
        if name.startswith("bpftrace"):
            peer_cost = cost_ns
        rows.append((name, rate, cost_ns, shown, lost, exact, cpu_us, rss))
        print(f"{name:<26} {rate:>9,.0f} {rate0 / rate:>7.2f}x {cost_ns:>8.0f} {shown:>8,} "
              f"{lost:>7,} {'yes' if exact else 'NO':>5} {cpu_us:>9.2f} {rss:>7.1f}")
    if peer_cost:
        print("per-event cost on the producer, memlens / bpftrace: " + ", ".join(
            f"{n} {c / peer_cost:.2f}x" for n, _, c, *_ in rows if not n.startswith("bpf")))
    for name, rate, cost_ns, shown, lost, exact, cpu_us, rss in rows:
        tool = name.split()[0]
        emit_result("events", {
            "case": name, "tool": tool, "producer_rate": round(rate),
            "untraced_rate": round(rate0), "cost_ns": round(cost_ns),
            "peer_cost_ns": round(peer_cost) if peer_cost else None,
            "shown": shown, "lost": lost, "made": N, "exact": exact,
            "zero_loss": shown == N, "tool_cpu_us_per_event": round(cpu_us, 3),
            "peak_rss_mb": round(rss, 1)})


if __name__ == "__main__":
    main()
