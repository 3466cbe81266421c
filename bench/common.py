# SPDX-License-Identifier: GPL-2.0-only
"""What the benchmarks share: how to run memlens, and how a bench hands its figures to the
report (`python -m bench` writes docs/BENCHMARKS.md from them).

A bench prints its own table for a reader, and calls emit_result() for each figure the
report's summary uses: one JSON object a line in the file named by $BENCH_RESULTS (set by
`python -m bench`; unset when a bench runs alone, and then nothing is written)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def memlens_argv(*args: str) -> list[str]:
    """The command line a user runs: the venv's `memlens` script (its interpreter start,
    site and imports included in every figure), else this interpreter's -m memlens."""
    script = ROOT / ".venv" / "bin" / "memlens"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "memlens", *args]


def emit_result(bench: str, figures: dict) -> None:
    path = os.environ.get("BENCH_RESULTS")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"bench": bench, **figures}) + "\n")


def vm_hwm_mb(pid: int) -> float | None:
    """The process's peak RSS so far (VmHWM), in MB; None once it is gone.

    Not wait4's ru_maxrss: a child started by vfork (Python's subprocess) carries its
    parent's peak RSS across exec (the kernel keeps the larger of the two), so a tool started
    by a bench that has read a large output "peaks" at the bench's size."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


class PeakRss:
    """VmHWM of a running process, read every `period` seconds by a thread: the value is
    its peak RSS up to the last read before it exited."""

    def __init__(self, pid: int, period: float = 0.02):
        import threading

        self.pid, self.period, self.mb = pid, period, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            mb = vm_hwm_mb(self.pid)
            if mb is None:
                return
            self.mb = max(self.mb, mb)
            self._stop.wait(self.period)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.mb


# ---- what the per-event cost benches share (bench_counting, bench_faults, bench_reclaim) ----
# Each runs a generator pinned to one CPU (CPU), its tracers kept off it, waits for a tracer
# to say it is attached, runs the generator's loop, and stops the tracer with SIGINT.

ATTACH_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
STOP_SIGNALS = 4
CPU = max(os.sched_getaffinity(0))
OTHER_CPUS = os.sched_getaffinity(0) - {CPU}
MEMLENS = memlens_argv()


def away(proc) -> None:
    """The tracer off the generator's CPU (its BPF programs still run there, in the
    generator's context): its own work is not what is measured."""
    if OTHER_CPUS:
        try:
            os.sched_setaffinity(proc.pid, OTHER_CPUS)
        except OSError:
            pass


def wait_for(proc, stream, marker: str, what: str) -> None:
    """Read `stream` until a line holds `marker` (memlens's banner, bpftrace's READY)."""
    import time

    deadline = time.monotonic() + ATTACH_TIMEOUT
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            out, err = proc.communicate()
            raise RuntimeError(f"{what} exited before attaching: {out}{err}")
        if marker in line:
            return
    proc.kill()
    raise RuntimeError(f"{what}: not attached within {ATTACH_TIMEOUT:.0f} s")


def stop(proc, collect: bool = True) -> tuple[str, str, str]:
    """SIGINT until it exits: (stdout, stderr, note).  A tool that ignores SIGINT is a
    finding, not a crash: it is told again (bpftrace 0.17 sometimes sleeps on in epoll_wait
    after the first one) and the note says how many it took.  collect=False: its streams
    are read by threads of the caller's, ("", "", note)."""
    import signal
    import subprocess

    def wait() -> tuple[str, str]:
        if collect:
            return proc.communicate(timeout=STOP_TIMEOUT)
        proc.wait(timeout=STOP_TIMEOUT)
        return "", ""

    for attempt in range(1, STOP_SIGNALS + 1):
        proc.send_signal(signal.SIGINT)
        try:
            out, err = wait()
        except subprocess.TimeoutExpired:
            continue
        return out, err, "" if attempt == 1 else f"exited on SIGINT number {attempt}"
    try:
        with open(f"/proc/{proc.pid}/wchan") as f:
            wchan = f.read()
    except OSError:
        wchan = ""
    proc.kill()
    out, err = proc.communicate() if collect else ("", proc.wait() and "")
    return out, err, (f"ignored {STOP_SIGNALS} SIGINTs {STOP_TIMEOUT:.0f} s apart "
                      f"(asleep in {wchan or 'user space'}); killed")


def traced(argv: list[str], stream: str, marker: str, body, bpf_runs: list | None = None):
    """A tracer started off the generator's CPU, `marker` awaited on its `stream`
    ("stdout" or "stderr": it is attached), `body()` run meanwhile (the generator's loop),
    the tracer stopped with SIGINT (stop()); killed on any failure.  (body's result,
    stdout, stderr, note, exit status).  `bpf_runs`: gets the (run_time_ns, run_cnt) its
    programs added during body() (prog_run_time; zeros without run-time statistics on)."""
    import subprocess

    tr = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True)
    away(tr)
    try:
        wait_for(tr, tr.stderr if stream == "stderr" else tr.stdout, marker, " ".join(argv))
        before = prog_run_time(tr.pid) if bpf_runs is not None else (0, 0)
        result = body()
        if bpf_runs is not None:
            after = prog_run_time(tr.pid)
            bpf_runs.append((after[0] - before[0], after[1] - before[1]))
        out, err, note = stop(tr)
    finally:
        if tr.poll() is None:
            tr.kill()
            tr.wait()
    return result, out, err, note, tr.returncode


