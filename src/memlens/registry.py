# SPDX-License-Identifier: GPL-2.0-only
"""Every command, once: `memlens --help`, the command dispatch and `memlens doctor`'s tool
table are all built from this list.

A tracing tool declares what it needs from the kernel here, each need with its hooks in
order of preference (core/hooks.py probes them by what the kernel really offers: BTF
prototypes, tracepoint format files, perf events).  The tool chooses from the same
declaration (`hooks_of(name, need)`), so doctor cannot say "ready" for a hook the tool
would refuse.  Tools whose probes are given on the command line (stackcount, funccount,
trace, count) declare the hook kinds they can attach instead.

Importing this module is cheap: no tool module, no libbpf, no numpy.
"""
from __future__ import annotations

from memlens.core.hooks import (
    AllOf,
    BpfHelper,
    Hook,
    Kprobe,
    PerfSoftware,
    TpBtf,
    Tracepoint,
    Uprobe,
)
from memlens.core.record import record

# core/record's value classes: not collections.namedtuple (collections is ~5 ms of every
# command's start on this VM) nor typing.NamedTuple (~7 ms; bench/launch_phases.py).


@record(frozen=True)
class Need:
    what: str                  # e.g. "OOM victims"
    hooks: tuple[Hook, ...]    # best first


@record(frozen=True)
class EarlyMap:
    """A map the tool makes by default, worth making from the command line's first step
    (core/earlymaps.py): when the command line has one of the `when` options."""
    name: str
    kind: str                   # "hash" (libbpf.BPF_MAP_TYPE_<KIND>)
    key_size: int
    value_size: int
    max_entries: int
    on_insert: bool             # BPF_F_NO_PREALLOC where the kernel allows it
    when: tuple[str, ...]


@record(frozen=True)
class Tool:
    name: str
    module: str
    summary: str
    needs: tuple[Need, ...] = ()
    kinds: tuple[str, ...] = ()  # hook kinds usable by probes given on the command line
    bpf: bool = True             # loads BPF programs (doctor checks it)
    doctor_label: str = ""       # doctor's row name when it differs from `name`
    early_maps: tuple[EarlyMap, ...] = ()  # made as soon as the command is known

ONE_LINER_KINDS = ("tracepoint", "perf_event", "uprobe")

# Page faults attributed to the mapping that holds their address: the perf event, and the
# bpf_find_vma helper (5.17+) that looks the mapping up in the kernel.
FAULT_MAPPINGS = AllOf(PerfSoftware("page-faults", 2), BpfHelper("find_vma"))

