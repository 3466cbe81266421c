# SPDX-License-Identifier: GPL-2.0-only
"""Per-event cost of the page-fault tools against the same count done by bpftrace (and, for
faults with user stacks, by `perf record -e page-faults -g -c 1`), in one run.

    faults -S -p PID   vs  bpftrace software:minor-faults:1 + major-faults:1 /pid == PID/
                           { @minor[comm, pid] = count(); } (the two events faults uses)
    faults -U -p PID   vs  the same with @minor[comm, pid, ustack] (faults -U keys by pid,
                           comm and user stack), and vs perf record -e page-faults -c 1 -g -p
                           PID (perf's cost: a sample, callchain included, per fault)
    ffaults -p PID     vs  bpftrace software:page-faults:1 /pid == PID/ { @[comm, pid] =
                           count(); }: bpftrace 0.17 has no bpf_find_vma, so it cannot name
                           the file; the ratio is the price of ffaults' in-kernel mapping
                           lookup (and file key)
    hfaults            vs  nothing: its events (huge page faults) are rare; what is
                           measured is what it adds to every ordinary page fault (the
                           page-fault perf event with its mapping lookup, and the
                           kmem:mm_page_alloc tracepoint with its filter); bpftrace 0.17 has
                           no bpf_find_vma to do the same
    swapin -a          vs  bpftrace doing its work (bt_swapin): memcg:count_memcg_events
                           filtered to PSWPIN..PSWPOUT, sw:major-faults, and the fault
                           entry's stamp on every fault for the wait: what both add to every
                           ordinary page fault (the generator swaps nothing)
    growth -p PID      vs  nothing, on the same fault stream
    hook alone             bpftrace software:page-faults:1 { } (an empty program): the part
                           of every figure that no tool can save

Generators (compiled at run time, pinned to one CPU, the tracers kept off it when there is
another): M fresh anonymous pages touched one byte each (1 MiB mapped with MADV_NOHUGEPAGE,
written, unmapped, repeated); for ffaults, a 64 MiB file on disk (/var/tmp), warm in the
page cache, mapped MAP_PRIVATE 1 MiB at a time with MADV_RANDOM and written one byte per
page: one copy-on-write fault per page, each finding its page in the page cache.  Warm and
written, because on this kernel a warm *read* fault maps a whole large folio (64 MiB read
warm: 79 faults, not 16384) and a cold read (POSIX_FADV_DONTNEED first) costs ~25 us of
CPU per fault with +-10 % between runs, which buries a few hundred ns; a warm
copy-on-write fault costs ~3-4.5 us, steadily.

Timing: the generator times its loop in its own CPU time (CLOCK_THREAD_CPUTIME_ID: the BPF
programs and perf's sampling run in its context) in SLICES slices, counting each slice's
faults with getrusage; a loop's figure is its fastest slice, in ns per fault.  Each traced
configuration runs one generator three loops: untraced, traced (a fresh tracer, started and
waited for), untraced again (tracer stopped); its overhead is the traced loop minus the
mean of the two untraced ones of the same process, and the figure is the median over RUNS
rounds, the configurations interleaved in each.  Noise (+-): the rounds' MAD and, added in
quadrature, the MAD of (second - first untraced loop) over every run of that generator.  A
ratio is printed only where both overheads exceed twice their noise.  Shared machines are
noisy (other tenants' memory traffic moves a loop by 10-20 %): read the +- before a ratio.
The IRQ-work interrupts the generator's CPU took per fault are shown (irqw): one per fault
is bpf_find_vma releasing the mmap lock through an IRQ work, see irq_work_interrupts().

Correctness: the tracer stops (SIGINT) while the generator is still alive, and its final
count for the generator must equal the generator's own getrusage minflt+majflt delta over
its loop (faults -S and its bpftrace peer: minor and major each); hfaults and swapin must
count nothing for it.  A stack tool's faults whose stack misses the generator's
`faultgen_touch` are reported; ffaults' [unresolved] row (mapping lock busy) is added to its
count and reported, and a file it could only name `[dev M:N ino I]` (no mapping of it in
the generator's maps when it looked) is matched by inode, and reported.  perf's count is
the samples it says it wrote ("(N samples)"): with -p, every one is a generator's fault.

    python -m bench faults        (root; bpftrace and perf for the peer columns; ~75 s)
    BENCH_FAULTS_PAGES / _FILE_PAGES / _RUNS override M (anon), the file faults and RUNS.
"""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import common  # noqa: E402
from bench.common import CPU, MEMLENS, away, stop  # noqa: E402

