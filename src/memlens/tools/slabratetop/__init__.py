# SPDX-License-Identifier: GPL-2.0-only
"""slabratetop: kernel slab allocations by cache name, top-like — BCC's and libbpf-tools'
slabratetop on kernels before and after the 6.8 slab changes, from tracepoints.

BCC hooks `kprobe:kmem_cache_alloc` and reads `cachep->name` and `->size` through a
hand-copied `struct kmem_cache` (and `struct slab`, with SLAB/SLUB/SLOB ifdefs) compiled
against the kernel's headers; 6.8 removed SLAB and moved slub_def.h into mm/, so the
program no longer compiles and BCC refuses Linux >= 6.8 (commit 487331fe, "Mark
slabratetop.py not supported for >= 6.8 kernel").  libbpf-tools reads the same fields with
CO-RE, from `kprobe:kmem_cache_alloc` or, since 6.10's allocation tagging renamed it
(commit 7bd230a26648), `kmem_cache_alloc_noprof` (bcc PR #5168) — neither counts
kmem_cache_alloc_node/_lru, and neither runs without kprobes.

Here (hooks declared in the registry, `memlens doctor` shows the choice):
  - tracepoint kmem:kmem_cache_alloc, whose record carries the cache's name as a
    __data_loc string since 6.1 (commit 2c1d697fb8ba): every kmem_cache_alloc* entry point
    fires it, and no kernel struct is read; else kprobes on kmem_cache_alloc(_node, _lru)
    reading the struct with CO-RE (kernels before 6.1);
  - tracepoint kmem:kmalloc (and kmalloc_node where it exists, before 6.1): kmalloc has no
    cache name in its record, so it is keyed by bytes_alloc and by the gfp bits that choose
    the kmalloc cache type (kmalloc_type()), and named here: kmalloc-96, kmalloc-cg-1k,
    kmalloc-rcl-64, dma-kmalloc-8k; above the largest kmalloc cache the pages come from the
    page allocator ("kmalloc-large-16k").
Counting happens in the kernel in this tool's own small BPF program: the counting engine
can key by one integer field only, not by a string (see README.md).

SLUB merges caches of the same geometry: an allocation from a merged cache carries the
name of the cache that was created first (/sys/kernel/slab/NAME is then a symlink to
:A-0000064 or the like; `slab_nomerge` on the kernel command line turns merging off).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from memlens.core.session import add_common_options, positive_float, positive_int
from memlens.errors import UsageError

SORTS = ("size", "count", "name")
KIND_PREFIX = {1: "kmalloc-", 2: "kmalloc-cg-", 3: "kmalloc-rcl-", 4: "dma-kmalloc-"}
# kprobe fallback (kernels before 6.1): every entry point of the time (the _lru one since
# 5.19); 6.10+ renamed them *_noprof, but those kernels have the named tracepoint
KPROBE_FUNCS = ("kmem_cache_alloc", "kmem_cache_alloc_node", "kmem_cache_alloc_lru")

EXAMPLES = """\
examples:
  memlens slabratetop              # top 20 caches by bytes, every second, screen cleared
  memlens slabratetop -C 5 3       # 5-second summaries, 3 times, no clearing (BCC)
  memlens slabratetop -s count -r 10 -p 1234   # PID 1234's 10 busiest caches by count
  memlens slabratetop --json -d 10 # one JSON "report" per interval: every cache

output (`memlens slabratetop -C -p PID 2 1`, a program opening and closing 23 TCP sockets
and 23 pipes: tests/workloads/slab_loop.c):
  11:31:22 loadavg: 3.22 1.44 1.62 3/127 9863

  CACHE                            ALLOCS      BYTES
  TCP                                  23      54464
  kmalloc-cg-1k                        23      23552
  sock_inode_cache                     23      19136
  inode_cache                          23      14352
  filp                                 69      13248
  dentry                               46       8832
  kmalloc-cg-192                       23       4416
  lsm_file_cache                       69       1656
  lsm_inode_cache                      46       1472

CACHE   the slab cache: named caches from kmem_cache_alloc*(); kmalloc() by size class and
        type (kmalloc-N, kmalloc-cg-N, kmalloc-rcl-N, dma-kmalloc-N; kmalloc-large-N for
        allocations above the largest kmalloc cache, served by the page allocator)
ALLOCS  allocations in the interval; BYTES: their object sizes added up
Merged caches (SLUB) carry the name of the first cache of their group.
"""


def size_name(n: int) -> str:
    """The kernel's spelling of a kmalloc size (kmalloc-96, kmalloc-1k, kmalloc-8k)."""
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10}k"
    return str(n)


