# SPDX-License-Identifier: GPL-2.0-only
"""ffaults: page faults on file-backed mappings, counted by file — the book's ffaults.bt
(a kprobe on handle_mm_fault keyed by vma->vm_file's name) as a spec on the counting
engine, without kprobes:

- FAULTS: the perf software event page-faults on every CPU; in the kernel, the fault
  address is resolved to its mapping (bpf_find_vma) and only faults in file mappings are
  counted, keyed by the mapping's (device, inode).  Anonymous and hugetlb faults are not
  mixed in (the book's tool counts them under an empty name).
- CACHE_MISSES: filemap:mm_filemap_fault, which fires when a file fault did not find its
  page in the page cache (it had to be read), keyed by the same (device, inode) from the
  tracepoint's i_ino and s_dev.

File names are read from /proc/PID/maps of the process that faulted, when its file is first
seen (an inode no live process showed is printed as `[dev MAJ:MIN ino N]`).  The hooks are
declared in the registry; `memlens doctor` shows them.
"""
from __future__ import annotations

import re
import time

from memlens.core.countingtool import CountingCommand, CountingTool, CountSpec, Plan
from memlens.core.hooks import PerfSoftware
from memlens.core.session import positive_float, positive_int
from memlens.output.table import LINE_WIDTH, Column, Table

EXAMPLES = """\
examples:
  memlens ffaults                   # faults on file mappings by file until Ctrl-C
  memlens ffaults -p 1234           # only PID 1234
  memlens ffaults -t 10 5           # the 10 files faulting most, every 5 seconds
  memlens ffaults --cgroup /sys/fs/cgroup/memory/web -d 10
  memlens ffaults --json -d 10      # full paths, one "report" object per interval

output (a 16 MiB file read cold, one byte per page, with MADV_RANDOM):
  FILE                                                      FAULTS CACHE_MISSES
  /usr/lib/x86_64-linux-gnu/libc.so.6                            3            0
  /tmp/f16.dat                                                4096         4096

FAULTS: page faults in mappings of the file.  CACHE_MISSES: those of them that did not find
the page in the page cache (filemap:mm_filemap_fault: the page was read from the file).
Paths are cut at the left to fit; --json has them whole.  Largest last.
"""

FAULTS_PROBE = "sw:page-faults"
MISSES_PROBE = "t:filemap:mm_filemap_fault"
COLUMNS = {FAULTS_PROBE: "faults", MISSES_PROBE: "cache_misses"}
TITLES = {"faults": "FAULTS", "cache_misses": "CACHE_MISSES"}

# The hook of need 0 in the registry decides the plan; need 1 (the page-cache misses)
# adds its column where the kernel has the tracepoint.
PAGE_FAULTS = PerfSoftware("page-faults", 2)
PLAN = Plan((FAULTS_PROBE, MISSES_PROBE), dict(COLUMNS))
PLAN_NO_MISSES = Plan((FAULTS_PROBE,), {FAULTS_PROBE: "faults"})

SPEC = CountSpec(
    name="ffaults",
    what="page faults on file mappings by file",
    summary="Page faults on file-backed mappings by file, and page-cache misses "
            "(ffaults.bt).",
    keys=("file",),
    layout="table",
    unit="faults",
    file_fields=("i_ino", "s_dev"),
    vma_select="file",
    plans={PAGE_FAULTS: PLAN},
    epilog=EXAMPLES,
)


UNNAMED = re.compile(r"^\[dev \d+:\d+ ino (\d+)\]$")  # engine.file_name's fallback