M = int(os.environ.get("BENCH_FAULTS_PAGES", "60000"))
M_FILE = int(os.environ.get("BENCH_FAULTS_FILE_PAGES", "20000"))
RUNS = int(os.environ.get("BENCH_FAULTS_RUNS", "6"))
FILE_MIB = 64
FILE_DIR = "/var/tmp"  # a disk file system: /tmp may be tmpfs (shmem, not a file mapping)
SLICES = 100
MARK = "faultgen_touch"

GEN_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define CHUNK_PAGES 256 /* 1 MiB per mapping */
#define MAX_SLICES 1000

static struct { long ns, faults; } slice[MAX_SLICES];
static char buf[1 << 20];
static int fd = -1;
static long file_chunks, next_chunk;

/* this thread's CPU time, kernel work on its behalf included (the BPF programs and perf's
 * sampling run in its context); what other tenants of the machine take is not counted */
static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void faults(long *minflt, long *majflt) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    *minflt = r.ru_minflt;
    *majflt = r.ru_majflt;
}

/* the faulting function, named: every stack of the loop's faults starts here */
static __attribute__((noinline)) void faultgen_touch(char *p, long k, long page) {
    for (long i = 0; i < k; i++)
        ((volatile char *)p)[i * page] = 1;
}

static __attribute__((noinline)) void faultgen_run(long n, long page) {
    while (n > 0) {
        long k = n < CHUNK_PAGES ? n : CHUNK_PAGES;
        char *p;
        if (fd < 0) { /* fresh anonymous memory, never a THP */
            p = mmap(NULL, k * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
            if (p == MAP_FAILED) { perror("mmap"); exit(1); }
            madvise(p, k * page, MADV_NOHUGEPAGE);
        } else {      /* the next MiB of the file, privately: a copy-on-write fault a page */
            p = mmap(NULL, k * page, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd,
                     (next_chunk++ % file_chunks) * CHUNK_PAGES * page);
            if (p == MAP_FAILED) { perror("mmap"); exit(1); }
            madvise(p, k * page, MADV_RANDOM);
        }
        faultgen_touch(p, k, page);
        munmap(p, k * page);
        n -= k;
    }
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s PAGES SLICES [FILE]\n", argv[0]);
        return 2;
    }
    long n = atol(argv[1]), slices = atol(argv[2]), page = sysconf(_SC_PAGESIZE);
    long min0, maj0, min1, maj1, a, b, c0, c1;
    char c;
    if (slices < 1 || slices > MAX_SLICES) return 2;
    if (argc == 4) {
        fd = open(argv[3], O_RDONLY);
        if (fd < 0) { perror(argv[3]); return 1; }
        file_chunks = lseek(fd, 0, SEEK_END) / (CHUNK_PAGES * page);
        if (file_chunks < 1) return 2;
        /* warm: every page of the file in the page cache before the loop */
        lseek(fd, 0, SEEK_SET);
        while (read(fd, buf, sizeof(buf)) > 0)
            ;
    }
    memset(slice, 0, sizeof(slice)); /* our own pages faulted now, not in the loop */
    setvbuf(stdout, NULL, _IONBF, 0);
    faults(&a, &b);
    slice[0].ns = now_ns() - now_ns();
    /* warms printf's number path and the vDSO: no fault of ours outside the loop later */
    printf("ready %ld %ld %ld\n", slice[0].ns, a, b);
    /* one loop per "x" on stdin, until anything else: untraced, traced, untraced again */
    while (read(0, &c, 1) == 1 && c == 'x') {
        faults(&min0, &maj0);
        for (long s = 0; s < slices; s++) {
            faults(&c0, &a);
            c0 += a;
            long t0 = now_ns();
            faultgen_run(n / slices + (s < n % slices), page);
            slice[s].ns = now_ns() - t0;
            faults(&c1, &a);
            slice[s].faults = c1 + a - c0;
        }
        faults(&min1, &maj1);
        printf("%ld %ld", min1 - min0, maj1 - maj0);
        for (long s = 0; s < slices; s++) printf(" %ld %ld", slice[s].ns, slice[s].faults);
        printf("\n");
    }
    return 0;
}
"""


@dataclass
class Run:
    ns: float                 # ns per fault: the loop's fastest slice, the generator's clock
    minflt: int               # the generator's own getrusage deltas over its loop
    majflt: int
    expected: int = 0         # what the tracer must count for the generator
    got: int | None = None    # what it counted (None: no final report)
    others: int = 0           # counted, but not the generator's
    lost: int = 0             # what the tracer itself reported as lost
    notes: list[str] = field(default_factory=list)  # what went wrong, if anything did
    before: float = 0.0       # ns per fault of the same generator's untraced loops: the one
    after: float = 0.0        # before the tracer started, the one after it stopped
    irq_work: float = 0.0     # IRQ-work interrupts on the generator's CPU per fault (traced)
    irq_work_untraced: float = 0.0  # the same in the untraced loops (someone else's)

    @property
    def overhead(self) -> float:
        return self.ns - (self.before + self.after) / 2


@dataclass
class Count:
    """A tracer's final count for the generator."""
    got: int
    others: int = 0
    notes: list[str] = field(default_factory=list)


