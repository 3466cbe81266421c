# SPDX-License-Identifier: GPL-2.0-only
"""Probe specs, as the one-liner tools take them, resolved against what this kernel offers.

    t:CATEGORY:EVENT       tracepoint; wildcards (`t:vmscan:*`); also `tracepoint:`
    sw:EVENT[:PERIOD]      perf software event on every CPU (`sw:page-faults`); `software:`
    u:LIB:FUNC             uprobe (LIB: a path, or a library name such as `c` or `libc`);
                           scoped to the process with -p
    usdt:LIB:PROVIDER:NAME USDT probe
    k:FUNC, p::FUNC, FUNC  kernel function (kprobe): where the kernel has no kprobes, the
                           error names the tracepoints that answer the same question

A spec becomes one or more `Probe`s; the engine attaches each and tells hits apart by the
tracepoint's event id or by the BPF cookie (the probe's index).
"""
from __future__ import annotations

import os

from memlens.core.record import factory, record
from memlens.errors import KernelLacks, UsageError

# perf_event_attr.config of PERF_TYPE_SOFTWARE (include/uapi/linux/perf_event.h)
SOFTWARE_EVENTS = {
    "cpu-clock": 0, "task-clock": 1, "page-faults": 2, "faults": 2, "context-switches": 3,
    "cs": 3, "cpu-migrations": 4, "migrations": 4, "minor-faults": 5, "major-faults": 6,
    "alignment-faults": 7, "emulation-faults": 8,
}
# clocks count nanoseconds: one sample per millisecond unless told otherwise
DEFAULT_PERIOD = {0: 1_000_000, 1: 1_000_000}

# What answers the question of a kernel function when kprobes are missing.  Each entry:
# function -> [(probe spec, filter or "", why)].
KPROBE_ALTERNATIVES: dict[str, list[tuple[str, str, str]]] = {
    "hugepage_madvise": [("t:syscalls:sys_enter_madvise", "behavior == MADV_HUGEPAGE",
                          "madvise(MADV_HUGEPAGE) calls, the callers of hugepage_madvise")],
    "handle_mm_fault": [("sw:page-faults", "", "every page fault, on every CPU"),
                        ("t:exceptions:page_fault_user", "", "user-mode faults (x86)")],
    "do_user_addr_fault": [("t:exceptions:page_fault_user", "", "user-mode faults (x86)")],
    "exc_page_fault": [("sw:page-faults", "", "every page fault")],
    "hugetlb_fault": [("sw:page-faults", "", "hugetlb faults are page faults at "
                       "huge-page-aligned addresses (count --by field: the address)")],
    "swap_readpage": [("t:memcg:count_memcg_events", "item == PSWPIN",
                       "PSWPIN, one per page swapped in, in the task's context"),
                      ("sw:major-faults", "", "one per swap-in readahead cluster")],
    "swap_read_folio": [("t:memcg:count_memcg_events", "item == PSWPIN",
                         "one per page swapped in")],
    "shrink_node": [("t:vmscan:*", "", "reclaim begin/end and LRU shrinking")],
    "try_to_free_pages": [("t:vmscan:mm_vmscan_direct_reclaim_begin", "", "direct reclaim")],
    "try_to_free_mem_cgroup_pages": [("t:vmscan:mm_vmscan_memcg_reclaim_begin", "",
                                      "memory cgroup reclaim")],
    "out_of_memory": [("t:oom:mark_victim", "", "each OOM kill")],
    "oom_kill_process": [("t:oom:mark_victim", "", "each OOM kill")],
    "__kmalloc": [("t:kmem:kmalloc", "", "kmalloc calls")],
    "kmalloc": [("t:kmem:kmalloc", "", "kmalloc calls")],
    "kfree": [("t:kmem:kfree", "", "kfree calls")],
    "kmem_cache_alloc": [("t:kmem:kmem_cache_alloc", "", "slab allocations")],
    "kmem_cache_free": [("t:kmem:kmem_cache_free", "", "slab frees")],
    "__alloc_pages": [("t:kmem:mm_page_alloc", "", "page allocations")],
    "filemap_fault": [("t:filemap:mm_filemap_fault", "", "page-cache misses on fault")],
    "migrate_pages": [("t:migrate:mm_migrate_pages", "", "page migrations")],
    "compact_zone": [("t:compaction:mm_compaction_begin", "", "compaction runs")],
    "do_brk_flags": [("t:syscalls:sys_enter_brk", "", "brk() calls")],
    "do_mmap": [("t:syscalls:sys_enter_mmap", "", "mmap() calls")],
    "__x64_sys_mmap": [("t:syscalls:sys_enter_mmap", "", "mmap() calls")],
}


