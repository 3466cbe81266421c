# SPDX-License-Identifier: GPL-2.0-only
"""What the exporter counts, each source one BPF object made by the same code the tools
use: the counting engine (core/engine.py) keyed by memory cgroup for page faults, reclaim
episodes and swap-ins, and oomkill's own program for OOM kills (the victim's memory cgroup
is read in the kernel at the kill; the engine's cgroup key is the current task's, the
trigger's).

A source's fold(counters, now) reads its kernel maps and adds what is new to the running
totals (exporter/metrics.Counters); it is called at each scrape, and between scrapes by the
exporter's loop (the engine must be polled on its tick: idle keys pruned, stacks freed).
"""
from __future__ import annotations

import os

from memlens.core.engine import Engine
from memlens.exporter.metrics import GONE, Counters, Log2Histogram, cgroup_label, loss_labels

FAULT_TYPES = {"sw:minor-faults": "minor", "sw:major-faults": "major"}


class CgroupNames:
    """kernfs id -> path in the memory hierarchy (v1 memory, or v2).  An unknown id makes
    one walk of the hierarchy, at most once a scrape (new_scrape()), naming every cgroup
    at once (the engine's own lookup walks the whole tree for each new id); an id still
    unknown after it is a cgroup already removed, remembered so."""

    GONE_KEPT = 4096

    def __init__(self) -> None:
        from memlens.core import kernel

        self.v1 = kernel.cgroup_v1_memory()
        self.root = self._root()
        self.names: dict[int, str] = {}
        self.gone: set[int] = set()
        self._walked_this_scrape = False
        self.walks = 0

    def _root(self) -> str:
        from memlens.checklist import procfs

        for m in procfs.read_mounts():
            if self.v1 and m.fstype == "cgroup" and "memory" in m.options:
                return m.target
            if not self.v1 and m.fstype == "cgroup2":
                return m.target
        return "/sys/fs/cgroup/memory" if self.v1 else "/sys/fs/cgroup"

    def new_scrape(self) -> None:
        self._walked_this_scrape = False

    def name(self, cg_id: int) -> str:
        name = self.names.get(cg_id)
        if name is not None:
            return name
        if cg_id in self.gone:
            return GONE
        if not self._walked_this_scrape:
            self._walk()
            name = self.names.get(cg_id)
            if name is not None:
                return name
        if len(self.gone) >= self.GONE_KEPT:
            self.gone.clear()
        self.gone.add(cg_id)
        return GONE

    def _walk(self) -> None:
        self._walked_this_scrape = True
        self.walks += 1
        # names of removed cgroups are kept (counts of theirs may still be in the map),
        # within a bound
        if len(self.names) > 65536:
            self.names = {}
        try:
            self.names[os.stat(self.root).st_ino] = "/"
        except OSError:
            return
        for dirpath, dirnames, _ in os.walk(self.root):
            for d in dirnames:
                full = os.path.join(dirpath, d)
                try:
                    self.names.setdefault(os.stat(full).st_ino,
                                          "/" + os.path.relpath(full, self.root))
                except OSError:
                    pass

    def exists(self, label: str) -> bool:
        return label != GONE and os.path.isdir(os.path.join(self.root, label.lstrip("/")))


class _Engine(Engine):
    """The engine, its cgroup ids named by the exporter's one walk."""

    names: CgroupNames

    def cgroup_path(self, cg_id: int) -> str:
        return self.names.name(cg_id)


class Source:
    name = "?"
    probes: list[str]

    def start(self, cgroup: str | None) -> None: ...

    def tick(self) -> None:
        """Between scrapes: what must run on time (the engine's reads and pruning)."""

    def fold(self, c: Counters, now: float) -> None: ...

    def programs(self) -> list[tuple[str, int]]:
        """(program name, fd) of the loaded programs (their bpf_stats)."""
        return []

    def close(self) -> None: ...