# ---- reading the tools' final counts ----------------------------------------------------

def _split_note(minor: int, major: int, run: Run) -> list[str]:
    if (minor, major) == (run.minflt, run.majflt):
        return []
    return [f"minor/major {minor}/{major}, getrusage {run.minflt}/{run.majflt}"]


def _stack_note(n_marked: int, got: int) -> list[str]:
    return [] if n_marked == got else [f"{got - n_marked} stacks without {MARK}"]


def _final(records: list[dict]) -> dict | None:
    final = [r for r in records if r.get("type") == "report" and r.get("final")]
    return final[-1] if final else None


def ml_faults(records: list[dict], pid: int, run: Run, stacks: bool) -> Count | None:
    rep = _final(records)
    if rep is None:
        return None
    ours = [e for e in rep["entries"] if e.get("pid") == pid]
    got = sum(e["count"] for e in ours)
    c = Count(got, sum(e["count"] for e in rep["entries"]) - got)
    if stacks:
        c.notes += _stack_note(sum(e["count"] for e in ours
                                   if any(MARK in f for f in e.get("stack", []))), got)
    else:
        c.notes += _split_note(sum(e.get("minor", 0) for e in ours),
                               sum(e.get("major", 0) for e in ours), run)
    return c


def ml_ffaults(records: list[dict], _pid: int, run: Run, data: Path) -> Count | None:
    rep = _final(records)
    if rep is None:
        return None
    by_inode = f" ino {data.stat().st_ino}]"  # named so when no process maps it any more

    def ours(e: dict) -> bool:
        return e["file"] == str(data) or e["file"].endswith(by_inode)

    got = sum(e["faults"] for e in rep["entries"] if ours(e))
    unresolved = sum(e["faults"] for e in rep["entries"] if e["file"].startswith("[unres"))
    total = sum(e["faults"] for e in rep["entries"])
    c = Count(got + unresolved, total - got - unresolved)
    if unresolved:
        c.notes.append(f"{unresolved} faults [unresolved: mmap lock busy]")
    named = {e["file"] for e in rep["entries"] if ours(e)} - {str(data)}
    if named:
        c.notes.append(f"the file named {', '.join(sorted(named))}, not {data}: the "
                       "generator maps it 1 MiB at a time, and no mapping was in its maps "
                       "when ffaults looked")
    if c.others:
        top = max((e for e in rep["entries"] if not ours(e)
                   and not e["file"].startswith("[unres")), key=lambda e: e["faults"])
        c.notes.append(f"{c.others} faults on other files, most on {top['file']} "
                       f"({top['faults']})")
    return c


