# SPDX-License-Identifier: GPL-2.0-only
"""Steady churn for CHURN_S seconds (10 minutes; `make bench-long`): each tool runs system
wide, all at once, while new processes start and exit without pause (`ls` and `sh -c` at
~RATE a second: every one maps its libraries, grows its heap, faults its pages, and is a new
pid and comm key), and each tool's RSS is read from /proc every SAMPLE_S seconds.  A tool
whose memory follows the number of processes it has seen, rather than those alive, shows a
slope; the figure is the RSS after the first minute (caches warm) against the last.

    python -m bench --long           (root; ~10 minutes)
    BENCH_CHURN_S / _RATE override the duration (600) and process rate (40/s);
    BENCH_CHURN_TOOLS=faults,brkstack runs only those (a shorter measure of one change:
    BENCH_CHURN_S=90 BENCH_CHURN_TOOLS=faults python bench/bench_churn.py).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import emit_result, memlens_argv  # noqa: E402

CHURN_S = float(os.environ.get("BENCH_CHURN_S", "600"))
RATE = float(os.environ.get("BENCH_CHURN_RATE", "40"))
SAMPLE_S = 5.0
WARM_S = 60.0
TOOLS = {
    "mmapsnoop": ["mmapsnoop"],
    "trace": ["trace", "t:syscalls:sys_exit_mmap"],
    "brkstack": ["brkstack", "-i", "10"],
    "faults": ["faults", "-i", "10"],
    "count": ["count", "sw:page-faults", "--by", "comm,pid", "-i", "10"],
    "funccount": ["funccount", "t:syscalls:sys_enter_brk", "-i", "10"],
    "oomkill": ["oomkill"],
}
ONLY = [t for t in os.environ.get("BENCH_CHURN_TOOLS", "").split(",") if t]
if ONLY:
    TOOLS = {name: TOOLS[name] for name in ONLY}


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def churn(stop: threading.Event) -> int:
    n = 0
    cmds = [["ls", "-l", "/usr/lib"], ["sh", "-c", "echo $$ > /dev/null"]]
    while not stop.is_set():
        t = time.monotonic()
        subprocess.run(cmds[n % 2], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        n += 1
        time.sleep(max(0.0, 1 / RATE - (time.monotonic() - t)))
    return n


def main() -> None:
    procs = {}
    for name, args in TOOLS.items():
        procs[name] = subprocess.Popen(memlens_argv(*args), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True)
    for p in procs.values():
        for line in p.stderr:
            if "Hit Ctrl-C" in line:
                break
        threading.Thread(target=p.stderr.read, daemon=True).start()
    stop = threading.Event()
    count = [0]
    worker = threading.Thread(target=lambda: count.__setitem__(0, churn(stop)), daemon=True)
    t0 = time.monotonic()
    worker.start()
    samples: dict[str, list[tuple[float, float]]] = {n: [] for n in procs}
    while time.monotonic() - t0 < CHURN_S:
        time.sleep(SAMPLE_S)
        now = time.monotonic() - t0
        for name, p in procs.items():
            mb = rss_mb(p.pid)
            if mb is not None:
                samples[name].append((now, mb))
    stop.set()
    worker.join()
    for p in procs.values():
        p.send_signal(signal.SIGINT)
    for p in procs.values():
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
    secs = time.monotonic() - t0
    print(f"{CHURN_S:.0f} s of churn: {count[0]:,} processes started ({count[0] / secs:.0f}/s); "
          f"RSS every {SAMPLE_S:.0f} s")
    print(f"{'tool':<11} {'at 1 min':>9} {'at end':>8} {'max':>7} {'growth':>8} {'MB/h':>7}")
    for name, s in samples.items():
        warm = [mb for t, mb in s if t >= WARM_S] or [mb for _, mb in s]
        if not warm:
            print(f"{name:<11} no samples (exited early?)")
            continue
        first, last, top = warm[0], warm[-1], max(mb for _, mb in s)
        t_first = next((t for t, _ in s if t >= WARM_S), s[0][0])
        span_h = (s[-1][0] - t_first) / 3600
        slope = f"{(last - first) / span_h:>+7.1f}" if span_h > 0 else f"{'-':>7}"
        print(f"{name:<11} {first:>8.1f}M {last:>7.1f}M {top:>6.1f}M {last - first:>+7.1f}M "
              f"{slope}")
        emit_result("churn", {"tool": name, "rss_warm_mb": round(first, 1),
                              "rss_end_mb": round(last, 1), "rss_max_mb": round(top, 1),
                              "seconds": round(secs), "processes": count[0]})


if __name__ == "__main__":
    main()
