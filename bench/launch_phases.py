# SPDX-License-Identifier: GPL-2.0-only
"""Where launch-to-attached goes, phase by phase: `python bench/bench_launch.py --phases
[TOOL...]`.

The tool runs in a child interpreter like `memlens TOOL -d 0.01` does, with the steps that
matter wrapped to note when they end and how long they took: the interpreter and site up,
`import memlens.cli` (the registry, hooks, argparse), the command's module and options,
privileges, tracefs, hook probing (vmlinux BTF for tp_btf prototypes), tracepoint formats,
bpf_object__open, load (libbpf: vmlinux BTF for CO-RE, map creation, the kernel verifier),
attach, and the banner.  Times are from the parent's exec() (CLOCK_MONOTONIC is shared).
Medians of RUNS (3) runs per phase.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 3
ARGS = {"funccount": ["funccount", "t:syscalls:sys_enter_getppid"],
        "trace": ["trace", "t:syscalls:sys_exit_mmap"],
        "stackcount": ["stackcount", "-U", "t:syscalls:sys_enter_brk"],
        "count": ["count", "sw:page-faults", "--by", "comm,pid"],
        "memleak": ["memleak", "-p", str(os.getppid())]}

CHILD = r"""
import os, sys, time
T0 = float(os.environ["PHASES_T0"])
marks = [("interpreter + site", time.monotonic(), None)]
import functools, importlib.abc, importlib.machinery

def wrap(obj, name, label):
    f = getattr(obj, name)
    @functools.wraps(f)
    def w(*a, **k):
        t = time.monotonic()
        try:
            return f(*a, **k)
        finally:
            marks.append((label, time.monotonic(), time.monotonic() - t))
    setattr(obj, name, w)

def patch(mod):
    n = mod.__name__
    if n == "memlens.core.privileges":
        wrap(mod, "require_tracing_privileges", "privileges")
    elif n == "memlens.core.kernel":
        wrap(mod, "ensure_tracefs", "tracefs")
    elif n == "memlens.core.hooks":
        wrap(mod, "choose", "hook probing")
    elif n == "memlens.core.tpformat":
        wrap(mod, "read_format", "tracepoint format")
    elif n == "memlens.core.loader":
        wrap(mod.BpfObject, "__init__", "bpf_object__open")
        wrap(mod.BpfObject, "load", "load (BTF, maps, verifier)")
        for a in ("attach_tracepoint", "attach_perf_event", "attach_uprobe", "attach_auto"):
            wrap(mod.BpfObject, a, "attach")
    elif n == "memlens.core.runner":
        ob = mod.banner
        def banner(what):
            marks.append(("banner", time.monotonic(), None))
            ob(what)
        mod.banner = banner

WATCH = {"memlens.core.privileges", "memlens.core.kernel", "memlens.core.hooks",
         "memlens.core.tpformat", "memlens.core.loader", "memlens.core.runner"}

class Hook(importlib.abc.MetaPathFinder):
    # patches each module right after it is imported (as the tool imports it: the
    # wrapper imports nothing the tool would not)
    def find_spec(self, name, path, target=None):
        if name not in WATCH:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        real = spec.loader
        class Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return real.create_module(spec)
            def exec_module(self, module):
                real.exec_module(module)
                patch(module)
        spec.loader = Loader()
        return spec

sys.meta_path.insert(0, Hook())
import memlens.cli as cli
marks.append(("import memlens.cli", time.monotonic(), None))
try:
    cli.main(sys.argv[1:])
finally:
    for label, t, took in marks:
        took_ms = "" if took is None else f"{took * 1e3:.2f}"
        print(f"PHASE\t{label}\t{(t - T0) * 1e3:.2f}\t{took_ms}", file=sys.stderr)
"""


def run_once(tool: str) -> list[tuple[str, float, float | None]]:
    argv = ARGS.get(tool, [tool])
    env = {**os.environ, "PHASES_T0": repr(time.monotonic())}
    p = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", CHILD, *argv, "-d",
                        "0.01"], env=env, capture_output=True, text=True, timeout=60)
    out = []
    for line in p.stderr.splitlines():
        if line.startswith("PHASE\t"):
            _, label, at, took = line.split("\t")
            out.append((label, float(at), float(took) if took else None))
    return out


def main(tools: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src" / "memlens")],
                   stdout=subprocess.DEVNULL, check=False)
    for tool in tools:
        runs = [run_once(tool) for _ in range(RUNS)]
        print(f"\n{tool}: ms from exec (median of {RUNS}); step = time since the previous "
              "mark; in = inside the wrapped call")
        print(f"  {'mark':<28} {'at':>7} {'step':>7} {'in':>7}")
        prev = 0.0
        for k, (label, _, _) in enumerate(runs[0]):
            try:
                at = statistics.median(r[k][1] for r in runs)
                took = [r[k][2] for r in runs if r[k][2] is not None]
            except IndexError:
                break
            inside = f"{statistics.median(took):7.1f}" if took else " " * 7
            print(f"  {label:<28} {at:7.1f} {at - prev:7.1f} {inside}")
            prev = at


if __name__ == "__main__":
    main(sys.argv[1:] or ["oomkill", "brkstack", "mmapsnoop", "funccount"])
