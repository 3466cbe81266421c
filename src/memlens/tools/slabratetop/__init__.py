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

Here, on the counting engine (hooks declared in the registry, `memlens doctor` shows them):
  - tracepoint kmem:kmem_cache_alloc, whose record carries the cache's name as a
    __data_loc string since 6.1 (commit 2c1d697fb8ba): every kmem_cache_alloc* entry point
    fires it, and no kernel struct is read.  An engine keys it by that string, summing
    bytes_alloc.  Kernels before 6.1 have no name there, and the kprobe fallback the
    registry declares (reading struct kmem_cache with CO-RE) is not something the engine
    can do: exit 4 there (README.md, "Engine gaps");
  - tracepoint kmem:kmalloc (kmalloc_node too since 6.1): kmalloc has no cache name
    in its record; a second engine keys it by bytes_alloc, the size class, named here:
    kmalloc-96, kmalloc-1k; above the largest kmalloc cache the pages come from the page
    allocator ("kmalloc-large-16k").  The engine keys one field, so kmalloc's cache type
    (cg, rcl, dma: from gfp_flags) is not told apart: kmalloc-1k counts kmalloc-cg-1k's too.

SLUB merges caches of the same geometry: an allocation from a merged cache carries the
name of the cache that was created first (/sys/kernel/slab/NAME is then a symlink to
:A-0000064 or the like; `slab_nomerge` on the kernel command line turns merging off).
"""
from __future__ import annotations

import sys
import time

from memlens.core.session import add_common_options, positive_float, positive_int
from memlens.errors import UsageError

TYPE_CHECKING = False  # typing costs ~4 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    import argparse
    from typing import Any

SORTS = ("size", "count", "name")
CACHE_ALLOC = "t:kmem:kmem_cache_alloc"
KMALLOC = "t:kmem:kmalloc"  # kmalloc_node's own event went in 6.1, before names came

EXAMPLES = """\
examples:
  memlens slabratetop              # top 20 caches by bytes, every second, screen cleared
  memlens slabratetop -C 5 3       # 5-second summaries, 3 times, no clearing (BCC)
  memlens slabratetop -s count -r 10 -p 1234   # PID 1234's 10 busiest caches by count
  memlens slabratetop --json -d 10 # one JSON "report" per interval: every cache

output (`memlens slabratetop -C -p PID 2 1`, a program opening and closing 23 TCP sockets
and 23 pipes: tests/workloads/slab_loop.c):
  11:43:35 loadavg: 2.68 2.49 2.41 1/133 9318

  CACHE                            ALLOCS      BYTES
  TCP                                  23      54464
  kmalloc-1k                           23      23552
  sock_inode_cache                     23      19136
  inode_cache                          23      14352
  filp                                 69      13248
  dentry                               46       8832
  kmalloc-192                          23       4416
  lsm_file_cache                       69       1656
  lsm_inode_cache                      46       1472

CACHE   the slab cache: named caches from kmem_cache_alloc*(); kmalloc() by size class
        (kmalloc-N, whichever of kmalloc-N, kmalloc-cg-N, kmalloc-rcl-N, dma-kmalloc-N
        served it; kmalloc-large-N for allocations above the largest kmalloc cache,
        served by the page allocator)
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


def kmalloc_type_bits() -> dict[str, int]:
    """The gfp bits that choose a kmalloc cache's type, from kmem:kmalloc's print format."""
    from memlens.core import kernel
    from memlens.core.tpformat import gfp_bit

    try:
        with open(f"{kernel.ensure_tracefs(quiet=True)}/events/kmem/kmalloc/format") as f:
            text = f.read()
    except OSError:
        return {}
    out = {}
    for name in ("__GFP_DMA", "__GFP_RECLAIMABLE", "__GFP_ACCOUNT"):
        bit = gfp_bit(text, name)
        if bit:
            out[name] = bit
    return out