class EngineSource(Source):
    """One engine keyed by (probe, cgroup); each entry's count (or sum) added to the family
    its probe says."""

    def __init__(self, name: str, engine: _Engine, depth: int | None):
        self.name, self.engine, self.depth = name, engine, depth
        self.probes = [p.text for p in engine.probes]

    def start(self, cgroup: str | None) -> None:
        self.engine.start(cgroup=cgroup)

    def tick(self) -> None:
        self.engine.poll(0)

    def label(self, e) -> str:
        return cgroup_label(e.parts.get("cgroup") or GONE, self.depth)

    def fold(self, c: Counters, now: float) -> None:
        for e in self.engine.collect():
            self.add(c, e, now)
        for rec in self.engine.lost():
            c.add("memlens_lost", (self.name, *loss_labels(rec)), rec.get("count", 0))

    def add(self, c: Counters, e, now: float) -> None: ...

    def programs(self) -> list[tuple[str, int]]:
        obj = self.engine.obj
        if obj is None:
            return []
        return [(p, obj.prog_fd(p)) for p in obj.programs() if obj.autoload(p)]

    def close(self) -> None:
        self.engine.close()


class Faults(EngineSource):
    def add(self, c: Counters, e, now: float) -> None:
        cg = self.label(e)
        kind = FAULT_TYPES.get(e.parts.get("probe", ""), "?")
        c.add("memlens_page_faults", (cg, kind), e.count, cgroup=cg, now=now)


class Reclaim(EngineSource):
    """Reclaim episodes a task did itself (direct, memory-cgroup limit, node reclaim), the
    engine's latency pairs as drsnoop times them: per cgroup the episodes and the pages
    they reclaimed, per kind a histogram of their time."""

    def __init__(self, name: str, engine: _Engine, depth: int | None, kind_of: dict[str, str]):
        super().__init__(name, engine, depth)
        self.kind_of = kind_of  # end probe -> direct|memcg|node
        self.hists = {k: Log2Histogram() for k in kind_of.values()}

    def fold(self, c: Counters, now: float) -> None:
        # the histograms first: an episode counted in the entries read just after is then
        # in the histogram too, or in the next scrape's (never the other way round)
        for probe, slots in self.engine.histograms().items():
            kind = self.kind_of.get(probe)
            if kind is not None:
                self.hists[kind].add_slots(slots)
        super().fold(c, now)

    def add(self, c: Counters, e, now: float) -> None:
        kind = self.kind_of.get(e.parts.get("probe", ""))
        if kind is None:
            return  # a begin: not counted by the engine anyway
        cg = self.label(e)
        c.add("memlens_direct_reclaim_episodes", (cg, kind), e.count, cgroup=cg, now=now)
        c.add("memlens_direct_reclaim_pages", (cg, kind), e.sum, cgroup=cg, now=now)
        self.hists[kind].sum_ns += e.time_ns


class Swap(EngineSource):
    """memcg:count_memcg_events filtered to PSWPIN..PSWPOUT (swapin's plan): pages swapped
    in by the tasks of a cgroup, and out by the tasks that reclaimed them."""

    def __init__(self, name: str, engine: _Engine, depth: int | None, items: dict[int, str]):
        super().__init__(name, engine, depth)
        self.items = items  # item value -> family

    def add(self, c: Counters, e, now: float) -> None:
        family = self.items.get(int(e.parts.get("field", -1)))
        if family is not None:
            cg = self.label(e)
            c.add(family, (cg,), e.sum, cgroup=cg, now=now)


class OomKills(Source):
    """oomkill's program (tools/oomkill) without stacks: one event per kill, the victim's
    memory cgroup read in the kernel."""

    name = "oom"

    def __init__(self, depth: int | None):
        self.depth = depth
        self.tool = None
        self.probes: list[str] = []
        # read from the ring on every tick, counted here until the scrape: a storm of kills
        # must neither fill the ring nor keep its records (stacks and all) in memory
        self.kills: dict[str, int] = {}
        self.losses: dict[tuple[str, str], int] = {}

    def start(self, cgroup: str | None) -> None:
        import argparse

        from memlens.tools.oomkill import OomkillTool

        args = argparse.Namespace(pid=None, cgroup=cgroup, stacks=False, stack_unwind="fp")
        self.tool = OomkillTool(args)
        self.tool.start()
        self.probes = ["tp_btf:mark_victim" if self.tool.use_btf else "t:oom:mark_victim"]

    def tick(self) -> None:
        for rec in self.tool.poll(0):
            if rec.get("type") == "event":
                cg = cgroup_label(rec.get("cgroup") or GONE, self.depth)
                self.kills[cg] = self.kills.get(cg, 0) + 1
            elif rec.get("type") == "lost":
                key = loss_labels(rec)
                self.losses[key] = self.losses.get(key, 0) + rec.get("count", 0)

    def fold(self, c: Counters, now: float) -> None:
        self.tick()
        for cg, n in self.kills.items():
            c.add("memlens_oom_kills", (cg,), n, cgroup=cg, now=now)
        for key, n in self.losses.items():
            c.add("memlens_lost", (self.name, *key), n)
        self.kills, self.losses = {}, {}

    def programs(self) -> list[tuple[str, int]]:
        obj = getattr(self.tool, "obj", None)
        if obj is None:
            return []
        return [(p, obj.prog_fd(p)) for p in obj.programs() if obj.autoload(p)]

    def close(self) -> None:
        if self.tool is not None:
            self.tool.close()


