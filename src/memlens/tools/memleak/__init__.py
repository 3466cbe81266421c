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

import _thread
import os
import sys
import time

from memlens.core.kernel import uprobe_multi_supported
from memlens.core.lazy import np
from memlens.core.libbpf import BPF_TRACE_UPROBE_MULTI
from memlens.core.record import record
from memlens.core.session import (
    MAX_SECONDS,
    TargetExit,
    add_common_options,
    configure_filters,
    map_entries,
    nonempty,
    nonneg_int,
    pid_arg,
    positive_int,
    stack_entries,
)
from memlens.core.unwind import add_stack_unwind_option
from memlens.errors import KernelLacks, UsageError
from memlens.output.sinks import JsonSink, Sink, add_output_options, check_output_options

TYPE_CHECKING = False  # typing costs ~7 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from memlens.core.background import Background
    from memlens.core.command import TracedCommand
    from memlens.core.handover import HandOver

EXAMPLES = """\
examples:
  memlens memleak -p 1234              # leaks of PID 1234, top 10 stacks every 5 s
  memlens memleak -p 1234 -o 60000 30  # only blocks older than a minute, every 30 s
  memlens memleak -c "./server --port 8080" -d 60 --pprof heap.pb.gz
                                       # run a command, traced from its first malloc;
                                       # `go tool pprof -top heap.pb.gz` reads the profile
  memlens memleak -p 1234 -s 100       # record every 100th allocation per thread (cheaper)
  memlens memleak -p 1234 --quick-start
                                       # attached ~10 ms sooner; stacks of the first
                                       # ~30 ms by frame pointers (counted as lost
                                       # unwind_fallback), whole ones after
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
  -f/--folded, --html and --pprof hold the state at exit: every stack (not -T's top N),
  by outstanding bytes (pprof: alloc_objects/alloc_space/inuse_objects/inuse_space).
"""

ML_COUNTERS = ["recorded", "freed", "missed_frees", "nested", "sampled_out", "failed"]


