# SPDX-License-Identifier: GPL-2.0-only
"""Per-event cost of the shared-memory and slab tools against bpftrace doing the same print
or count, in one run (issue 9: "Per-event cost against bpftrace doing the same").

    shmsnoop -p PID     vs  bpftrace on sys_enter/sys_exit of shmat and shmdt, /pid == PID/:
                            the enter's arguments kept by tid, one line printed per exit
                            (shmsnoop prints one line per call from the same enter/exit pair)
    slabratetop -p PID  vs  bpftrace kmem:kmem_cache_alloc /pid == PID/
                            { @[str(args->name)] = count(); } and kmem:kmalloc /pid == PID/
                            { @k[args->bytes_alloc] = count(); }
    vmscan -p PID       vs  the book's vmscan.bt over the same tracepoints, /pid == PID/ (each
                            begin/end pair timed, summed, log2 histogram; pages summed)
    drsnoop -p PID      vs  bpftrace printing a line per reclaim episode (latency, pages)
                        under memory-cgroup reclaim made as below; the cost per episode is
                        the cost per page times the pages per episode each tool counted, and
                        the BPF programs' own run time per episode (the kernel's bpf_stats,
                        BPF_ENABLE_STATS held over the traced loop only) is shown beside it:
                        a reclaim episode costs ~200 us of CPU here, and a few us of tracing
                        are within the noise of a busy shared machine; that figure is not
    compactsnoop -p PID vs  bpftrace pairing mm_compaction_begin/end per thread (the order
                            from mm_compaction_suitable ret == COMPACT_CONTINUE, pages summed
                            from mm_compaction_migratepages), a line printed per episode
    numamove -p PID     vs  bpftrace pairing mm_migrate_pages_start/mm_migrate_pages per
                            thread: calls, pages moved and failed, time, by reason
                        compaction is made, not looped: COMPACT_MB MiB written, every other
                        page handed back (MADV_DONTNEED), then /proc/sys/vm/compact_memory
                        written (a trigger, no setting: nothing to restore), once a traced
                        run, by the generator: every zone compacted in its own context.  Its
                        time is the kernel's scanning, so these two are priced by the BPF
                        programs' run time alone (bpf_stats, as above) per compaction
                        episode / per migrate_pages() call, and per hit (every run of a
                        tracer's programs, other processes' filtered hits included)

Generators (compiled at run time, pinned to one CPU, the tracers kept off it when there is
another), SLICES slices a loop with PAUSE_US between them (off the clock, see PAUSE_US):
shm: a segment of 64 KiB (IPC_PRIVATE, created before the loop, IPC_RMID at exit,
by atexit, also when stdin closes), then N x (shmat; shmdt); sock: N x (socket(AF_UNIX,
SOCK_DGRAM); close); reclaim: run in a memory cgroup of its own (32 MiB, no swap; removed
on the way out, also on failure or SIGTERM) and brought to its limit first, N pages of a
64 MiB region populated (MADV_POPULATE_WRITE, 64 at a time) and handed back with MADV_FREE:
each charge at the limit reclaims lazy-free pages in the generator's own context, without
swap or disk I/O (lazy-free pages live on the file LRU since 4.12).
Each times its loop in its own CPU time (CLOCK_THREAD_CPUTIME_ID: the BPF programs run in
its context) in SLICES slices; a loop's figure is its fastest slice, in ns per shm call
(shm), per socket()+close() pair (sock) or per page (reclaim).

Each traced configuration runs one generator three loops: untraced, traced (a fresh tracer,
started and waited for: memlens's "Hit Ctrl-C to end." on stderr, bpftrace's READY from
BEGIN), untraced again (tracer stopped with SIGINT, again if it sleeps on: bpftrace 0.17);
the overhead is the traced loop minus the mean of the two untraced ones, the figure the
median over RUNS interleaved rounds, +- the rounds' MAD and, in quadrature, the MAD of
(after - before) over every run of that generator.  A ratio is printed only where both
overheads exceed twice their noise.  The tracers' output is read as it comes (a full pipe
would stall them, not the generator).

Correctness (the generator knows its counts): shmsnoop's events and bpftrace's lines for
the generator must be exactly 2N (N shmat + N shmdt, none failed); slabratetop's and
bpftrace's count of sock_inode_cache allocations by the generator must be exactly N (one
socket inode per socket; the other caches a socket touches are shown, not checked: slab
merging names them after whatever cache they share).  vmscan's and drsnoop's pages
reclaimed by memory-cgroup reclaim for the generator, and bpftrace's, must equal
/proc/vmstat's pglazyfreed delta over the loop (only lazy-free pages can be reclaimed in
that cgroup).  compactsnoop's and bpftrace's episodes for the generator must equal the
populated zones (/proc/zoneinfo: compact_memory compacts each once), their pages migrated
/proc/vmstat's pgmigrate_success delta over the pass; numamove's and bpftrace's pages moved
and failed must equal pgmigrate_success's and pgmigrate_fail's deltas (manual compaction
counts no compact_stall/compact_success: those are direct compaction's).

    python -m bench reclaim      (root; bpftrace for the peer column; ~1-2 min)
    BENCH_RECLAIM_N / _RUNS / _PAUSE_US override N, RUNS and PAUSE_US (0: bursts).
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import common  # noqa: E402
from bench.common import CPU, MEMLENS, STOP_TIMEOUT, away, emit_result, mad  # noqa: E402

N_SHM = int(os.environ.get("BENCH_RECLAIM_N", "5000"))  # shmat+shmdt pairs a loop
N_SOCK = int(os.environ.get("BENCH_RECLAIM_SOCKETS", "40000"))  # sockets a loop
RUNS = int(os.environ.get("BENCH_RECLAIM_RUNS", "5"))
# shm: 50 pairs (100 events) a slice, then a pause off the generator's clock so that a
# tracer's reader drains its ring: what is priced is an event delivered, not one dropped
# on a full ring (shmsnoop's holds a few hundred events: 800 a slice with 30 ms pauses lose
# ~40 %, 200 with 10 ms pauses lose some in a busy round).  The burst case (no pause, 1000
# events a slice) shows what a burst does.
SETTLE = 0.3  # s: after the loop, a tracer's output must be quiet this long before SIGINT
PAUSE_US = int(os.environ.get("BENCH_RECLAIM_PAUSE_US", "10000"))
# generator name -> (its mode, calls a loop, slices, pause between slices in us)
# reclaim: pages a loop, a multiple of 100 slices of CHUNK (64) pages
N_PAGES = -(-int(os.environ.get("BENCH_RECLAIM_PAGES", "128000")) // 6400) * 6400
# compact: MiB written, half handed back, then compact_memory (one pass a traced run)
COMPACT_MB = int(os.environ.get("BENCH_RECLAIM_COMPACT_MB", "512"))
GENS = {"shm": ("shm", N_SHM, 100, PAUSE_US), "shm burst": ("shm", N_SHM, 10, 0),
        "sock": ("sock", N_SOCK, 100, 0), "reclaim": ("lazy", N_PAGES, 100, 0),
        "compact": ("compact", COMPACT_MB, 1, 0)}
CGROUP_LIMIT = 32 << 20
# BENCH_RECLAIM_CASES=vmscan,drsnoop: only the rows whose label holds one of these
CASES = [c for c in os.environ.get("BENCH_RECLAIM_CASES", "").split(",") if c]
SOCK_CACHE = "sock_inode_cache"

GEN_C = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* 5.14 */
#endif
#define MAX_SLICES 1000
#define REGION_PAGES (64L << 8) /* lazy: 64 MiB, twice the memory cgroup's limit */
#define CHUNK 64                /* lazy: pages populated and freed at a time */
enum { SOCK, SHM, LAZY, COMPACT };
static long sl[MAX_SLICES];
static int shmid = -1;
static char *region;
static long rpos;
static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}
static void rm(void) { if (shmid >= 0) shmctl(shmid, IPC_RMID, NULL); }
/* lazy: n pages (a multiple of CHUNK) written in, charged to the memory cgroup, then
 * handed back with MADV_FREE: reclaim may drop them without swap.  Round the region: in a
 * cgroup at its limit every charge reclaims (the oldest lazy-free pages: the next ones) */
static long lazy(long n) {
    long bad = 0;
    for (long i = 0; i < n; i += CHUNK) {
        char *p = region + rpos * 4096;
        if (madvise(p, CHUNK * 4096, MADV_POPULATE_WRITE)) bad++;
        if (madvise(p, CHUNK * 4096, MADV_FREE)) bad++;
        rpos = (rpos + CHUNK) % REGION_PAGES;
    }
    return bad;
}
/* compact: n MiB written in, every other page handed back (MADV_DONTNEED: the holes go
 * to the buddy allocator, the pages left are movable), then every zone compacted by
 * writing /proc/sys/vm/compact_memory (a trigger, no setting: nothing to restore): the
 * compaction and its page migrations run in this process, synchronously */
static long compact(long n) {
    long pages = n << 8, bad = 0;
    if (!region) {
        region = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED) { region = NULL; return 1; }
        madvise(region, pages * 4096, MADV_NOHUGEPAGE); /* base pages: each one movable */
    }
    if (madvise(region, pages * 4096, MADV_POPULATE_WRITE)) bad++;
    for (long i = 1; i < pages; i += 2)
        if (madvise(region + i * 4096, 4096, MADV_DONTNEED)) bad++;
    FILE *f = fopen("/proc/sys/vm/compact_memory", "w");
    if (!f || fputs("1", f) < 0) bad++;
    if (f && fclose(f)) bad++;
    return bad;
}
static long run(int mode, long n) {
    long bad = 0;
    if (mode == LAZY) return lazy(n);
    if (mode == COMPACT) return compact(n);
    for (long i = 0; i < n; i++) {
        if (mode == SHM) {
            void *p = shmat(shmid, NULL, 0);
            if (p == (void *)-1) { bad++; continue; }
            if (shmdt(p)) bad++;
        } else {
            int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
            if (fd < 0) { bad++; continue; }
            close(fd);
        }
    }
    return bad;
}
int main(int argc, char **argv) {
    if (argc != 5) return 2;
    int mode = !strcmp(argv[1], "shm") ? SHM : !strcmp(argv[1], "lazy") ? LAZY
             : !strcmp(argv[1], "compact") ? COMPACT : SOCK;
    long n = atol(argv[2]), slices = atol(argv[3]), pause_us = atol(argv[4]), bad = 0;
    char c;
    if (slices < 1 || slices > MAX_SLICES) return 2;
    if (mode == LAZY) {
        region = mmap(NULL, REGION_PAGES * 4096, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED) { perror("mmap"); return 1; }
        madvise(region, REGION_PAGES * 4096, MADV_NOHUGEPAGE); /* one charge a page */
        if (lazy(REGION_PAGES)) { perror("madvise"); return 1; } /* the cgroup at its limit */
    }
    if (mode == SHM) {
        shmid = shmget(IPC_PRIVATE, 1 << 16, IPC_CREAT | 0600);
        if (shmid < 0) { perror("shmget"); return 1; }
        atexit(rm);
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    /* warm: the first calls' page faults, not in the loops */
    bad = mode == LAZY || mode == COMPACT ? 0 : run(mode, 10);
    sl[0] = now_ns() - now_ns();
    printf("ready %ld %ld\n", sl[0], bad);
    while (read(0, &c, 1) == 1 && c == 'x') {
        bad = 0;
        for (long s = 0; s < slices; s++) {
            long k = n / slices + (s < n % slices), t0 = now_ns();
            bad += run(mode, k);
            sl[s] = now_ns() - t0;
            if (pause_us) usleep(pause_us); /* off the clock: the tracer drains its ring */
        }
        printf("%ld", bad);
        for (long s = 0; s < slices; s++) printf(" %ld %ld", sl[s], n / slices + (s < n % slices));
        printf("\n");
    }
    return 0; /* the segment removed by atexit, also when stdin closes */
}
"""