def _engine(names: CgroupNames, specs: list[str], **kw) -> _Engine:
    from memlens.core.probespec import parse_all

    eng = _Engine(parse_all(specs), **kw)
    eng.names = names
    return eng


def plan(names: CgroupNames, depth: int | None, disabled: set[str]
         ) -> tuple[list[Source], list[tuple[str, str, str]]]:
    """The sources this kernel can feed, and (source, hook, why) for each it cannot."""
    from memlens import registry

    sources: list[Source] = []
    missing: list[tuple[str, str, str]] = []

    def first_hook(need: int, source: str):
        """The first hook of the exporter's need the kernel offers (registry.py)."""
        hooks = registry.hooks_of("exporter", need)
        for h in hooks:
            if h.probe()[0]:
                return h
        missing.append((source, hooks[0].label,
                        "; ".join(f"{h.label}: {h.probe()[1]}" for h in hooks)))
        return None

    if "faults" not in disabled and first_hook(0, "faults") is not None:
        sources.append(Faults("faults", _engine(
            names, list(FAULT_TYPES), keys=("probe", "cgroup")), depth))
    if "oom" not in disabled and first_hook(1, "oom") is not None:
        sources.append(OomKills(depth))
    if "reclaim" not in disabled:
        from memlens.tools.drsnoop import survey

        kinds, gaps = survey()
        missing += [("reclaim", m["reclaim"], m["reason"]) for m in gaps]
        if kinds:
            tp = lambda n: f"t:vmscan:{n}"  # noqa: E731
            specs = [tp(n) for k in kinds for n in (k.begin, k.end)]
            eng = _engine(names, specs, keys=("probe", "cgroup"), sum_field="nr_reclaimed",
                          pairs={tp(k.end): tp(k.begin) for k in kinds}, hist=True,
                          hist_unit="nsecs")
            sources.append(Reclaim("reclaim", eng, depth, {tp(k.end): k.name for k in kinds}))
    if "swap" not in disabled and first_hook(3, "swap") is not None:
        from memlens.core import btfenum
        from memlens.tools.swapin import SWAPIN_ITEM, SWAPOUT_ITEM

        items = btfenum.values(SWAPIN_ITEM, SWAPOUT_ITEM)
        lo, hi = min(items.values()), max(items.values())
        eng = _engine(names, ["t:memcg:count_memcg_events"], keys=("cgroup", "field"),
                      field="item", sum_field="val", filter=f"item >= {lo} && item <= {hi}")
        sources.append(Swap("swap", eng, depth, {
            items[SWAPIN_ITEM]: "memlens_swapin_pages",
            items[SWAPOUT_ITEM]: "memlens_swapout_pages"}))
    return sources, missing


def bpf_stats_enabled() -> bool:
    try:
        with open("/proc/sys/kernel/bpf_stats_enabled") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def prog_stats(fd: int) -> tuple[int, int] | None:
    """(run_time_ns, run_cnt) of a program from its fd's fdinfo (kept by the kernel while
    kernel.bpf_stats_enabled is 1)."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            text = f.read()
    except OSError:
        return None
    vals = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in ("run_time_ns", "run_cnt"):
            vals[k] = int(v)
    if len(vals) != 2:
        return None
    return vals["run_time_ns"], vals["run_cnt"]
