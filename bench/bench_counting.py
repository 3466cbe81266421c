# SPDX-License-Identifier: GPL-2.0-only
"""Per-event cost of in-kernel counting: `memlens funccount`, `stackcount -U` and `count
--by comm,pid` against the bpftrace program that keeps the same count on the same event,
in one run.

Events: getppid() made N times through syscall(SYS_getppid) (glibc cannot cache it), and
page faults: M fresh anonymous pages touched one byte each (1 MiB mmap'ed without huge
pages, written, munmap'ed, repeated).  The generator, pinned to one CPU, times its own
loop in its own CPU time (CLOCK_THREAD_CPUTIME_ID: the kernel's work for it, BPF programs
included, not the time other processes take from its CPU), in SLICES equal slices; a run's
figure is its fastest slice, since a busy shared machine only ever adds time.  Overhead =
traced - untraced ns/event, medians of RUNS interleaved rounds (in each, per case:
untraced, memlens, untraced, bpftrace; the untraced runs pooled per event), each traced run
in a fresh tracer; a ratio is printed only where both overheads exceed twice their noise.
The hook's own price, common to both tools, is shown apart: bpftrace with an empty action.

Correctness: the tracer stops (SIGINT) while the generator is still alive, and its final
count for the generator must be N (getppid) or the generator's own perf software-event
count of its page faults.  funccount and @[probe] have no per-process key, so other
processes' getppid() calls land in the same number: there a count above N is reported as
"+k others", below N as lost.  Stacks are the generator's when they hold `countgen_run`.

    python -m bench counting       (root; bpftrace for the peer column; about 90 s)
    BENCH_COUNTING_N / _PAGES / _RUNS override N, M and RUNS.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import common  # noqa: E402
from bench.common import CPU, MEMLENS, emit_result  # noqa: E402

N = int(os.environ.get("BENCH_COUNTING_N", "1000000"))
M = int(os.environ.get("BENCH_COUNTING_PAGES", "200000"))
RUNS = int(os.environ.get("BENCH_COUNTING_RUNS", "3"))
SLICES = 20

GEN_C = r"""
#define _GNU_SOURCE
#include <linux/perf_event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CHUNK_PAGES 256 /* 1 MiB, and MADV_NOHUGEPAGE: one fault per page, never a THP */
#define MAX_SLICES 1000

/* this thread's CPU time, kernel work on its behalf included (the BPF programs run in its
 * context); what other tenants of a shared machine take from its CPU is not counted */
static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static __attribute__((noinline)) void spin_getppid(long n) {
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
}