@record
class Probe:
    kind: str                  # tracepoint, perf, uprobe, usdt, kprobe
    text: str                  # as shown to the user: t:syscalls:sys_enter_brk
    category: str = ""         # tracepoint
    name: str = ""             # tracepoint event, usdt probe name, kernel function
    config: int = 0            # perf software event
    period: int = 1
    binary: str = ""           # uprobe / usdt
    func: str = ""             # uprobe
    offset: int | None = None  # uprobe: func's file offset where its name is unambiguous
    provider: str = ""         # usdt
    extra: dict = factory(dict)


def _split(spec: str) -> list[str]:
    return spec.split(":")


USER_PROBE_HEADS = ("u", "uprobe", "usdt")


def names_user_probe(words) -> bool:
    """A probe spec among `words` (specs, or a command line's words) is a user-space probe
    (u:, uprobe:, usdt:): its tool's first uprobe link waits for a grace period
    (core/uprobewarm.py)."""
    return any(str(w).split(":", 1)[0] in USER_PROBE_HEADS for w in words)


def prepare_tracing(name: str, specs: list[str]) -> None:
    """Before probe specs are resolved: not permitted is exit 3 (not a tracefs error), and
    tracefs is mounted (and said so, once) when a tracepoint is asked for."""
    from memlens.core import kernel
    from memlens.core.privileges import require_tracing_privileges

    require_tracing_privileges(name)
    if any(s.split(":", 1)[0] in ("t", "tracepoint") for s in specs):
        kernel.ensure_tracefs()
    if names_user_probe(specs):
        from memlens.core.uprobewarm import UprobeWarmup

        # a user-space probe's first link: its grace period waited out from now (if the
        # command line has not started that already), not from the object's open
        UprobeWarmup.start_early_for_specs(specs)


def parse(spec: str, pid: int | None = None) -> list[Probe]:
    """One spec as probes (a wildcard gives several); a usage error names what is wrong."""
    parts = _split(spec)
    head = parts[0]
    if head in ("t", "tracepoint") and len(parts) == 3:
        return _tracepoints(parts[1], parts[2])
    if head in ("sw", "software", "s") and len(parts) in (2, 3):
        return [_software(spec, parts[1], parts[2] if len(parts) == 3 else None)]
    if head in ("u", "uprobe") and len(parts) == 3:
        binary = find_library(parts[1], pid)
        offset = check_function(binary, parts[2], spec)
        return [Probe("uprobe", f"u:{parts[1]}:{parts[2]}", binary=binary, func=parts[2],
                      offset=offset)]
    if head == "usdt" and len(parts) == 4:
        return [Probe("usdt", spec, binary=find_library(parts[1], pid), provider=parts[2],
                      name=parts[3])]
    if head in ("k", "kprobe", "p") and parts[-1] == "":
        raise UsageError(f"probe {spec!r}: no function named")
    if head in ("k", "kprobe") and len(parts) == 2:
        return [_kprobe(parts[1])]
    if head == "p" and len(parts) == 3 and parts[1] == "":
        return [_kprobe(parts[2])]
    if len(parts) == 1 and _bare_function(head):
        return [_kprobe(head)]  # BCC's trace and funccount take a bare kernel function
    raise UsageError(f"probe {spec!r}: not understood; forms: t:CATEGORY:EVENT, "
                     "sw:EVENT[:PERIOD], u:LIB:FUNC, usdt:LIB:PROVIDER:NAME, k:FUNC")


def _bare_function(text: str) -> bool:
    """A bare kernel function name (glob allowed): [A-Za-z_][A-Za-z0-9_.*]*, checked
    without re (not imported on the way to the banner)."""
    return bool(text) and (text[0].isascii() and (text[0].isalpha() or text[0] == "_")) \
        and all(c.isascii() and (c.isalnum() or c in "_.*") for c in text)


def parse_all(specs: list[str], pid: int | None = None) -> list[Probe]:
    probes: list[Probe] = []
    seen: set[str] = set()
    for spec in specs:
        for p in parse(spec, pid):
            if p.text not in seen:
                seen.add(p.text)
                probes.append(p)
    return probes


def _tracepoints(category: str, name: str) -> list[Probe]:
    from memlens.core import tpformat

    if any(c in category + name for c in "*?["):
        found = tpformat.list_events(f"{category}:{name}")
        if not found:
            raise KernelLacks(f"probe t:{category}:{name}: no tracepoint matches in tracefs")
        return [Probe("tracepoint", f"t:{c}:{n}", category=c, name=n) for c, n in found]
    tpformat.read_format(category, name)  # raises KernelLacks naming the event
    return [Probe("tracepoint", f"t:{category}:{name}", category=category, name=name)]


