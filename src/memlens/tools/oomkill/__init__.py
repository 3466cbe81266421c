# SPDX-License-Identifier: GPL-2.0-only
"""oomkill: trace OOM kills, with the victim's RSS and memory cgroup.

Hooks, chosen by probing: tp_btf/mark_victim (typed: the victim's task, so its memory
cgroup path is read in the kernel at the moment of the kill), else the classic
oom:mark_victim tracepoint (victim pid and, on >= 6.8, RSS fields; cgroup read from
/proc/PID/cgroup).  BCC and libbpf-tools use a kprobe on oom_kill_process, which does not
exist on kernels without kprobes.

tp_btf/mark_victim is chosen by its BTF prototype, not its name: before 6.8 it took
(int pid), and a program written for (task, uid) fails at load there (Debian 12's 6.1).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from memlens import registry
from memlens.core import kernel
from memlens.core.hooks import choose
from memlens.core.loader import BpfObject
from memlens.core.privileges import require_tracing_privileges
from memlens.core.session import Session, add_common_options, configure_filters, report_lost

EXAMPLES = """\
examples:
  memlens oomkill                  # print each OOM kill as it happens
  memlens oomkill --json           # one JSON object per kill
  memlens oomkill -d 3600          # watch for an hour, then exit
  memlens oomkill --cgroup /sys/fs/cgroup/memory/myapp   # kills inside one memory cgroup
  memlens oomkill -p 1234          # only when PID 1234 is the victim
  memlens oomkill -s               # with the trigger's kernel and user stacks

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


class OomkillCommand:
    name = "oomkill"
    summary = "Trace OOM kills: trigger and victim, victim RSS and memory cgroup, loadavg."
    epilog = EXAMPLES

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_common_options(parser)
        # -p and --cgroup select victims: "tell me when *this* gets killed"
        parser.add_argument("-s", "--stacks", action="store_true",
                            help="also print the trigger's kernel and user stacks "
                                 "(always in --json)")

    def run(self, args: argparse.Namespace) -> int:
        require_tracing_privileges("oomkill")
        from memlens.output.ndjson import JsonWriter

        writer = JsonWriter(sys.stdout) if args.json else None
        v1 = memcg_v1_active()
        kernel.ensure_tracefs()
        use_btf = choose(HOOKS, "oomkill").kind == "tp_btf"
        with BpfObject.open("tools/oomkill/oomkill.bpf.o") as obj:
            obj.rodata["targ_cgroup_v1_memcg"] = v1
            configure_filters(obj, args)
            cgroup_prefix = cgroup_filter_path(args.cgroup) if args.cgroup else None
            obj.set_autoload("mark_victim_btf", use_btf)
            obj.set_autoload("mark_victim_tp", not use_btf)
            obj.load()
            if use_btf:
                obj.attach_auto("mark_victim_btf")
            else:
                obj.attach_tracepoint("mark_victim_tp", "oom", "mark_victim")
            record_type = obj.struct_ctype("oom_event")
            ring = obj.map("events").ringbuf()
            session = Session(duration=args.duration)
            session.banner("OOM kills")
            kills = 0

            def poll() -> None:
                nonlocal kills
                # OOM kills are rare: a plain walk and ctypes decoding, no numpy import
                for raw in ring.consume_records():
                    if self.print_kill(record_type.from_buffer_copy(raw), v1, writer,
                                       None if use_btf else cgroup_prefix, args.stacks):
                        kills += 1
                report_lost(session.new_drops(obj), writer)

            session.run(poll, poll_interval=0.1)
            poll()
            if writer:
                writer.emit({"type": "summary", "kills": kills,
                             "lost": session.total_drops(),
                             "hook": "tp_btf/mark_victim" if use_btf
                             else "tracepoint/oom/mark_victim"})
        return 0

    def print_kill(self, rec, v1: bool, writer, cgroup_prefix: str | None = None,
                   stacks: bool = False) -> bool:
        """Print one kill; False when the user-space --cgroup check (fallback hook) drops it."""
        victim_pid = rec.victim_pid
        if rec.has_details and rec.cgroup_levels:
            cg = cgroup_path([bytes(n.value) for n in rec.cgroup], rec.cgroup_levels,
                             bool(rec.cgroup_truncated))
        else:
            cg = proc_cgroup(victim_pid, v1)
        if cgroup_prefix is not None and not (
                cg and (cg == cgroup_prefix or cg.startswith(cgroup_prefix.rstrip("/") + "/"))):
            return False
        loadavg = read_loadavg()
        fields = {
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
        }
        kstack, ustack = trigger_stacks(rec)
        fields["trigger_kernel_stack"] = kstack
        fields["trigger_user_stack"] = ustack
        if writer is not None:
            writer.emit(fields)
            return True
        from memlens.output.table import escape as sanitize

        f = fields
        print(f'{f["time"]} Triggered by PID {f["trigger_pid"]} ("{sanitize(f["trigger_comm"])}"), '
              f'OOM kill of PID {f["victim_pid"]} ("{sanitize(f["victim_comm"])}"), '
              f'total-vm {f["total_vm_kb"]} kB, loadavg: {loadavg}')
        print(f'{"":9}rss anon {f["anon_rss_kb"]} kB, file {f["file_rss_kb"]} kB, '
              f'shmem {f["shmem_rss_kb"]} kB; pgtables {f["pgtables_kb"]} kB; '
              f'cgroup {sanitize(cg or "?")}', flush=True)
        if stacks:
            for title, frames in (("kernel", kstack), ("user", ustack)):
                print(f'{"":9}trigger {title} stack:')
                for frame in frames:
                    print(f'{"":11}{sanitize(frame)}')
            sys.stdout.flush()
        return True


# frames of the tracing machinery itself, above the kernel function that fired the event
_TRACING_FRAMES = ("bpf_", "__bpf_", "__traceiter_", "__probestub_", "trace_call_bpf",
                   "perf_trace_", "__do_trace_")


def trigger_stacks(rec) -> tuple[list[str], list[str]]:
    """The trigger's kernel and user stacks as printed frames, leaf first.  The user stack
    is symbolized through the trigger's memory map read now: a trigger that was also the
    victim may already be gone, and then its frames print as addresses."""
    from memlens.core.stackresolve import MISSED_KERNEL, MISSED_USER

    def ips(arr, nbytes: int) -> list[int]:
        return [int(x) for x in list(arr)[: max(nbytes, 0) // 8] if x]

    kips, uips = ips(rec.kstack, rec.kstack_bytes), ips(rec.ustack, rec.ustack_bytes)
    if kips:
        from memlens.core.symbols import KernelSymbolizer

        kframes = [str(f) for f in KernelSymbolizer.get().resolve_stack(kips)]
        while len(kframes) > 1 and kframes[0].startswith(_TRACING_FRAMES):
            kframes.pop(0)
    else:
        kframes = [MISSED_KERNEL]
    if uips:
        from memlens.core.stackresolve import StackResolver

        uframes = [str(f) for f in StackResolver().resolve_user(int(rec.trigger_pid), uips)]
    else:
        uframes = [MISSED_USER]
    return kframes, uframes


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
