# SPDX-License-Identifier: GPL-2.0-only
"""Launch-to-attached time and peak RSS of each foundation tool, against the equivalent
bpftrace program (Debian's bpftrace 0.17) measured in the same run.

Attached = the moment the tool prints its banner (memlens prints it only after every probe
is attached; bpftrace runs BEGIN after attaching, and BEGIN prints READY here).  Peak RSS
is the child's ru_maxrss from wait4().  Median of 5 runs each.
"""
from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEMLENS = [str(ROOT / ".venv" / "bin" / "memlens")]
if not Path(MEMLENS[0]).exists():
    MEMLENS = [sys.executable, "-m", "memlens"]

TOOLS = {
    "oomkill": (["oomkill"], "tracepoint:oom:mark_victim { printf(\"%d\\n\", args->pid); }"),
    "brkstack": (["brkstack"], "tracepoint:syscalls:sys_enter_brk { @[ustack, comm] = count(); }"),
    "mmapsnoop": (["mmapsnoop"], "tracepoint:syscalls:sys_enter_mmap { printf(\"%d %s\\n\", "
                                 "pid, comm); }"),
}


def measure(argv: list[str], marker: str) -> tuple[float, float]:
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    attached = float("nan")
    for line in proc.stderr:
        if marker in line:
            attached = time.monotonic() - t0
            break
    drain = threading.Thread(target=proc.stderr.read, daemon=True)  # keep its pipe open
    drain.start()
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 15
    while True:
        pid, _, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:  # a tool that ignores SIGINT is a bug: show it
            proc.kill()
            print(f"  {' '.join(argv)}: did not exit within 15 s of SIGINT", file=sys.stderr)
            deadline = float("inf")
        time.sleep(0.02)
    proc.returncode = 0
    return attached, usage.ru_maxrss / 1024


def main() -> None:
    have_bpftrace = shutil.which("bpftrace") is not None
    print(f"{'tool':<10} {'memlens s':>9} {'bpftrace s':>10} {'memlens MB':>10} "
          f"{'bpftrace MB':>11} {'time ratio':>10} {'RSS ratio':>9}")
    for name, (args, bt_prog) in TOOLS.items():
        ours = [measure(MEMLENS + args, "Hit Ctrl-C to end.") for _ in range(5)]
        t_ours = statistics.median(t for t, _ in ours)
        m_ours = statistics.median(m for _, m in ours)
        if have_bpftrace:
            prog = 'BEGIN { printf("READY\\n"); } ' + bt_prog
            # bpftrace prints BEGIN output on stdout: route it to stderr for the marker
            peer = [measure(["sh", "-c", f"exec bpftrace -e '{prog}' 1>&2"], "READY")
                    for _ in range(5)]
            t_peer = statistics.median(t for t, _ in peer)
            m_peer = statistics.median(m for _, m in peer)
        else:
            t_peer = m_peer = float("nan")
        print(f"{name:<10} {t_ours:>9.3f} {t_peer:>10.3f} {m_ours:>10.1f} {m_peer:>11.1f} "
              f"{t_ours / t_peer:>10.2f} {m_ours / m_peer:>9.2f}")


if __name__ == "__main__":
    main()