def ml_nothing(records: list[dict], pid: int, _run: Run) -> Count | None:
    """hfaults and swapin: every number in the generator's rows must be 0."""
    rep = _final(records)
    if rep is None:
        return None
    ours = sum(v for e in rep["entries"] if e.get("pid") == pid
               for k, v in e.items() if k != "pid" and isinstance(v, int))
    return Count(ours, sum(v for e in rep["entries"] if e.get("pid") != pid
                           for k, v in e.items() if k != "pid" and isinstance(v, int)))


def ml_growth(records: list[dict], _pid: int, _run: Run) -> Count | None:
    summary = [r for r in records if r.get("type") == "summary"]
    if not summary:
        return None
    s = summary[-1]
    got = int(s["faulted_pages_total"])
    marked = sum(p["pages"] for p in s.get("paths", []) if any(MARK in f for f in p["stack"]))
    return Count(got, 0, _stack_note(marked, got))


def _bt_pid(key: str) -> int:  # keys are "comm,pid[,stack]"
    try:
        return int(key.split(",")[1])
    except (IndexError, ValueError):
        return -1


def bt_split(maps: dict[str, dict], pid: int, run: Run, stacks: bool) -> Count:
    n = {name: sum(int(v) for k, v in maps.get(name, {}).items() if _bt_pid(k) == pid)
         for name in ("@minor", "@major")}
    got = n["@minor"] + n["@major"]
    c = Count(got, sum(int(v) for m in maps.values() for v in m.values()) - got)
    if stacks:
        c.notes += _stack_note(sum(int(v) for m in maps.values() for k, v in m.items()
                                   if _bt_pid(k) == pid and MARK in k), got)
    else:
        c.notes += _split_note(n["@minor"], n["@major"], run)
    return c


def bt_pid(maps: dict[str, dict], pid: int, _run: Run) -> Count:
    m = maps.get("@", {})
    got = sum(int(v) for k, v in m.items() if _bt_pid(k) == pid)
    return Count(got, sum(int(v) for v in m.values()) - got)


BT_SPLIT = ("software:minor-faults:1 /pid == {pid}/ {{ @minor[{key}] = count(); }} "
            "software:major-faults:1 /pid == {pid}/ {{ @major[{key}] = count(); }}")


def bt_swapin() -> str:
    """swapin's work in bpftrace, system-wide as `swapin -a` runs: pages swapped in and out
    from memcg:count_memcg_events filtered to PSWPIN..PSWPOUT (their values from BTF, as
    swapin reads them), major faults, and each major fault's wait from the fault's entry."""
    from memlens.core import btfenum

    items = btfenum.values("PSWPIN", "PSWPOUT")
    lo, hi = min(items.values()), max(items.values())
    # (the rest goes through str.format(pid=...) with the other programs: braces doubled)
    return (f"tracepoint:memcg:count_memcg_events /args->item >= {lo} && args->item <= {hi}/ "
            "{{ @sw[comm, pid, args->item] = sum(args->val); }} "
            "tracepoint:exceptions:page_fault_user {{ @s[tid] = nsecs; }} "
            "tracepoint:exceptions:page_fault_kernel {{ @s[tid] = nsecs; }} "
            "software:major-faults:1 {{ @maj[comm, pid] = count(); "
            "if (@s[tid]) {{ @w[comm, pid] = sum(nsecs - @s[tid]); delete(@s[tid]); }} }}")


