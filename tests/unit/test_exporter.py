# SPDX-License-Identifier: GPL-2.0-only
"""The exporter's arithmetic and rendering without a kernel: running totals over the
engine's deltas (recorded entries, the shapes core/engine.collect() returns), cgroup labels
cut to a depth, log2 slots as Prometheus buckets, loss names, --listen parsing, and a whole
scrape rendered by prometheus-client and read back by its parser."""
from __future__ import annotations

import argparse
import math
from types import SimpleNamespace

import pytest

from memlens.core.engine import Entry
from memlens.exporter import listen_address, sources_arg
from memlens.exporter.metrics import (
    GONE,
    Counters,
    Log2Histogram,
    cgroup_label,
    loss_labels,
)


@pytest.mark.parametrize("path,depth,label", [
    ("/", None, "/"), ("/", 1, "/"), ("/a/b/c", None, "/a/b/c"), ("/a/b/c", 2, "/a/b"),
    ("/a/b/c", 0, "/"), ("/kubepods/burstable/pod1/ctr", 2, "/kubepods/burstable"),
    (GONE, 1, GONE), ("", None, "/"),
])
def test_cgroup_label_cut_to_depth(path, depth, label):
    assert cgroup_label(path, depth) == label


def test_counters_only_go_up_and_forget_removed_idle_cgroups():
    c = Counters()
    c.add("f", ("/a", "minor"), 5, cgroup="/a", now=10)
    c.add("f", ("/a", "minor"), 0, cgroup="/a", now=50)  # no move: last moved stays 10
    c.add("f", ("/b", "minor"), 3, cgroup="/b", now=100)
    c.add("g", ("/a",), 1, cgroup="/a", now=10)
    c.ensure("f", ("/c", "major"))
    with pytest.raises(ValueError):
        c.add("f", ("/a", "minor"), -1)
    assert c.series("f") == [(("/a", "minor"), 5), (("/b", "minor"), 3), (("/c", "major"), 0)]
    # /a is gone and idle 300 s: all its series go, in every family; /b is gone but recent
    gone = c.forget_cgroups(310, lambda cg: cg == "/c", 300, {"f": 0, "g": 0})
    assert gone == ["/a"]
    assert c.series("f") == [(("/b", "minor"), 3), (("/c", "major"), 0)]
    assert c.series("g") == []
    # made again: starts from 0 (a counter reset for Prometheus)
    c.add("f", ("/a", "minor"), 2, cgroup="/a", now=400)
    assert c.get("f", ("/a", "minor")) == 2


# slots of a drsnoop run's memcg reclaim (73 episodes, recorded), plus one below 1 us and
# one above the last bucket
RECORDED_SLOTS = {3: 1, 11: 2, 12: 9, 13: 31, 14: 19, 15: 8, 16: 3, 20: 1, 40: 1}


def test_log2_slots_become_cumulative_buckets_in_seconds():
    h = Log2Histogram()
    slots = [RECORDED_SLOTS.get(i, 0) for i in range(64)]
    h.add_slots(slots)
    h.add_slots(slots)  # a second scrape's drain adds up
    b = h.buckets()
    assert len(b) == 27 and b[0][0] == 1024e-9 and b[-2][0] == (1 << 35) / 1e9
    assert math.isinf(b[-1][0]) and b[-1][1] == h.count == 2 * 75
    by_le = dict(b)
    assert by_le[1024e-9] == 2           # slot 3 (8-15 ns): below the first bound
    assert by_le[2048e-9] == 2           # slot 10 is empty
    assert by_le[4096e-9] == 2 + 4       # slot 11: [2048, 4096) ns
    assert by_le[(1 << 21) / 1e9] == 2 * 74  # slot 20 in, slot 40 only in +Inf
    assert by_le[(1 << 35) / 1e9] == 2 * 74
    assert all(x[1] <= y[1] for x, y in zip(b, b[1:]))
    with pytest.raises(ValueError):
        h.add_slots([-1])


def test_loss_records_get_short_causes():
    from memlens.core.drops import DROP_NAMES

    assert loss_labels({"what": "entries", "reason": DROP_NAMES[4][1]}) == ("entries", "map_full")
    assert loss_labels({"what": "events", "reason": DROP_NAMES[0][1]}) == ("events", "ring_full")
    assert loss_labels({"what": "stacks", "reason": DROP_NAMES[1][1]}) == \
        ("stacks", "stack_collision")
    assert loss_labels({"what": "stacks", "reason": DROP_NAMES[9][1]}) == ("stacks", "no_memory")
    assert loss_labels({"what": "entries", "reason": DROP_NAMES[10][1]}) == \
        ("entries", "no_memory")
    assert loss_labels({"what": "symbols", "reason": "x"}) == ("symbols", "process_gone")
    assert loss_labels({"what": "report_keys", "reason": "x"}) == ("report_keys",
                                                                   "too_many_keys")
    assert loss_labels({"what": "new", "reason": "?"}) == ("new", "other")


