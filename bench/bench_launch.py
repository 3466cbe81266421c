# SPDX-License-Identifier: GPL-2.0-only
"""Launch-to-attached time and peak RSS of each tracing tool, against the bpftrace program
on the same hooks (Debian's bpftrace 0.17) measured in the same run, alternating: the
tracepoints, perf events or uprobes the tool attaches (drsnoop's six reclaim tracepoints,
memleak -p's 22 uprobes in libc), with the least action that keeps the same state.
memleak is also measured against bpftrace on malloc and free alone ("memleak vs
malloc+free": bpftrace's own start, without its cost per uprobe).

Attached = the moment the tool prints its banner (memlens prints it only after every probe
is attached; bpftrace runs BEGIN after attaching, and BEGIN prints READY here).  Peak RSS
is the child's VmHWM read just before SIGINT, the tool having run 0.2 s after attaching
(not wait4's ru_maxrss: a vfork'ed child keeps its parent's peak across exec).  Medians
of RUNS runs each (BENCH_LAUNCH_RUNS, default 7: bpftrace's own time varies 80-95 ms from
run to run here, memleak's peer 130-176 ms from one bench to the next), each after a pause
for the previous tool's teardown (SETTLE_S).  The package is byte-compiled first
(scripts/setup.sh does it; PYTHONDONTWRITEBYTECODE is set on these machines).

    python -m bench launch            (root; bpftrace; ~2 minutes)
    python bench/bench_launch.py brkstack funccount    those tools only
    python bench/bench_launch.py --phases [TOOL...]   where the time goes, per phase
    python bench/launch_ab.py N "A_SRC|ARGS" "B_SRC|ARGS"   a change's A/B (worktrees)
    python bench/verifier_stats.py TOOL ARGS...   the verifier's time per program
"""
from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import emit_result, memlens_argv, vm_hwm_mb  # noqa: E402

RUNS = int(os.environ.get("BENCH_LAUNCH_RUNS", "7"))
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
T = "tracepoint:"

# tool: (memlens arguments, the bpftrace program on the same hooks); "{pid}" is a target
# process (a sleep) for the tools that trace one process only
_ALLOCATORS = ("malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign",
               "valloc", "pvalloc", "mmap", "mremap")
MEMLEAK_PEER = ("-p {pid} -e '"
                + ", ".join(f"uprobe:{LIBC}:{f}" for f in _ALLOCATORS) + " { @sz[tid] = arg0; } "
                + ", ".join(f"uretprobe:{LIBC}:{f}" for f in _ALLOCATORS)
                + " { @[retval] = @sz[tid]; } "
                + f"uprobe:{LIBC}:free, uprobe:{LIBC}:munmap {{ delete(@[arg0]); }}'")