def _milliseconds(text: str) -> int:
    """-o: an age in milliseconds, 0 to a year (session.seconds' bound)."""
    return nonneg_int(text, int(MAX_SECONDS * 1000))


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
        parser.add_argument("-o", "--older", type=_milliseconds, default=500, metavar="MS",
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
        parser.add_argument("-z", "--min-size", type=nonneg_int, default=0, metavar="BYTES",
                            help="ignore allocations smaller than BYTES")
        parser.add_argument("-Z", "--max-size", type=nonneg_int, default=None, metavar="BYTES",
                            help="ignore allocations larger than BYTES")
        parser.add_argument("-O", "--obj", type=nonempty, metavar="OBJ",
                            help="allocator library or binary to probe (path, or a name such as "
                                 "c or jemalloc; default: the target's libc)")
        parser.add_argument("--symbols-prefix", default="", metavar="PREFIX",
                            help="probe PREFIX+malloc etc. (jemalloc: je_)")
        parser.add_argument("--percpu", action="store_true",
                            help="kernel mode: percpu allocations instead of kmem/pages")
        parser.add_argument("--stack-storage-size",
                            type=stack_entries, default=10240,
                            metavar="N", help="stack map entries (default 10240)")
        parser.add_argument("--max-allocs", type=map_entries, default=1000000, metavar="N",
                            help="outstanding blocks tracked at most (default 1000000)")
        add_stack_unwind_option(parser)
        parser.add_argument("--quick-start", action="store_true",
                            help="-p: attach before the DWARF stack walk is loaded (the "
                                 "banner ~10 ms sooner); the stacks of allocations made "
                                 "until it is (~30 ms) are walked by frame pointers "
                                 "and counted as unwind_fallback (default: every probe "
                                 "attached with the walk loaded: whole stacks from the "
                                 "first event)")
        parser.add_argument("--probe-at-entry", action="store_true",
                            help="put every uprobe on the function's first byte (as other tools "
                                 "do), even where a later one avoids single-stepping")
        add_common_options(parser, pid=False, cgroup=True, json=False)
        # the same output flags as every tool; memleak's folded, HTML and pprof output is the
        # state at exit, by outstanding bytes (_FinalFiles)
        add_output_options(parser, folded=True, html=True, pprof=True)
        parser.add_argument("interval", nargs="?", type=positive_int, default=None,
                            help="seconds between reports (default 5 for text/JSON; with "
                                 "--folded/--pprof/--html only the final one)")
        parser.add_argument("count", nargs="?", type=positive_int, default=None,
                            help="number of reports, then exit")

    # ------------------------------------------------------------------------------------
    def run(self, args: argparse.Namespace) -> int:
        from memlens.core.runner import run_cli

        self.validate(args)
        # the runner takes its period from args.interval: 5 s unless only files are asked for
        if args.interval is None and not (args.folded or args.pprof or args.html):
            args.interval = 5.0
        tool = MemleakTool(args)
        return run_cli(tool, args, make_memleak_sink(args, tool))

    @staticmethod
    def validate(args: argparse.Namespace) -> None:
        if args.command is not None:
            from memlens.core.command import split_command  # -c only (~3 ms of imports)

            split_command(args.command)  # exit 2 for '' or unbalanced quotes
        if args.max_size is not None and args.max_size < args.min_size:
            raise UsageError(f"-Z {args.max_size} is below -z {args.min_size}")
        check_output_options(args)
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
        if args.pid is not None and not args.kernel:
            from memlens.core.session import process_alive

            if not process_alive(args.pid):  # its memory is gone: nothing to attach to
                raise UsageError(f"PID {args.pid} has exited (a zombie: its parent has "
                                 "not reaped it yet)")
        if getattr(args, "quick_start", False) and (args.pid is None or args.kernel):
            raise UsageError("--quick-start is for -p (a -c command is traced with the "
                             "walk loaded before it starts)")
        if args.obj and "/" in args.obj and not os.path.exists(args.obj):
            raise UsageError(f"-O {args.obj}: no such file")


# --quick-start's hand-over (core/handover.py): ml_return attached as its twin, whose
# program array ml_whole takes the whole ml_return after the banner
HANDING = {"ml_return": ("ml_return_handing", "ml_whole")}


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


class MemleakTool:
    """memleak on the runner (core/runner.py): start() plans and attaches the probes (and
    forks -c's command), poll() keeps the target's symbols fresh, report() reads the maps
    into a "report" record, summary() says what was probed and lost.  It prints nothing:
    text, --json and the final files are the sink's (make_memleak_sink)."""

    name = "memleak"

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.user = not args.kernel and (args.pid is not None or args.command is not None)
        self.mode = "user" if self.user else "kernel"
        self.pid: int | None = args.pid
        self.what = ""
        self.obj = None
        self.child: TracedCommand | None = None
        self.plan = None
        self.multi = False
        self.sym = None            # ProcessSymbolizer of the target (user mode)
        self.sym_time = 0.0
        self.sym_lock = _thread.allocate_lock()
        self.frames_cache: dict[int, list] = {}
        self.target_ended = False
        self.comm = ""
        self.start_ns = 0
        # --folded/--html/--pprof: the final state, computed while the maps are open and
        # written by the sink at its close (_FinalFiles)
        self.files = bool(args.folded or args.html or args.pprof)
        self.snapshot: _Snapshot | None = None
        self.drop_losses = None  # core/drops.Losses, once the object is loaded
        self.unwind = None       # core/unwind UnwindStore: user stacks by .eh_frame
        # --quick-start: attached with ml_return_handing (frame pointers), the whole
        # ml_return loaded after the banner (_hand_over): core/handover.HandOver
        self.hand_over_due = False
        self.hand_over: HandOver | None = None
        # maps made by the planning thread before the object is opened (name -> (how, fd))
        self._early_maps: dict[str, tuple[tuple, int]] = {}
        self.mapped: list[str] = []  # the files the target maps (or -c's will)
        self.target = TargetExit(None)
        self.kernel_tps: list[tuple[str, str, str, bool]] = []  # --kernel: attached after load
        self._warmup = None  # core/uprobewarm.UprobeWarmup, from the open to the attach
        self._missed_frees_seen = 0
        # user stacks printed with a frame left as a bare address (stack id -> why), counted
        # once each as lost "symbols", like the engine tools' (core/stackresolve)
        self.unsymbolized: dict[int, str] = {}
        self._unsymbolized_seen: dict[str, int] = {}

    # -- runner protocol ------------------------------------------------------------------
    def start(self) -> None:
        from memlens.core import kernel
        from memlens.core.privileges import require_tracing_privileges

        require_tracing_privileges("memleak")
        kernel.ensure_tracefs()
        if self.args.pid is not None:
            self.target = TargetExit(self.args.pid)  # before attaching: this very process
        planning = None
        if self.user and self.args.command is None and self.maps_fit():
            # -p: a thread plans the probes (the allocator's symbols), finds whether the
            # kernel has uprobe_multi links (vmlinux BTF: 3-25 ms) and reads the target's
            # unwind tables, while this one opens, configures and loads the object (the
            # maps' creation and the verifier: ctypes releases the GIL); the plan is
            # needed only to attach.  Started first (with Background's short switch
            # interval until its result).
            from memlens.core.background import Background, Flag

            self._multi_known = Flag()
            self._early_made = Flag()
            planning = Background(self._plan_beside_the_load, "memleak-plan")
            if self.args.stack_unwind != "fp" and not self.args.quick_start:
                # (--quick-start: read by the hand-over, after the banner; the load it
                # waits for is short without the walk)
                planning.also(self.prepare_unwind)
            planning.start()
        elif self.user:
            self.plan_user()
        else:
            self.check_kernel_hooks()
        try:
            self.load_and_attach(planning)
        finally:
            if planning is not None:
                planning.restore_switch()
        if self.user and self.child is None:
            # -p: the target's map read before the banner, so that a target gone right
            # after it (before the first poll) still has its symbols
            self.refresh_symbols(force=True)
        self.what = self.banner_text()
        self.start_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    def poll(self, timeout: float) -> list[dict]:
        if self.child is not None and self.child.held():
            # the first poll comes right after the banner: the command (whose stdout is our
            # stderr with --json/--folded) cannot print before it
            self.child.release()
        if self.hand_over_due:
            self._hand_over()
        if self.unwind is not None:
            self.unwind.poll()  # the target after its exec, its dlopens
        self.refresh_symbols()
        # nothing to drain (the maps are read per report): the runner bounds the wait, so a
        # stop is seen within POLL_S
        time.sleep(timeout)
        return []

    @property
    def finished(self) -> bool:
        """-c's command or -p's process has ended (with --kernel too: its context is gone):
        nothing more can be allocated or freed."""
        if not self.target_ended:
            if self.child is not None:
                self.target_ended = self.child.exited()
            elif self.pid is not None:
                self.target_ended = self.target.exited()
        return self.target_ended

    @property
    def finish_reason(self) -> str | None:
        # -c's end is the command's: memlens says nothing; -p's is said once
        return None if self.child is not None else f"PID {self.pid} exited"

    def report(self, final: bool) -> list[dict]:
        from . import report as R

        rep = self.collect(final)
        out = []
        if not self.args.folded:  # folded output is the final state only (_FinalFiles)
            out.append(R.json_record(rep, self.args.top, self.args.sample_rate, self.mode,
                                     self.pid))
        if final and self.files:
            self.snapshot = self.take_snapshot(rep)
        return out + self.lost_records(rep)

    def summary(self) -> list[dict]:
        out = []
        if self.files and self.snapshot is None:
            # the last of `count` reports was an interval one (the runner takes no final
            # report then): the files still get the state at exit
            rep = self.collect(final=True)
            self.snapshot = self.take_snapshot(rep)
            out = self.lost_records(rep)
        _, counters = self.losses()
        rec: dict[str, Any] = {"type": "summary", "mode": self.mode, "pid": self.pid,
                               "lost": self.total_drops(), "counters": counters}
        if self.plan is not None:
            rec["probes"] = [{"binary": p.binary, "symbol": p.symbol, "names": p.names,
                              "entry_skip": p.skip, "retprobe": p.retprobe}
                             for p in self.plan.probes]
        if self.child is not None and self.child.status is not None:
            rec["command_status"] = os.waitstatus_to_exitcode(self.child.status)
        return [*out, rec]

    def close(self) -> None:
        if self._warmup is not None:
            self._warmup.finish()
            self._warmup = None
        self.target.close()
        for _, fd in self._early_maps.values():  # a start that failed before its load
            if fd >= 0:
                os.close(fd)
        self._early_maps.clear()
        try:
            if self.unwind is not None:
                self.unwind.close()
                self.unwind = None
            if self.obj is not None:
                self.obj.close()  # detach before stopping -c's command: its teardown is not traced
                self.obj = None
            if self.hand_over is not None:
                self.hand_over.close()  # after the links that tail-call it are gone
                self.hand_over = None
        finally:
            if self.child is not None:
                self.child.end()

    # -- setup ----------------------------------------------------------------------------
    def maps_fit(self) -> bool:
        """The maps the options size fit well in the memory this process may use (its
        memory cgroup's limit, MemAvailable).  Only then is the plan made beside the load:
        while the kernel makes a map near that limit, numpy's import in the other thread
        faults pages and meets the OOM killer (the process killed, -9) where the map's
        allocation alone fails cleanly (ENOMEM: exit 2 naming the option)."""
        from memlens.core import kernel

        return kernel.maps_fit(self.maps_bytes())  # (margin: the fixed maps, numpy)

    def maps_bytes(self) -> int:
        """What the maps the options size take when made."""
        from memlens.core import kernel

        a = self.args
        buckets = kernel.hash_buckets_bytes
        return (buckets(a.max_allocs)                    # allocs: its entries come later
                + 2 * buckets(a.stack_storage_size)      # stacks, stats: preallocated
                + a.stack_storage_size * (1016 + 32 + 2 * 96))

    def _plan_beside_the_load(self) -> None:
        # in the order the main thread needs them: whether uprobe_multi links exist (to
        # configure), the unwinder's helpers probed (likewise), allocs (~15 ms of the
        # kernel's, its 2^20 buckets zeroed: handed to libbpf by premake_maps if made as
        # configured), then the plan (to attach)
        try:
            self._multi_answer = uprobe_multi_supported()
        finally:
            self._multi_known.set()
        try:
            if self.args.stack_unwind != "fp":
                from memlens.core import unwind

                unwind.kernel_support()
            from memlens.core import earlymaps

            # made from the command line's start (registry's early_maps) when it could be;
            # else here, as the registry declares it and --max-allocs sizes it (checked by
            # premake_maps against the object as configured, like the early one)
            early = earlymaps.take("allocs")
            if early is None:
                from memlens import registry
                from memlens.core.record import replace

                (allocs,) = registry.find("memleak").early_maps
                early = earlymaps.make(replace(allocs, max_entries=self.args.max_allocs))
            self._early_maps["allocs"] = early
        finally:
            self._early_made.set()
        self.plan_user()

    def _uprobe_multi(self) -> bool:
        """uprobe_multi_supported(), found by the planning thread when there is one."""
        known = getattr(self, "_multi_known", None)
        if known is not None and known.wait(timeout=60) and hasattr(self, "_multi_answer"):
            return self._multi_answer
        return uprobe_multi_supported()

    def plan_user(self) -> None:
        args = self.args
        if args.command is not None:
            from memlens.core.command import TracedCommand, split_command

            argv = split_command(args.command)
            import shutil  # ~4 ms of imports (bz2, lzma): -c only

            binary = shutil.which(argv[0]) if argv else None
            if not binary:
                raise UsageError(f"-c: command not found: {argv[0] if argv else ''!r}")
            from memlens.core.command import command_libraries

            mapped = command_libraries(binary)
            desc = f"command {argv[0]!r}"
        else:
            from .probes import process_maps_paths

            mapped = process_maps_paths(self.pid)  # type: ignore[arg-type]
            desc = f"PID {self.pid}"
        from .probes import plan_probes

        self.mapped = mapped
        self.plan = plan_probes(mapped, args.obj, args.symbols_prefix, desc,
                                skip_entry=not args.probe_at_entry)
        if args.command is not None:
            # our stdout is data when it is JSON or folded: the command writes to stderr
            self.child = TracedCommand(argv, on_exit=self.snapshot_at_exit,
                                stdout_to_stderr=bool(args.json or args.folded))
            self.pid = self.child.pid
            self.comm = os.path.basename(argv[0])[:15]
        else:
            self.comm = _read_comm(self.pid)

    def prepare_unwind(self) -> None:
        """-p, in the planning thread while the object loads: the store's module and the
        tables of the files the target maps (from the disk cache: a millisecond each; built
        the first time: libc ~50-90 ms), so that writing its entry after the load is only
        copies into the maps.  Neither imports numpy (core/unwind/tables.py)."""
        from memlens.core.unwind.store import UnwindStore

        cache = UnwindStore.default_cache()
        for path in self.mapped:
            cache.get(path)

    def check_kernel_hooks(self) -> None:
        from memlens.core import kernel

        tps = PERCPU_TPS if self.args.percpu else KMEM_TPS
        missing = [f"{c}:{n}" for _, c, n, req in tps if req and not kernel.tracepoint_exists(c, n)]
        if missing:
            raise KernelLacks(f"memleak kernel mode needs the tracepoints {', '.join(missing)} "
                              "(not in this kernel's tracefs events)")

    def load_and_attach(self, planning: Background | None = None) -> None:
        """Open, configure, load and attach; `planning`, the -p plan being made in a thread
        meanwhile, is joined after the load (its error first, as when it ran before)."""
        try:
            unwind_on = self._open_and_load(planning)
        except BaseException:
            self._stop_warmup()
            if planning is not None:
                planning.result()
            raise
        if planning is not None:
            planning.result()
        if unwind_on:
            from memlens.core.unwind.store import UnwindStore

            self.unwind = UnwindStore(self.obj)
            if self.child is None:
                self.unwind.load_process(self.pid)  # -p: whole stacks from the first event
            else:
                # -c: the files the command will map, before it runs (the kernel side
                # finds them from its mappings until its own entry is written)
                for path in self.mapped:
                    self.unwind.load_file(path)
                from memlens.core.command import unwind_at_exec

                self.child.on_exec = unwind_at_exec(self.unwind)  # and each image it execs
        obj = self.obj
        if self.user:
            try:
                self.attach_user(obj)
            finally:
                self._stop_warmup()
        else:
            for prog, cat, name, _ in self.kernel_tps:
                obj.attach_tracepoint(prog, cat, name)

    def _open_and_load(self, planning: Background | None) -> bool:
        """Open, configure and load the object (True: the DWARF walk is on)."""
        from memlens.core import kernel, unwind
        from memlens.core.loader import BpfObject

        args = self.args
        self.obj = obj = BpfObject.open("tools/memleak/memleak.bpf.o")
        if self.user:
            # the first uprobe link's grace period waited out while the object is
            # configured and loaded
            from memlens.core.uprobewarm import UprobeWarmup

            self._warmup = UprobeWarmup.start_if_room(obj.path, self.maps_bytes())
        ro = obj.rodata
        ro["min_size"] = args.min_size
        ro["max_size"] = args.max_size if args.max_size is not None else (1 << 64) - 1
        ro["sample_rate"] = args.sample_rate
        track_stats = bool(args.combined_only or args.pprof)
        ro["track_stats"] = track_stats
        ro["need_exec"] = self.child is not None
        ro["user_mode"] = self.user
        configure_filters(obj, args, pid=self.pid)  # -p/-c child, --cgroup, not us
        obj.set_max_entries("allocs", args.max_allocs, "--max-allocs")
        # entries allocated as blocks are recorded, not 1M of them zeroed when the map is
        # made (59-75 -> 29-32 ms of the load, strace; its buckets remain); the cost per
        # malloc/free pair did not grow (bench memleak: 1.57x its floor, 1.97x prealloc'd,
        # same minute).  The stack store and the per-stack totals likewise; all three
        # preallocated where the kernel requires it (before 6.1: loader.allocate_on_insert)
        obj.allocate_on_insert("allocs", "stacks", "stats")
        obj.set_max_entries("stacks", args.stack_storage_size, "--stack-storage-size")
        # per-stack totals only for --combined-only/--pprof: else the smallest (a
        # preallocated hash is allocated and zeroed when made)
        obj.set_max_entries("stats", args.stack_storage_size if track_stats else 1,
                            "--stack-storage-size")
        kernel_tps = [] if self.user else (PERCPU_TPS if args.percpu else KMEM_TPS)
        kernel_tps = [t for t in kernel_tps if kernel.tracepoint_exists(t[1], t[2])]
        wanted = set(USER_PROGS) if self.user else {t[0] for t in kernel_tps}
        for prog in obj.programs():
            obj.set_autoload(prog, prog in wanted)
        self.multi = self.user and self._uprobe_multi()
        if self.multi:
            for prog in obj.programs():
                if obj.section(prog).startswith(("uprobe", "uretprobe")):
                    obj.set_expected_attach_type(prog, BPF_TRACE_UPROBE_MULTI)
        # core.unwind.configure imports no numpy (its store does): numpy's import is the
        # plan's, in its thread, while the object loads
        unwind_on = unwind.configure(obj, args.stack_unwind if self.user else "fp")
        if unwind_on and getattr(args, "quick_start", False) and self.child is None:
            # --quick-start: attached without the walk (its maps at their smallest), the
            # whole return program handed over after the banner (_hand_over)
            from memlens.core.handover import HandOver

            self.hand_over = HandOver(obj, HANDING)
            self.hand_over.arm()
            self.hand_over_due = True
        self.kernel_tps = kernel_tps
        if planning is not None:
            # only where the maps fit well (as the plan beside the load): near a memory
            # cgroup's limit the maps are made one at a time, by libbpf.  The planning
            # thread's (EARLY_MAPS) last: waited for after the others are made (with
            # --quick-start too: made here, allocs was what its short load waited for,
            # 82.5 -> 77 ms to the banner)
            obj.premake_maps([m for m in PREMADE_MAPS if m not in EARLY_MAPS])
            self._early_made.wait(timeout=60)
            obj.premake_maps(EARLY_MAPS, made=self._early_maps)
        obj.load()
        obj.warm_allocation("allocs", "stacks", "stats")  # (loader: a burst's first entries)
        return unwind_on and not self.hand_over_due

    def _stop_warmup(self) -> None:
        if self._warmup is not None:
            self._warmup.stop()  # (its links closed meanwhile; waited for at close)

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
                targets = [(p.prog, False)] + ([(self.return_prog, True)] if p.retprobe
                                               else [])
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
                obj.attach_uprobe(self.return_prog, p.binary, None, pid=self.pid, retprobe=True,
                                  offset=p.offset, cookie=p.kind)

    # numpy dtypes of the maps' records, made at the first report: numpy's import (~0.1 s
    # of CPU, more on a busy machine) came between the last attach and the banner
    @property
    def info_dtype(self):
        return self.obj.struct_dtype("alloc_info")

    @property
    def key_dtype(self):
        return self.obj.struct_dtype("stack_key")

    @property
    def stats_dtype(self):
        return self.obj.struct_dtype("stack_stats")

    @property
    def return_prog(self) -> str:
        return self.hand_over.attached("ml_return") if self.hand_over else "ml_return"

    def _hand_over(self) -> None:
        """--quick-start, at the first poll after the banner: the whole ml_return (with the
        walk), from a second copy of the object sharing every map but the walk's own, is
        loaded, the target's tables written, and it is put in ml_whole: from then on the
        attached ml_return_handing hands every return to it (core/handover.py)."""
        from memlens.core.handover import walk_not_loaded
        from memlens.core.unwind.store import UnwindStore
        from memlens.errors import MemlensError

        self.hand_over_due = False
        assert self.hand_over is not None
        try:
            whole = self.hand_over.load_whole(self.args.stack_unwind)
            self.unwind = UnwindStore(whole)
            self.unwind.load_process(self.pid)  # its tables before its first whole walk
            self.hand_over.install()
        except MemlensError as err:
            walk_not_loaded(err)  # tracing goes on as attached, by frame pointers (counted)

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

    # -- symbols -------------------------------------------------------------------------
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
        age_filter = not (final and self.finished)
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
        return self.obj.map("stacks").stack(stack) if stack else []

    def frames(self, stack: int, kind: int) -> list:
        from memlens.core.stackresolve import MISSED_KERNEL, MISSED_USER, MarkerFrame

        from .report import allocator_frame

        cached = self.frames_cache.get(stack)
        if not self.user:
            if cached is None:
                ips = self.stack_ips(stack)
                if not ips:
                    return [MarkerFrame(MISSED_KERNEL)]
                from memlens.core.stackresolve import strip_tracing_frames
                from memlens.core.symbols import KernelSymbolizer

                # When a tracepoint has more than one user (another tracer, a second
                # memleak), its callbacks run from __traceiter_<event>, which then tops the
                # stack: drop it, so that the stack starts at the allocator either way.
                cached = self.frames_cache[stack] = strip_tracing_frames(
                    KernelSymbolizer.get().resolve_stack(ips))
            return cached
        assert self.plan is not None
        from .probes import KIND_NAMES

        label = self.plan.kind_labels.get(kind, KIND_NAMES.get(kind, "?"))
        module = os.path.basename(self.plan.cxx if kind in (10, 11) and self.plan.cxx
                                  else self.plan.allocator)
        head = [allocator_frame(label, module)]
        if cached is None:
            from memlens.core.stackresolve import TRUNCATED, split_truncated

            ips, truncated = split_truncated(self.stack_ips(stack))
            tail = [MarkerFrame(TRUNCATED)] if truncated else []
            if not ips:
                cached = [MarkerFrame(MISSED_USER)]
            elif self.sym is None:
                from memlens.core.stacks import Frame

                cached = [Frame(ip, None, 0, None) for ip in ips] + tail
            else:
                # Every address is a return address: the first is where the allocator
                # returned to in its caller (the stack is taken at the return).
                cached = self.sym.resolve(ips, return_address=True)
                if all(f.resolved for f in cached):
                    self.frames_cache[stack] = cached + tail
                cached = cached + tail
            self.count_unsymbolized(stack, cached)
        return head + list(cached)

    def count_unsymbolized(self, stack: int, frames: list) -> None:
        """A user stack about to be printed with a frame in no mapping known for the target
        (`0x... [unknown]`) is a lost "symbols", once per stack: mostly the target was gone
        before its map was read in full (it exited, or unmapped a library since)."""
        from memlens.core.session import process_alive
        from memlens.core.stackresolve import (
            LOST_SYMBOLS_GONE,
            LOST_SYMBOLS_UNMAPPED,
            unplaced,
        )

        if stack in self.unsymbolized or not unplaced(frames):
            return
        alive = self.pid is not None and process_alive(self.pid)
        self.unsymbolized[stack] = LOST_SYMBOLS_UNMAPPED if alive and self.sym is not None \
            else LOST_SYMBOLS_GONE

    def losses(self) -> tuple[dict[str, int], dict[str, int]]:
        drops = np.asarray(self.obj.map("drops").array_values("<u8")).tolist()
        counters = np.asarray(self.obj.map("counters").array_values("<u8")).tolist()
        c = {name: int(counters[i]) for i, name in enumerate(ML_COUNTERS)}
        lost = {"events": int(drops[0]), "stacks": int(drops[1] + drops[2] + drops[9]),
                "stacks_missing": int(drops[3]), "entries": int(drops[4] + drops[10]),
                "missed_frees": c["missed_frees"], "symbols": len(self.unsymbolized)}
        return lost, c

    def lost_records(self, rep) -> list[dict]:
        """What the kernel side could not record since the last report, as "lost" records
        (DESIGN §3: always reported)."""
        if self.drop_losses is None:
            from memlens.core.drops import Losses

            self.drop_losses = Losses(self.obj)
        out = self.drop_losses.new()
        missed = rep.lost.get("missed_frees", 0)
        if missed > self._missed_frees_seen:
            out.append({"type": "lost", "what": "frees",
                        "reason": "address reused without a free seen",
                        "count": missed - self._missed_frees_seen, "total": missed})
            self._missed_frees_seen = missed
        from memlens.core.stackresolve import LOST_SYMBOLS_WHAT

        by_reason: dict[str, int] = {}
        for reason in self.unsymbolized.values():
            by_reason[reason] = by_reason.get(reason, 0) + 1
        for reason, total in by_reason.items():
            seen = self._unsymbolized_seen.get(reason, 0)
            if total > seen:
                out.append({"type": "lost", "what": LOST_SYMBOLS_WHAT, "reason": reason,
                            "count": total - seen, "total": total})
                self._unsymbolized_seen[reason] = total
        return out

    def total_drops(self) -> dict[str, int]:
        """The summary's "lost": the kinds of drop reported, by what was lost."""
        out = self.drop_losses.totals() if self.drop_losses is not None else {}
        if self.unsymbolized:
            out["symbols"] = len(self.unsymbolized)
        return out

    # -- files ----------------------------------------------------------------------------
    def take_snapshot(self, rep) -> _Snapshot:
        """Everything --folded/--html/--pprof write, taken while the maps are still open."""
        from . import report as R

        prefix = [self.comm] if self.user and self.comm else []
        who = f"PID {self.pid} ({self.comm})" if self.user else "kernel"
        pprof = None
        if self.args.pprof:
            samples = R.pprof_samples(rep)
            # stacks that allocated but hold nothing now still belong in alloc_space
            seen = {(s.stack, s.kind) for s in rep.stacks}
            scale = self.args.sample_rate
            for (sid, kind), v in getattr(rep, "extra_stats", {}).items():
                if (sid, kind) not in seen and v[0]:
                    samples.append((self.frames(sid, kind), int(v[0]) * scale,
                                    int(v[1]) * scale, 0, 0))
            comments = [f"memlens memleak ({self.mode}"
                        + (f", PID {self.pid}" if self.pid else "") + ")"]
            if scale > 1:
                comments.append(f"sampled every {scale}th allocation per thread; values scaled")
            comments.append("lost: " + ", ".join(f"{k}={v}" for k, v in rep.lost.items()))
            dur = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - self.start_ns
            pprof = (samples, comments, dur)
        return _Snapshot(R.folded_entries(rep, prefix), f"memleak: outstanding bytes, {who}",
                         pprof)


@record(frozen=True)
class _Snapshot:
    # core/record, not typing.NamedTuple (typing: ~7 ms of the start) nor
    # collections.namedtuple (collections, ~1 ms on -p's main thread before its load)
    folded: list         # (prefix, frames leaf first, outstanding bytes)
    title: str           # of the HTML flame graph
    pprof: tuple | None  # (samples, comments, duration_ns) for write_heap_profile


class _FinalFiles:
    """A sink side writer (output/sinks.py: add(record) per record, write() at close) for
    memleak's --folded, --html and --pprof.  They are the state at exit, over every stack
    (not -T's top N), by outstanding bytes: the generic side writers sum the entries of
    every report instead, which for reports of what is still held would count a block once
    per interval; and memleak's pprof is a heap profile with four sample types."""

    def __init__(self, args: argparse.Namespace, tool: MemleakTool, stream):
        from memlens.output.files import OutputFile

        self.args, self.tool, self.stream = args, tool, stream
        # checked and opened now, before tracing: a bad path is exit 2, not a lost profile
        self.html = OutputFile(args.html, "--html") if args.html else None
        try:
            self.pprof = OutputFile(args.pprof, "--pprof") if args.pprof else None
        except BaseException:
            self.discard()
            raise

    def add(self, record: dict) -> None:
        pass  # the records are the top N as printed; the snapshot has every stack

    def discard(self) -> None:
        for out in (self.html, getattr(self, "pprof", None)):
            if out is not None:
                out.discard()

    def write(self) -> None:
        snap, args = self.tool.snapshot, self.args
        if snap is None:
            return  # the run failed before its final report
        if args.folded:
            from memlens.output.folded import write_folded

            write_folded(self.stream, snap.folded)
        if self.html is not None:
            from memlens.output.flamegraph import write_html

            write_html(self.html, snap.folded, title=snap.title, count_name="bytes")
            _wrote(args.html)
        if self.pprof is not None and snap.pprof is not None:
            from memlens.output.pprof import write_heap_profile

            samples, comments, dur = snap.pprof
            write_heap_profile(self.pprof, samples, comments=comments, duration_ns=dur)
            _wrote(args.pprof)


def _render_text(rec: dict) -> None:
    # report.py (numpy, dataclasses) is imported at the first report, not before the load
    from .report import render_text

    render_text(rec)


def _wrote(path: str) -> None:
    print(f"memlens: wrote {path}", file=sys.stderr, flush=True)  # as sinks' side files do


# The maps whose creation was most of the load's ~30 ms of map creation (strace -T,
# memleak -p with the walk): allocs ~15 ms (2^20 buckets zeroed, even without
# preallocation), unwind_rows ~4 (16 MiB), stacks ~3.4 (preallocated), unwind_rowcache ~3
# (per-CPU), threads ~1.2.  libbpf makes maps one after the other inside its load: these
# are made before it, two at a time (BpfObject.premake_maps).
PREMADE_MAPS = ("allocs", "unwind_rows", "stacks", "unwind_rowcache", "threads")
EARLY_MAPS = ("allocs",)  # made by -p's planning thread (_plan_beside_the_load)


def make_memleak_sink(args: argparse.Namespace, tool: MemleakTool) -> Sink:
    """Text (BCC's report) or --json records on stdout, and memleak's own final files.
    With --folded, stdout is the folded lines only; losses still go to stderr."""
    sink = JsonSink() if args.json else Sink(None if args.folded else _render_text)
    if tool.files:
        sink.side.append(_FinalFiles(args, tool, sink.stream))
    return sink




def _read_comm(pid: int | None) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


COMMAND = MemleakCommand()