def read_slabinfo(path: str = "/proc/slabinfo") -> dict[str, int]:
    """{cache name: object size} from /proc/slabinfo (root only); {} when unreadable."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) > 3 and not line.startswith(("slabinfo", "#")):
                    out[parts[0]] = int(parts[3])
    except (OSError, ValueError):
        return {}
    return out


class SlabratetopTool:
    """The runner protocol (core/runner.py): one BPF object, its `counts` map drained
    every report (lookup-and-delete: nothing counted between a read and a reset is lost)."""

    name = "slabratetop"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.obj = None
        self.hook_labels: list[str] = []
        pid = getattr(args, "pid", None)
        self.what = "slab allocations by cache" + (f" for PID {pid}" if pid else "")
        self.totals: dict[str, list[int]] = {}
        self.reports = 0
        self.max_kmalloc = 8192

    def start(self) -> None:
        from memlens import registry
        from memlens.core import kernel, tpformat
        from memlens.core.drops import Losses
        from memlens.core.hooks import Kprobe, Tracepoint, choose
        from memlens.core.loader import BpfObject
        from memlens.core.privileges import require_tracing_privileges
        from memlens.core.session import configure_filters

        require_tracing_privileges(self.name)
        root = kernel.ensure_tracefs()
        cache_hook = choose(registry.hooks_of(self.name, 0), self.name)
        kmalloc_ok = any(h.probe()[0] for h in registry.hooks_of(self.name, 1))
        self.obj = obj = BpfObject.open("tools/slabratetop/slabratetop.bpf.o")
        configure_filters(obj, self.args)
        ro = obj.rodata
        obj.set_max_entries("counts", getattr(self.args, "max_keys", 10240))
        kprobes: list[str] = []
        if isinstance(cache_hook, Tracepoint):
            fmt = tpformat.read_format("kmem", "kmem_cache_alloc")
            ro["cache_name_off"] = fmt.field("name").offset
            ro["cache_bytes_off"] = fmt.field("bytes_alloc").offset
        elif isinstance(cache_hook, Kprobe):
            kprobes = [f for f in KPROBE_FUNCS if Kprobe(f).probe()[0]]
        obj.set_autoload("cache_alloc_tp", isinstance(cache_hook, Tracepoint))
        obj.set_autoload("cache_alloc_kp", bool(kprobes))
        kmalloc_events: list[str] = []
        if kmalloc_ok:
            fmt = tpformat.read_format("kmem", "kmalloc")
            layout = (fmt.field("bytes_alloc").offset, fmt.field("gfp_flags").offset)
            ro["kmalloc_bytes_off"], ro["kmalloc_gfp_off"] = layout
            kmalloc_events.append("kmalloc")
            # before 6.1 kmalloc_node was its own event, the same fields in the same places
            if Tracepoint("kmem", "kmalloc_node").probe()[0]:
                node = tpformat.read_format("kmem", "kmalloc_node")
                if (node.field("bytes_alloc").offset, node.field("gfp_flags").offset) == layout:
                    kmalloc_events.append("kmalloc_node")
            text = _read(os.path.join(root, "events", "kmem", "kmalloc", "format"))
            from memlens.tools.hfaults import gfp_bit

            for var, flag in (("gfp_dma", "__GFP_DMA"), ("gfp_reclaimable", "__GFP_RECLAIMABLE"),
                              ("gfp_account", "__GFP_ACCOUNT")):
                ro[var] = gfp_bit(text, flag) or 0
        else:
            write_stderr(f"memlens {self.name}: no tracepoint kmem:kmalloc here: kmalloc() "
                         "allocations are not counted")
        obj.set_autoload("kmalloc_tp", bool(kmalloc_events))
        obj.load()
        if isinstance(cache_hook, Tracepoint):
            obj.attach_tracepoint("cache_alloc_tp", "kmem", "kmem_cache_alloc")
            self.hook_labels.append(cache_hook.label)
        for func in kprobes:
            obj.attach_kprobe("cache_alloc_kp", func)
            self.hook_labels.append(f"kprobe {func}")
        for ev in kmalloc_events:
            obj.attach_tracepoint("kmalloc_tp", "kmem", ev)
            self.hook_labels.append(f"tracepoint kmem:{ev}")
        self.losses = Losses(obj, missing_stacks=False)
        self.key_dtype = obj.struct_dtype("slab_key")
        self.val_dtype = obj.struct_dtype("slab_value")
        sizes = [v for k, v in read_slabinfo().items() if k.startswith("kmalloc-")
                 and k[8:].rstrip("k").isdigit()]
        if sizes:
            self.max_kmalloc = max(sizes)

    def poll(self, timeout: float) -> list[dict]:
        time.sleep(timeout)  # everything is counted in the kernel: nothing to read early
        return self.losses.new()

    def cache_name(self, key) -> str:
        kind = int(key["kind"])
        if kind == 0:
            return bytes(key["name"]).split(b"\0", 1)[0].decode(errors="replace")
        size = int(key["size"])
        if size > self.max_kmalloc:
            return f"kmalloc-large-{size_name(size)}"
        return KIND_PREFIX.get(kind, "kmalloc-") + size_name(size)

    def report(self, final: bool) -> list[dict]:
        keys, vals = self.obj.map("counts").drain(self.key_dtype, self.val_dtype)
        rows: dict[str, dict[str, Any]] = {}
        for k, v in zip(keys, vals):
            name = self.cache_name(k)
            r = rows.setdefault(name, {"cache": name,
                                       "kind": "cache" if int(k["kind"]) == 0 else "kmalloc",
                                       "allocs": 0, "bytes": 0})
            r["allocs"] += int(v["allocs"])
            r["bytes"] += int(v["bytes"])
        entries = sort_rows(list(rows.values()), getattr(self.args, "sort", "size"))
        for r in entries:
            t = self.totals.setdefault(r["cache"], [0, 0])
            t[0] += r["allocs"]
            t[1] += r["bytes"]
        self.reports += 1
        return [*self.losses.new(),
                {"type": "report", "time": time.strftime("%H:%M:%S"),
                 "timestamp": time.time(), "final": final,
                 "interval_s": getattr(self.args, "interval", None),
                 "loadavg": _read("/proc/loadavg").strip(), "entries": entries}]

    def summary(self) -> list[dict]:
        caches = sort_rows([{"cache": k, "allocs": a, "bytes": b}
                            for k, (a, b) in self.totals.items()],
                           getattr(self.args, "sort", "size"))
        return [{"type": "summary", "allocs": sum(c["allocs"] for c in caches),
                 "bytes": sum(c["bytes"] for c in caches), "caches": caches,
                 "lost": self.losses.totals(), "hooks": self.hook_labels}]

    def close(self) -> None:
        if self.obj is not None:
            self.obj.close()
            self.obj = None


def sort_rows(rows: list[dict], sort: str) -> list[dict]:
    """Largest first (top's order): by bytes (BCC, libbpf-tools' default), by count, or by
    name (alphabetical)."""
    if sort == "name":
        return sorted(rows, key=lambda r: r["cache"])
    field = "bytes" if sort == "size" else "allocs"
    other = "allocs" if field == "bytes" else "bytes"
    return sorted(rows, key=lambda r: (-r[field], -r[other], r["cache"]))


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def write_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Renderer:
    """BCC's screen: `HH:MM:SS loadavg: ...`, then CACHE ALLOCS BYTES, at most -r rows,
    largest first; the screen is cleared first unless -C or stdout is not a terminal."""

    def __init__(self, args: argparse.Namespace):
        self.rows = args.maxrows
        self.clear = not args.noclear and sys.stdout.isatty()
        self.intervals = True

    def __call__(self, rec: dict) -> None:
        from memlens.output.table import escape

        if rec.get("type") != "report":
            return
        out = []
        if self.clear:
            out.append("\033[H\033[2J")
        else:
            out.append("")
        out.append(f"{rec['time']:<8} loadavg: {rec.get('loadavg', '')}")
        out.append("")
        out.append(f"{'CACHE':<32} {'ALLOCS':>6} {'BYTES':>10}")
        for e in rec["entries"][:self.rows]:
            out.append(f"{escape(e['cache'])[:32]:<32} {e['allocs']:>6} {e['bytes']:>10}")
        print("\n".join(out), flush=True)


class SlabratetopCommand:
    name = "slabratetop"
    summary = "Kernel slab allocations by cache name, top-like (slabratetop)."
    epilog = EXAMPLES

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from memlens.output.sinks import add_output_options

        add_common_options(parser, json=False)
        add_output_options(parser)
        parser.add_argument("-C", "--noclear", action="store_true",
                            help="don't clear the screen")
        parser.add_argument("-r", "--maxrows", "--rows", type=positive_int, default=20,
                            metavar="MAXROWS", help="maximum rows to print (default 20)")
        parser.add_argument("-s", "--sort", choices=SORTS, default="size",
                            help="sort by bytes (size, the default), allocations (count) "
                                 "or cache name")
        parser.add_argument("--max-keys", type=positive_int, default=10240, metavar="N",
                            help="size of the in-kernel table (default 10240)")
        parser.add_argument("interval", nargs="?", type=positive_float, default=1.0,
                            help="seconds between reports (default 1)")
        parser.add_argument("count", nargs="?", type=positive_int,
                            help="number of reports (default: until Ctrl-C or -d)")

    def run(self, args: argparse.Namespace) -> int:
        from memlens.core.lazy import prefetch_numpy
        from memlens.core.runner import run_cli
        from memlens.output.sinks import check_output_options, make_sink

        check_output_options(args)
        if args.count is not None and args.count < 1:
            raise UsageError("count must be at least 1")
        prefetch_numpy()
        sink = make_sink(args, Renderer(args), title="slab allocations", unit="allocs")
        return run_cli(SlabratetopTool(args), args, sink)


COMMAND = SlabratetopCommand()