TOOLS: dict[str, tuple[list[str], str]] = {
    "oomkill": (["oomkill"], T + "oom:mark_victim { printf(\"%d\\n\", args->pid); }"),
    "brkstack": (["brkstack"], T + "syscalls:sys_enter_brk { @[ustack, comm] = count(); }"),
    "mmapsnoop": (["mmapsnoop"], T + "syscalls:sys_enter_mmap { @a[tid] = args->len; } "
                  + T + "syscalls:sys_exit_mmap { printf(\"%d %s %d\\n\", pid, comm, "
                  "args->ret); }"),
    "trace": (["trace", "t:syscalls:sys_exit_mmap"],
              T + "syscalls:sys_exit_mmap { printf(\"%d %s %d\\n\", pid, comm, args->ret); }"),
    "funccount": (["funccount", "t:syscalls:sys_enter_getppid"],
                  T + "syscalls:sys_enter_getppid { @[probe] = count(); }"),
    "stackcount": (["stackcount", "-U", "t:syscalls:sys_enter_brk"],
                   T + "syscalls:sys_enter_brk { @[ustack] = count(); }"),
    "count": (["count", "sw:page-faults", "--by", "comm,pid"],
              "software:page-faults:1 { @[comm, pid] = count(); }"),
    # faults keys its counts by process and kernel and user stack unless -S: the peer too
    "faults": (["faults"], "software:minor-faults:1 { @[kstack, ustack, comm, pid] = "
               "count(); } software:major-faults:1 { @[kstack, ustack, comm, pid] = count(); }"),
    "shmsnoop": (["shmsnoop"], T + "syscalls:sys_enter_shm* { @a[tid] = 1; } "
                 + T + "syscalls:sys_exit_shm* { printf(\"%d %d\\n\", pid, args->ret); }"),
    "slabratetop": (["slabratetop"], T + "kmem:kmem_cache_alloc { @[str(args->name)] = "
                    "count(); } " + T + "kmem:kmalloc { @k[args->bytes_alloc] = count(); }"),
    # drsnoop traces direct, memory-cgroup and node reclaim: the same six tracepoints
    "drsnoop": (["drsnoop"], ", ".join(T + f"vmscan:mm_vmscan_{k}_reclaim_begin"
                                       for k in ("direct", "memcg", "node"))
                + " { @s[tid] = nsecs; } "
                + ", ".join(T + f"vmscan:mm_vmscan_{k}_reclaim_end"
                            for k in ("direct", "memcg", "node"))
                + " /@s[tid]/ { printf(\"%d\\n\", nsecs - @s[tid]); delete(@s[tid]); }"),
    "numamove": (["numamove"], T + "migrate:mm_migrate_pages_start { @s[tid] = nsecs; } "
                 + T + "migrate:mm_migrate_pages { @[args->reason] = sum(args->succeeded); }"),
    # bpftrace -p: its uprobes are set in that process only, as memleak -p's are (a
    # `/pid == X/` predicate leaves a uretprobe on malloc in every process on the machine);
    # on the functions memleak -p probes in libc (memleak/probes.py: each allocator's entry
    # and return, free and munmap's entry; its banner says "20 probes in libc.so.6")
    "memleak": (["memleak", "-p", "{pid}"], MEMLEAK_PEER),
    # against the least program of the kind, malloc's entry and return and free's entry
    # (3 probes: bpftrace's own time, not its per-probe cost)
    "memleak vs malloc+free": (["memleak", "-p", "{pid}"],
                               f"-p {{pid}} -e 'uprobe:{LIBC}:malloc {{ @sz[tid] = arg0; }} "
                               f"uretprobe:{LIBC}:malloc {{ @[retval] = @sz[tid]; }} "
                               f"uprobe:{LIBC}:free {{ delete(@[arg0]); }}'"),
    # memleak's fast mode: attached with frame-pointer stacks, the DWARF walk handed over
    # after the banner (its first ~0.1 s of stacks by frame pointers, counted)
    "memleak --quick-start": (["memleak", "-p", "{pid}", "--quick-start"], MEMLEAK_PEER),
    # a user-space probe in one process (the engine's uprobe path: the function checked in
    # the file's symbols, the first link's grace period waited out during the load)
    "trace -p u:malloc": (["trace", "-p", "{pid}", f"u:{LIBC}:malloc"],
                          f"-p {{pid}} -e 'uprobe:{LIBC}:malloc {{ printf(\"%d\\n\", "
                          "arg0); }'"),
}


# the floor (bench/launch_floor.py): any Python tool's least, beside funccount's peer (the
# same tracepoint; bpftrace 0.17 sometimes ignores SIGINT with an empty or `@n = count()`
# action)
FLOOR = "python floor"
FLOOR_PEER = TOOLS["funccount"][1]


