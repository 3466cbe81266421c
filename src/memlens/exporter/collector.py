# SPDX-License-Identifier: GPL-2.0-only
"""The Prometheus collector: at each scrape the sources' kernel maps are read and what is
new is added to the running totals, under one lock (a scrape sees every source at one
moment, and the exporter's own tick never reads a map half-way through a scrape), then the
totals are yielded as metric families.  prometheus-client renders them (text format, or
OpenMetrics when the scraper asks for it).

Names follow ebpf_exporter and the Prometheus naming rules: one prefix (memlens_), base
units (seconds, bytes, pages counted as pages), `_total` on counters (added by the client),
no `_created` series, and no unbounded label: cgroup paths (cut with --cgroup-depth), small
fixed sets (type="minor|major", reclaim="direct|memcg|node"), never a PID or a comm.
"""
from __future__ import annotations

import sys
import threading
import time

from memlens.exporter.metrics import Counters

TYPE_CHECKING = False
if TYPE_CHECKING:
    from memlens.exporter.sources import CgroupNames, Source

# family -> (help, label names); counters get `_total` from the client
COUNTERS = {
    "memlens_page_faults": ("Page faults by the tasks of a memory cgroup (perf software "
                            "events minor-faults, major-faults).", ("cgroup", "type")),
    "memlens_oom_kills": ("OOM kills by the victim's memory cgroup (oom:mark_victim).",
                          ("cgroup",)),
    "memlens_direct_reclaim_episodes": (
        "Reclaim episodes a task of the cgroup did itself: direct (global), memcg (limit), "
        "node (vmscan begin/end tracepoints).", ("cgroup", "reclaim")),
    "memlens_direct_reclaim_pages": ("Pages those reclaim episodes reclaimed (nr_reclaimed).",
                                     ("cgroup", "reclaim")),
    "memlens_swapin_pages": ("Pages swapped in by the tasks of a memory cgroup "
                             "(memcg:count_memcg_events PSWPIN).", ("cgroup",)),
    "memlens_swapout_pages": ("Pages swapped out by the tasks of a memory cgroup as they "
                              "reclaimed (PSWPOUT).", ("cgroup",)),
    "memlens_memory_pressure_stall_seconds": (
        "Time some or all non-idle tasks stalled on memory (/proc/pressure/memory total).",
        ("kind",)),
    "memlens_lost": ("Events, keys or stacks the kernel side could not deliver or store, "
                     "by source, what was lost and why.", ("source", "what", "cause")),
    "memlens_bpf_program_run_seconds": ("Time the exporter's BPF programs ran (kernel "
                                        "bpf_stats: counted while kernel.bpf_stats_enabled=1 "
                                        "or a BPF_ENABLE_STATS fd is held).",
                                        ("source", "program")),
    "memlens_bpf_program_runs": ("Runs of the exporter's BPF programs (bpf_stats).",
                                 ("source", "program")),
    "memlens_exporter_errors": ("Scrapes where a source could not be read (see stderr).",
                                ("source",)),
}
# the loss each source can have in normal operation, shown at 0 from the first scrape
SEEDED_LOSS = {"oom": ("events", "ring_full"), "": ("entries", "map_full")}
CGROUP_FAMILIES = {f: labels.index("cgroup") for f, (_, labels) in COUNTERS.items()
                   if "cgroup" in labels}


