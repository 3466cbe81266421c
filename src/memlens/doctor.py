# SPDX-License-Identifier: GPL-2.0-only
"""`memlens doctor`: can memlens trace on this machine, and through which hooks?

Each hook kind is tried for real (load + attach a trivial program, then detach), because
what a kernel advertises and what it allows differ: here kprobes are compiled out and
lockdown refuses fentry at load time although the program type exists.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from memlens.core import kernel

TYPE_CHECKING = False  # argparse costs ~16-20 ms of start-up (issue 12): for annotations only
if TYPE_CHECKING:
    import argparse

EXAMPLES = """\
examples:
  memlens doctor           # readiness report
  memlens doctor --json    # the same as one JSON object
"""


@dataclass
class Readiness:
    facts: dict[str, object] = field(default_factory=dict)
    hooks: dict[str, tuple[bool, str]] = field(default_factory=dict)
    tools: list[dict] = field(default_factory=list)
    features: dict[str, dict[str, bool]] = field(default_factory=dict)


def _try_hook(kind: str) -> tuple[bool, str]:
    """Load and attach the probe program for one hook kind; (works, detail)."""
    from memlens.core.loader import BpfObject
    from memlens.errors import MemlensError

    progs = {"tracepoint": "probe_tracepoint", "tp_btf": "probe_tp_btf",
             "raw_tracepoint": "probe_raw_tp", "fentry": "probe_fentry",
             "kprobe": "probe_kprobe", "perf_event": "probe_perf_event",
             "uprobe": "probe_uprobe", "ringbuf": "probe_ringbuf"}
    prog = progs[kind]
    try:
        with BpfObject.open("core/probe.bpf.o") as obj:
            for p in obj.programs():
                obj.set_autoload(p, p == prog)
            obj.load()
            if kind in ("tracepoint", "ringbuf"):
                obj.attach_tracepoint(prog, "syscalls", "sys_enter_getppid")
            elif kind == "raw_tracepoint":
                obj.attach_raw_tracepoint(prog, "sys_enter")
            elif kind in ("tp_btf", "fentry", "kprobe"):
                obj.attach_auto(prog)
            elif kind == "perf_event":
                from memlens.core import perf

                fd = perf.open_event(perf.PERF_TYPE_SOFTWARE, perf.PERF_COUNT_SW_PAGE_FAULTS,
                                     cpu=perf.online_cpus()[0], sample_period=1 << 30)
                try:
                    obj.attach_perf_event(prog, fd)  # on success the link owns fd
                except Exception:
                    os.close(fd)
                    raise
            elif kind == "uprobe":
                libc = _libc_path()
                obj.attach_uprobe(prog, libc, "getppid", pid=os.getpid())
        return True, "works"
    except (MemlensError, OSError) as err:
        msg = str(err)
        if kind == "kprobe" and not kernel.kprobes_supported():
            msg = "no kprobe PMU (CONFIG_KPROBES off?)"
        elif "EPERM" in msg and os.geteuid() == 0:
            mode = kernel.lockdown_mode()
            msg = ("refused at load although root (EPERM): "
                   + (f"kernel lockdown={mode}" if mode and mode != "none"
                      else "kernel lockdown or a security module"))
        return False, _short(msg)


def _short(msg: str, limit: int = 90) -> str:
    msg = msg.split("; libbpf:")[0]
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _libc_path() -> str:
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and "/libc.so" in parts[5] or "/libc-" in line:
                return parts[5]
    return "/lib/x86_64-linux-gnu/libc.so.6"


def _tool_rows(hooks: dict[str, tuple[bool, str]]) -> list[dict]:
    """One row per need of every tool in the registry: the hook the tool would choose (the
    same declaration and the same probes the tool uses), and only if that hook's kind also
    loaded and attached for real above."""
    from memlens import registry
    from memlens.core.hooks import survey

    rows = []
    for tool in registry.TOOLS:
        if not tool.bpf:
            rows.append({"tool": tool.name, "ready": True, "hook": "/proc and /sys only (no BPF)"})
            continue
        if not hooks:  # nothing could be tried: say why instead of "missing"
            rows.append({"tool": tool.name, "ready": False,
                         "hook": "needs root (or CAP_BPF+CAP_PERFMON)"})
            continue
        for need in tool.needs:
            label = tool.name if len(tool.needs) == 1 else f"{tool.name} ({need.what})"
            chosen, why = None, []
            for hook, available, reason in survey(need.hooks):
                kind_ok, kind_detail = hooks.get(hook.kind, (True, ""))
                if available and kind_ok:
                    chosen = hook
                    break
                why.append(f"{hook.label}: {reason if not available else kind_detail}")
            rows.append({"tool": label, "ready": chosen is not None,
                         "hook": chosen.label if chosen else "; ".join(why),
                         "fallbacks": [h.label for h in need.hooks]})
        if tool.kinds:
            usable = [k for k in tool.kinds if hooks.get(k, (False, ""))[0]]
            rows.append({"tool": tool.name, "ready": bool(usable),
                         "hook": ("probes of kind " + ", ".join(usable)) if usable
                         else "no usable hook kind (" + ", ".join(tool.kinds) + ")"})
    return rows


def gather() -> Readiness:
    from memlens.core import privileges

    r = Readiness()
    r.facts["kernel"] = os.uname().release
    r.facts["root"] = os.geteuid() == 0
    r.facts["can_trace"] = privileges.can_trace()
    r.facts["btf"] = kernel.has_btf()
    r.facts["lockdown"] = kernel.lockdown_mode() or "none"
    try:
        from memlens.core import libbpf

        major, minor = libbpf.version()
        r.facts["libbpf"] = f"{major}.{minor}"
    except OSError as err:
        r.facts["libbpf"] = f"missing ({err})"
        return r
    if not r.facts["can_trace"]:
        r.facts["note"] = ("not root and no CAP_BPF+CAP_PERFMON: hook kinds cannot be tried; "
                           "run as root")
        r.tools = _tool_rows({})
        return r
    before = kernel.tracefs_path()
    try:
        r.facts["tracefs"] = kernel.ensure_tracefs(quiet=True)
        if before is None:
            r.facts["tracefs"] += " (mounted now by memlens)"
    except Exception as err:
        r.facts["tracefs"] = f"unavailable: {err}"
    for kind in ("tracepoint", "tp_btf", "raw_tracepoint", "kprobe", "fentry", "uprobe",
                 "perf_event", "ringbuf"):
        r.hooks[kind] = _try_hook(kind)
    r.features = kernel.probe_features()
    from memlens.core.unwind.store import doctor_facts

    r.facts.update(doctor_facts())  # user stacks through code without frame pointers
    r.tools = _tool_rows(r.hooks)
    return r


def print_report(r: Readiness, out=sys.stdout) -> None:
    p = lambda s="": print(s, file=out)  # noqa: E731
    p("memlens doctor: can memlens trace here?")
    for k, v in r.facts.items():
        if k.startswith("unwind_"):
            continue
        if k == "stack_unwind":
            from memlens.core.unwind.store import doctor_line

            k, v = "unwinding", doctor_line(r.facts)
        if isinstance(v, bool):
            v = "yes" if v else "no"
        p(f"  {k:<10} {v}")
    if r.hooks:
        p("hook kinds (loaded and attached for real):")
        for kind, (works, detail) in r.hooks.items():
            p(f"  {kind:<15} {'yes' if works else 'NO ':<4} {'' if works else detail}".rstrip())
    import textwrap

    for group, items in r.features.items():
        text = ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in items.items())
        p(textwrap.fill(text, 78, initial_indent=f"{group}: ", subsequent_indent="  "))
    p("tools:")
    width = max((len(row["tool"]) for row in r.tools), default=10)
    for row in r.tools:
        p(f"  {row['tool']:<{width}} {'ready' if row['ready'] else 'NOT READY':<9} "
          f"{row['hook']}")


class DoctorCommand:
    name = "doctor"
    summary = "Readiness: privileges, BTF, tracefs, which hook kinds work, which tools run here."
    epilog = EXAMPLES

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="one JSON object")

    def run(self, args: argparse.Namespace) -> int:
        r = gather()
        if args.json:
            from memlens.output.ndjson import JsonWriter

            JsonWriter(sys.stdout).emit({
                "type": "report", "section": "doctor", **r.facts,
                "hooks": {k: {"works": w, "detail": d} for k, (w, d) in r.hooks.items()},
                "features": r.features,
                "tools": r.tools})
        else:
            print_report(r)
        return 0


COMMAND = DoctorCommand()