class SlabratetopTool:
    """The runner protocol (core/runner.py) over two counting engines: named caches keyed by
    their name, kmalloc keyed by its size class."""

    name = "slabratetop"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.engines: list = []   # named caches, then kmalloc (when its tracepoint is here)
        self.hook_labels: list[str] = []
        pid = getattr(args, "pid", None)
        self.what = "slab allocations by cache" + (f" for PID {pid}" if pid else "")
        self.totals: dict[str, list[int]] = {}
        self.max_kmalloc = 8192

    def start(self) -> None:
        from memlens import registry
        from memlens.core import kernel
        from memlens.core.engine import Engine
        from memlens.core.hooks import choose
        from memlens.core.privileges import require_tracing_privileges
        from memlens.core.probespec import parse_all

        require_tracing_privileges(self.name)
        kernel.ensure_tracefs()
        # exit 4 names the tracepoint (with its name field: Linux 6.1+) when it is missing
        cache_hook = choose(registry.hooks_of(self.name, 0), self.name)
        max_keys = getattr(self.args, "max_keys", 10240)
        self.engines.append(Engine(parse_all([CACHE_ALLOC]), keys=("field",), field="name",
                                   sum_field="bytes_alloc", max_keys=max_keys))
        self.hook_labels.append(cache_hook.label)
        if any(h.probe()[0] for h in registry.hooks_of(self.name, 1)):
            # keyed by size class and by the gfp bits that pick the cache type, masked in
            # the kernel (bits read from the event's print format: they moved in 6.9)
            self.gfp_type_bits = kmalloc_type_bits()
            mask = sum(self.gfp_type_bits.values())
            self.engines.append(Engine(parse_all([KMALLOC]), keys=("field",),
                                       field="bytes_alloc", field2="gfp_flags",
                                       field2_mask=mask, max_keys=max_keys))
            self.hook_labels.append(f"tracepoint {KMALLOC[2:]}")
        else:
            write_stderr(f"memlens {self.name}: no tracepoint kmem:kmalloc here: kmalloc() "
                         "allocations are not counted")
        for eng in self.engines:
            eng.start(pid=getattr(self.args, "pid", None),
                      cgroup=getattr(self.args, "cgroup", None))
        sizes = [v for k, v in read_slabinfo().items() if k.startswith("kmalloc-")
                 and k[8:].rstrip("k").isdigit()]
        if sizes:
            self.max_kmalloc = max(sizes)

    def poll(self, timeout: float) -> list[dict]:
        out: list[dict] = []
        for i, eng in enumerate(self.engines):
            eng.poll(timeout if i == 0 else 0.0)
            out.extend(eng.lost())
        return out

    def kmalloc_name(self, size: int, gfp: int = 0) -> str:
        """The cache that served a kmalloc, as mm/slab_common.c's kmalloc_type() picks it:
        DMA first, then reclaimable, then accounted (memcg)."""
        if size > self.max_kmalloc:
            return f"kmalloc-large-{size_name(size)}"
        bits = getattr(self, "gfp_type_bits", {})
        if gfp & bits.get("__GFP_DMA", 0):
            return f"dma-kmalloc-{size_name(size)}"
        if gfp & bits.get("__GFP_RECLAIMABLE", 0):
            return f"kmalloc-rcl-{size_name(size)}"
        if gfp & bits.get("__GFP_ACCOUNT", 0):
            return f"kmalloc-cg-{size_name(size)}"
        return f"kmalloc-{size_name(size)}"

    def report(self, final: bool) -> list[dict]:
        caches, *kmalloc = self.engines
        rows = [{"cache": e.parts["field"], "kind": "cache", "allocs": e.count,
                 "bytes": e.sum} for e in caches.collect()]
        for eng in kmalloc:  # keyed by bytes_alloc: the size class
            rows += [{"cache": self.kmalloc_name(e.parts["field"], e.parts.get("field2", 0)),
                      "kind": "kmalloc",
                      "allocs": e.count, "bytes": e.count * e.parts["field"]}
                     for e in eng.collect()]
        merged: dict[str, dict[str, Any]] = {}
        for r in rows:  # one row per name (a cache may be named like a kmalloc one)
            m = merged.setdefault(r["cache"], {**r, "allocs": 0, "bytes": 0})
            m["allocs"] += r["allocs"]
            m["bytes"] += r["bytes"]
        entries = sort_rows(list(merged.values()), getattr(self.args, "sort", "size"))
        for r in entries:
            t = self.totals.setdefault(r["cache"], [0, 0])
            t[0] += r["allocs"]
            t[1] += r["bytes"]
        lost = [r for eng in self.engines for r in eng.lost()]
        return [*lost, {"type": "report", "time": time.strftime("%H:%M:%S"),
                        "timestamp": time.time(), "final": final,
                        "interval_s": getattr(self.args, "interval", None),
                        "loadavg": _read("/proc/loadavg").strip(), "entries": entries}]

    def summary(self) -> list[dict]:
        caches = sort_rows([{"cache": k, "allocs": a, "bytes": b}
                            for k, (a, b) in self.totals.items()],
                           getattr(self.args, "sort", "size"))
        lost: dict[str, int] = {}
        for eng in self.engines:
            for k, v in eng.total_lost().items():
                lost[k] = lost.get(k, 0) + v
        return [{"type": "summary", "allocs": sum(c["allocs"] for c in caches),
                 "bytes": sum(c["bytes"] for c in caches), "caches": caches,
                 "lost": lost, "hooks": self.hook_labels}]

    def close(self) -> None:
        for eng in self.engines:
            eng.close()
        self.engines = []


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
        from memlens.core.runner import run_cli
        from memlens.output.sinks import check_output_options, make_sink

        check_output_options(args)
        if args.count is not None and args.count < 1:
            raise UsageError("count must be at least 1")
        sink = make_sink(args, Renderer(args), title="slab allocations", unit="allocs")
        return run_cli(SlabratetopTool(args), args, sink)


COMMAND = SlabratetopCommand()