class FfaultsTool(CountingTool):
    """One row per file: faults and cache misses side by side; "count" is the faults."""

    misses_total = 0

    def file_name(self, name: str) -> str:
        """A file the engine could not name by (device, inode), named by its inode alone
        when exactly one mapped file had it.  Why: on overlayfs (container images) the
        kernel side reads the mapping's real file, on the layer's device, while
        /proc/PID/maps shows the overlay's device with the same inode number (all layers
        on one filesystem, as overlay2 sets them up).  A stopgap until the engine learns
        the user-visible inode of backing files (see README)."""
        m = UNNAMED.match(name)
        if m is None:
            return name
        ino = int(m.group(1))
        files = getattr(self.engine, "_files", {})
        paths = {path for (_dev, i), path in files.items() if i == ino}
        return paths.pop() if len(paths) == 1 else name

    def report(self, final: bool) -> list[dict]:
        columns = self.spec.columns or {}
        rows: dict[str, dict] = {}
        for e in self.engine.collect():
            col = columns.get(e.parts.get("probe", FAULTS_PROBE))
            if col is None:
                continue
            name = self.file_name(e.parts["file"])
            row = rows.get(name)
            if row is None:
                row = rows[name] = {"file": name, **dict.fromkeys(columns.values(), 0)}
            row[col] += e.count
        entries = sorted(rows.values(), key=lambda r: (r["faults"], r.get("cache_misses", 0),
                                                       r["file"]))
        for r in entries:
            r["count"] = r["faults"]
        self.total += sum(r["faults"] for r in entries)
        self.misses_total += sum(r.get("cache_misses", 0) for r in entries)
        self.entries_seen += len(entries)
        if self.spec.top and len(entries) > self.spec.top:
            entries = entries[-self.spec.top:]
        rec = {"type": "report", "time": time.strftime("%H:%M:%S"), "timestamp": time.time(),
               "final": final, "interval_s": getattr(self.args, "interval", None),
               "entries": entries}
        return [*self.engine.lost(), rec]

    def summary(self) -> list[dict]:
        (rec,) = super().summary()
        if "cache_misses" in (self.spec.columns or {}).values():
            rec["cache_misses"] = self.misses_total
        return [rec]


class FfaultsCommand(CountingCommand):
    def add_spec_arguments(self, parser) -> None:
        parser.add_argument("-t", "--top", type=positive_int, metavar="N",
                            help="only the N files with most faults in each report")
        # BCC-style positional interval [count], as brkstack takes them
        parser.add_argument("interval_pos", nargs="?", type=positive_float, metavar="interval",
                            help="print a report every INTERVAL seconds")
        parser.add_argument("count_pos", nargs="?", type=positive_int, metavar="count",
                            help="stop after COUNT reports")

    def plan(self) -> Plan:
        """Faults need the perf event (exit 4 naming it when the kernel lacks it); the
        cache-miss column needs the filemap tracepoint, and is left out without it."""
        from memlens import registry
        from memlens.core.countingtool import write_stderr
        from memlens.core.hooks import choose

        if getattr(self, "_plan", None) is None:
            choose(registry.hooks_of(self.name, 0), self.name)
            misses = registry.hooks_of(self.name, 1)
            if any(hook.probe()[0] for hook in misses):
                self._plan = PLAN
            else:
                write_stderr(f"memlens ffaults: no {misses[0].label} here: "
                             "no CACHE_MISSES column")
                self._plan = PLAN_NO_MISSES
        return self._plan

    def make_tool(self, args) -> CountingTool:
        from dataclasses import replace

        from memlens.core.probespec import parse_all

        plan = self.plan()
        spec = replace(self.spec, probes=plan.probes, columns=plan.columns, top=args.top)
        self.active_spec = spec
        probes = parse_all(list(spec.probes), getattr(args, "pid", None))
        return FfaultsTool(spec, probes, ("probe", "file"), args, max_keys=args.max_keys)

    def renderer(self, args):
        return lambda rec: render_files(rec, interval=args.interval is not None)

    def run(self, args) -> int:
        if args.interval_pos is not None:
            args.interval = args.interval_pos
        if args.count_pos is not None:
            args.count = args.count_pos
        return super().run(args)


def render_files(rec: dict, interval: bool, width: int = LINE_WIDTH) -> None:
    """FILE FAULTS CACHE_MISSES, largest last; the file column takes what the numbers
    leave of `width` columns, and a longer path is cut at the left (its name is kept)."""
    if rec.get("type") != "report":
        return
    entries = rec["entries"]
    out = [f"\n[{rec['time']}]"] if interval else []
    if entries:
        names = [k for k in ("faults", "cache_misses") if k in entries[0]]
        nums = [Column(TITLES[k], max(len(TITLES[k]), *(len(str(e[k])) for e in entries)),
                       ">", "d") for k in names]
        file_width = max(width - sum(c.width + 1 for c in nums), 16)  # type: ignore[operator]
        table = Table([Column("FILE", file_width, keep="tail"), *nums], line_width=None)
        out.append(table.header())
        out.extend(table.row([e["file"], *(e[k] for k in names)]) for e in entries)
    elif interval:
        out.append("  (no faults on file mappings)")
    if out:
        print("\n".join(out), flush=True)


COMMAND = FfaultsCommand(SPEC)