class Generator:
    """A generator process started and waiting at its gate ("ready" on its first line),
    pinned to CPU: `loop` runs its loop once and returns the numbers of its report line,
    `close` lets it exit (q, stdin closed; killed after 5 s)."""

    def __init__(self, argv: list[str], **popen):
        import subprocess

        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  **popen)
        self.ready = self.p.stdout.readline()
        if not self.ready.startswith(b"ready"):
            self.p.kill()
            self.p.wait()
            raise RuntimeError(f"{argv[0]} did not start: {self.ready!r}")
        self.pid = self.p.pid
        os.sched_setaffinity(self.pid, {CPU})  # one CPU: no migrations inside the loop

    def loop(self) -> list[int]:
        self.p.stdin.write(b"x")
        self.p.stdin.flush()
        return [int(x) for x in self.p.stdout.readline().split()]

    def close(self) -> bool:
        """False if it had to be killed."""
        import subprocess

        if self.p.poll() is not None:
            return True
        try:
            self.p.stdin.write(b"q")
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.p.wait(timeout=5)
            return True
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            return False


def mad(values: list[float]) -> float:
    """Median absolute deviation: noise, robust to an outlier."""
    import statistics

    m = statistics.median(values)
    return statistics.median(abs(v - m) for v in values)


def verdict(runs: list, keyed: bool = True, others: bool = False) -> str:
    """'ok' when every run counted exactly what its generator made, else what went wrong.
    A run has got (None: no final count), expected, lost (what the tracer said it lost),
    others, notes.  Short by exactly what the tracer counted as lost: "dropped N (counted)";
    short otherwise: LOST.  Above: another process's events in an unkeyed count ("+N
    others"), else WRONG.  A * when a run has notes (printed at the end)."""
    out = []
    failed = [r for r in runs if r.got is None]
    if failed:
        out.append(f"{len(failed)} FAILED")
    runs = [r for r in runs if r.got is not None]
    short = [r for r in runs if r.got < r.expected]
    extra = [r.got - r.expected for r in runs if r.got > r.expected]
    if short and all(r.got + r.lost == r.expected for r in short):
        out.append(f"dropped {max(r.expected - r.got for r in short)} (counted)")
    elif short:
        out.append(f"LOST {max(r.expected - r.got for r in short)}")
    if extra:
        out.append(f"+{max(extra)} others" if not keyed else f"+{max(extra)} WRONG")
    if any(r.lost for r in runs) and not short:
        out.append(f"lost={max(r.lost for r in runs)}")
    if others and any(r.others for r in runs):
        out.append(f"others={max(r.others for r in runs)}")
    return (" ".join(out) or "ok") + ("*" if any(getattr(r, "notes", None) for r in runs)
                                      else "")


def bpf_run_stats() -> int | None:
    """Turns on the kernel's BPF run-time statistics (run_time_ns, run_cnt per program) for
    as long as the returned fd stays open: BPF_ENABLE_STATS, released with the fd when it is
    closed or the bench dies, so there is no sysctl (kernel.bpf_stats_enabled) to restore.
    None where the kernel refuses (before 5.8)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(16)  # enable_stats.type = BPF_STATS_RUN_TIME (0)
    fd = libc.syscall(321, 32, attr, 16)    # SYS_bpf on x86-64, BPF_ENABLE_STATS
    return fd if fd >= 0 else None


def prog_run_time(pid: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the BPF programs process `pid` holds (each once,
    by id), from its fds' fdinfo; zeros without run-time statistics on."""
    progs: dict[str, tuple[int, int]] = {}
    base = f"/proc/{pid}/fdinfo"
    try:
        fds = os.listdir(base)
    except OSError:
        return 0, 0
    for fd in fds:
        try:
            with open(f"{base}/{fd}") as f:
                info = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if "run_time_ns" in info and "prog_id" in info:
            progs[info["prog_id"].strip()] = (int(info["run_time_ns"]), int(info["run_cnt"]))
    return sum(v[0] for v in progs.values()), sum(v[1] for v in progs.values())


class Rounds:
    """The figures of a bench whose configurations each run their generator three loops
    (untraced, traced, untraced again): `results` {configuration: [its runs, a round each]},
    `kinds` {configuration: its generator}; a run has ns (the traced loop), before and
    after (the untraced ones) and overhead (ns minus the mean of before and after)."""

    def __init__(self, results: dict[str, list], kinds: dict[str, str]):
        self.results, self.kinds = results, kinds

    def untraced(self, kind: str) -> list:
        """Every run of generator `kind`, whatever traced it: its untraced loops."""
        return [r for name, runs in self.results.items() if self.kinds[name] == kind
                for r in runs]

    def baseline(self, kind: str) -> tuple[float, float]:
        """Every untraced loop of this generator: median and MAD."""
        import statistics

        loops = [v for r in self.untraced(kind) for v in (r.before, r.after)]
        return statistics.median(loops), mad(loops)

    def overhead(self, name: str) -> tuple[float, float]:
        """Median over rounds of traced - untraced (the same process's loops around it), and
        its noise: the rounds' MAD and, added in quadrature, the MAD of the difference
        between two untraced loops of one process (after - before, from every run of this
        generator), the noise a difference has with no tracer at all."""
        import statistics

        values = [r.overhead for r in self.results[name]]
        floor = mad([r.after - r.before for r in self.untraced(self.kinds[name])])
        return statistics.median(values), (mad(values) ** 2 + floor ** 2) ** 0.5

    def print_notes(self) -> None:
        if any(r.notes for runs in self.results.values() for r in runs):
            print("* = see the notes below")
        for name, runs in self.results.items():
            for i, r in enumerate(runs, 1):
                for n in r.notes:
                    print(f"note: {name}, round {i}: {n}")