@dataclass
class Run:
    ns: float                 # ns per unit (shm call, socket): the fastest slice
    bad: int = 0              # calls that failed in the generator's loop
    expected: int = 0
    got: int | None = None
    others: int = 0           # counted, but not what is checked
    lost: int = 0
    per_unit: float = 0.0     # events the tracer counted per unit (slab allocs per socket)
    notes: list[str] = field(default_factory=list)
    before: float = 0.0
    after: float = 0.0
    bpf_ns: int = 0           # the tracer's BPF programs' run time over the traced loop
    bpf_runs: int = 0         # ... and how many times they ran (hits, filtered ones too)
    vm: dict[str, int] = field(default_factory=dict)  # compact: /proc/vmstat deltas
    events: int = 0           # compact: episodes (compactsnoop), calls (numamove) counted
    zones: int = 0            # compact: populated zones, an episode each expected
    extra: dict[str, int] = field(default_factory=dict)  # compact: the tool's other sums

    @property
    def overhead(self) -> float:
        return self.ns - (self.before + self.after) / 2


VMSTAT_COMPACT = ("pgmigrate_success", "pgmigrate_fail", "compact_isolated",
                  "compact_migrate_scanned", "compact_free_scanned", "compact_stall",
                  "compact_success", "compact_fail", "compact_daemon_wake")


