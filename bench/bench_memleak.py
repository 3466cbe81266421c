# SPDX-License-Identifier: GPL-2.0-only
"""memleak overhead: a malloc/free loop untraced, under bare uprobes (the floor), under
`memlens memleak`, and under an equivalent bpftrace program, all in one run.

The floor is the cost of the traps alone: a BPF object of our own whose programs return 0,
attached where memleak's are (malloc entry + return, free entry), once at the functions'
first byte as BCC/libbpf-tools/bpftrace place them and once where memleak places them (past
glibc free's `test %rdi,%rdi`, which would otherwise be single-stepped: KERNEL.md §10).
Every configuration traces only the benchmark's PID (bpftrace with -p: its uprobes are set
in that process only; a `/pid == X/` predicate would filter after the trap and leave a
uretprobe on malloc in every process on the machine).

    python -m bench memleak            (root; ~100k malloc/free pairs per run)
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

N = int(os.environ.get("BENCH_MEMLEAK_N", "100000"))
RUNS = int(os.environ.get("BENCH_MEMLEAK_RUNS", "3"))
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"

BENCH_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static void *volatile sink;
int main(int argc, char **argv) {
    long n = atol(argv[1]); char c;
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready\n");
    if (read(0, &c, 1) != 1) return 1;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) { void *p = malloc(64 + (i & 63)); sink = p; free(p); }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%ld\n", (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec));
    return 0;
}
"""

NOOP_BPF_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
SEC("uprobe") int noop_entry(void *ctx) { return 0; }
SEC("uretprobe") int noop_return(void *ctx) { return 0; }
"""

BPFTRACE = """
BEGIN { printf("READY\\n"); }
uprobe:%(libc)s:malloc { @size[tid] = arg0; }
uretprobe:%(libc)s:malloc {
    if (retval != 0) { @allocs[retval] = (@size[tid], ustack); } delete(@size[tid]); }
uprobe:%(libc)s:free { delete(@allocs[arg0]); }
"""


def build(tmp: Path) -> tuple[Path, Path]:
    exe = tmp / "mallocbench"
    (tmp / "mallocbench.c").write_text(BENCH_C)
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(tmp / "mallocbench.c")], check=True)
    clang = next(c for c in ("clang-19", "clang-18", "clang") if shutil.which(c))
    obj = tmp / "noop.bpf.o"
    (tmp / "noop.bpf.c").write_text(NOOP_BPF_C)
    subprocess.run([clang, "-O2", "-g", "-target", "bpf", (f"-I/usr/include/{os.uname().machine}"
                    "-linux-gnu"), "-c", str(tmp / "noop.bpf.c"), "-o", str(obj)], check=True)
    return exe, obj


def start(exe: Path) -> subprocess.Popen:
    p = subprocess.Popen([str(exe), str(N)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"ready"
    return p


def finish(p: subprocess.Popen) -> float:
    p.stdin.write(b"x")
    p.stdin.flush()
    ns = int(p.stdout.readline())
    p.wait()
    return ns / N


def run_untraced(exe: Path, _obj: Path) -> float:
    return finish(start(exe))


def _floor(exe: Path, obj: Path, skip: bool) -> float:
    from memlens.core.loader import BpfObject
    from memlens.tools.memleak.probes import ElfFunctions, entry_skip

    elf = ElfFunctions.read(LIBC)
    p = start(exe)
    with BpfObject(obj) as o:
        o.load()
        for fn, ret in (("malloc", True), ("free", False)):
            off = elf.file_offset(elf.funcs[fn][0])
            if skip:
                off += entry_skip(elf.code(fn))
            o.attach_uprobe("noop_entry", LIBC, None, pid=p.pid, offset=off)
            if ret:
                o.attach_uprobe("noop_return", LIBC, None, pid=p.pid, retprobe=True, offset=off)
        return finish(p)


def run_floor_entry(exe: Path, obj: Path) -> float:
    return _floor(exe, obj, skip=False)


def run_floor_skip(exe: Path, obj: Path) -> float:
    return _floor(exe, obj, skip=True)


def _memleak(exe: Path, extra: list[str]) -> float:
    p = start(exe)
    ml = subprocess.Popen([sys.executable, "-m", "memlens", "memleak", "-p", str(p.pid), *extra],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(ROOT),
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    line = ml.stderr.readline()
    assert line.startswith(b"Tracing"), line + ml.stderr.read()
    try:
        return finish(p)
    finally:
        ml.terminate()
        ml.communicate(timeout=60)  # (its stderr read: a full pipe would block its exit)


def run_memleak(exe: Path, _obj: Path) -> float:
    return _memleak(exe, [])


def run_memleak_at_entry(exe: Path, _obj: Path) -> float:
    return _memleak(exe, ["--probe-at-entry"])


def run_bpftrace(exe: Path, _obj: Path) -> float:
    p = start(exe)
    bt = subprocess.Popen(["bpftrace", "-p", str(p.pid), "-e", BPFTRACE % {"libc": LIBC}],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if bt.stdout.readline().strip() == b"READY":
            break
    try:
        return finish(p)
    finally:
        # bpftrace prints its maps as it ends: read, else a full pipe blocks its exit (and
        # this bench with it, as it once did for 10 minutes)
        bt.terminate()
        try:
            bt.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            bt.kill()
            bt.communicate()


CONFIGS = [
    ("untraced", run_untraced),
    ("floor: no-op uprobes at function entry", run_floor_entry),
    ("floor: no-op uprobes where memleak puts them", run_floor_skip),
    ("memlens memleak", run_memleak),
    ("memlens memleak --probe-at-entry", run_memleak_at_entry),
    ("bpftrace 0.17 (same hooks, map + ustack)", run_bpftrace),
]


def main() -> int:
    if os.geteuid() != 0:
        print("bench_memleak: needs root (uprobes); skipped")
        return 0
    with tempfile.TemporaryDirectory() as d:
        exe, obj = build(Path(d))
        have_bt = shutil.which("bpftrace") is not None
        results: dict[str, float] = {}
        for name, fn in CONFIGS:
            if "bpftrace" in name and not have_bt:
                continue
            samples = [fn(exe, obj) for _ in range(RUNS)]
            results[name] = statistics.median(samples)
    base = results["untraced"]
    floor = results["floor: no-op uprobes at function entry"]
    print(f"{N} malloc(64..127)+free pairs, median of {RUNS} runs, ns per pair")
    print(f"{'configuration':<48} {'ns/pair':>9} {'x untraced':>11} {'x floor':>8}")
    for name, v in results.items():
        print(f"{name:<48} {v:9.0f} {v / base:11.1f} {v / floor:8.2f}")
    if "memlens memleak" in results and "floor: no-op uprobes where memleak puts them" in results:
        ml = results["memlens memleak"]
        print(f"memleak / its own floor: "
              f"{ml / results['floor: no-op uprobes where memleak puts them']:.2f}x; "
              + (f"bpftrace / memleak: {results[CONFIGS[-1][0]] / ml:.2f}x" if have_bt else ""))
        from bench.common import emit_result

        emit_result("memleak", {
            "tool": "memleak", "event": "malloc+free pair", "ns_per_pair": round(ml),
            "untraced_ns": round(base),
            "floor_ns": round(results["floor: no-op uprobes where memleak puts them"]),
            "peer_ns_per_pair": round(results[CONFIGS[-1][0]]) if have_bt else None})
    return 0


if __name__ == "__main__":
    sys.exit(main())
