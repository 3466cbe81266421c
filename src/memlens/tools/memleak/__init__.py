# SPDX-License-Identifier: GPL-2.0-only
"""memleak: outstanding allocations by stack, in one process or in the kernel.

User mode (`-p PID`, `-c "CMD ARGS"`): uprobes on the target's allocator (libc, `-O OBJ`,
`--symbols-prefix`) and on libstdc++'s operator new, attached to that process only (the
pid argument of the uprobe: other processes on the machine pay nothing).  `-c` forks a
child that waits on a pipe, attaches to the child's PID on the files it is about to map,
then lets it exec the command: its first allocations are seen.  Kernel mode (no `-p/-c`):
kmem/page tracepoints (`--percpu`: percpu tracepoints), probed on the running kernel.
See memleak.bpf.c for how nesting, callers, failures and losses are handled.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import time
from typing import Any

import numpy as np

from memlens.core.session import (
    Session,
    add_common_options,
    configure_filters,
    pid_arg,
    positive_int,
    report_lost,
)
from memlens.errors import KernelLacks, UsageError

from .probes import KIND_NAMES, plan_probes

EXAMPLES = """\
examples:
  memlens memleak -p 1234              # leaks of PID 1234, top 10 stacks every 5 s
  memlens memleak -p 1234 -o 60000 30  # only blocks older than a minute, every 30 s
  memlens memleak -c "./server --port 8080" -d 60 --pprof heap.pb.gz
                                       # run a command, traced from its first malloc;
                                       # `go tool pprof -top heap.pb.gz` reads the profile
  memlens memleak -p 1234 -s 100       # record every 100th allocation per thread (cheaper)
  memlens memleak -p 1234 -O /usr/lib/x86_64-linux-gnu/libjemalloc.so.2
  memlens memleak -p 1234 --folded -d 10 > leaks.folded   # flame graph input, by bytes
  memlens memleak                      # kernel: kmalloc, kmem_cache, pages (10 s reports)
  memlens memleak --kernel -p 1234     # kernel allocations made in PID 1234's context
  memlens memleak --percpu             # kernel percpu allocations