def bt_nothing(maps: dict[str, dict], pid: int, _run: Run) -> Count:
    """swapin's peer: the generator swaps nothing and never waits on a read."""
    counted = [m for name, m in maps.items() if name in ("@sw", "@maj")]
    got = sum(int(v) for m in counted for k, v in m.items() if _bt_pid(k) == pid)
    return Count(got, sum(int(v) for m in counted for v in m.values()) - got)


# ---- the configurations -----------------------------------------------------------------

@dataclass
class Config:
    name: str                           # unique: "memlens faults -S", "bpftrace ffaults", ...
    kind: str                           # generator: anon | file
    tool: str                           # memlens | bpftrace | perf
    args: list[str] | str | None = None  # memlens arguments, or the bpftrace program
    count: Callable | None = None       # final records/maps -> Count (None: a floor)
    expect_nothing: bool = False        # hfaults, swapin: nothing to count in a fault stream


def configs(data: Path) -> list[Config]:
    return [
        Config("memlens faults -S", "anon", "memlens", ["faults", "-S"],
               lambda r, p, run: ml_faults(r, p, run, False)),
        Config("bpftrace faults -S", "anon", "bpftrace", BT_SPLIT.replace("{key}", "comm, pid"),
               lambda m, p, run: bt_split(m, p, run, False)),
        Config("memlens faults -U", "anon", "memlens", ["faults", "-U"],
               lambda r, p, run: ml_faults(r, p, run, True)),
        Config("bpftrace faults -U", "anon", "bpftrace",
               BT_SPLIT.replace("{key}", "comm, pid, ustack"),
               lambda m, p, run: bt_split(m, p, run, True)),
        Config("perf faults -U", "anon", "perf"),
        Config("memlens ffaults", "file", "memlens", ["ffaults"],
               lambda r, p, run: ml_ffaults(r, p, run, data)),
        Config("bpftrace ffaults", "file", "bpftrace",
               "software:page-faults:1 /pid == {pid}/ {{ @[comm, pid] = count(); }}", bt_pid),
        Config("memlens hfaults", "anon", "memlens", ["hfaults"], ml_nothing,
               expect_nothing=True),
        Config("memlens swapin", "anon", "memlens", ["swapin", "-a"], ml_nothing,
               expect_nothing=True),
        Config("bpftrace swapin", "anon", "bpftrace", bt_swapin(), bt_nothing,
               expect_nothing=True),
        Config("memlens growth", "anon", "memlens", ["growth"], ml_growth),
        Config("hook alone", "anon", "bpftrace", "software:page-faults:1 {{ }}"),
    ]


# (label, memlens config, peer config or None, what the peer is)
ROWS = [
    ("faults -S", "memlens faults -S", "bpftrace faults -S", "bpftrace"),
    ("faults -U", "memlens faults -U", "bpftrace faults -U", "bpftrace"),
    ("faults -U", "memlens faults -U", "perf faults -U", "perf record"),
    ("ffaults", "memlens ffaults", "bpftrace ffaults", "bpftrace (no vma)"),
    ("hfaults", "memlens hfaults", None, "nothing"),
    ("swapin -a", "memlens swapin", "bpftrace swapin", "bpftrace"),
    ("growth", "memlens growth", None, "nothing"),
]


# ---- running -----------------------------------------------------------------------------

def build(tmp: Path) -> Path:
    exe = tmp / "faultgen"
    (tmp / "faultgen.c").write_text(GEN_C)
    # frame pointers: every tool here walks user stacks by them
    subprocess.run(["gcc", "-O2", "-fno-omit-frame-pointer", "-o", str(exe),
                    str(tmp / "faultgen.c")], check=True)
    return exe


def make_file(tmp: Path) -> Path:
    data = tmp / "faultgen.dat"
    block = bytes(range(1, 256)) * 4112  # 1 MiB and a little: no page is all zeroes
    with open(data, "wb") as f:
        for _ in range(FILE_MIB):
            f.write(block[:1 << 20])
        f.flush()
        os.fsync(f.fileno())  # clean pages: nothing for writeback to do during a run
    return data


