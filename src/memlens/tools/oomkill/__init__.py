# SPDX-License-Identifier: GPL-2.0-only
"""oomkill: trace OOM kills, with the victim's RSS and memory cgroup.

Hooks, chosen by probing: tp_btf/mark_victim's arguments (the victim's task, so its memory
cgroup path is read in the kernel at the moment of the kill), else the classic
oom:mark_victim tracepoint (victim pid and, on >= 6.8, RSS fields; cgroup read from
/proc/PID/cgroup).  BCC and libbpf-tools use a kprobe on oom_kill_process, which does not
exist on kernels without kprobes.

tp_btf/mark_victim is chosen by its BTF prototype, not its name: before 6.8 it took
(int pid), and a program written for (task, uid) fails at load there (Debian 12's 6.1).
Its program is attached as the raw tracepoint of the same arguments (oomkill.bpf.c: libbpf
parses all of vmlinux BTF for a tp_btf program, ~16-20 ms of the start).

System wide, the program attached first is verified without the DWARF walk of the
trigger's user stack (~5 ms of the verifier instead of ~45) and hands every kill over to
the whole program once that is loaded, after the banner (core/handover.py).
"""
from __future__ import annotations

import os
import select
import sys
import threading
import time
from collections.abc import Callable

from memlens import registry
from memlens.core import kernel
from memlens.core.drops import Losses
from memlens.core.handover import HandOver
from memlens.core.hooks import choose
from memlens.core.loader import BpfObject
from memlens.core.privileges import require_tracing_privileges
from memlens.core.session import TargetExit, add_common_options, configure_filters
from memlens.output.sinks import add_output_options

TYPE_CHECKING = False  # argparse costs ~16-20 ms of start-up (issue 12): for annotations only
if TYPE_CHECKING:
    import argparse

EXAMPLES = """\
examples:
  memlens oomkill                  # print each OOM kill as it happens
  memlens oomkill --json           # one JSON object per kill
  memlens oomkill -d 3600          # watch for an hour, then exit
  memlens oomkill --cgroup /sys/fs/cgroup/memory/myapp   # kills inside one memory cgroup
  memlens oomkill -p 1234          # only when PID 1234 is the victim
  memlens oomkill -s               # with the trigger's kernel and user stacks
  memlens oomkill -s --stack-unwind fp   # user stacks by frame pointers only

output:
  19:40:01 Triggered by PID 3058 ("python3"), OOM kill of PID 3058 ("python3"), \
total-vm 538144 kB, loadavg: 0.99 0.39 0.30 3/282 22724
           rss anon 65280 kB, file 5376 kB, shmem 0 kB; pgtables 188 kB; \
cgroup /envm_oom

  The trigger is the task in whose context the kill ran (it asked for memory); the
  victim is the task killed.  cgroup is the victim's memory cgroup (v1 memory
  hierarchy, or v2), "/" for the root (a global OOM).
"""


# What oomkill.bpf.c's programs expect, best first: mark_victim_btf is
# BPF_PROG(..., struct task_struct *task, uid_t uid); mark_victim_tp reads the format's pid
# (its RSS fields are optional, checked there by CO-RE).
# Declared once, in the registry (doctor reads the same declaration).
HOOKS = registry.hooks_of("oomkill")
# each program, its twin attached until the hand-over and the twin's program array
HANDING = {"mark_victim_raw": ("mark_victim_raw_handing", "hand_over_raw"),
           "mark_victim_tp": ("mark_victim_tp_handing", "hand_over_tp")}
WALKS = {0: "fp", 1: "dwarf", 2: "dwarf+fp"}  # enum oom_walk (oomkill.h)


def memcg_v1_active() -> bool:
    return os.path.exists("/sys/fs/cgroup/memory/memory.limit_in_bytes")


def read_loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return f.read().strip()
    except OSError:
        return "?"


def cgroup_path(names: list[bytes], levels: int, truncated: bool) -> str:
    parts = [n.decode(errors="replace") for n in names[:levels]]
    if not truncated and parts:
        parts = parts[:-1]  # the hierarchy's root directory
    path = "/" + "/".join(reversed(parts))
    return ("..." + path) if truncated else path