@pytest.mark.parametrize("text,want", [
    ("127.0.0.1:9435", ("127.0.0.1", 9435)), (":9435", ("0.0.0.0", 9435)),
    ("[::1]:9500", ("::1", 9500)), ("localhost:0", ("localhost", 0)),
])
def test_listen_address(text, want):
    assert listen_address(text) == want


@pytest.mark.parametrize("text", ["9435", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:65536",
                                  "::1:9435", "host.invalid:80"])
def test_bad_listen_address(text):
    with pytest.raises(argparse.ArgumentTypeError):
        listen_address(text)


def test_sources_arg():
    assert sources_arg("faults, swap") == {"faults", "swap"}
    with pytest.raises(argparse.ArgumentTypeError, match="unknown source 'x'"):
        sources_arg("faults,x")


class FakeEngine:
    """What the exporter's sources call on the engine, replaying recorded reads."""

    def __init__(self, probes: list[str], reads: list[list[Entry]], hists=None, lost=None):
        self.probes = [SimpleNamespace(text=p) for p in probes]
        self.reads, self.hists, self.losses = list(reads), list(hists or []), list(lost or [])
        self.obj = None

    def collect(self):
        return self.reads.pop(0) if self.reads else []

    def histograms(self):
        return self.hists.pop(0) if self.hists else {}

    def lost(self):
        return self.losses.pop(0) if self.losses else []

    def poll(self, timeout):
        pass


class FakeNames:
    v1, root = True, "/nonexistent"

    def new_scrape(self):
        pass

    def exists(self, label):
        return False


def _scrape(collector):
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    text = generate_latest(reg).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    return text, samples


def test_a_scrape_of_recorded_engine_reads_is_monotonic_and_well_formed():
    """Three scrapes over recorded engine reads: a key pruned from the kernel map between
    them (its final delta comes once, then nothing) keeps its total; a depth of 1 merges
    two child cgroups into their parent; the histogram's count is the drained slots'."""
    from memlens.exporter.collector import MemlensCollector
    from memlens.exporter.sources import Faults, Reclaim

    minor, major = "sw:minor-faults", "sw:major-faults"
    e = lambda probe, cg, n, **kw: Entry({"probe": probe, "cgroup": cg}, n, **kw)  # noqa: E731
    faults = Faults("faults", FakeEngine([minor, major], [
        [e(minor, "/app/a", 100), e(major, "/app/a", 2), e(minor, "/app/b", 5)],
        [e(minor, "/app/a", 23)],   # then /app/a's key is pruned in the kernel: no more reads
        [],
    ], lost=[[{"type": "lost", "what": "entries", "reason":
               "map full", "count": 4}]]), depth=1)
    end = "t:vmscan:mm_vmscan_memcg_reclaim_end"
    slots = [0] * 64
    slots[13], slots[14] = 3, 1
    reclaim = Reclaim("reclaim", FakeEngine([end], [
        [e(end, "/app/a", 4, sum=512, time_ns=40_000)], [], []], hists=[{end: slots}]),
        depth=None, kind_of={end: "memcg"})
    col = MemlensCollector(FakeNames(), depth=1, forget_after_s=300)
    col.sources = [faults, reclaim]
    _, s1 = _scrape(col)
    _, s2 = _scrape(col)
    text, s3 = _scrape(col)
    key = ("memlens_page_faults_total", (("cgroup", "/app"), ("type", "minor")))
    assert (s1[key], s2[key], s3[key]) == (105, 128, 128)
    assert s3[("memlens_page_faults_total", (("cgroup", "/app"), ("type", "major")))] == 2
    assert s3[("memlens_lost_total", (("cause", "map_full"), ("source", "faults"),
                                      ("what", "entries")))] == 4
    assert s3[("memlens_direct_reclaim_episodes_total",
               (("cgroup", "/app/a"), ("reclaim", "memcg")))] == 4
    assert s3[("memlens_direct_reclaim_pages_total",
               (("cgroup", "/app/a"), ("reclaim", "memcg")))] == 512
    assert s3[("memlens_direct_reclaim_seconds_count", (("reclaim", "memcg"),))] == 4
    assert s3[("memlens_direct_reclaim_seconds_sum", (("reclaim", "memcg"),))] == 40e-6
    assert s3[("memlens_direct_reclaim_seconds_bucket",
               (("le", "1.6384e-05"), ("reclaim", "memcg")))] == 3
    assert s3[("memlens_probe_attached", (("probe", minor), ("source", "faults")))] == 1
    assert "_created" not in text
    assert "# TYPE memlens_page_faults_total counter" in text
    assert "# TYPE memlens_direct_reclaim_seconds histogram" in text