def vmstat(names=VMSTAT_COMPACT) -> dict[str, int]:
    """Those /proc/vmstat counters this kernel has."""
    with open("/proc/vmstat") as f:
        return {k: int(v) for k, v in (line.split() for line in f) if k in names}


def populated_zones(path: str = "/proc/zoneinfo") -> int:
    """Zones with pages (present > 0) on every node: compact_memory compacts each of them
    once (compact_node() skips a zone that is not populated_zone()), one episode each."""
    n = 0
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts[:1] == ["present"] and int(parts[1]) > 0:
                n += 1
    return n


def lazyfreed() -> int:
    """/proc/vmstat pglazyfreed: lazy-free (MADV_FREE) pages reclaim has dropped, machine
    wide.  Over a reclaim loop, the pages the generator's reclaim freed: nothing else in its
    cgroup can be reclaimed (no swap; its other pages are anonymous), and no other process
    here frees memory with MADV_FREE (one that did would show as LOST)."""
    with open("/proc/vmstat") as f:
        for line in f:
            if line.startswith("pglazyfreed "):
                return int(line.split()[1])
    raise RuntimeError("/proc/vmstat has no pglazyfreed")


class MemoryCgroup:
    """The reclaim generator's memory cgroup (v1 here; v2 where the memory controller is
    there), CGROUP_LIMIT and no swap; `remove` kills what is left in it and removes it (from
    a finally: also when the bench fails or is interrupted)."""

    def __init__(self):
        v1 = Path("/sys/fs/cgroup/memory")
        name = f"memlens_bench_{os.getpid()}"
        if (v1 / "memory.limit_in_bytes").exists():
            self.path = v1 / name
            limits = {"memory.limit_in_bytes": CGROUP_LIMIT,
                      "memory.memsw.limit_in_bytes": CGROUP_LIMIT}
        else:
            self.path = Path("/sys/fs/cgroup") / name
            limits = {"memory.max": CGROUP_LIMIT, "memory.swap.max": 0}
        self.path.mkdir()
        try:
            for knob, value in limits.items():
                if (self.path / knob).exists():
                    (self.path / knob).write_text(str(value))
        except OSError:
            self.remove()
            raise

    def enter(self) -> None:
        """preexec_fn: the child joins the cgroup before exec."""
        (self.path / "cgroup.procs").write_text("0")

    def remove(self) -> None:
        for _ in range(50):
            if not self.path.exists():
                return
            for pid in (self.path / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)
        print(f"bench_reclaim: could not remove {self.path}", file=sys.stderr)


class Generator(common.Generator):
    """The generator, started and waiting: `go` runs its loop, `close` lets it exit (the shm
    segment removed on the way out); the reclaim generator runs in the memory cgroup."""

    def __init__(self, exe: Path, gen: str, cgroup: MemoryCgroup | None = None):
        self.kind, n, slices, pause = GENS[gen]
        popen = {"preexec_fn": cgroup.enter} if self.kind == "lazy" else {}
        super().__init__([str(exe), self.kind, str(n), str(slices), str(pause)], **popen)

    def go(self) -> Run:
        freed = lazyfreed() if self.kind == "lazy" else 0
        vm0 = vmstat() if self.kind == "compact" else {}
        bad, *sl = self.loop()
        calls = 2 if self.kind == "shm" else 1  # ns per shm call; per socket()+close()
        run = Run(min(ns / (k * calls) for ns, k in zip(sl[::2], sl[1::2]) if k), bad)
        if self.kind == "lazy":  # pages the loop's reclaim freed: what a tracer must count
            run.expected = lazyfreed() - freed
        if self.kind == "compact":  # pages the compaction migrated, machine wide
            run.vm = {k: v - vm0[k] for k, v in vmstat().items() if k in vm0}
            run.zones = populated_zones()
            run.expected = run.vm["pgmigrate_success"]
        return run

    def close(self) -> None:
        if not super().close() and self.kind == "shm":  # no atexit then: say so
            print(f"  generator {self.pid} killed: check `ipcs -m` for its segment",
                  file=sys.stderr)


class Reader(threading.Thread):
    """Reads a tracer's stream as it comes; `seen` is set once `marker` went by."""

    def __init__(self, stream, marker: str | None = None):
        super().__init__(daemon=True)
        self.stream, self.marker = stream, marker
        self.lines: list[str] = []
        self.seen = threading.Event()
        self.start()

    def run(self) -> None:
        for line in self.stream:
            self.lines.append(line)
            if self.marker and not self.seen.is_set() and self.marker in line:
                self.seen.set()
        self.seen.set()  # EOF: the caller finds out whether the marker came


# ---- the configurations -----------------------------------------------------------------

@dataclass
class Count:
    got: int
    others: int = 0
    per_unit: float = 0.0
    notes: list[str] = field(default_factory=list)
    events: int = 0                 # compact: episodes, migrate_pages() calls
    extra: dict[str, int] = field(default_factory=dict)


def ml_shm(lines: list[str], pid: int) -> Count | None:
    recs = [json.loads(x) for x in lines if x.startswith("{")]
    if not any(r.get("type") == "summary" for r in recs):
        return None
    ev = [r for r in recs if r.get("type") == "event"]
    ours = [r for r in ev if r.get("pid") == pid and r.get("syscall") in ("shmat", "shmdt")
            and not r.get("error")]
    return Count(len(ours), len(ev) - len(ours))