def proc_cgroup(pid: int, v1: bool) -> str | None:
    """Fallback when the hook gives no task pointer: the victim is still exiting."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if (v1 and "memory" in controllers.split(",")) or (not v1 and controllers == ""):
                    return path
    except OSError:
        pass
    return None




class OomkillTool:
    """oomkill for the runner (core/runner.py): one "event" record per kill."""

    name, what = "oomkill", "OOM kills"

    def __init__(self, args: argparse.Namespace):
        self.args, self.obj, self.kills = args, None, 0
        self.losses = Losses()
        # the triggers' user stacks: one resolver for the run, so that a stack left as bare
        # addresses (the trigger gone before its memory map was read: often it is the
        # victim) is counted and reported as lost "symbols", as the engine's tools do
        self.resolver = None
        self.target = TargetExit(None)
        self.cgroup_prefix: str | None = None
        # woken by the kill itself, not a timer: the trigger's user stack is symbolized
        # through its memory map, which is gone once it exits (often it is the victim)
        self.ready = select.epoll()
        self.unwind = None  # core/unwind UnwindStore: the trigger's user stack by .eh_frame
        self._preload: threading.Thread | None = None
        self._unwind_due = False  # system wide: the whole program and its store, at the
        # first poll (the hand-over)
        self.hand_over: HandOver | None = None
        self._met_early: list[int] = []  # triggers the first program walked: to be loaded
        self.ring = self.record_type = None  # made at the first poll

    def start(self) -> None:
        require_tracing_privileges("oomkill")
        self.v1 = memcg_v1_active()
        kernel.ensure_tracefs()
        self.use_btf = choose(HOOKS, "oomkill").kind == "tp_btf"
        # -p: the victim to wait for; once it is gone (killed, or exited) there is nothing
        # left to see: its kill (read before the loop ends) and the final report
        self.target = TargetExit(self.args.pid)
        self.obj = obj = BpfObject.open("tools/oomkill/oomkill.bpf.o")
        obj.rodata["targ_cgroup_v1_memcg"] = self.v1
        configure_filters(obj, self.args)
        if self.args.cgroup and not self.use_btf:
            # the tracepoint gives no task to filter on in the kernel: --cgroup is checked
            # on the victim's /proc/PID/cgroup instead
            self.cgroup_prefix = cgroup_filter_path(self.args.cgroup)
        self.prog = "mark_victim_raw" if self.use_btf else "mark_victim_tp"
        for prog in obj.programs():
            obj.set_autoload(prog, prog == self.prog)
        from memlens.core import unwind

        unwind_on = unwind.configure(obj, self._stack_unwind)
        obj.set_max_entries("stacks", 1)  # only the unwinder's scratch is used
        # System wide, the walk's store (numpy, and tables built in a thread that holds the
        # GIL) is made at the first poll, after the banner: made here it kept the attach
        # waiting (launch to attached 0.36 s, 2x bpftrace's).  So is the walk's program: the
        # one attached is verified without it and hands over to it then (core/handover.py).
        # A kill meanwhile is walked by frame pointers and its trigger is loaded for its
        # next one.  -p / --cgroup: their processes are loaded before attaching, for the
        # whole program.
        self.hand_over = HandOver(obj, HANDING)
        self._unwind_due = unwind_on and self._likely_triggers() is None
        if self._unwind_due:
            self.hand_over.arm()
        obj.load()
        if unwind_on and not self._unwind_due:
            from memlens.core.unwind.store import UnwindStore

            self._start_unwind(UnwindStore(obj))
        attached = self.hand_over.attached(self.prog)
        if self.use_btf:
            obj.attach_raw_tracepoint(attached, "mark_victim")
        else:
            obj.attach_tracepoint(attached, "oom", "mark_victim")
        # the ring's reader and the record's type are made at the first poll, after the
        # banner (~1.5 ms): the kernel keeps a kill in the ring meanwhile
        self.ready.register(obj.map("events").fd, select.EPOLLIN)

    @property
    def _stack_unwind(self) -> str:
        return getattr(self.args, "stack_unwind", "auto")

    def _hand_over(self) -> None:
        """After the banner: the whole program (with the walk) loaded and put in the
        attached twin's slot, the walk's store made on it.  Failing, tracing goes on as
        attached, walking by frame pointers (one line says why)."""
        from memlens.core.handover import walk_not_loaded
        from memlens.core.unwind.store import UnwindStore
        from memlens.errors import MemlensError

        self._unwind_due = False
        try:
            whole = self.hand_over.load_whole(self._stack_unwind)
        except MemlensError as err:
            walk_not_loaded(err)
            return
        self._start_unwind(UnwindStore(whole))
        self.hand_over.install()  # from here every kill runs the whole program

    def _start_unwind(self, store) -> None:
        """An OOM kill is one event: the trigger's tables must be loaded before it.  A
        memcg OOM's trigger is a task of that cgroup, and -p's victim is often its own
        trigger: those processes are loaded now, before attaching; system wide, the largest
        by RSS are, in the background.  Any other trigger is walked by the tables of the
        files already loaded, and asks to be loaded (unwind_requests) for its next kill."""
        from memlens.core.stackresolve import StackResolver

        self.unwind = store
        if self.resolver is None:
            self.resolver = StackResolver()
        # a trigger gone before its map is read: named by the mappings the walk met
        self.resolver.mappings = store.mappings
        chosen = self._likely_triggers()
        if chosen is not None:
            for pid in chosen:
                self._load(pid)
        else:
            self._preload = threading.Thread(target=self._load_largest, daemon=True,
                                             name="memlens-oomkill-preload")
            self._preload.start()

    def _likely_triggers(self) -> list[int] | None:
        """-p / --cgroup: the processes to load before attaching; None: system wide."""
        if self.args.pid:
            return [self.args.pid]
        if not self.args.cgroup:
            return None
        arg = self.args.cgroup
        top = arg if os.path.isabs(arg) and os.path.isdir(arg) else kernel_cgroup_dir(arg)
        pids: list[int] = []
        for root, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(root, "cgroup.procs")) as f:
                        pids.extend(int(x) for x in f.read().split())
                except (OSError, ValueError):
                    continue
            if len(pids) >= PRELOAD_MAX:
                break
        return pids[:PRELOAD_MAX]

    def _load(self, pid: int) -> None:
        from memlens.errors import MemlensError

        try:
            loaded = self.unwind is not None and self.unwind.load_process(pid)
        except (OSError, ValueError, MemlensError):
            return  # gone mid-way: its frames are walked by frame pointers
        if loaded:
            # its memory map while it lives: a trigger killed and reaped before its kill
            # is read still gets its symbols
            self.resolver.watch(pid)

    def _load_largest(self) -> None:
        try:
            pids = largest_processes(PRELOAD_LARGEST)
        except OSError:
            return
        for pid in pids:
            if self.unwind is None:
                return
            self._load(pid)

    def poll(self, timeout: float) -> list[dict]:
        if timeout > 0:
            self.ready.poll(timeout)
        if self._unwind_due:
            self._hand_over()
        if self.unwind is not None:
            self.unwind.poll()  # triggers met without their tables: loaded for next time
        out = []
        if self.ring is None:
            self.record_type = self.obj.struct_ctype("oom_event")
            self.ring = self.obj.map("events").ringbuf()
        # OOM kills are rare: a plain walk and ctypes decoding, no numpy import
        for raw in self.ring.consume_records():
            if self.resolver is None:
                from memlens.core.stackresolve import StackResolver

                self.resolver = StackResolver()
            rec = self.record_type.from_buffer_copy(raw)
            ev = decode_kill(rec, self.v1, self.cgroup_prefix, self.resolver)
            if ev is not None:
                out.append(ev)
            if rec.handing:
                self._met_early.append(int(rec.trigger_pid))
        if self._met_early:
            # a trigger the first program met (no walk then: no request either) is loaded
            # for its next kill, as the whole program's requests are (the hand-over is
            # done: it comes first in a poll)
            for pid in dict.fromkeys(self._met_early):
                if self.unwind is not None:
                    self._load(pid)
            self._met_early.clear()
        self.kills += len(out)
        lost = self.losses.new(self.obj)
        if self.resolver is not None:
            lost += self.resolver.new_losses()
        return out + lost

    @property
    def finished(self) -> bool:
        return self.target.exited()

    @property
    def finish_reason(self) -> str:
        return self.target.reason

    def report(self, final: bool) -> list[dict]:
        return self.poll(0)  # the kills and losses not polled yet

    def summary(self) -> list[dict]:
        lost = self.losses.totals()
        if self.resolver is not None and self.resolver.lost_symbols:
            lost["symbols"] = self.resolver.lost_symbols
        return [{"type": "summary", "kills": self.kills, "lost": lost,
                 "hook": "raw_tp/mark_victim" if self.use_btf else "tracepoint/oom/mark_victim"}]

    def close(self) -> None:
        self.target.close()
        self.ready.close()
        if self.unwind is not None:
            unwind, self.unwind = self.unwind, None  # the preloader stops at its next PID
            if self._preload is not None:
                self._preload.join()
            unwind.close()
        if self.obj is not None:
            self.obj.close()
        if self.hand_over is not None:
            self.hand_over.close()


class OomkillCommand:
    name = "oomkill"
    summary = "Trace OOM kills: trigger and victim, victim RSS and memory cgroup, loadavg."
    epilog = EXAMPLES

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_common_options(parser, json=False)
        add_output_options(parser)
        # -p and --cgroup select victims: "tell me when *this* gets killed"
        parser.add_argument("-s", "--stacks", action="store_true",
                            help="also print the trigger's kernel and user stacks "
                                 "(always in --json)")
        from memlens.core.unwind import add_stack_unwind_option

        add_stack_unwind_option(parser)

    def run(self, args: argparse.Namespace) -> int:
        from memlens.core.runner import run_cli
        from memlens.output.sinks import make_sink

        return run_cli(OomkillTool(args), args, make_sink(args, text_renderer(args.stacks)))


def decode_kill(rec, v1: bool, cgroup_prefix: str | None = None,
                resolver=None) -> dict | None:
    """One kill as an "event" record; None when the user-space --cgroup check (fallback
    hook) drops it.  `resolver` (a StackResolver) symbolizes, and counts, the trigger's
    user stack."""
    victim_pid = rec.victim_pid
    if rec.has_details and rec.cgroup_levels:
        cg = cgroup_path([bytes(n.value) for n in rec.cgroup], rec.cgroup_levels,
                         bool(rec.cgroup_truncated))
    else:
        cg = proc_cgroup(victim_pid, v1)
    if cgroup_prefix is not None and not (
            cg and (cg == cgroup_prefix or cg.startswith(cgroup_prefix.rstrip("/") + "/"))):
        return None
    loadavg = read_loadavg()
    kstack, ustack = trigger_stacks(rec, resolver)
    return {
        "type": "event",
        "time": time.strftime("%H:%M:%S"),
        "timestamp": time.time(),
        "trigger_pid": int(rec.trigger_pid),
        "trigger_comm": rec.trigger_comm.decode(errors="replace"),
        "victim_pid": victim_pid,
        "victim_comm": rec.victim_comm.decode(errors="replace"),
        "total_vm_kb": int(rec.total_vm_kb),
        "anon_rss_kb": int(rec.anon_rss_kb),
        "file_rss_kb": int(rec.file_rss_kb),
        "shmem_rss_kb": int(rec.shmem_rss_kb),
        "pgtables_kb": int(rec.pgtables_kb),
        "uid": int(rec.uid),
        "oom_score_adj": int(rec.oom_score_adj),
        "cgroup": cg,
        "cgroup_id": int(rec.cgroup_id) or None,
        "cgroup_hierarchy": "v1-memory" if v1 else "v2",
        "loadavg": loadavg,
        "trigger_kernel_stack": kstack,
        "trigger_user_stack": ustack,
        # fp: the kernel's frame-pointer walk (--stack-unwind fp, a kill before the
        # hand-over); dwarf: the .eh_frame tables' walk; dwarf+fp: theirs, with frames
        # walked by frame pointers for want of a table (a trigger not loaded yet)
        "trigger_user_stack_walk": WALKS.get(int(getattr(rec, "ustack_walk", 0)), "fp"),
    }


def text_renderer(stacks: bool) -> Callable[[dict], None]:
    """BCC's line per kill, then the details line (and with -s the trigger's stacks)."""

    def render(f: dict) -> None:
        if f["type"] != "event":
            return
        # imported at the first kill: output.table's dataclass costs ~15 ms of start-up
        from memlens.output.table import escape as sanitize

        print(f'{f["time"]} Triggered by PID {f["trigger_pid"]} ("{sanitize(f["trigger_comm"])}"), '
              f'OOM kill of PID {f["victim_pid"]} ("{sanitize(f["victim_comm"])}"), '
              f'total-vm {f["total_vm_kb"]} kB, loadavg: {f["loadavg"]}')
        print(f'{"":9}rss anon {f["anon_rss_kb"]} kB, file {f["file_rss_kb"]} kB, '
              f'shmem {f["shmem_rss_kb"]} kB; pgtables {f["pgtables_kb"]} kB; '
              f'cgroup {sanitize(f["cgroup"] or "?")}', flush=True)
        if stacks:
            for title in ("kernel", "user"):
                print(f'{"":9}trigger {title} stack:')
                for frame in f[f"trigger_{title}_stack"]:
                    print(f'{"":11}{sanitize(frame)}')
            sys.stdout.flush()

    return render


# frames of the tracing machinery itself, above the kernel function that fired the event
def trigger_stacks(rec, resolver=None) -> tuple[list[str], list[str]]:
    """The trigger's kernel and user stacks as printed frames, leaf first.  The user stack
    is symbolized through the trigger's memory map read now: a trigger that was also the
    victim may already be gone, and then its frames print as addresses, counted by
    `resolver` (its new_losses())."""
    from memlens.core.stackresolve import (
        MISSED_KERNEL,
        MISSED_USER,
        TRUNCATED,
        split_truncated,
    )

    def ips(arr, nbytes: int) -> list[int]:
        return [int(x) for x in list(arr)[: max(nbytes, 0) // 8] if x]

    kips, uips = ips(rec.kstack, rec.kstack_bytes), ips(rec.ustack, rec.ustack_bytes)
    if kips:
        from memlens.core.stackresolve import strip_tracing_frames
        from memlens.core.symbols import KernelSymbolizer

        kframes = [str(f) for f in strip_tracing_frames(
            KernelSymbolizer.get().resolve_stack(kips))]
    else:
        kframes = [MISSED_KERNEL]
    uips, truncated = split_truncated(uips)  # the unwinder's mark: a deeper stack
    if uips:
        from memlens.core.stackresolve import StackResolver

        if resolver is None:
            resolver = StackResolver()
        pid = int(rec.trigger_pid)
        if os.path.exists(f"/proc/{pid}"):
            # a fresh map: kills are rare, and a PID may be reused; a trigger gone keeps
            # the snapshot taken when its tables were loaded (oomkill --stack-unwind)
            resolver.forget(pid)
        uframes = [str(f) for f in resolver.resolve_user(pid, uips)]
        if truncated:
            uframes.append(TRUNCATED)
    else:
        uframes = [MISSED_USER]
    return kframes, uframes


PRELOAD_MAX = 64       # processes of -p/--cgroup loaded before attaching
PRELOAD_LARGEST = 8    # system wide: the largest by RSS, loaded in the background


def largest_processes(n: int, proc: str = "/proc") -> list[int]:
    """The n user processes with the largest RSS (likely OOM triggers), largest first."""
    sizes = []
    me = os.getpid()
    for name in os.listdir(proc):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"{proc}/{name}/statm") as f:
                rss = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if rss:
            sizes.append((rss, int(name)))
    return [pid for _, pid in sorted(sizes, reverse=True)[:n]]


def cgroup_filter_path(arg: str) -> str:
    """The --cgroup argument as the path inside its hierarchy (what the victim reports)."""
    real = os.path.realpath(arg if os.path.isabs(arg) and os.path.exists(arg) else
                            kernel_cgroup_dir(arg))
    for root in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if real == root or real.startswith(root + "/"):
            return "/" + real[len(root):].lstrip("/")
    return real


def kernel_cgroup_dir(arg: str) -> str:
    rel = arg.lstrip("/")
    for base in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup"):
        if os.path.isdir(os.path.join(base, rel)):
            return os.path.join(base, rel)
    return arg


COMMAND = OomkillCommand()
