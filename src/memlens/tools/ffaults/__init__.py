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

from memlens import registry
from memlens.core.countingtool import CountingCommand, CountSpec, Plan
from memlens.core.session import positive_int
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
# adds its column where the kernel has the tracepoint, else it is left out (said on stderr).
PAGE_FAULTS = registry.FAULT_MAPPINGS
PLAN = Plan((FAULTS_PROBE, MISSES_PROBE), dict(COLUMNS), optional={MISSES_PROBE: 1})

SPEC = CountSpec(
    positional_interval=True,
    name="ffaults",
    what="page faults on file mappings by file",
    summary="Page faults on file-backed mappings by file, and page-cache misses "
            "(ffaults.bt).",
    keys=("file",),
    layout="table",
    unit="faults",
    file_fields=("i_ino", "s_dev"),
    vma_select="file",
    count_column="faults",   # cache misses are some of the faults, not more of them
    plans={PAGE_FAULTS: PLAN},
    epilog=EXAMPLES,
)


class FfaultsCommand(CountingCommand):
    def add_spec_arguments(self, parser) -> None:
        parser.add_argument("-t", "--top", type=positive_int, metavar="N",
                            help="only the N files with most faults in each report")

    def keys_for(self, args):
        return ("file",)

    def make_tool(self, args):
        tool = super().make_tool(args)
        tool.spec.top = args.top
        return tool

    def renderer(self, args):
        return lambda rec: render_files(rec, interval=args.interval is not None)


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