static __attribute__((noinline)) void touch_pages(long n, long page) {
    while (n > 0) {
        long k = n < CHUNK_PAGES ? n : CHUNK_PAGES;
        char *p = mmap(NULL, k * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        if (p == MAP_FAILED) { perror("mmap"); exit(1); }
        madvise(p, k * page, MADV_NOHUGEPAGE);
        for (long i = 0; i < k; i++)
            ((volatile char *)p)[i * page] = 1;
        munmap(p, k * page);
        n -= k;
    }
}

/* Its own frame, named: syscall() keeps no frame, so a frame-pointer walk from the leaf
 * skips spin_getppid and lands here, which marks the stack as the generator's. */
static __attribute__((noinline)) void countgen_run(int faults, long n, long page) {
    if (faults) touch_pages(n, page); else spin_getppid(n);
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s getppid|faults N SLICES\n", argv[0]); return 2; }
    int faults = strcmp(argv[1], "faults") == 0;
    long n = atol(argv[2]), slices = atol(argv[3]), page = sysconf(_SC_PAGESIZE), witness = -1;
    static long ns[MAX_SLICES];
    if (slices < 1 || slices > MAX_SLICES) return 2;
    struct perf_event_attr a = { .type = PERF_TYPE_SOFTWARE, .size = sizeof(a),
        .config = PERF_COUNT_SW_PAGE_FAULTS, .disabled = 1 };
    int fd = syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
    char c;
    setvbuf(stdout, NULL, _IONBF, 0);
    ns[0] = now_ns() - now_ns();
    /* warms printf's number path and the vDSO: no fault of ours outside the loop later */
    printf("ready %ld\n", ns[0]);
    if (read(0, &c, 1) != 1) return 1;
    if (fd >= 0) ioctl(fd, PERF_EVENT_IOC_ENABLE, 0);
    for (long s = 0; s < slices; s++) {
        long t0 = now_ns();
        countgen_run(faults, n / slices + (s < n % slices), page);
        ns[s] = now_ns() - t0;
    }
    if (fd >= 0) {
        ioctl(fd, PERF_EVENT_IOC_DISABLE, 0);
        if (read(fd, &witness, sizeof(witness)) != sizeof(witness)) witness = -1;
    }
    printf("%ld", witness);
    for (long s = 0; s < slices; s++) printf(" %ld", ns[s]);
    printf("\n");
    /* alive (and idle) until the tracer has printed, so both tools can name our frames */
    return read(0, &c, 1) < 0;
}
"""

GETPPID = "t:syscalls:sys_enter_getppid"
BT_GETPPID = "tracepoint:syscalls:sys_enter_getppid"
BT_FAULTS = "software:page-faults:1"


@dataclass
class Run:
    ns: float            # ns per event: the run's fastest slice, the generator's own clock
    expected: int        # N, or the generator's own page-fault count
    got: int | None      # the tracer's final count for the generator (None: no report)
    others: int = 0      # counted by the tracer, not the generator's
    lost: int = 0        # what the tracer itself reported as lost
    note: str = ""       # what went wrong, if anything did
    bpf_ns: float | None = None  # its BPF programs' own run time per run (bpf_stats)


def _total(values: dict) -> int:
    return sum(int(v) for v in values.values())


# How each case finds the generator's count in a final report: (memlens entries, pid) and
# (bpftrace @ map, pid) -> (the generator's, others').
def _ml_all(entries: list[dict], _pid: int) -> tuple[int, int]:
    return sum(e["count"] for e in entries), 0


def _ml_stack(entries: list[dict], _pid: int) -> tuple[int, int]:
    ours = sum(e["count"] for e in entries if any("countgen_run" in f for f in e["stack"]))
    return ours, sum(e["count"] for e in entries) - ours


def _ml_pid(entries: list[dict], pid: int) -> tuple[int, int]:
    ours = sum(e["count"] for e in entries if e.get("pid") == pid)
    return ours, sum(e["count"] for e in entries) - ours


def _bt_all(m: dict, _pid: int) -> tuple[int, int]:
    return _total(m), 0


def _bt_stack(m: dict, _pid: int) -> tuple[int, int]:
    ours = sum(int(v) for k, v in m.items() if "countgen_run" in k)
    return ours, _total(m) - ours


def _bt_pid(m: dict, pid: int) -> tuple[int, int]:  # keys are "comm,pid"
    ours = sum(int(v) for k, v in m.items() if k.rsplit(",", 1)[-1] == str(pid))
    return ours, _total(m) - ours


@dataclass
class Case:
    name: str
    kind: str                                   # generator mode: getppid | faults
    memlens: list[str] | None                   # None: a bpftrace-only reference
    bpftrace: str
    ml_count: Callable[[list[dict], int], tuple[int, int]] = _ml_all
    bt_count: Callable[[dict, int], tuple[int, int]] | None = _bt_all
    keyed: bool = True                          # the count can be told apart per process


CASES = [
    Case("funccount", "getppid", ["funccount", GETPPID],
         BT_GETPPID + " { @[probe] = count(); }", _ml_all, _bt_all, keyed=False),
    Case("stackcount -U", "getppid", ["stackcount", "-U", GETPPID],
         BT_GETPPID + " { @[ustack] = count(); }", _ml_stack, _bt_stack),
    Case("count --by comm,pid", "getppid", ["count", GETPPID, "--by", "comm,pid"],
         BT_GETPPID + " { @[comm, pid] = count(); }", _ml_pid, _bt_pid),
    Case("count sw:page-faults", "faults", ["count", "sw:page-faults", "--by", "comm,pid"],
         BT_FAULTS + " { @[comm, pid] = count(); }", _ml_pid, _bt_pid),
]
# the hook and an empty program: the part of every overhead that no tool can save
FLOORS = [Case("hook alone", "getppid", None, BT_GETPPID + " { }", bt_count=None),
          Case("hook alone", "faults", None, BT_FAULTS + " { }", bt_count=None)]


def build(tmp: Path) -> Path:
    exe = tmp / "countgen"
    (tmp / "countgen.c").write_text(GEN_C)
    # frame pointers: both tools walk user stacks by them
    subprocess.run(["gcc", "-O2", "-fno-omit-frame-pointer", "-o", str(exe),
                    str(tmp / "countgen.c")], check=True)
    return exe


class Generator(common.Generator):
    """The generator, started and waiting: `go` runs its loop, `close` lets it exit."""

    def __init__(self, exe: Path, kind: str):
        self.n = N if kind == "getppid" else M
        self.kind = kind
        super().__init__([str(exe), kind, str(self.n), str(SLICES)])

    def go(self) -> tuple[float, int]:
        """Run the loop: ns per event of the fastest slice, and the count to expect."""
        witness, *ns = self.loop()
        per_slice = -(-self.n // SLICES)  # the first slices hold the remainder
        return min(ns) / per_slice, (self.n if self.kind == "getppid" else witness)

def _traced(exe: Path, case: Case, argv: list[str], stream: str, marker: str,
            parse: Callable[[str, int], tuple[int | None, int, int]]) -> Run:
    g = Generator(exe, case.kind)
    bpf_runs: list = []
    try:
        (ns, expected), out, err, note, rc = common.traced(argv, stream, marker, g.go,
                                                           bpf_runs)
    finally:
        g.close()
    got, others, lost = parse(out, g.pid)
    if got is None and not note:
        note = f"no final report (exit {rc}): {err.strip()[-200:]}"
    if note:
        print(f"  {argv[0]} {case.name}: {note}", file=sys.stderr)
    run_ns, runs = bpf_runs[0] if bpf_runs else (0, 0)
    return Run(ns, expected, got, others, lost, note, run_ns / runs if runs else None)


def run_untraced(exe: Path, case: Case) -> Run:
    g = Generator(exe, case.kind)
    try:
        ns, expected = g.go()
    finally:
        g.close()
    return Run(ns, expected, expected)


# memlens's "lost" kinds that are not events missing: the event was counted, its user stack
# is lesser — walked by frame pointers while the process's unwind tables were loading (the
# generator's first thousands of calls: it starts after the tracer, its libc's table takes a
# moment), cut at the store's depth, or left unnamed.  bench_counting once showed
# "stackcount -U lost=16000": 8000 of these, counted twice (the "lost" records, then the
# summary's totals).
STACK_QUALITY = ("unwind_fallback", "unwind_truncated", "symbols")


def run_memlens(exe: Path, case: Case) -> Run:
    def parse(out: str, pid: int) -> tuple[int | None, int, int]:
        records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        final = [r for r in records if r.get("type") == "report" and r.get("final")]
        # the summary's totals by kind (the "lost" records said the same as they came:
        # adding both counted each loss twice)
        kinds: dict = {}
        for r in records:
            if r.get("type") == "summary":
                kinds = r.get("lost", {})
        lost = sum(int(n) for k, n in kinds.items() if k not in STACK_QUALITY)
        degraded = sum(int(n) for k, n in kinds.items() if k in STACK_QUALITY)
        if degraded:
            print(f"  memlens {case.name}: {degraded} stacks counted but walked by frame "
                  "pointers, cut short or left unnamed (not lost)", file=sys.stderr)
        if not final:
            return None, 0, lost
        return (*case.ml_count(final[-1]["entries"], pid), lost)

    assert case.memlens is not None
    return _traced(exe, case, MEMLENS + case.memlens + ["--json"], "stderr",
                   "Hit Ctrl-C to end.", parse)


def run_bpftrace(exe: Path, case: Case) -> Run:
    def parse(out: str, pid: int) -> tuple[int | None, int, int]:
        if case.bt_count is None:  # a floor: nothing counted, nothing to check
            return 0, 0, 0
        records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        maps = [r["data"]["@"] for r in records
                if r.get("type") == "map" and "@" in r.get("data", {})]
        if not maps:
            return None, 0, 0
        return (*case.bt_count(maps[-1], pid), 0)

    prog = 'BEGIN { printf("READY\\n"); } ' + case.bpftrace
    run = _traced(exe, case, ["bpftrace", "-f", "json", "-e", prog], "stdout", "READY", parse)
    if case.bt_count is None:
        run.expected = run.got = 0
    return run


def main() -> int:
    if os.geteuid() != 0:
        print("bench_counting: needs root (BPF); skipped")
        return 0
    have_bt = shutil.which("bpftrace") is not None
    t_start = time.monotonic()
    plan: list[tuple[Case, str, Callable[[Path, Case], Run]]] = []
    for case in CASES:                     # interleaved: untraced, A, untraced, B, ...
        plan.append((case, "untraced", run_untraced))
        plan.append((case, "memlens", run_memlens))
        if have_bt:
            plan.append((case, "untraced", run_untraced))
            plan.append((case, "bpftrace", run_bpftrace))
    if have_bt:
        plan += [(f, "bpftrace", run_bpftrace) for f in FLOORS]
    results: dict[tuple[str, str, str], list[Run]] = {}
    # the BPF programs' own run time per event besides the generator's clock: a page
    # fault's cost is noisy here (+-150-250 ns), its program's run time is not
    stats = common.bpf_run_stats()
    with tempfile.TemporaryDirectory() as d:
        exe = build(Path(d))
        for kind in ("getppid", "faults"):  # warm-up, not counted: page cache, CPU clocks
            run_untraced(exe, next(c for c in CASES if c.kind == kind))
        for _ in range(RUNS):
            for case, who, fn in plan:
                # untraced runs are one pool per event: every traced run has a neighbour
                name = "" if who == "untraced" else case.name
                results.setdefault((name, case.kind, who), []).append(fn(exe, case))

    if stats is not None:
        os.close(stats)

    def bpf(case: Case, who: str) -> tuple[float, float] | None:
        """Median and MAD of the BPF run time per event of a tracer's runs (bpf_stats)."""
        xs = [r.bpf_ns for r in results[case.name, case.kind, who] if r.bpf_ns]
        if not xs:
            return None
        m = statistics.median(xs)
        return m, statistics.median(abs(x - m) for x in xs)

    def ns(case: Case, who: str) -> list[float]:
        return [r.ns for r in results["" if who == "untraced" else case.name, case.kind, who]]

    def med(case: Case, who: str) -> float:
        return statistics.median(ns(case, who))

    def mad(case: Case, who: str) -> float:
        """Median absolute deviation of a configuration's runs: noise, robust to one outlier."""
        m = med(case, who)
        return statistics.median(abs(v - m) for v in ns(case, who))

    def overhead(case: Case, who: str) -> tuple[float, float]:
        """traced - untraced, and its noise (the two MADs added in quadrature)."""
        return (med(case, who) - med(case, "untraced"),
                (mad(case, who) ** 2 + mad(case, "untraced") ** 2) ** 0.5)

    print(f"{N} getppid() / {M} fresh pages per run in {SLICES} slices, the fastest kept; "
          f"generator CPU time, pinned to CPU {CPU}")
    print(f"median of {RUNS} interleaved rounds (untraced runs pooled per event); "
          "+ns/ev = traced - untraced; \u00b1 = MAD")
    print(f"{'case':<21} {'untraced':>10} {'memlens':>10} {'bpftrace':>10} {'ratio':>6}  "
          f"{'memlens count':<14} {'bpftrace count':<14}")
    print(f"{'':<21} {'ns/ev':>10} {'+ns/ev':>10} {'+ns/ev':>10} {'ml/bt':>6}")
    summaries = []
    nan = float("nan")
    for case in CASES:
        base, base_sd = med(case, "untraced"), mad(case, "untraced")
        ml, ml_sd = overhead(case, "memlens")
        ml_ok = common.verdict(results[case.name, case.kind, "memlens"], case.keyed)
        bt, bt_sd = overhead(case, "bpftrace") if have_bt else (nan, nan)
        bt_ok = (common.verdict(results[case.name, case.kind, "bpftrace"], case.keyed)
                 if have_bt else "-")
        # a ratio of two overheads means something only when both stand well out of the noise
        measurable = have_bt and ml > 2 * ml_sd and bt > 2 * bt_sd
        ratio = f"{ml / bt:6.2f}" if measurable else f"{'n/a':>6}"
        print(f"{case.name:<21} {base:5.0f}\u00b1{base_sd:<4.0f} {ml:+5.0f}\u00b1{ml_sd:<4.0f} "
              f"{bt:+5.0f}\u00b1{bt_sd:<4.0f} {ratio}  {ml_ok:<14} {bt_ok:<14}")
        event = "getppid()" if case.kind == "getppid" else "page fault"
        line = (f"{case.name}: memlens adds {ml:.0f}\u00b1{ml_sd:.0f} ns per {event} "
                f"(untraced {base:.0f} ns)")
        if have_bt:
            line += f", bpftrace {bt:.0f}\u00b1{bt_sd:.0f} ns: "
            line += (f"memlens/bpftrace {ml / bt:.2f}x" if measurable
                     else "no ratio, an overhead is within twice its noise")
        ml_bpf = bpf(case, "memlens")
        bt_bpf = bpf(case, "bpftrace") if have_bt else None
        if ml_bpf:
            line += f"; BPF run time (bpf_stats) memlens {ml_bpf[0]:.0f}\u00b1{ml_bpf[1]:.0f} ns"
            if bt_bpf:
                line += (f", bpftrace {bt_bpf[0]:.0f}\u00b1{bt_bpf[1]:.0f} ns: "
                         f"{ml_bpf[0] / bt_bpf[0]:.2f}x")
        expected = sorted({r.expected for r in results[case.name, case.kind, "memlens"]})
        line += (f"; counts (expected {'/'.join(map(str, expected))}): memlens {ml_ok}"
                 + (f", bpftrace {bt_ok}" if have_bt else ""))
        summaries.append(line)
        emit_result("counting", {
            "case": case.name, "tool": case.name.split()[0], "event": event,
            "cost_ns": round(ml), "cost_noise_ns": round(ml_sd),
            "peer_cost_ns": None if not have_bt else round(bt),
            "peer_cost_noise_ns": None if not have_bt else round(bt_sd),
            "ratio": round(ml / bt, 2) if measurable else None, "counts": ml_ok,
            "peer_counts": bt_ok,
            "bpf_ns": round(ml_bpf[0]) if ml_bpf else None,
            "peer_bpf_ns": round(bt_bpf[0]) if bt_bpf else None,
            "bpf_ratio": round(ml_bpf[0] / bt_bpf[0], 2) if ml_bpf and bt_bpf else None})
    for line in summaries:
        print(line)
    if have_bt:
        floors = []
        for f in FLOORS:
            o, sd = overhead(f, "bpftrace")
            event = "getppid()" if f.kind == "getppid" else "page fault"
            floors.append(f"{o:+.0f}\u00b1{sd:.0f} ns per {event}")
        print("hook alone (bpftrace, empty action; part of every figure above): "
              + ", ".join(floors))
    for (name, kind, who), runs in results.items():
        for i, r in enumerate(runs, 1):
            if r.note:
                print(f"note: {who} {name or kind}, round {i}: {r.note}")
    print(f"({time.monotonic() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