TOOLS: tuple[Tool, ...] = (
    Tool("check", "memlens.checklist.check",
         "the memory checklist: OOMs, swap, vmstat, free, top RSS, PSI, cgroups, sar -B",
         bpf=False),
    Tool("doctor", "memlens.doctor",
         "readiness: privileges, BTF, tracefs, hook kinds, which tools run here", bpf=False),
    Tool("top", "memlens.checklist.top",
         "live view: memory, paging, PSI and the processes with most RSS/faults", bpf=False),
    Tool("pmap", "memlens.checklist.pmap",
         "a process's mappings with RSS, dirty and swap (pmap -x)", bpf=False),
    Tool("oomkill", "memlens.tools.oomkill", "trace OOM kills: trigger, victim, RSS, cgroup",
         needs=(Need("OOM victims", (
             TpBtf("mark_victim", ("struct task_struct *", "uid_t")),
             Tracepoint("oom", "mark_victim", fields=("pid",)))),)),
    Tool("memleak", "memlens.tools.memleak",
         "outstanding allocations by stack (user or kernel)",
         needs=(Need("user", (Uprobe(),)),
                Need("kernel", (
                    Tracepoint("kmem", "kmalloc", fields=("ptr", "bytes_alloc")),))),
         # -p's allocs: 2^20 buckets, ~15 ms of the kernel's to make (memleak.h's struct
         # alloc_info; --max-allocs' default; checked against the object by a test)
         early_maps=(EarlyMap("allocs", "hash", 8, 32, 1_000_000, True, ("-p", "--pid")),)),
    Tool("mmapsnoop", "memlens.tools.mmapsnoop", "trace mmap() calls: prot, flags, size, file",
         needs=(Need("calls", (
             Tracepoint("syscalls", "sys_enter_mmap", fields=("addr", "len", "prot", "flags",
                                                               "fd", "off")),)),
                Need("results", (Tracepoint("syscalls", "sys_exit_mmap",
                                                   fields=("ret",)),)))),
    Tool("shmsnoop", "memlens.tools.shmsnoop",
         "trace shmget/shmat/shmdt/shmctl calls: flags, commands, results (BCC shmsnoop)",
         needs=(Need("calls", (AllOf(
             Tracepoint("syscalls", "sys_enter_shmget", fields=("key", "size", "shmflg")),
             Tracepoint("syscalls", "sys_enter_shmat", fields=("shmid", "shmaddr", "shmflg")),
             Tracepoint("syscalls", "sys_enter_shmdt", fields=("shmaddr",)),
             Tracepoint("syscalls", "sys_enter_shmctl", fields=("shmid", "cmd", "buf"))),)),
                Need("results", (AllOf(*(Tracepoint("syscalls", f"sys_exit_{s}", fields=("ret",))
                                         for s in ("shmget", "shmat", "shmdt", "shmctl"))),)))),
    Tool("compactsnoop", "memlens.tools.compactsnoop",
         "trace compaction episodes per zone: order, mode, latency, status (BCC compactsnoop)",
         needs=(Need("episodes", (AllOf(
             Tracepoint("compaction", "mm_compaction_begin", fields=("zone_start", "sync")),
             Tracepoint("compaction", "mm_compaction_end",
                        fields=("zone_start", "zone_end", "sync", "status"))),)),
                Need("order", (Tracepoint("compaction", "mm_compaction_suitable",
                                          fields=("nid", "idx", "order", "ret")),)),
                Need("migrated pages", (Tracepoint("compaction", "mm_compaction_migratepages",
                                                   fields=("nr_migrated", "nr_failed")),)))),
    Tool("brkstack", "memlens.tools.brkstack", "count brk() heap expansions by user stack",
         needs=(Need("brk() calls", (Tracepoint("syscalls", "sys_enter_brk"),)),)),
    Tool("faults", "memlens.tools.faults",
         "page faults by process and kernel/user stack, minor and major (faults.bt)",
         needs=(Need("page faults", (PerfSoftware("minor-faults", 5),
                                     Tracepoint("exceptions", "page_fault_user"),
                                     Kprobe("handle_mm_fault"))),)),
    Tool("growth", "memlens.tools.growth",
         "why RSS grows: anon/file/shmem growth per interval and the fault paths behind it",
         needs=(Need("page faults by mapping", (FAULT_MAPPINGS,)),)),
    Tool("ffaults", "memlens.tools.ffaults",
         "page faults on file mappings by file, and page-cache misses (ffaults.bt)",
         needs=(Need("faults", (FAULT_MAPPINGS,)),
                Need("cache misses",
                     (Tracepoint("filemap", "mm_filemap_fault", fields=("i_ino", "s_dev")),)))),
    Tool("hfaults", "memlens.tools.hfaults",
         "huge page faults by process: hugetlb and transparent huge pages (hfaults.bt)",
         needs=(Need("hugetlb", (FAULT_MAPPINGS, Kprobe("hugetlb_fault"))),
                Need("THP", (Tracepoint("kmem", "mm_page_alloc",
                                               fields=("pfn", "order", "gfp_flags")),)))),
    Tool("numamove", "memlens.tools.numamove",
         "page migrations by reason (NUMA, compaction, demotion...): pages, failed, time",
         needs=(Need("migrations", (Tracepoint("migrate", "mm_migrate_pages",
                                               fields=("succeeded", "failed", "reason")),)),
                Need("migration time", (Tracepoint("migrate", "mm_migrate_pages_start",
                                                   fields=("reason",)),)))),
    Tool("slabratetop", "memlens.tools.slabratetop",
         "kernel slab allocations by cache name, top-like (slabratetop)",
         needs=(Need("cache allocations", (
             # the cache's name is in the record since 6.1; before, a kprobe would have to
             # read it through its argument, which the engine cannot: no fallback declared
             Tracepoint("kmem", "kmem_cache_alloc", fields=("name", "bytes_alloc")),)),
                Need("kmalloc", (Tracepoint("kmem", "kmalloc",
                                            fields=("bytes_alloc", "gfp_flags")),)))),
    Tool("swapin", "memlens.tools.swapin",
         "pages swapped in and out by process, with the major faults that waited (swapin)",
         needs=(Need("swap-ins", (Tracepoint("memcg", "count_memcg_events",
                                             fields=("item", "val")),
                                  Kprobe("swap_read_folio"), Kprobe("swap_readpage"))),
                Need("major faults", (PerfSoftware("major-faults", 6),)),
                # optional: the time a major fault waited, from its entry (x86's exception
                # tracepoints) to its accounting as major (the perf event)
                Need("time in major faults", (Tracepoint("exceptions", "page_fault_user"),)))),
    Tool("vmscan", "memlens.tools.vmscan",
         "page reclaim per interval: time in reclaim, kswapd, pages (vmscan.bt)",
         # each need is optional (its measure is left out); all missing: exit 4
         needs=(Need("slab shrinking", (AllOf(
                    Tracepoint("vmscan", "mm_shrink_slab_start"),
                    Tracepoint("vmscan", "mm_shrink_slab_end")),)),
                Need("direct reclaim", (AllOf(
                    Tracepoint("vmscan", "mm_vmscan_direct_reclaim_begin"),
                    Tracepoint("vmscan", "mm_vmscan_direct_reclaim_end",
                               fields=("nr_reclaimed",))),)),
                Need("memcg reclaim", (AllOf(
                    Tracepoint("vmscan", "mm_vmscan_memcg_reclaim_begin"),
                    Tracepoint("vmscan", "mm_vmscan_memcg_reclaim_end",
                               fields=("nr_reclaimed",))),)),
                Need("soft-limit reclaim", (AllOf(
                    Tracepoint("vmscan", "mm_vmscan_memcg_softlimit_reclaim_begin"),
                    Tracepoint("vmscan", "mm_vmscan_memcg_softlimit_reclaim_end",
                               fields=("nr_reclaimed",))),)),
                Need("node reclaim", (AllOf(
                    Tracepoint("vmscan", "mm_vmscan_node_reclaim_begin"),
                    Tracepoint("vmscan", "mm_vmscan_node_reclaim_end",
                               fields=("nr_reclaimed",))),)),
                Need("kswapd wake-ups", (Tracepoint("vmscan", "mm_vmscan_wakeup_kswapd"),)),
                Need("kswapd runs", (Tracepoint("vmscan", "mm_vmscan_kswapd_wake"),)),
                Need("pages written", (Tracepoint("vmscan", "mm_vmscan_write_folio"),
                                       Tracepoint("vmscan", "mm_vmscan_writepage"))))),
    Tool("drsnoop", "memlens.tools.drsnoop",
         "each direct or memcg reclaim: latency, pages, cgroup (BCC drsnoop)",
         # each need is optional (its episodes are not shown); all missing: exit 4
         needs=(Need("direct reclaim", (AllOf(
                    Tracepoint("vmscan", "mm_vmscan_direct_reclaim_begin",
                               fields=("order", "gfp_flags")),
                    Tracepoint("vmscan", "mm_vmscan_direct_reclaim_end",
                               fields=("nr_reclaimed",))),)),
                Need("memcg reclaim", (AllOf(
                    Tracepoint("vmscan", "mm_vmscan_memcg_reclaim_begin",
                               fields=("order", "gfp_flags")),
                    Tracepoint("vmscan", "mm_vmscan_memcg_reclaim_end",
                               fields=("nr_reclaimed",))),)),
                Need("node reclaim", (AllOf(
                    Tracepoint("vmscan", "mm_vmscan_node_reclaim_begin",
                               fields=("order", "gfp_flags")),
                    Tracepoint("vmscan", "mm_vmscan_node_reclaim_end",
                               fields=("nr_reclaimed",))),)))),
    Tool("stackcount", "memlens.tools.stackcount",
         "count events by stack (BCC stackcount): t:, sw:, u:, usdt: probes",
         kinds=ONE_LINER_KINDS),
    Tool("funccount", "memlens.tools.funccount",
         "count events per probe, wildcards (BCC funccount): 't:vmscan:*'",
         kinds=ONE_LINER_KINDS),
    Tool("trace", "memlens.tools.trace",
         "one line per event with its fields, filtered in the kernel (BCC trace)",
         kinds=ONE_LINER_KINDS),
    Tool("count", "memlens.tools.count",
         "count events by chosen keys, top-N per interval (bpftrace @[comm,pid]=count())",
         kinds=ONE_LINER_KINDS),
)


