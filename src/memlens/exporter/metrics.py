# SPDX-License-Identifier: GPL-2.0-only
"""The exporter's arithmetic, with no BPF and no HTTP: running totals that only go up,
cgroup labels cut to a depth, the engine's log2 latency slots as Prometheus buckets, and
the text names of losses.  Unit-tested on recorded data (tests/unit/test_exporter.py).

Why running totals: the engine hands out counts *since the last read* (core/engine.py:
idle keys are deleted from the kernel map with their final value, so nothing is lost, but
nothing is kept either), and a Prometheus counter must never go down between scrapes.
So every delta is added here, under the label values it is shown with, and a series only
ever disappears as a whole (its cgroup removed and idle for a while), never shrinks.
"""
from __future__ import annotations

import math

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

NS_PER_S = 1e9
# Buckets of the latency histograms: 2^10 ns (~1 us) .. 2^35 ns (~34 s), 26 of them, the
# same every scrape (Prometheus wants a fixed bucket layout per series).  Shorter episodes
# fall in the first, longer ones in +Inf only.
LE_LOG2_MIN, LE_LOG2_MAX = 10, 35
GONE = "[gone]"  # a cgroup removed before its id could be named

# core/drops.DROP_NAMES index -> a short cause label (what was lost is the other label)
DROP_CAUSES = {
    0: "ring_full",
    1: "stack_collision",
    2: "stack_map_full",
    3: "no_stack",
    4: "map_full",
    5: "mmap_lock_busy",
    6: "announce_ring_full",
    7: "unwind_fallback",
    8: "unwind_truncated",
    9: "no_memory",
    10: "no_memory",
}


def loss_labels(rec: dict) -> tuple[str, str]:
    """(what, cause) of a "lost" record (core/drops.py, engine.lost(), a resolver's): the
    cause is a short name for the record's reason, "other" for a reason not known here."""
    from memlens.core.drops import DROP_NAMES

    what = str(rec.get("what", "?"))
    reason = rec.get("reason", "")
    for idx, (w, r) in DROP_NAMES.items():
        if w == what and r == reason:
            return what, DROP_CAUSES.get(idx, "other")
    if what == "symbols":
        return what, "process_gone"
    if what == "report_keys":
        return what, "too_many_keys"
    return what, "other"


def cgroup_label(path: str, depth: int | None) -> str:
    """A cgroup's path as a label: "/" for the root, cut to its first `depth` levels (the
    cgroups below are counted in their ancestor at that depth: bounded cardinality on a
    host with a cgroup per container); None keeps the whole path."""
    if not path or path == GONE or depth is None or not path.startswith("/"):
        return path or "/"
    parts = [p for p in path.split("/") if p]
    return "/" + "/".join(parts[:depth])


class Counters:
    """Monotonic totals: family -> {label values: value}, and when each cgroup label last
    moved (for forgetting removed cgroups)."""

    def __init__(self) -> None:
        self.values: dict[str, dict[tuple, float]] = {}
        self.cgroup_moved: dict[str, float] = {}

    def add(self, family: str, labels: tuple, delta: float, *, cgroup: str | None = None,
            now: float = 0.0) -> None:
        if delta < 0:
            raise ValueError(f"{family}{labels}: a counter cannot go down by {-delta}")
        fam = self.values.setdefault(family, {})
        fam[labels] = fam.get(labels, 0) + delta
        if cgroup is not None and delta:
            self.cgroup_moved[cgroup] = now

    def ensure(self, family: str, labels: tuple) -> None:
        """A series shown at 0 before its first event (rate() needs a first sample)."""
        self.values.setdefault(family, {}).setdefault(labels, 0)

    def get(self, family: str, labels: tuple) -> float:
        return self.values.get(family, {}).get(labels, 0)

    def series(self, family: str) -> list[tuple[tuple, float]]:
        return sorted(self.values.get(family, {}).items())

    def forget_cgroups(self, now: float, exists: Callable[[str], bool],
                       idle_s: float, cgroup_pos: dict[str, int]) -> list[str]:
        """Drop every series of a cgroup that no longer exists and has not moved for
        `idle_s` (its last counts have been scraped many times over by then).  A cgroup
        made again under the same path later starts from 0: a counter reset, which rate()
        handles.  `cgroup_pos`: family -> index of its cgroup label.  Returns the cgroups
        forgotten."""
        gone = [cg for cg, t in self.cgroup_moved.items()
                if now - t >= idle_s and not exists(cg)]
        for cg in gone:
            del self.cgroup_moved[cg]
            for family, pos in cgroup_pos.items():
                fam = self.values.get(family)
                if fam:
                    for labels in [k for k in fam if k[pos] == cg]:
                        del fam[labels]
        return gone


class Log2Histogram:
    """Cumulative log2 slots of nanoseconds (the engine's `hists`: slot i holds the times
    t with floor(log2(t)) == i, slot 0 also t <= 1) and their summed time."""

    def __init__(self) -> None:
        self.slots = [0] * 64
        self.sum_ns = 0

    def add_slots(self, slots: Iterable[int]) -> None:
        for i, n in enumerate(slots):
            if n < 0:
                raise ValueError("a histogram slot cannot go down")
            self.slots[i] += n

    @property
    def count(self) -> int:
        return sum(self.slots)

    def buckets(self) -> list[tuple[float, int]]:
        """[(le in seconds, cumulative count)] for 2^k ns, k = LE_LOG2_MIN..LE_LOG2_MAX,
        then (inf, count).  Slots 0..k-1 hold the times below 2^k ns: they are the bucket
        le = 2^k ns (a time of exactly 2^k ns, in slot k, is counted one bucket up)."""
        out = []
        running = sum(self.slots[:LE_LOG2_MIN])
        for k in range(LE_LOG2_MIN, LE_LOG2_MAX + 1):
            out.append(((1 << k) / NS_PER_S, running))
            running += self.slots[k]
        out.append((math.inf, self.count))
        return out