class Generator(common.Generator):
    """The generator, started and waiting: `go` runs its loop, `close` lets it exit."""

    def __init__(self, exe: Path, kind: str, data: Path):
        self.n = M if kind == "anon" else M_FILE
        super().__init__([str(exe), str(self.n), str(SLICES)]
                         + ([str(data)] if kind == "file" else []))

    def go(self) -> Run:
        iwi = irq_work_interrupts()
        minflt, majflt, *sl = self.loop()
        iwi = irq_work_interrupts() - iwi
        per_fault = [ns / f for ns, f in zip(sl[::2], sl[1::2]) if f > 0]
        return Run(min(per_fault), minflt, majflt, irq_work=iwi / max(1, minflt + majflt))


def irq_work_interrupts(cpu: int = CPU) -> int:
    """IRQ-work interrupts taken so far by `cpu` (IWI in /proc/interrupts).  bpf_find_vma
    called with interrupts off cannot release the mmap lock itself: it leaves that to an
    IRQ work (kernel/bpf/mmap_unlock_work.h), a self-interrupt on the faulting CPU, which
    costs microseconds in a virtual machine.  One per fault means the tool pays it."""
    try:
        with open("/proc/interrupts") as f:
            for line in f:
                if line.lstrip().startswith("IWI:"):
                    return int(line.split()[1 + cpu])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run_memlens(g: Generator, cfg: Config) -> tuple[Run, Count | None, int, str]:
    argv = MEMLENS + cfg.args + ["-p", str(g.pid), "--json"]
    run, out, err, note, rc = common.traced(argv, "stderr", "Hit Ctrl-C to end.", g.go)
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    lost = sum(sum(r.get("lost", {}).values()) for r in records if r.get("type") == "summary")
    lost += sum(int(r.get("count", 0)) for r in records if r.get("type") == "lost")
    count = cfg.count(records, g.pid, run)
    if count is None and not note:
        note = f"no final report (exit {rc}): {err.strip()[-200:]}"
    return run, count, lost, note


def run_bpftrace(g: Generator, cfg: Config) -> tuple[Run, Count | None, int, str]:
    prog = 'BEGIN { printf("READY\\n"); } ' + cfg.args.format(pid=g.pid)
    argv = ["bpftrace", "-f", "json", "-e", prog]
    run, out, err, note, rc = common.traced(argv, "stdout", "READY", g.go)
    if cfg.count is None:  # a floor: nothing counted, nothing to check
        return run, Count(0), 0, note
    maps: dict[str, dict] = {}
    for line in out.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            if r.get("type") == "map":
                maps.update(r["data"])
    if not maps and rc:
        return run, None, 0, note or f"no maps (exit {rc}): {err.strip()[-200:]}"
    return run, cfg.count(maps, g.pid, run), 0, note