def bt_shm(lines: list[str], pid: int) -> Count | None:
    ev = [x.split() for x in lines if x.startswith("EV ")]
    ours = [f for f in ev if f[1] == str(pid) and f[2] in ("shmat", "shmdt")
            and not f[3].startswith("-")]
    return Count(len(ours), len(ev) - len(ours))


def ml_slab(lines: list[str], _pid: int) -> Count | None:
    recs = [json.loads(x) for x in lines if x.startswith("{")]
    summary = [r for r in recs if r.get("type") == "summary" and "caches" in r]
    if not summary:
        return None
    s = summary[-1]
    got = sum(c["allocs"] for c in s["caches"] if c["cache"] == SOCK_CACHE)
    return Count(got, int(s["allocs"]) - got, int(s["allocs"]) / N_SOCK)


def _bt_maps(lines: list[str]) -> dict[str, dict]:
    """bpftrace -f json's maps at exit, {name: value}."""
    maps: dict[str, dict] = {}
    for x in lines:
        if x.startswith("{"):
            r = json.loads(x)
            if r.get("type") == "map":
                maps.update(r["data"])
    return maps


def bt_slab(lines: list[str], _pid: int) -> Count | None:
    maps = _bt_maps(lines)
    if not maps:
        return None
    got = int(maps.get("@", {}).get(SOCK_CACHE, 0))
    total = sum(int(v) for m in maps.values() for v in m.values())
    return Count(got, total - got, total / N_SOCK)


def ml_vmscan(lines: list[str], _pid: int) -> Count | None:
    """vmscan -p: its final report's memory-cgroup reclaim (one report: the interval is
    longer than the run)."""
    recs = [json.loads(x) for x in lines if x.startswith("{")]
    reps = [r for r in recs if r.get("type") == "report"]
    if not reps or not reps[-1].get("final"):
        return None
    got = sum(int(r.get("memcg_reclaim_pages") or 0) for r in reps)
    episodes = sum(int(r.get("memcg_reclaim_count") or 0) for r in reps)
    other = sum(int(r.get("pages_reclaimed") or 0) for r in reps) - got
    return Count(got, other, episodes / N_PAGES)


def bt_vmscan(lines: list[str], _pid: int) -> Count | None:
    maps = _bt_maps(lines)
    if "@memcg_reclaim_n" not in maps:
        return None
    got = int(maps.get("@memcg_reclaim_pages", 0))
    other = sum(int(maps.get(f"@{k}_pages", 0)) for k in ("direct_reclaim", "node_reclaim"))
    return Count(got, other, int(maps["@memcg_reclaim_n"]) / N_PAGES)


def ml_drsnoop(lines: list[str], pid: int) -> Count | None:
    recs = [json.loads(x) for x in lines if x.startswith("{")]
    if not any(r.get("type") == "summary" for r in recs):
        return None
    ev = [r for r in recs if r.get("type") == "event"]
    ours = [r for r in ev if r.get("pid") == pid and r.get("reclaim") == "memcg"]
    return Count(sum(int(r["pages_reclaimed"] or 0) for r in ours), len(ev) - len(ours),
                 len(ours) / N_PAGES)


def bt_drsnoop(lines: list[str], pid: int) -> Count | None:
    ev = [x.split() for x in lines if x.startswith("EV ")]
    ours = [f for f in ev if f[1] == str(pid) and f[2] == "memcg"]
    return Count(sum(int(f[5]) for f in ours), len(ev) - len(ours), len(ours) / N_PAGES)


def ml_compact(lines: list[str], pid: int) -> Count | None:
    """compactsnoop -p: its episodes, the pages their migratepages calls moved."""
    recs = [json.loads(x) for x in lines if x.startswith("{")]
    if not any(r.get("type") == "summary" for r in recs):
        return None
    ev = [r for r in recs if r.get("type") == "event"]
    ours = [r for r in ev if r.get("pid") == pid]
    return Count(sum(int(r["nr_migrated"]) for r in ours), len(ev) - len(ours),
                 events=len(ours), extra={"timed": sum(r["latency_ns"] > 0 for r in ours)})


def bt_compact(lines: list[str], pid: int) -> Count | None:
    ev = [x.split() for x in lines if x.startswith("EV ")]
    ours = [f for f in ev if f[1] == str(pid)]
    return Count(sum(int(f[7]) for f in ours), len(ev) - len(ours), events=len(ours),
                 extra={"timed": sum(int(f[6]) > 0 for f in ours)})


def ml_numamove(lines: list[str], _pid: int) -> Count | None:
    """numamove -p: its summary (every reason: the generator's are compaction's)."""
    recs = [json.loads(x) for x in lines if x.startswith("{")]
    summary = [r for r in recs if r.get("type") == "summary"]
    if not summary:
        return None
    s = summary[-1]
    return Count(int(s["migrated_pages"]), events=int(s["calls"]),
                 extra={"failed": int(s["failed_pages"]), "time_ns": int(s["time_ns"] or 0)})


def bt_numamove(lines: list[str], _pid: int) -> Count | None:
    maps = _bt_maps(lines)
    if not maps:
        return None

    def total(name: str) -> int:
        return sum(int(v) for v in (maps.get(name) or {}).values())
    return Count(total("@moved"), events=total("@calls"),
                 extra={"failed": total("@failed"), "time_ns": total("@ns")})


def bt_compact_prog() -> str:
    """BCC's compactsnoop as a bpftrace line per episode (zone, sync, status, latency,
    pages migrated and not, the order from a suitable check that lets compaction go on):
    compactsnoop's tracepoints, the same begin/end pairing per thread, for one process."""
    from memlens.tools.compactsnoop import status_names

    cont = {v: k for k, v in status_names().items()}.get("COMPACT_CONTINUE", 4)
    return ("tracepoint:compaction:mm_compaction_suitable /pid == {pid} && "
            f"args->ret == {cont}/ {{{{ @order[tid] = args->order; }}}} "
            "tracepoint:compaction:mm_compaction_begin /pid == {pid}/ {{ @s[tid] = nsecs; "
            "@mig[tid] = 0; @fail[tid] = 0; }} "
            "tracepoint:compaction:mm_compaction_migratepages /pid == {pid}/ {{ "
            "@mig[tid] += args->nr_migrated; @fail[tid] += args->nr_failed; }} "
            "tracepoint:compaction:mm_compaction_end /pid == {pid} && @s[tid]/ {{ "
            'printf("EV %d %s %lx %d %d %d %d %d %d\\n", pid, comm, args->zone_start, '
            "args->sync, args->status, nsecs - @s[tid], @mig[tid], @fail[tid], "
            "@order[tid]); delete(@s[tid]); delete(@mig[tid]); delete(@fail[tid]); "
            "delete(@order[tid]); }}")