output:
  [11:16:34] Top 2 stacks with outstanding allocations:
          94277 bytes in 23 allocations from stack
                  malloc+0x0 [libc.so.6]
                  leak_malloc+0x20 [leaker]
                  leak_all+0x35 [leaker]
                  main+0x8c [leaker]
          total: 94277 bytes in 23 allocations from 1 stacks; lost: 0 stacks not stored, ...

  The first frame of a user stack is the allocator called; the next is its direct caller
  (found at the allocator's return, so it is there even without frame pointers).  With
  -s N the figures are scaled by N and the report says so.  Losses are always counted.
"""

ML_COUNTERS = ["recorded", "freed", "missed_frees", "nested", "sampled_out", "failed"]


def _nonneg_int(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return v


class MemleakCommand:
    name = "memleak"
    summary = "Outstanding allocations by stack: a process's (uprobes) or the kernel's."
    epilog = EXAMPLES

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        target = parser.add_mutually_exclusive_group()
        target.add_argument("-p", "--pid", type=pid_arg, metavar="PID",
                            help="trace this process's allocations (with --kernel: the kernel "
                                 "allocations made in its context)")
        target.add_argument("-c", "--command", metavar="CMD",
                            help="run CMD (quoted, with its arguments) traced from its start; "
                                 "end when it ends (with --json/--folded its stdout goes to "
                                 "our stderr)")
        parser.add_argument("--kernel", action="store_true",
                            help="trace kernel allocations (the default without -p/-c)")
        parser.add_argument("-a", "--show-allocs", action="store_true",
                            help="also list each outstanding block (address and size)")
        parser.add_argument("-o", "--older", type=_nonneg_int, default=500, metavar="MS",
                            help="hide blocks younger than MS milliseconds (default 500; not "
                                 "applied once the traced command has exited)")
        parser.add_argument("--combined-only", action="store_true",
                            help="report per-stack totals kept in the kernel (cheaper to "
                                 "read; ignores -o)")
        parser.add_argument("--wa-missing-free", action="store_true",
                            help="accepted for BCC compatibility: reused addresses are always "
                                 "treated as freed, and counted")
        parser.add_argument("-s", "--sample-rate", type=positive_int, default=1, metavar="N",
                            help="record every Nth allocation of each thread (deterministic); "
                                 "reported figures are scaled by N")
        parser.add_argument("-T", "--top", type=positive_int, default=10, metavar="N",
                            help="stacks shown in text/JSON reports (default 10)")
        parser.add_argument("--sort", choices=("size", "count"), default="size",
                            help="order stacks by outstanding bytes (default) or count")
        parser.add_argument("-z", "--min-size", type=_nonneg_int, default=0, metavar="BYTES",
                            help="ignore allocations smaller than BYTES")
        parser.add_argument("-Z", "--max-size", type=_nonneg_int, default=None, metavar="BYTES",
                            help="ignore allocations larger than BYTES")
        parser.add_argument("-O", "--obj", metavar="OBJ",
                            help="allocator library or binary to probe (path, or a name such as "
                                 "c or jemalloc; default: the target's libc)")
        parser.add_argument("--symbols-prefix", default="", metavar="PREFIX",
                            help="probe PREFIX+malloc etc. (jemalloc: je_)")
        parser.add_argument("--percpu", action="store_true",
                            help="kernel mode: percpu allocations instead of kmem/pages")
        parser.add_argument("--stack-storage-size", type=positive_int, default=10240,
                            metavar="N", help="stack map entries (default 10240)")
        parser.add_argument("--max-allocs", type=positive_int, default=1000000, metavar="N",
                            help="outstanding blocks tracked at most (default 1000000)")
        parser.add_argument("--folded", action="store_true",
                            help="at the end, print folded stacks weighted by outstanding bytes")
        parser.add_argument("--pprof", metavar="FILE",
                            help="at the end, write a gzip pprof heap profile to FILE")
        parser.add_argument("--html", metavar="FILE",
                            help="at the end, write a self-contained HTML flame graph to FILE")
        parser.add_argument("--probe-at-entry", action="store_true",
                            help="put every uprobe on the function's first byte (as other tools "
                                 "do), even where a later one avoids single-stepping")
        add_common_options(parser, pid=False, cgroup=True)
        parser.add_argument("interval", nargs="?", type=positive_int, default=None,
                            help="seconds between reports (default 5 for text/JSON; with "
                                 "--folded/--pprof/--html only the final one)")
        parser.add_argument("count", nargs="?", type=positive_int, default=None,
                            help="number of reports, then exit")

    # ------------------------------------------------------------------------------------
    def run(self, args: argparse.Namespace) -> int:
        from memlens.core.privileges import require_tracing_privileges

        self.validate(args)
        require_tracing_privileges("memleak")
        return _Run(args).main()

    @staticmethod
    def validate(args: argparse.Namespace) -> None:
        if args.command is not None and not args.command.strip():
            raise UsageError("-c needs a command")
        if args.max_size is not None and args.max_size < args.min_size:
            raise UsageError(f"-Z {args.max_size} is below -z {args.min_size}")
        if args.folded and args.json:
            raise UsageError("--folded and --json both write stdout: choose one")
        if args.kernel and args.command:
            raise UsageError("--kernel traces kernel allocations: use -p, not -c")
        user = not args.kernel and (args.pid is not None or args.command is not None)
        if user and args.percpu:
            raise UsageError("--percpu is for kernel mode (no -p/-c)")
        if user and args.cgroup:
            raise UsageError("--cgroup is for kernel mode; user mode traces one process")
        if not user and (args.obj or args.symbols_prefix):
            raise UsageError("-O/--symbols-prefix need a process (-p or -c)")
        if args.pid is not None and not os.path.exists(f"/proc/{args.pid}"):
            raise UsageError(f"no process with PID {args.pid}")
        if args.obj and "/" in args.obj and not os.path.exists(args.obj):
            raise UsageError(f"-O {args.obj}: no such file")


BPF_TRACE_UPROBE_MULTI = 48  # enum bpf_attach_type


def uprobe_multi_supported() -> bool:
    """uprobe_multi links exist where vmlinux BTF has their type (kernel >= 6.6); set
    MEMLENS_UPROBE_MULTI=0 to use one perf-event uprobe per function instead."""
    from memlens.core import kernel

    if os.environ.get("MEMLENS_UPROBE_MULTI") == "0":
        return False
    return kernel.btf_has_name("bpf_uprobe_multi_link")


class _Child:
    """The -c command: forked now, blocked on a pipe until the probes are attached.

    A thread of ours ptrace-seizes the child with PTRACE_O_TRACEEXIT only: at its exit the
    command stops with its memory map still in place, `on_exit` snapshots it (a command that
    runs for milliseconds still gets symbols: a zombie's /proc/PID/maps is empty), and the
    thread lets it go.  Signals the command receives are passed straight on."""

    PTRACE_CONT, PTRACE_SEIZE, PTRACE_LISTEN = 7, 0x4206, 0x4208
    PTRACE_O_TRACEEXIT, PTRACE_EVENT_EXIT, PTRACE_EVENT_STOP = 0x40, 6, 128

    def __init__(self, argv: list[str], on_exit, stdout_to_stderr: bool = False):
        import threading

        self.argv = argv
        self.on_exit = on_exit
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            try:
                os.close(w)
                go = os.read(r, 1)
                os.close(r)
                if go != b"x":
                    os._exit(0)  # the tool failed before attaching
                if stdout_to_stderr:
                    os.dup2(2, 1)
                os.execvp(argv[0], argv)
            except OSError as err:
                os.write(2, f"memlens: cannot run {argv[0]}: {err.strerror}\n".encode())
            os._exit(127)
        os.close(r)
        self.pid, self._w = pid, w
        self.status: int | None = None
        self._seized = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._trace, name="memleak-c", daemon=True)
        self._thread.start()
        self._seized.wait(5)

    def _trace(self) -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        libc.ptrace.restype = ctypes.c_long
        seized = libc.ptrace(self.PTRACE_SEIZE, self.pid, None,
                             ctypes.c_void_p(self.PTRACE_O_TRACEEXIT)) == 0
        self._seized.set()
        while True:
            try:
                _pid, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                self.status = self.status if self.status is not None else 0
                break
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self.status = status
                break
            if not (seized and os.WIFSTOPPED(status)):
                continue
            event, sig = status >> 16, os.WSTOPSIG(status)
            if event == self.PTRACE_EVENT_EXIT:
                try:
                    self.on_exit()
                except Exception:
                    pass
                libc.ptrace(self.PTRACE_CONT, self.pid, None, None)
            elif event == self.PTRACE_EVENT_STOP:
                libc.ptrace(self.PTRACE_LISTEN, self.pid, None, None)  # group stop: stay
            else:  # signal-delivery-stop: deliver it
                libc.ptrace(self.PTRACE_CONT, self.pid, None, ctypes.c_void_p(sig))
        self._done.set()

    def release(self) -> None:
        os.write(self._w, b"x")
        os.close(self._w)
        self._w = -1

    def abandon(self) -> None:
        if self._w >= 0:
            os.close(self._w)  # EOF: the child exits without running the command
            self._w = -1
        self._done.wait(10)

    def exited(self) -> bool:
        return self._done.is_set()

    def stop(self) -> None:
        if self.exited():
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if not self._done.wait(2):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._done.wait(5)


USER_PROGS = ["ml_enter_size1", "ml_enter_size2", "ml_enter_calloc", "ml_enter_realloc",
              "ml_enter_posix_memalign", "ml_enter_mremap", "ml_return", "ml_free", "ml_exec"]
# (program, category, tracepoint, required)
KMEM_TPS = [("ml_kmalloc", "kmem", "kmalloc", True), ("ml_kfree", "kmem", "kfree", True),
            ("ml_kmem_cache_alloc", "kmem", "kmem_cache_alloc", True),
            ("ml_kmem_cache_free", "kmem", "kmem_cache_free", True),
            ("ml_kmalloc_node", "kmem", "kmalloc_node", False),
            ("ml_kmem_cache_alloc_node", "kmem", "kmem_cache_alloc_node", False),
            ("ml_page_alloc", "kmem", "mm_page_alloc", True),
            ("ml_page_free", "kmem", "mm_page_free", True),
            ("ml_page_free_batched", "kmem", "mm_page_free_batched", False)]
PERCPU_TPS = [("ml_percpu_alloc", "percpu", "percpu_alloc_percpu", True),
              ("ml_percpu_free", "percpu", "percpu_free_percpu", True)]


class _Run:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.user = not args.kernel and (args.pid is not None or args.command is not None)
        self.mode = "user" if self.user else "kernel"
        self.pid: int | None = args.pid
        self.child: _Child | None = None
        self.writer = None
        self.sym = None            # ProcessSymbolizer of the target (user mode)
        self.sym_time = 0.0
        import threading

        self.sym_lock = threading.Lock()
        self.frames_cache: dict[int, list] = {}
        self.resolver = None
        self.plan = None
        self.target_ended = False
        self.comm = ""
        self._lost_totals: dict[str, int] = {}
        self._counter_seen: dict[str, int] = {}

    # -- setup ----------------------------------------------------------------------------
    def main(self) -> int:
        from memlens.core import kernel

        args = self.args
        if args.json:
            from memlens.output.ndjson import JsonWriter

            self.writer = JsonWriter(sys.stdout)
        kernel.ensure_tracefs()
        if self.user:
            if args.command is not None:
                argv = shlex.split(args.command)
                binary = shutil.which(argv[0]) if argv else None
                if not binary:
                    raise UsageError(f"-c: command not found: {argv[0] if argv else ''!r}")
                from .probes import command_libraries

                mapped = command_libraries(binary)
                desc = f"command {argv[0]!r}"
            else:
                from .probes import process_maps_paths

                mapped = process_maps_paths(self.pid)  # type: ignore[arg-type]
                desc = f"PID {self.pid}"
            self.plan = plan_probes(mapped, args.obj, args.symbols_prefix, desc,
                                    skip_entry=not args.probe_at_entry)
            if args.command is not None:
                # our stdout is data when it is JSON or folded: the command writes to stderr
                self.child = _Child(argv, on_exit=self.snapshot_at_exit,
                                    stdout_to_stderr=bool(args.json or args.folded))
                self.pid = self.child.pid
                self.comm = os.path.basename(argv[0])[:15]
            else:
                self.comm = _read_comm(self.pid)
        else:
            self.check_kernel_hooks()
        try:
            return self.trace()
        finally:
            if self.child is not None:
                if self.child._w >= 0:
                    self.child.abandon()
                else:
                    self.child.stop()

    def check_kernel_hooks(self) -> None:
        from memlens.core import kernel

        tps = PERCPU_TPS if self.args.percpu else KMEM_TPS
        missing = [f"{c}:{n}" for _, c, n, req in tps if req and not kernel.tracepoint_exists(c, n)]
        if missing:
            raise KernelLacks(f"memleak kernel mode needs the tracepoints {', '.join(missing)} "
                              "(not in this kernel's tracefs events)")

    def trace(self) -> int:
        from memlens.core import kernel
        from memlens.core.loader import BpfObject

        args = self.args
        with BpfObject.open("tools/memleak/memleak.bpf.o") as obj:
            self.obj = obj
            ro = obj.rodata
            ro["min_size"] = args.min_size
            ro["max_size"] = args.max_size if args.max_size is not None else (1 << 64) - 1
            ro["sample_rate"] = args.sample_rate
            ro["track_stats"] = bool(args.combined_only or args.pprof)
            ro["need_exec"] = self.child is not None
            ro["user_mode"] = self.user
            configure_filters(obj, args, pid=self.pid)  # -p/-c child, --cgroup, not us
            obj.set_max_entries("allocs", args.max_allocs)
            obj.set_max_entries("stacks", args.stack_storage_size)
            obj.set_max_entries("stats", args.stack_storage_size)
            kernel_tps = [] if self.user else (PERCPU_TPS if args.percpu else KMEM_TPS)
            kernel_tps = [t for t in kernel_tps if kernel.tracepoint_exists(t[1], t[2])]
            wanted = set(USER_PROGS) if self.user else {t[0] for t in kernel_tps}
            for prog in obj.programs():
                obj.set_autoload(prog, prog in wanted)
            self.multi = self.user and uprobe_multi_supported()
            if self.multi:
                for prog in obj.programs():
                    if obj.section(prog).startswith(("uprobe", "uretprobe")):
                        obj.set_expected_attach_type(prog, BPF_TRACE_UPROBE_MULTI)
            obj.load()
            if self.user:
                self.attach_user(obj)
            else:
                for prog, cat, name, _ in kernel_tps:
                    obj.attach_tracepoint(prog, cat, name)
            self.info_dtype = obj.struct_dtype("alloc_info")
            self.key_dtype = obj.struct_dtype("stack_key")
            self.stats_dtype = obj.struct_dtype("stack_stats")
            self.session = Session(duration=args.duration, interval=self.interval(),
                                   count=args.count)
            self.session.banner(self.banner_text())
            if self.child is not None:
                self.child.release()
            self.loop()
        return 0

    def interval(self) -> float | None:
        if self.args.interval:
            return float(self.args.interval)
        if self.args.folded or self.args.pprof or self.args.html:
            return None
        return 5.0

    def attach_user(self, obj) -> None:
        assert self.plan is not None and self.pid is not None
        # The exec tracepoint first: -c's child execs as soon as it is released.
        obj.attach_tracepoint("ml_exec", "sched", "sched_process_exec")
        if self.multi:
            # one link per (program, file, entry|return) instead of one per function: the
            # kernel tears uprobe links down one at a time (~100 ms each here), so 37
            # single links made Ctrl-C take 2 s
            groups: dict[tuple[str, str, bool], tuple[list[int], list[int]]] = {}
            for p in self.plan.probes:
                targets = [(p.prog, False)] + ([("ml_return", True)] if p.retprobe else [])
                for prog, ret in targets:
                    offs, cookies = groups.setdefault((prog, p.binary, ret), ([], []))
                    offs.append(p.offset)
                    cookies.append(p.kind)
            for (prog, binary, ret), (offs, cookies) in groups.items():
                obj.attach_uprobe_multi(prog, binary, offs, cookies, pid=self.pid,
                                        retprobe=ret)
            return
        for p in self.plan.probes:
            obj.attach_uprobe(p.prog, p.binary, None, pid=self.pid, offset=p.offset,
                              cookie=p.kind)
            if p.retprobe:
                # Same offset as the entry probe: one breakpoint serves both.
                obj.attach_uprobe("ml_return", p.binary, None, pid=self.pid, retprobe=True,
                                  offset=p.offset, cookie=p.kind)

    def banner_text(self) -> str:
        if not self.user:
            what = "percpu" if self.args.percpu else "kmalloc, kmem_cache and page"
            who = f" made by PID {self.pid}" if self.pid is not None else ""
            return f"outstanding kernel {what} allocations{who}"
        assert self.plan is not None
        n = sum(1 + p.retprobe for p in self.plan.probes)
        libs = ", ".join(dict.fromkeys(os.path.basename(p.binary) for p in self.plan.probes))
        who = (f"command {self.args.command!r} (PID {self.pid})" if self.child
               else f"PID {self.pid}")
        return f"outstanding allocations of {who}: {n} probes in {libs}"

    # -- loop -----------------------------------------------------------------------------
    def loop(self) -> None:
        args = self.args
        self.start_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        self.reports = 0
        last_was_interval = False

        def poll() -> None:
            self.refresh_symbols()

        def on_interval() -> None:
            nonlocal last_was_interval
            self.emit(self.collect(final=False), final=False)
            last_was_interval = True

        def should_stop() -> bool:
            if self.child is not None:
                if self.child.exited():
                    self.target_ended = True
            elif self.user and self.pid is not None and not _alive(self.pid):
                self.target_ended = True
            return self.target_ended

        self.session.run(poll, on_interval if self.session.interval else None,
                         poll_interval=0.1, should_stop=should_stop)
        count_done = bool(args.count and self.session.intervals_done >= args.count)
        if not count_done or not last_was_interval:
            self.emit(self.collect(final=True), final=True)
        elif args.folded or args.pprof or args.html:
            self.emit(self.collect(final=True), final=True, text=False)
        self.summary()

    def refresh_symbols(self, force: bool = False, locked: bool = False) -> None:
        """Snapshot the target's memory map while it lives (once a second), so that a
        process that has exited by the final report still gets symbols."""
        if not self.user or self.pid is None:
            return
        if not locked:
            with self.sym_lock:
                return self.refresh_symbols(force, locked=True)
        now = time.monotonic()
        if not force and now - self.sym_time < 1.0:
            return
        self.sym_time = now
        if self.child is not None and self.gen() == 0:
            return  # not exec'd yet: the map is the forked Python's
        try:
            with open(f"/proc/{self.pid}/maps") as f:
                if not f.read(1):
                    return  # a zombie: keep the last snapshot
        except OSError:
            return
        from memlens.core.symbols import ProcessSymbolizer

        try:
            if self.sym is None:
                self.sym = ProcessSymbolizer(self.pid)
            else:
                self.sym.refresh()
            if self.child is not None:
                self.comm = _read_comm(self.pid) or self.comm
        except (ProcessLookupError, OSError):
            pass

    def snapshot_at_exit(self) -> None:
        """-c: called (from the tracer thread) while the command is stopped at its exit."""
        with self.sym_lock:
            self.sym_time = 0.0
            self.refresh_symbols(force=True, locked=True)

    def gen(self) -> int:
        raw = self.obj.map("exec_gen").lookup(b"\0\0\0\0")
        return int.from_bytes(raw[:4], "little") if raw else 0

    # -- collect --------------------------------------------------------------------------
    def collect(self, final: bool):
        from .report import Report, StackTotal, group, sort_stacks

        args = self.args
        now_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        scale = args.sample_rate
        self.refresh_symbols(force=True)
        addrs, info = self.obj.map("allocs").items("<u8", self.info_dtype)
        if self.user:
            keep = info["gen"] == (self.gen() & 0xFFFF)
            addrs, info = addrs[keep], info[keep]
        age_filter = not (final and self.target_ended)
        if age_filter and args.older:
            keep = (now_ns - info["ts_ns"].astype(np.int64)) >= args.older * 1_000_000
            addrs, info = addrs[keep], info[keep]
        stats: dict[tuple[int, int], Any] = {}
        if args.combined_only or args.pprof:
            k, v = self.obj.map("stats").items(self.key_dtype, self.stats_dtype)
            for kk, vv in zip(k.tolist(), v.tolist()):
                stats[(int(kk[0]), int(kk[1]))] = vv
        if args.combined_only:
            stacks = [StackTotal(sid, kind, int(v[3]) * scale, int(v[2]) * scale,
                                 int(v[1]) * scale, int(v[0]) * scale)
                      for (sid, kind), v in stats.items() if v[2] > 0]
        else:
            stacks = group(addrs, info, scale)
            for s in stacks:
                v = stats.get((s.stack, s.kind))
                if v is not None:
                    s.alloc_objects, s.alloc_bytes = int(v[0]) * scale, int(v[1]) * scale
        stacks = sort_stacks(stacks, args.sort)
        blocks = None
        if args.show_allocs:
            order = np.argsort(addrs, kind="stable")
            blocks = np.zeros(len(addrs), [("addr", "<u8"), ("size", "<u8"), ("age", "<i8")])
            blocks["addr"], blocks["size"] = addrs[order], info["size"][order]
            blocks["age"] = now_ns - info["ts_ns"][order].astype(np.int64)
        # frames for what is printed (text/JSON: top N) or written (files: all)
        need_all = final and (args.folded or args.pprof or args.html)
        for s in stacks if need_all else stacks[:args.top]:
            s.frames = self.frames(s.stack, s.kind)
        rep = Report(time.time(), stacks, blocks, final=final)
        rep.lost, rep.counters = self.losses()
        if args.pprof and final:
            rep.extra_stats = stats  # type: ignore[attr-defined]
        return rep

    def stack_ips(self, stack: int) -> list[int]:
        raw = self.obj.map("stacks").lookup(int(stack).to_bytes(8, "little")) if stack else None
        if raw is None:
            return []
        ips = np.frombuffer(raw, "<u8")
        nz = np.flatnonzero(ips == 0)
        return ips[: nz[0] if nz.size else len(ips)].tolist()

    def frames(self, stack: int, kind: int) -> list:
        from memlens.core.stackresolve import MISSED_KERNEL, MISSED_USER, MarkerFrame

        from .report import allocator_frame

        cached = self.frames_cache.get(stack)
        if not self.user:
            if cached is None:
                ips = self.stack_ips(stack)
                if not ips:
                    return [MarkerFrame(MISSED_KERNEL)]
                from memlens.core.symbols import KernelSymbolizer

                frames = list(KernelSymbolizer.get().resolve_stack(ips))
                # When a tracepoint has more than one user (another tracer, a second
                # memleak), its callbacks run from __traceiter_<event>, which then tops the
                # stack: drop it, so that the stack starts at the allocator either way.
                while len(frames) > 1 and (frames[0].symbol or "").startswith("__traceiter_"):
                    frames.pop(0)
                cached = self.frames_cache[stack] = frames
            return cached
        assert self.plan is not None
        label = self.plan.kind_labels.get(kind, KIND_NAMES.get(kind, "?"))
        module = os.path.basename(self.plan.cxx if kind in (10, 11) and self.plan.cxx
                                  else self.plan.allocator)
        head = [allocator_frame(label, module)]
        if cached is None:
            ips = self.stack_ips(stack)
            if not ips:
                cached = [MarkerFrame(MISSED_USER)]
            elif self.sym is None:
                from memlens.core.stacks import Frame

                cached = [Frame(ip, None, 0, None) for ip in ips]
            else:
                # Every address is a return address: the first is where the allocator
                # returned to in its caller (the stack is taken at the return).
                cached = self.sym.resolve(ips, return_address=True)
                if all(f.resolved for f in cached):
                    self.frames_cache[stack] = cached
        return head + list(cached)

    def losses(self) -> tuple[dict[str, int], dict[str, int]]:
        drops = np.asarray(self.obj.map("drops").array_values("<u8")).tolist()
        counters = np.asarray(self.obj.map("counters").array_values("<u8")).tolist()
        c = {name: int(counters[i]) for i, name in enumerate(ML_COUNTERS)}
        lost = {"events": int(drops[0]), "stacks": int(drops[1] + drops[2]),
                "stacks_missing": int(drops[3]), "entries": int(drops[4]),
                "missed_frees": c["missed_frees"]}
        return lost, c

    # -- output ---------------------------------------------------------------------------
    def emit(self, rep, final: bool, text: bool = True) -> None:
        from . import report as R

        args = self.args
        if text and not args.folded:
            if self.writer is not None:
                self.writer.emit(R.json_record(rep, args.top, args.sample_rate, self.mode,
                                               self.pid))
            else:
                R.print_text(rep, args.top, args.sample_rate)
        self.report_losses(rep)
        if not final:
            return
        prefix = [self.comm] if self.user and self.comm else []
        if args.folded:
            from memlens.output.folded import write_folded

            write_folded(sys.stdout, R.folded_entries(rep, prefix))
        if args.html:
            from memlens.output.flamegraph import write_html

            who = f"PID {self.pid} ({self.comm})" if self.user else "kernel"
            write_html(args.html, R.folded_entries(rep, prefix),
                       title=f"memleak: outstanding bytes, {who}", count_name="bytes")
        if args.pprof:
            self.write_pprof(rep)

    def write_pprof(self, rep) -> None:
        from memlens.output.pprof import write_heap_profile

        from .report import pprof_samples

        samples = pprof_samples(rep)
        # stacks that allocated but hold nothing now still belong in alloc_space
        seen = {(s.stack, s.kind) for s in rep.stacks}
        scale = self.args.sample_rate
        for (sid, kind), v in getattr(rep, "extra_stats", {}).items():
            if (sid, kind) not in seen and v[0]:
                samples.append((self.frames(sid, kind), int(v[0]) * scale, int(v[1]) * scale,
                                0, 0))
        comments = [f"memlens memleak ({self.mode}" + (f", PID {self.pid}" if self.pid else "")
                    + ")"]
        if scale > 1:
            comments.append(f"sampled every {scale}th allocation per thread; values scaled")
        comments.append("lost: " + ", ".join(f"{k}={v}" for k, v in rep.lost.items()))
        dur = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - self.start_ns
        write_heap_profile(self.args.pprof, samples, comments=comments, duration_ns=dur)

    def report_losses(self, rep) -> None:
        report_lost(self.session.new_drops(self.obj), self.writer)
        missed = rep.lost.get("missed_frees", 0)
        delta = missed - self._lost_totals.get("missed_frees", 0)
        if delta > 0:
            self._lost_totals["missed_frees"] = missed
            report_lost([{"type": "lost", "what": "frees",
                          "reason": "address reused without a free seen", "count": delta,
                          "total": missed}], self.writer)

    def summary(self) -> None:
        if self.writer is None:
            return
        _, counters = self.losses()
        rec = {"type": "summary", "mode": self.mode, "pid": self.pid,
               "lost": self.session.total_drops(), "counters": counters}
        if self.plan is not None:
            rec["probes"] = [{"binary": p.binary, "symbol": p.symbol, "names": p.names,
                              "entry_skip": p.skip, "retprobe": p.retprobe}
                             for p in self.plan.probes]
        if self.child is not None and self.child.status is not None:
            rec["command_status"] = os.waitstatus_to_exitcode(self.child.status)
        self.writer.emit(rec)


def _read_comm(pid: int | None) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


COMMAND = MemleakCommand()