def run_perf(g: Generator, cfg: Config, tmp: Path) -> tuple[Run, Count | None, int, str]:
    """perf record started with its events disabled (-D -1) and enabled through its control
    fifo: the ack says they are on, as READY does for bpftrace."""
    ctl, ack, out_file = tmp / "perf.ctl", tmp / "perf.ack", tmp / f"perf.{g.pid}.data"
    for f in (ctl, ack):
        if not f.exists():
            os.mkfifo(f)
    ctl_fd = os.open(ctl, os.O_RDWR)
    ack_fd = os.open(ack, os.O_RDWR | os.O_NONBLOCK)
    argv = ["perf", "record", "-e", "page-faults", "-c", "1", "-g", "-p", str(g.pid),
            "-o", str(out_file), "-m", "8M", "--no-buildid-cache",
            "-D", "-1", "--control", f"fifo:{ctl},{ack}"]
    tr = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True)
    away(tr)
    try:
        os.write(ctl_fd, b"enable\n")
        deadline = time.monotonic() + common.ATTACH_TIMEOUT
        acked = b""
        while b"ack" not in acked:
            if tr.poll() is not None or time.monotonic() > deadline:
                out, err = tr.communicate()
                raise RuntimeError(f"perf record did not start: {err.strip()[-300:]}")
            if select.select([ack_fd], [], [], 0.1)[0]:
                acked += os.read(ack_fd, 64)
        run = g.go()
        out, err, note = stop(tr)
    finally:
        if tr.poll() is None:
            tr.kill()
            tr.wait()
        os.close(ctl_fd)
        os.close(ack_fd)
        out_file.unlink(missing_ok=True)
    m = re.search(r"\((\d+) samples\)", err)
    if not m:
        return run, None, 0, note or f"no sample count (exit {tr.returncode}): {err[-200:]}"
    lost = re.search(r"lost (\d+)", err, re.IGNORECASE)
    # -p: perf samples only the generator, so every sample is one of its faults
    return run, Count(int(m[1])), int(lost[1]) if lost else 0, note


def run_traced(exe: Path, data: Path, tmp: Path, cfg: Config) -> Run:
    """One generator, three loops: untraced, traced (a fresh tracer, started and waited for,
    stopped after the loop while the generator lives on), untraced again."""
    g = Generator(exe, cfg.kind, data)
    try:
        first = g.go()
        if cfg.tool == "memlens":
            run, count, lost, note = run_memlens(g, cfg)
        elif cfg.tool == "bpftrace":
            run, count, lost, note = run_bpftrace(g, cfg)
        else:
            run, count, lost, note = run_perf(g, cfg, tmp)
        last = g.go()
        run.before, run.after = first.ns, last.ns
        run.irq_work_untraced = (first.irq_work + last.irq_work) / 2
    finally:
        g.close()
    run.expected = 0 if cfg.expect_nothing else run.minflt + run.majflt
    run.lost = lost
    if note:
        run.notes.append(note)
    if count is None:
        if not note:
            run.notes.append("no final count")
    else:
        run.got, run.others = count.got, count.others
        run.notes += count.notes
    if cfg.count is None:
        run.expected = run.got = 0
    for n in run.notes:
        print(f"  {cfg.name}: {n}", file=sys.stderr)
    return run