BT_NUMAMOVE = (
    "tracepoint:migrate:mm_migrate_pages_start /pid == {pid}/ {{ @s[tid] = nsecs; }} "
    "tracepoint:migrate:mm_migrate_pages /pid == {pid}/ {{ @calls[args->reason] = count(); "
    "@moved[args->reason] = sum(args->succeeded); @failed[args->reason] = sum(args->failed); "
    "if (@s[tid]) {{ @ns[args->reason] = sum(nsecs - @s[tid]); delete(@s[tid]); }} }}")


def _vmscan_tracepoints() -> set[str]:
    try:
        return set(os.listdir("/sys/kernel/tracing/events/vmscan"))
    except OSError:
        return set()


def bt_vmscan_prog() -> str:
    """The book's vmscan.bt, over what vmscan attaches (the pairs timed, with a log2
    histogram each; pages summed from the reclaim ends; the counted tracepoints), for one
    process, on the tracepoints this kernel has."""
    from memlens.tools.vmscan import COUNTS, PAIRS

    have = _vmscan_tracepoints()
    out = []
    for pr in PAIRS:
        if pr.begin not in have or pr.end not in have:
            continue
        k = pr.key
        out.append(f"tracepoint:vmscan:{pr.begin} /pid == {{pid}}/ {{{{ @{k}_s[tid] = nsecs; }}}}")
        pages = f" @{k}_pages = sum(args->nr_reclaimed);" if pr.pages else ""
        out.append(f"tracepoint:vmscan:{pr.end} /pid == {{pid}} && @{k}_s[tid]/ {{{{ "
                   f"$d = nsecs - @{k}_s[tid]; @{k}_n = count(); @{k}_ns = sum($d); "
                   f"@{k}_us = hist($d / 1000);{pages} delete(@{k}_s[tid]); }}}}")
    for tp, key in COUNTS.items():
        if tp in have:
            out.append(f"tracepoint:vmscan:{tp} /pid == {{pid}}/ {{{{ @{key} = count(); }}}}")
    return " ".join(out)


def bt_drsnoop_prog() -> str:
    """BCC's drsnoop as a bpftrace line per episode (direct, memory-cgroup and node reclaim:
    what memlens drsnoop shows), for one process."""
    have = _vmscan_tracepoints()
    out = []
    for kind in ("direct", "memcg", "node"):
        begin, end = f"mm_vmscan_{kind}_reclaim_begin", f"mm_vmscan_{kind}_reclaim_end"
        if begin not in have or end not in have:
            continue
        out.append(f"tracepoint:vmscan:{begin} /pid == {{pid}}/ {{{{ @s[tid] = nsecs; }}}}")
        out.append(f"tracepoint:vmscan:{end} /pid == {{pid}} && @s[tid]/ {{{{ "
                   f'printf("EV %d {kind} %s %d %d\\n", pid, comm, nsecs - @s[tid], '
                   "args->nr_reclaimed); delete(@s[tid]); }}")
    return " ".join(out)


BT_SHM = (
    "tracepoint:syscalls:sys_enter_shmat /pid == {pid}/ {{ @id[tid] = args->shmid; "
    "@addr[tid] = args->shmaddr; @flg[tid] = args->shmflg; }} "
    "tracepoint:syscalls:sys_exit_shmat /pid == {pid}/ {{ "
    'printf("EV %d shmat %ld %s shmid=%d shmaddr=%lx shmflg=%x\\n", pid, args->ret, comm, '
    "@id[tid], @addr[tid], @flg[tid]); delete(@id[tid]); delete(@addr[tid]); "
    "delete(@flg[tid]); }} "
    "tracepoint:syscalls:sys_enter_shmdt /pid == {pid}/ {{ @dt[tid] = args->shmaddr; }} "
    "tracepoint:syscalls:sys_exit_shmdt /pid == {pid}/ {{ "
    'printf("EV %d shmdt %ld %s shmaddr=%lx\\n", pid, args->ret, comm, @dt[tid]); '
    "delete(@dt[tid]); }}")
BT_SLAB = ("tracepoint:kmem:kmem_cache_alloc /pid == {pid}/ {{ @[str(args->name)] = count(); }} "
           "tracepoint:kmem:kmalloc /pid == {pid}/ {{ @k[args->bytes_alloc] = count(); }}")


@dataclass
class Config:
    name: str
    kind: str                       # generator, a key of GENS
    tool: str                       # memlens | bpftrace
    args: list[str] | str
    count: Callable[[list[str], int], Count | None]
    expected: int | None            # per loop, exactly (None: the generator's witness)
    bt_json: bool = False           # bpftrace -f json (its maps read at exit)


def configs() -> list[Config]:
    return [
        Config("memlens shmsnoop", "shm", "memlens", ["shmsnoop", "--json"], ml_shm, 2 * N_SHM),
        Config("bpftrace shmsnoop", "shm", "bpftrace", BT_SHM, bt_shm, 2 * N_SHM),
        Config("memlens shmsnoop burst", "shm burst", "memlens", ["shmsnoop", "--json"],
               ml_shm, 2 * N_SHM),
        Config("bpftrace shmsnoop burst", "shm burst", "bpftrace", BT_SHM, bt_shm, 2 * N_SHM),
        Config("memlens slabratetop", "sock", "memlens", ["slabratetop", "--json", "-C",
                                                          "3600"], ml_slab, N_SOCK),
        Config("bpftrace slabratetop", "sock", "bpftrace", BT_SLAB, bt_slab, N_SOCK, True),
        Config("memlens vmscan", "reclaim", "memlens", ["vmscan", "--json", "3600"],
               ml_vmscan, None),
        Config("bpftrace vmscan", "reclaim", "bpftrace", bt_vmscan_prog(), bt_vmscan, None,
               True),
        Config("memlens drsnoop", "reclaim", "memlens", ["drsnoop", "--json"], ml_drsnoop,
               None),
        Config("bpftrace drsnoop", "reclaim", "bpftrace", bt_drsnoop_prog(), bt_drsnoop, None),
        Config("memlens compactsnoop", "compact", "memlens", ["compactsnoop", "--json"],
               ml_compact, None),
        Config("bpftrace compactsnoop", "compact", "bpftrace", bt_compact_prog(), bt_compact,
               None),
        Config("memlens numamove", "compact", "memlens", ["numamove", "--json", "3600"],
               ml_numamove, None),
        Config("bpftrace numamove", "compact", "bpftrace", BT_NUMAMOVE, bt_numamove, None,
               True),
    ]


