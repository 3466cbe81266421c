# SPDX-License-Identifier: GPL-2.0-only
"""hfaults: huge page faults by process — hugetlb faults, and in their own column the
transparent-huge-page faults (a huge page allocated at fault time).  The book's hfaults.bt
(a kprobe on hugetlb_fault, `@[pid, comm] = count()`) as a spec on the counting engine.

hugetlb: no tracepoint fires per hugetlb fault (KERNEL.md §4), and kprobes are not
everywhere, so the best hook is the perf software event page-faults on every CPU, counted
only when the faulting address lies in a hugetlb mapping (VM_HUGETLB, looked up in the
kernel with bpf_find_vma: the engine's `vma_select`).  One fault per huge page touched.
Where a kernel has kprobes, `hugetlb_fault` is the fallback (doctor shows the choice).

THP: no tracepoint fires per THP fault either.  A THP fault allocates one PMD-sized page
(order 9 with 4 KiB pages) in the faulting task's context, so the column counts
kmem:mm_page_alloc with

    order == PMD order            hpage_pmd_size / page size, read from sysfs
    && pfn != -1                  the allocation succeeded (the event also fires on failure,
                                  e.g. the first, this-node-only try of a THP allocation)
    && gfp_flags & __GFP_NOMEMALLOC
                                  every THP allocation mask has it (GFP_TRANSHUGE_LIGHT);
                                  hugetlb pool growth and surplus hugetlb pages (order 9 in
                                  the task that grows the pool or maps the surplus) do not

The __GFP_NOMEMALLOC bit is read from this kernel's own format file for the event (its
print fmt names every gfp bit), since the bit numbers moved between kernels.  What remains
counted that is not a fault: MADV_COLLAPSE in the calling task (a synchronous collapse,
6.1+); khugepaged's collapses are its own (comm khugepaged).
"""
from __future__ import annotations

import math
import os

from memlens import registry
from memlens.core.countingtool import CountingCommand, CountSpec, Plan, render_table
from memlens.core.hooks import Kprobe
from memlens.core.record import replace
from memlens.core.session import positive_int
from memlens.core.tpformat import gfp_bit

EXAMPLES = """\
examples:
  memlens hfaults                   # huge page faults by process until Ctrl-C
  memlens hfaults -p 1234           # only PID 1234
  memlens hfaults 1 10              # a report every second, 10 times
  memlens hfaults -t 5 -d 30        # the 5 processes with most huge page faults in 30 s
  memlens hfaults --json -p 1234    # one "report" object per interval and at exit

output (this machine: 8 hugetlb pages touched, 64 MiB of MADV_HUGEPAGE memory touched):
  Tracing huge page faults (hugetlb, THP)... Hit Ctrl-C to end.
  ^C
      PID COMM     HUGETLB THP
    13947 huge_tlb       8   0
    13949 huge_thp       0  32

HUGETLB: faults in hugetlb mappings (MAP_HUGETLB, hugetlbfs, SHM_HUGETLB), one per huge
page touched.  THP: transparent huge pages allocated at fault time (PMD size, 2 MiB here).
Rows are sorted by their total, largest last.
"""

HUGETLB = "hugetlb"
THP = "thp"
PAGE_ALLOC = "t:kmem:mm_page_alloc"

# The hugetlb hook decides the plan; the THP column is the same tracepoint in every plan.
PLANS = {
    registry.FAULT_MAPPINGS: Plan(("sw:page-faults", PAGE_ALLOC),
                                         {"sw:page-faults": HUGETLB, PAGE_ALLOC: THP}),
    Kprobe("hugetlb_fault"): Plan(("k:hugetlb_fault", PAGE_ALLOC),
                                  {"k:hugetlb_fault": HUGETLB, PAGE_ALLOC: THP}),
}

THP_SYSFS = "/sys/kernel/mm/transparent_hugepage"
DEFAULT_PMD_ORDER = 9  # 2 MiB / 4 KiB: when the kernel has no THP sysfs to ask

SPEC = CountSpec(
    positional_interval=True,
    name="hfaults",
    what="huge page faults (hugetlb, THP)",
    summary="Huge page faults by process: hugetlb and transparent huge pages (hfaults.bt).",
    keys=("pid", "comm"),
    layout="table",
    unit="huge_faults",
    vma_select="hugetlb",  # perf events only: the tracepoint is filtered by `filter`
    plans=PLANS,
    epilog=EXAMPLES,
)


def pmd_order(sysfs: str = THP_SYSFS) -> int:
    """The page order of a PMD-sized THP: log2(hpage_pmd_size / page size)."""
    try:
        with open(os.path.join(sysfs, "hpage_pmd_size")) as f:
            pmd = int(f.read())
    except (OSError, ValueError):
        return DEFAULT_PMD_ORDER
    page = os.sysconf("SC_PAGE_SIZE")
    if pmd <= page or pmd % page:
        return DEFAULT_PMD_ORDER
    return int(math.log2(pmd // page))


def thp_filter(format_text: str | None, order: int) -> str:
    """The in-kernel filter of the THP column (see the module's docstring)."""
    terms = [f"order == {order}", "pfn != -1"]
    bit = gfp_bit(format_text, "__GFP_NOMEMALLOC") if format_text else None
    if bit:
        terms.append(f"gfp_flags & {bit:#x}")
    return " && ".join(terms)


def read_page_alloc_format() -> str | None:
    from memlens.core import kernel

    path = os.path.join(kernel.ensure_tracefs(quiet=True), "events", "kmem", "mm_page_alloc",
                        "format")
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None  # the engine names the missing tracepoint when it resolves the probe


def render(rec: dict, interval: bool) -> None:
    """PID COMM HUGETLB THP (the columns' total is the JSON entries' "count")."""
    if rec.get("type") != "report":
        return
    rows = [{k: v for k, v in e.items() if k != "count"} for e in rec["entries"]]
    render_table({**rec, "entries": rows}, interval=interval,
                 titles={HUGETLB: "HUGETLB", THP: "THP"})


class HfaultsCommand(CountingCommand):
    def add_spec_arguments(self, parser) -> None:
        parser.add_argument("-t", "--top", type=positive_int, metavar="N",
                            help="only the N processes with most huge page faults per report")


    def make_tool(self, args):
        self.thp_filter = thp_filter(read_page_alloc_format(), pmd_order())
        self.spec = replace(SPEC, filter=self.thp_filter)
        tool = super().make_tool(args)
        tool.spec.top = args.top
        summary = tool.summary

        def summary_with_filter() -> list[dict]:
            recs = summary()
            for r in recs:
                r["thp_filter"] = self.thp_filter
            return recs

        tool.summary = summary_with_filter
        return tool

    def renderer(self, args):
        return lambda rec: render(rec, interval=args.interval is not None)


COMMAND = HfaultsCommand(SPEC)