def floor_object(tmp: Path) -> Path | None:
    """bench/floor.bpf.c compiled into `tmp` (clang, as the package's build does)."""
    clang = next((c for c in ("clang-19", "clang-18", "clang") if shutil.which(c)), None)
    if clang is None:
        return None
    obj = tmp / "floor.bpf.o"
    done = subprocess.run([clang, "-O2", "-target", "bpf", "-c",
                           str(ROOT / "bench" / "floor.bpf.c"), "-o", str(obj)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return obj if done.returncode == 0 else None


# Before each start, the previous tool's teardown is let finish: the kernel frees its
# programs, maps, perf events and uprobes after it has exited (RCU callbacks, task work,
# kworkers), and on this 2-CPU machine that work slowed the next start (memlens after
# bpftrace, bpftrace after memlens) by up to ~10 ms.
SETTLE_S = 0.5


def measure(argv: list[str], marker: str) -> tuple[float, float]:
    """(seconds from exec to `marker` on stderr, peak RSS in MB)."""
    time.sleep(SETTLE_S)
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
    peak = vm_hwm_mb(proc.pid) or float("nan")
    proc.send_signal(signal.SIGINT)
    deadline, sig = time.monotonic() + 10, signal.SIGTERM
    while True:
        pid, _, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:  # a tool that ignores SIGINT is a bug: show it
            print(f"  {' '.join(argv)[:70]}: still running 10 s after SIGINT: {sig.name}",
                  file=sys.stderr)
            proc.send_signal(sig)
            deadline, sig = time.monotonic() + 5, signal.SIGKILL
        time.sleep(0.02)
    proc.returncode = 0
    return attached, peak


def compile_package() -> None:
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src" / "memlens")],
                   stdout=subprocess.DEVNULL, check=False)


def main() -> None:
    if "--phases" in sys.argv:
        from bench.launch_phases import main as phases

        phases([a for a in sys.argv[1:] if a != "--phases"] or
               ["oomkill", "brkstack", "mmapsnoop", "funccount"])
        return
    compile_package()
    have_bpftrace = shutil.which("bpftrace") is not None
    target = subprocess.Popen(["sleep", "3600"])
    tmp = tempfile.TemporaryDirectory(prefix="bench-launch-")
    try:
        print(f"median of {RUNS} runs each, memlens and bpftrace alternating")
        print(f"{'tool':<12} {'memlens s':>9} {'bpftrace s':>10} {'memlens MB':>10} "
              f"{'bpftrace MB':>11} {'time ratio':>10} {'RSS ratio':>9}")
        wanted = [a for a in sys.argv[1:] if not a.startswith("-")]
        unknown = set(wanted) - set(TOOLS) - {"floor"}
        if unknown:
            sys.exit(f"bench_launch: no tool {sorted(unknown)[0]!r} (tools: {', '.join(TOOLS)}"
                     ", floor)")
        # (name, argv, the marker it prints once attached, bpftrace's program)
        cases = [(name, memlens_argv(*[a.replace("{pid}", str(target.pid)) for a in args]),
                  "Hit Ctrl-C to end.", bt_prog.replace("{pid}", str(target.pid)))
                 for name, (args, bt_prog) in TOOLS.items() if not wanted or name in wanted]
        if not wanted or "floor" in wanted:
            obj = floor_object(Path(tmp.name))
            if obj is None:
                print("  python floor: no clang to build bench/floor.bpf.c: not measured")
            else:
                cases.append((FLOOR, [sys.executable, str(ROOT / "bench" / "launch_floor.py"),
                                      str(obj)], "READY", FLOOR_PEER))
        for name, argv, marker, bt_prog in cases:
            ours, peer = [], []
            for _ in range(RUNS):
                ours.append(measure(argv, marker))
                if have_bpftrace:
                    # a program, or its own options then -e 'program' (memleak's -p)
                    opts, _, body = bt_prog.rpartition("-e '")
                    prog = 'BEGIN { printf("READY\\n"); } ' + body.rstrip("'")
                    # bpftrace prints BEGIN's output on stdout: to stderr for the marker
                    peer.append(measure(["sh", "-c",
                                         f"exec bpftrace {opts}-e '{prog}' 1>&2"],
                                        "READY"))
            t_ours = statistics.median(t for t, _ in ours)
            m_ours = statistics.median(m for _, m in ours)
            t_peer = statistics.median(t for t, _ in peer) if peer else float("nan")
            m_peer = statistics.median(m for _, m in peer) if peer else float("nan")
            print(f"{name:<12} {t_ours:>9.3f} {t_peer:>10.3f} {m_ours:>10.1f} {m_peer:>11.1f} "
                  f"{t_ours / t_peer:>10.2f} {m_ours / m_peer:>9.2f}", flush=True)
            emit_result("launch", {"tool": name, "attached_s": round(t_ours, 4),
                                   "peer_attached_s": round(t_peer, 4),
                                   "rss_mb": round(m_ours, 1), "peer_rss_mb": round(m_peer, 1)})
    finally:
        tmp.cleanup()
        target.kill()
        target.wait()


if __name__ == "__main__":
    main()