# (label, memlens config, bpftrace config, the event, the unit of the figures)
ROWS = [
    ("shmsnoop", "memlens shmsnoop", "bpftrace shmsnoop", "shm call", "call"),
    ("shm burst", "memlens shmsnoop burst", "bpftrace shmsnoop burst",
     "shm call in a burst", "call"),
    ("slabratetop", "memlens slabratetop", "bpftrace slabratetop", "socket()+close()",
     "sock"),
    ("vmscan", "memlens vmscan", "bpftrace vmscan", "page reclaimed", "page"),
    ("drsnoop", "memlens drsnoop", "bpftrace drsnoop", "page reclaimed", "page"),
]
# priced by the BPF programs' run time alone: (label, memlens config, bpftrace config, the
# event the figure is per)
COMPACT_ROWS = [
    ("compactsnoop", "memlens compactsnoop", "bpftrace compactsnoop", "compaction episode"),
    ("numamove", "memlens numamove", "bpftrace numamove", "migrate_pages() call"),
]


# ---- running -----------------------------------------------------------------------------

def build(tmp: Path) -> Path:
    exe = tmp / "reclaimgen"
    (tmp / "reclaimgen.c").write_text(GEN_C)
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(tmp / "reclaimgen.c")], check=True)
    return exe


def run_tracer(g: Generator, cfg: Config) -> tuple[Run, Count | None, int, str]:
    if cfg.tool == "memlens":
        argv = MEMLENS + cfg.args + ["-p", str(g.pid)]
    else:
        prog = 'BEGIN { printf("READY\\n"); } ' + cfg.args.format(pid=g.pid)
        argv = ["bpftrace"] + (["-f", "json"] if cfg.bt_json else []) + ["-e", prog]
    tr = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True)
    away(tr)
    try:
        marker = "Hit Ctrl-C to end." if cfg.tool == "memlens" else "READY"
        out = Reader(tr.stdout, None if cfg.tool == "memlens" else marker)
        err = Reader(tr.stderr, marker if cfg.tool == "memlens" else None)
        ready = (err if cfg.tool == "memlens" else out).seen
        if not ready.wait(common.ATTACH_TIMEOUT) or tr.poll() is not None:
            raise RuntimeError(f"{cfg.name}: not attached: {''.join(err.lines)[-300:]}")
        stats = common.bpf_run_stats() if cfg.kind in ("reclaim", "compact", "sock") else None
        try:
            bpf0, runs0 = common.prog_run_time(tr.pid)
            run = g.go()
            bpf1, runs1 = common.prog_run_time(tr.pid)
            run.bpf_ns, run.bpf_runs = bpf1 - bpf0, runs1 - runs0
        finally:
            if stats is not None:
                os.close(stats)
        # what the tracer has yet to read out is not lost: its output quiet for SETTLE
        # first (bpftrace 0.17 exits on SIGINT without draining its perf buffers)
        deadline, seen = time.monotonic() + STOP_TIMEOUT, -1
        while time.monotonic() < deadline and seen != len(out.lines) + len(err.lines):
            seen = len(out.lines) + len(err.lines)
            time.sleep(SETTLE)
        note = common.stop(tr, collect=False)[2]
    finally:
        if tr.poll() is None:
            tr.kill()
            tr.wait()
    out.join(5)
    err.join(5)
    lost = 0
    if cfg.tool == "memlens":  # the summary's totals (the "lost" records are increments)
        for x in out.lines:
            if x.startswith("{"):
                r = json.loads(x)
                if r.get("type") == "summary":
                    n = r.get("lost") or 0
                    lost = sum(n.values()) if isinstance(n, dict) else int(n)
    else:
        # bpftrace reports a full perf buffer as "Lost N events" (stdout or stderr)
        lost = sum(int(m[1]) for x in out.lines + err.lines
                   if (m := re.search(r"Lost (\d+) events", x)))
    count = cfg.count(out.lines, g.pid)
    if count is None and not note:
        note = f"no final count (exit {tr.returncode}): {''.join(err.lines).strip()[-200:]}"
    return run, count, lost, note


def run_traced(exe: Path, cfg: Config, cgroup: MemoryCgroup | None) -> Run:
    g = Generator(exe, cfg.kind, cgroup)
    try:
        # compact: one traced pass only (the time of a compaction is the kernel's
        # scanning, not the tracers': priced by the BPF programs' run time alone)
        first = g.go() if cfg.kind != "compact" else None
        run, count, lost, note = run_tracer(g, cfg)
        last = g.go() if cfg.kind != "compact" else None
    finally:
        g.close()
    if first is not None and last is not None:
        run.before, run.after = first.ns, last.ns
    if cfg.expected is not None:  # else the generator's own witness (Generator.go)
        run.expected = cfg.expected
    run.lost = lost
    if run.bad:
        run.notes.append(f"{run.bad} of the generator's calls failed")
    if note:
        run.notes.append(note)
    if count is not None:
        run.got, run.others, run.per_unit = count.got, count.others, count.per_unit
        run.events, run.extra = count.events, count.extra
        run.notes += count.notes
    for n in run.notes:
        print(f"  {cfg.name}: {n}", file=sys.stderr)
    return run


def rounds_without(results: dict[str, list[Run]]) -> set[str]:
    """Configurations run without untraced loops around the traced one (compact)."""
    return {name for name, runs in results.items() if any(not r.before for r in runs)}