def _borrowed(tool: str, need: int, first: int | None = None) -> tuple[Hook, ...]:
    hooks = next(t for t in TOOLS if t.name == tool).needs[need].hooks
    return hooks[:first] if first else hooks


# The exporter's sources are the tools' programs: their hooks are those tools' declarations
# (faults' perf events only: minor/major need them), each source optional (left out, its
# probe shown attached 0, where the kernel has none of its hooks).
TOOLS += (
    Tool("exporter", "memlens.exporter",
         "Prometheus /metrics: faults, OOM kills, reclaim, swap by memory cgroup",
         needs=(Need("page faults", _borrowed("faults", 0, 1)),
                Need("OOM kills", _borrowed("oomkill", 0)),
                Need("memcg reclaim", _borrowed("drsnoop", 1)),
                Need("swap", _borrowed("swapin", 0, 1)))),
)

# A software event every tool of the page-fault family will use; doctor shows it.
PAGE_FAULTS = PerfSoftware("page-faults", 2)


def find(name: str) -> Tool | None:
    return next((t for t in TOOLS if t.name == name), None)


def hooks_of(name: str, need: int = 0) -> tuple[Hook, ...]:
    tool = find(name)
    if tool is None or need >= len(tool.needs):
        raise KeyError(f"no need #{need} declared for {name}")
    return tool.needs[need].hooks