def main() -> int:
    if os.geteuid() != 0:
        print("bench_faults: needs root (BPF); skipped")
        return 0
    t_start = time.monotonic()
    have = {"memlens": True, "bpftrace": shutil.which("bpftrace") is not None,
            "perf": shutil.which("perf") is not None}
    results: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_faults.", dir=FILE_DIR) as d:
        tmp = Path(d)
        exe, data = build(tmp), make_file(tmp)
        cfgs = [c for c in configs(data) if have[c.tool]]
        for kind in ("anon", "file"):  # warm-up, not counted: page cache, CPU clocks
            g = Generator(exe, kind, data)
            g.go()
            g.close()
        for _ in range(RUNS):
            for cfg in cfgs:  # interleaved: each configuration in turn, round after round
                results.setdefault(cfg.name, []).append(run_traced(exe, data, tmp, cfg))
    kinds = {c.name: c.kind for c in configs(Path("x"))}
    rounds = common.Rounds(results, kinds)
    untraced, baseline, overhead = rounds.untraced, rounds.baseline, rounds.overhead

    def irq_work(name: str) -> float:
        return statistics.median(r.irq_work for r in results[name])

    print(f"{M} fresh anonymous pages / {M_FILE} copy-on-write faults on a warm {FILE_MIB} MiB "
          f"file per run, in {SLICES} slices, the fastest kept; generator CPU time, pinned "
          f"to CPU {CPU}")
    print(f"median of {RUNS} interleaved rounds; +ns/flt = traced loop - the same process's "
          "untraced loops before and after; \u00b1 = MAD (see overhead()); irqw = IRQ-work "
          "interrupts on the generator's CPU per fault")
    print(f"{'case':<10} {'peer':<17} {'untraced':>10} {'memlens':>11} {'peer':>11} "
          f"{'ratio':>6} {'irqw/flt':>9}  {'memlens count':<13} {'peer count':<13}")
    print(f"{'':<10} {'':<17} {'ns/flt':>10} {'+ns/flt':>11} {'+ns/flt':>11} {'ml/pr':>6} "
          f"{'ml  peer':>9}")
    lines = []
    for label, ml_name, peer_name, peer_what in ROWS:
        if ml_name not in results:
            continue
        kind = kinds[ml_name]
        base, base_sd = baseline(kind)
        ml, ml_sd = overhead(ml_name)
        ml_ok = common.verdict(results[ml_name], others=True)
        have_peer = peer_name is not None and peer_name in results
        measurable = False
        if have_peer:
            pr, pr_sd = overhead(peer_name)
            pr_ok = common.verdict(results[peer_name], others=True)
            # a ratio of two overheads means something only when both stand out of the noise
            measurable = ml > 2 * ml_sd and pr > 2 * pr_sd
            ratio = f"{ml / pr:6.2f}" if measurable else f"{'n/a':>6}"
            pr_col, pr_iw = f"{pr:+6.0f}\u00b1{pr_sd:<4.0f}", f"{irq_work(peer_name):4.1f}"
        else:
            ratio, pr_col, pr_ok, pr_iw = f"{'-':>6}", f"{'-':>11}", "-", "   -"
            if peer_name is not None:
                peer_what += " (missing)"
        print(f"{label:<10} {peer_what:<17} {base:5.0f}\u00b1{base_sd:<4.0f} "
              f"{ml:+6.0f}\u00b1{ml_sd:<4.0f} {pr_col} {ratio} {irq_work(ml_name):4.1f} "
              f"{pr_iw}  {ml_ok:<13} {pr_ok:<13}")
        event = "page fault" if kind == "anon" else "copy-on-write fault on a file"
        line = (f"{label}: memlens adds {ml:.0f}\u00b1{ml_sd:.0f} ns per {event} "
                f"(untraced {base:.0f} ns")
        if irq_work(ml_name) >= 0.5:
            line += f"; {irq_work(ml_name):.1f} IRQ-work interrupts per fault, bpf_find_vma's"
        line += ")"
        peer = peer_what.split()[0]
        if have_peer:
            line += f", {peer} {pr:.0f}\u00b1{pr_sd:.0f} ns: "
            line += (f"memlens/{peer} {ml / pr:.2f}x" if measurable
                     else "no ratio, an overhead is within twice its noise")
            if peer_name == "bpftrace ffaults":
                line += (f" (bpftrace 0.17 has no bpf_find_vma and counts by pid: the "
                         f"{ml - pr:.0f} ns between them is ffaults' mapping lookup and file "
                         "key)")
        elif label in ("hfaults", "swapin -a"):
            line += ("; against nothing: its events are rare, this is what it adds to every "
                     "ordinary page fault")
        else:
            line += "; against nothing (no peer)"
        expected = sorted({r.expected for r in results[ml_name]})
        line += (f"; counts (expected {'/'.join(map(str, expected))}): memlens {ml_ok}"
                 + (f", {peer} {pr_ok}" if have_peer else ""))
        lines.append(line)
    for line in lines:
        print(line)
    if "hook alone" in results:
        o, sd = overhead("hook alone")
        print(f"hook alone (bpftrace, software:page-faults, empty action; part of every figure "
              f"above): {o:+.0f}\u00b1{sd:.0f} ns per page fault")
    for kind in ("anon", "file"):
        stray = statistics.median(r.irq_work_untraced for r in untraced(kind))
        if stray >= 0.05:
            print(f"untraced {kind} loops took {stray:.2f} IRQ-work interrupts per fault: "
                  "another tracer on this machine is looking up mappings on our faults")
    rounds.print_notes()
    print(f"({time.monotonic() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