def compact_check(r: Run, tool: str) -> str:
    """What a compaction run's counts say against /proc/vmstat and /proc/zoneinfo."""
    if r.got is None:
        return "FAILED"
    out = []
    if r.got != r.expected:
        out.append(f"pages {r.got} != pgmigrate_success {r.expected}")
    if tool == "compactsnoop" and r.events != r.zones:
        out.append(f"episodes {r.events} != populated zones {r.zones}")
    if tool == "compactsnoop" and r.extra.get("timed") != r.events:
        out.append(f"{r.events - r.extra.get('timed', 0)} episodes untimed")
    if tool == "numamove" and r.extra.get("failed") != r.vm.get("pgmigrate_fail"):
        out.append(f"failed {r.extra.get('failed')} != pgmigrate_fail "
                   f"{r.vm.get('pgmigrate_fail')}")
    if r.lost:
        out.append(f"lost={r.lost}")
    return "; ".join(out) or "ok"


def compact_report(results: dict[str, list[Run]]) -> None:
    """compactsnoop and numamove against bpftrace: BPF run time (bpf_stats) per episode,
    per migrate_pages() call and per hit, medians over the rounds, each round's counts
    checked against /proc/vmstat's deltas over the pass and /proc/zoneinfo's zones."""
    for label, ml_name, bt_name, event in COMPACT_ROWS:
        if ml_name not in results:
            continue
        figs, checks = {}, {}
        for who, name in (("memlens", ml_name), ("bpftrace", bt_name)):
            runs = results.get(name, [])
            if not runs:
                continue
            per = [r.bpf_ns / r.events for r in runs if r.events and r.bpf_ns]
            hit = [r.bpf_ns / r.bpf_runs for r in runs if r.bpf_runs]
            if per:
                figs[who] = (statistics.median(per), mad(per),
                             statistics.median(hit) if hit else 0.0)
            bad = [f"round {i}: {c}" for i, r in enumerate(runs, 1)
                   if (c := compact_check(r, label)) != "ok"]
            checks[who] = "ok" if not bad else "WRONG (" + "; ".join(bad) + ")"
        ml_runs = results[ml_name]
        pages = [r.expected for r in ml_runs]
        evs = [r.events for r in ml_runs]
        print(f"{label}: {event}s {'/'.join(map(str, evs))} and pages migrated "
              f"{'/'.join(map(str, pages))} (pgmigrate_success) a round, memlens")
        ratio = None
        if len(figs) == 2:
            ratio = figs["memlens"][0] / figs["bpftrace"][0]
        print(f"{label}: BPF run time per {event} (bpf_stats): " + ", ".join(
            f"{who} {v:.0f}\u00b1{sd:.0f} ns ({h:.0f} ns a hit)"
            for who, (v, sd, h) in figs.items())
            + (f" = {ratio:.2f}x" if ratio else "")
            + f"; counts: memlens {checks.get('memlens')}, bpftrace {checks.get('bpftrace', '-')}")
        if "memlens" in figs:
            ml, ml_sd, ml_hit = figs["memlens"]
            bt = figs.get("bpftrace")
            emit_result("reclaim", {
                "case": label, "tool": label, "event": event, "cost_ns": None,
                "bpf_ns": round(ml), "bpf_noise_ns": round(ml_sd),
                "peer_bpf_ns": round(bt[0]) if bt else None,
                "peer_bpf_noise_ns": round(bt[1]) if bt else None,
                "bpf_hit_ns": round(ml_hit), "peer_bpf_hit_ns": round(bt[2]) if bt else None,
                "bpf_ratio": round(ratio, 2) if ratio else None,
                "counts": checks.get("memlens"), "peer_counts": checks.get("bpftrace", "-")})