class MemlensCollector:
    """A prometheus_client custom collector (describe/collect) over the sources."""

    def __init__(self, names: CgroupNames, depth: int | None, forget_after_s: float):
        self.lock = threading.Lock()
        self.names, self.depth, self.forget_after_s = names, depth, forget_after_s
        self.counters = Counters()
        self.sources: list[Source] = []
        self.missing: list[tuple[str, str, str]] = []
        self.last_collect_s = 0.0
        self.scrapes = 0
        self._warned: set[str] = set()
        self._stats_shown = False

    def describe(self):
        return []  # no check at registration: collect() needs the kernel

    def tick(self) -> None:
        with self.lock:
            for src in self.sources:
                self._guard(src.name, src.tick)

    def _guard(self, name: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as err:  # a scrape must answer: count it and say it once
            self.counters.add("memlens_exporter_errors", (name,), 1)
            if name not in self._warned:
                self._warned.add(name)
                print(f"memlens exporter: reading {name} failed: {type(err).__name__}: {err}",
                      file=sys.stderr, flush=True)

    def fold(self) -> None:
        """Read everything new into the totals (the lock held)."""
        now = time.monotonic()
        c = self.counters
        self.names.new_scrape()
        for src in self.sources:
            self._guard(src.name, src.fold, c, now)
        self._guard("pressure", self._pressure)
        for src in self.sources:
            c.ensure("memlens_lost", (src.name, *SEEDED_LOSS.get(src.name, SEEDED_LOSS[""])))
        c.forget_cgroups(now, self.names.exists, self.forget_after_s, CGROUP_FAMILIES)

    def _pressure(self) -> None:
        from memlens.checklist import procfs

        psi = procfs.read_pressure("memory")
        if not psi:
            return
        for kind in ("some", "full"):
            total = psi.get(kind, {}).get("total")
            if total is not None:
                key = ("memlens_memory_pressure_stall_seconds", (kind,))
                # the kernel's own counter, shown as it is (set, not added)
                self.counters.values.setdefault(key[0], {})[key[1]] = total / 1e6

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        t0 = time.perf_counter()
        with self.lock:
            self.fold()
            families = []
            for name, (doc, labels) in COUNTERS.items():
                if name.startswith("memlens_bpf_program"):
                    continue
                fam = CounterMetricFamily(name, doc, labels=list(labels))
                for values, v in self.counters.series(name):
                    fam.add_metric(list(values), v)
                families.append(fam)
            families += self._histograms(HistogramMetricFamily)
            families += self._health(CounterMetricFamily, GaugeMetricFamily)
            families += self._cgroup_gauges(GaugeMetricFamily)
            self.scrapes += 1
            took = time.perf_counter() - t0
            g = GaugeMetricFamily("memlens_exporter_collect_seconds",
                                  "Time this scrape took to read the kernel maps and procfs.")
            g.add_metric([], took)
            families.append(g)
            self.last_collect_s = took
        yield from families

    def _histograms(self, Hist) -> list:
        from prometheus_client.utils import floatToGoString

        fam = Hist("memlens_direct_reclaim_seconds",
                   "Time of each reclaim episode a task did itself, by kind (log2 buckets "
                   "of the engine's latency pairs).", labels=["reclaim"])
        for src in self.sources:
            for kind, h in sorted(getattr(src, "hists", {}).items()):
                fam.add_metric([kind], [(floatToGoString(le), n) for le, n in h.buckets()],
                               sum_value=h.sum_ns / 1e9)
        return [fam]

    def _health(self, Counter, Gauge) -> list:
        from memlens.exporter.sources import bpf_stats_enabled, prog_stats

        attached = Gauge("memlens_probe_attached", "1 for each probe the exporter attached, "
                         "0 for a source this kernel cannot feed (hook named).",
                         labels=["source", "probe"])
        for src in self.sources:
            for p in src.probes:
                attached.add_metric([src.name, p], 1)
        for name, hook, _why in self.missing:
            attached.add_metric([name, hook], 0)
        out = [attached]
        progs = [(src.name, prog, prog_stats(fd)) for src in self.sources
                 for prog, fd in src.programs()]
        # on by the sysctl, or by a BPF_ENABLE_STATS fd someone holds (the sysctl does not
        # show that one): then runs move; once shown, the series stay (frozen when it is off)
        self._stats_shown = (self._stats_shown or bpf_stats_enabled()
                             or any(st and st[1] for _, _, st in progs))
        if self._stats_shown:
            run_s = Counter("memlens_bpf_program_run_seconds",
                            COUNTERS["memlens_bpf_program_run_seconds"][0],
                            labels=["source", "program"])
            runs = Counter("memlens_bpf_program_runs", COUNTERS["memlens_bpf_program_runs"][0],
                           labels=["source", "program"])
            for name, prog, st in progs:
                if st is not None:
                    run_s.add_metric([name, prog], st[0] / 1e9)
                    runs.add_metric([name, prog], st[1])
            out += [run_s, runs]
        return out

    def _cgroup_gauges(self, Gauge) -> list:
        """The checklist's reader of each cgroup the counters name: usage and limit."""
        from memlens.checklist import cgroups

        usage = Gauge("memlens_cgroup_memory_usage_bytes",
                      "Memory charged to the cgroup (memory.usage_in_bytes / memory.current).",
                      labels=["cgroup"])
        limit = Gauge("memlens_cgroup_memory_limit_bytes",
                      "The cgroup's memory limit, where it has one (limit_in_bytes / max).",
                      labels=["cgroup"])
        read = cgroups.read_v1 if self.names.v1 else cgroups.read_v2
        for cg in sorted(self.counters.cgroup_moved):
            if not self.names.exists(cg):
                continue
            mc = read(self.names.root, cg)
            if mc.usage_bytes is not None:
                usage.add_metric([cg], mc.usage_bytes)
            if mc.limit_bytes is not None:
                limit.add_metric([cg], mc.limit_bytes)
        return [usage, limit]