def _software(spec: str, name: str, period: str | None) -> Probe:
    if name not in SOFTWARE_EVENTS:
        raise UsageError(f"probe {spec!r}: unknown software event {name!r} (known: "
                         + ", ".join(sorted(SOFTWARE_EVENTS)) + ")")
    config = SOFTWARE_EVENTS[name]
    try:
        n = int(period, 0) if period else DEFAULT_PERIOD.get(config, 1)
    except ValueError:
        raise UsageError(f"probe {spec!r}: period {period!r} is not an integer") from None
    if n <= 0:
        raise UsageError(f"probe {spec!r}: period must be > 0")
    text = f"sw:{name}" + (f":{n}" if period else "")
    return Probe("perf", text, name=name, config=config, period=n)


def kprobe_lacks_message(func: str) -> str:
    alts = KPROBE_ALTERNATIVES.get(func, [])
    base = (f"probe k:{func}: this kernel has no kprobes (no kprobe PMU: CONFIG_KPROBES is "
            "off)")
    if not alts:
        return base + ("; look for a tracepoint on the same path (`memlens funccount "
                       "'t:CATEGORY:*'`) or a perf software event (sw:page-faults)")
    uses = []
    for probe, filt, why in alts:
        uses.append(f"{probe}" + (f" with filter '{filt}'" if filt else "") + f" ({why})")
    return base + "; instead: " + "; ".join(uses)


def _kprobe(func: str) -> Probe:
    from memlens.core import kernel

    if not kernel.kprobes_supported():
        raise KernelLacks(kprobe_lacks_message(func))
    if "*" in func or "?" in func:
        raise UsageError(f"probe k:{func}: wildcards on kernel functions are not supported")
    if not kernel.kernel_function_exists(func):
        raise KernelLacks(f"probe k:{func}: no kernel function {func!r} in /proc/kallsyms "
                          "(inlined, renamed or static in this kernel)")
    return Probe("kprobe", f"k:{func}", name=func)


def check_function(binary: str, func: str, spec: str) -> int | None:
    """A mistyped function is a usage error, said before anything is attached.  Returns
    its file offset where libbpf's attach by name would find one symbol alone
    (elf.sole_function_offset: the engine attaches those by offset, in one uprobe_multi
    link), else None."""
    if not func:
        raise UsageError(f"probe {spec!r}: no function named")
    # the file's own .dynsym and .symtab, where libbpf looks for the name it attaches to
    # (core/elf.py, struct alone: ElfSymbols' numpy import was most of `trace -p PID
    # u:libc:malloc`'s time to its banner, ~200 ms)
    from memlens.core.elf import ElfError, function_offsets

    try:
        found, sole = function_offsets(binary, func)
    except (OSError, ElfError, ValueError):
        return None  # not readable as ELF here: let the attach say why
    if found is None:
        raise UsageError(f"probe {spec!r}: no function {func!r} in {binary}")
    return sole


def find_library(lib: str, pid: int | None = None) -> str:
    """A uprobe target: a path, or a library name searched in the process's map (-p) and
    then in the linker cache (`c`, `libc`, `libc.so.6` all name glibc's libc)."""
    if "/" in lib:
        if not os.path.exists(lib):
            raise UsageError(f"uprobe target {lib}: no such file")
        return lib
    stem = lib if lib.startswith("lib") else f"lib{lib}"
    if pid is not None:
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    path = line.split(maxsplit=5)[-1].strip()
                    if names_library(path, stem):
                        return f"/proc/{pid}/root{path}" if os.path.exists(
                            f"/proc/{pid}/root{path}") else path
        except OSError:
            pass
    for path in linker_cache_paths():
        if names_library(path, stem) and os.path.exists(path):
            return path
    which = _which(lib)
    if which:
        return which
    raise UsageError(f"uprobe target {lib!r}: no such library or program (give a path)")


def linker_cache_paths() -> list[str]:
    """The libraries of the dynamic linker's cache, in `ldconfig -p`'s order: the file read
    here (core/ldcache.py), `ldconfig -p` run only where its format is not known."""
    from memlens.core import ldcache

    found = ldcache.read()
    if found is not None:
        return found
    import subprocess  # ~10 ms of a start: only for a cache this cannot read

    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.rpartition("=>")[2].strip() for line in out.splitlines() if "=>" in line]


def names_library(path: str, stem: str) -> bool:
    """`path` is a file of library `stem` (libc: libc.so.6, libc-2.31.so; not libcrypt.so).
    A string test, not a regular expression: re (with enum) was ~6 ms of `trace -p PID
    u:libc:malloc`'s start, the library found in the process's map."""
    _, slash, base = path.rpartition("/")
    return bool(slash) and base.startswith(stem) and base[len(stem):].startswith((".so", "-"))


def _which(name: str) -> str | None:
    for d in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
        cand = os.path.join(d, name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return os.path.realpath(cand)
    return None