def main() -> int:
    if os.geteuid() != 0:
        print("bench_reclaim: needs root (BPF); skipped")
        return 0
    t_start = time.monotonic()
    wanted = {name for row in ROWS + COMPACT_ROWS
              if not CASES or any(c in row[0] for c in CASES) for name in row[1:3]}
    cfgs = [c for c in configs() if c.name in wanted
            and (c.tool == "memlens" or shutil.which("bpftrace"))]
    results: dict[str, list[Run]] = {}
    # SIGTERM (a CI timeout, make's kill) ends the run through the finally clauses: the
    # generators closed, the memory cgroup removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cgroup = MemoryCgroup() if any(c.kind == "reclaim" for c in cfgs) else None
    try:
        with tempfile.TemporaryDirectory(prefix="bench_reclaim.") as d:
            exe = build(Path(d))
            for kind in sorted({c.kind for c in cfgs}):  # warm-up, not counted
                g = Generator(exe, kind, cgroup)
                try:
                    g.go()
                finally:
                    g.close()
            for _ in range(RUNS):
                for cfg in cfgs:
                    results.setdefault(cfg.name, []).append(run_traced(exe, cfg, cgroup))
    finally:
        if cgroup is not None:
            cgroup.remove()
    kinds = {c.name: c.kind for c in configs()}
    rounds = common.Rounds(results, kinds)
    baseline, overhead = rounds.baseline, rounds.overhead

    print(f"a loop: {N_SHM} shmat+shmdt pairs in 100 slices, {PAUSE_US} us apart (burst: in 10, "
          f"no pause) / {N_SOCK} AF_UNIX sockets in 100 slices / {N_PAGES} pages charged to "
          f"a {CGROUP_LIMIT >> 20} MiB memory cgroup at its limit and freed lazily, in 100 "
          f"slices; the fastest slice kept; generator CPU time, pinned to CPU {CPU}")
    print(f"median of {RUNS} interleaved rounds; +ns = traced loop - the same process's "
          "untraced loops before and after; \u00b1 = MAD (see overhead())")
    print(f"{'case':<12} {'unit':<5} {'untraced':>10} {'memlens':>11} {'bpftrace':>11} "
          f"{'ratio':>6} {'ev/unit':>9}  {'memlens count':<13} {'bpftrace count':<14}")
    print(f"{'':<12} {'':<5} {'ns':>10} {'+ns':>11} {'+ns':>11} {'ml/bt':>6} {'ml   bt':>9}")
    lines = []
    for label, ml_name, bt_name, event, unit in ROWS:
        if ml_name not in results or ml_name in rounds_without(results):
            continue
        kind = kinds[ml_name]
        base, base_sd = baseline(kind)
        ml, ml_sd = overhead(ml_name)
        ml_ok = common.verdict(results[ml_name])
        ml_pu = statistics.median(r.per_unit for r in results[ml_name])
        if bt_name in results:
            bt, bt_sd = overhead(bt_name)
            bt_ok = common.verdict(results[bt_name])
            bt_pu = statistics.median(r.per_unit for r in results[bt_name])
            measurable = ml > 2 * ml_sd and bt > 2 * bt_sd
            ratio = f"{ml / bt:6.2f}" if measurable else f"{'n/a':>6}"
            bt_col = f"{bt:+6.0f}\u00b1{bt_sd:<4.0f}"
        else:
            measurable, ratio, bt_col, bt_ok, bt_pu = False, f"{'-':>6}", f"{'-':>11}", "-", 0
            bt = bt_sd = None
        if kind == "sock":
            pu = f"{ml_pu:4.1f} {bt_pu:4.1f}"
        elif kind == "reclaim":  # episodes per page: one in every N pages
            pu = " ".join(f"1/{1 / x:<3.0f}" if x else f"{'-':<5}" for x in (ml_pu, bt_pu))
        else:
            pu = f"{'1':>4} {'1':>4}"
        print(f"{label:<12} {unit:<5} {base:5.0f}\u00b1{base_sd:<4.0f} "
              f"{ml:+6.0f}\u00b1{ml_sd:<4.0f} {bt_col} {ratio} {pu:>9}  {ml_ok:<13} {bt_ok:<14}")
        line = (f"{label}: memlens adds {ml:.0f}\u00b1{ml_sd:.0f} ns per {event} (untraced "
                f"{base:.0f} ns")
        # the figure for the report: per event (an allocation, a reclaim episode)
        per_event, ml_ev, bt_ev = event, ml, bt
        if kind == "sock":
            line += (f"; {ml_pu:.1f} slab allocations counted per socket, so "
                     f"~{ml / max(ml_pu, 1e-9):.0f} ns per allocation")
            per_event = "slab allocation"
            ml_ev = ml / max(ml_pu, 1e-9)
            bt_ev = bt / max(bt_pu, 1e-9) if bt is not None else None
        elif kind == "reclaim":
            line += (f"; one reclaim episode per {1 / max(ml_pu, 1e-9):.0f} pages, so "
                     f"~{ml / max(ml_pu, 1e-9):.0f} ns per episode")
            per_event = "memory-cgroup reclaim episode"
            ml_ev = ml / max(ml_pu, 1e-9)
            bt_ev = bt / max(bt_pu, 1e-9) if bt is not None else None
        line += ")"
        # the BPF programs' own run time per episode or allocation (bpf_stats), median of
        # the rounds
        bpf = {}
        bpf_what = {"reclaim": "episode", "sock": "allocation"}.get(kind)
        if bpf_what:
            n_units = N_PAGES if kind == "reclaim" else N_SOCK
            for who, name in (("memlens", ml_name), ("bpftrace", bt_name)):
                per = [r.bpf_ns / (r.per_unit * n_units) for r in results.get(name, [])
                       if r.per_unit and r.bpf_ns]
                if per:
                    bpf[who] = (statistics.median(per), mad(per))
            if bpf:
                print(f"{'':<12} BPF run time per {bpf_what} (bpf_stats): " + ", ".join(
                    f"{who} {v:.0f}\u00b1{sd:.0f} ns" for who, (v, sd) in bpf.items())
                    + (f" = {bpf['memlens'][0] / bpf['bpftrace'][0]:.2f}x"
                       if len(bpf) == 2 else ""))
        if any(r.lost for r in results[ml_name]):
            line += (" (memlens dropped events on a full ring in some rounds: a dropped "
                     "event costs less than a delivered one)")
        if bt_name in results:
            line += f", bpftrace {bt:.0f}\u00b1{bt_sd:.0f} ns: "
            line += (f"memlens/bpftrace {ml / bt:.2f}x" if measurable
                     else "no ratio, an overhead is within twice its noise")
        else:
            line += "; bpftrace missing"
        what = {"sock": SOCK_CACHE + " allocations",
                "reclaim": "pages reclaimed, pglazyfreed"}.get(kind, "shm calls")
        expected = sorted({r.expected for r in results[ml_name]})
        if len(bpf) == 2:
            line += (f"; the BPF programs' own run time per {bpf_what} (bpf_stats): memlens "
                     f"{bpf['memlens'][0]:.0f} ns, bpftrace {bpf['bpftrace'][0]:.0f} ns = "
                     f"{bpf['memlens'][0] / bpf['bpftrace'][0]:.2f}x")
        line += (f"; counts (expected {'/'.join(map(str, expected[:3]))}"
                 f"{'...' if len(expected) > 3 else ''} {what}): "
                 f"memlens {ml_ok}, bpftrace {bt_ok}")
        lines.append(line)
        # ratios of the per-unit overheads: both tools ran on the same work
        emit_result("reclaim", {
            "case": label, "tool": ml_name.split()[1], "event": per_event,
            "cost_ns": round(ml_ev), "cost_noise_ns": round(ml_sd * ml_ev / ml) if ml else 0,
            "peer_cost_ns": None if bt_ev is None else round(bt_ev),
            "peer_cost_noise_ns": None if bt_ev is None or not bt else
            round(bt_sd * bt_ev / bt),
            "ratio": round(ml / bt, 2) if measurable else None, "counts": ml_ok,
            "peer_counts": bt_ok,
            **({"bpf_event": bpf_what, "bpf_ns": round(bpf["memlens"][0]),
                "peer_bpf_ns": round(bpf["bpftrace"][0]),
                "bpf_ratio": round(bpf["memlens"][0] / bpf["bpftrace"][0], 2)}
               if len(bpf) == 2 else {})})
    for line in lines:
        print(line)
    compact_report(results)
    print("vmscan, drsnoop: memory-cgroup reclaim only (direct, kswapd and node reclaim "
          "cannot be made safely here, KERNEL.md \u00a73): priced per page and, by the "
          "episodes each tool counted, per episode")
    rounds.print_notes()
    print(f"({time.monotonic() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
