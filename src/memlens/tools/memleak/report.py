# SPDX-License-Identifier: GPL-2.0-only
"""memleak's reports: outstanding allocations grouped by (stack, allocator), symbolized, and
written as BCC-style text, NDJSON, folded stacks, pprof or an HTML flame graph."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from memlens.core.lazy import np  # (its import: lazy._import)
from memlens.core.stacks import Frame


@dataclass
class StackTotal:
    stack: int                     # key in the stacks map (0: none)
    kind: int
    bytes: int                     # outstanding (scaled by the sample rate)
    allocs: int
    alloc_bytes: int = 0           # cumulative since start (pprof alloc_space), scaled
    alloc_objects: int = 0
    frames: list = field(default_factory=list)   # leaf first


@dataclass
class Report:
    time: float
    stacks: list[StackTotal]                    # every stack, largest first (by the sort key)
    blocks: np.ndarray | None = None         # -a: outstanding blocks (addr, size, age_ns)
    lost: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    final: bool = False

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.stacks)

    @property
    def total_allocs(self) -> int:
        return sum(s.allocs for s in self.stacks)


def group(addrs: np.ndarray, info: np.ndarray, scale: int) -> list[StackTotal]:
    """Sum blocks by (stack, kind)."""
    if not len(info):
        return []
    key = np.zeros(len(info), [("stack", "<u8"), ("kind", "<u8")])
    key["stack"], key["kind"] = info["stack"], info["kind"]
    uniq, inv = np.unique(key, return_inverse=True)
    inv = inv.reshape(-1)
    sizes = np.bincount(inv, weights=info["size"].astype(np.float64), minlength=len(uniq))
    # float64 sums are exact below 2**53 bytes; recompute exactly if anything is that large
    if sizes.max(initial=0) >= 2 ** 52:
        sizes = np.array([int(info["size"][inv == i].astype(object).sum())
                          for i in range(len(uniq))], dtype=object)
    counts = np.bincount(inv, minlength=len(uniq))
    out = []
    for i, (stack, kind) in enumerate(uniq.tolist()):
        out.append(StackTotal(int(stack), int(kind), int(sizes[i]) * scale,
                              int(counts[i]) * scale))
    return out


def sort_stacks(stacks: list[StackTotal], by: str) -> list[StackTotal]:
    if by == "count":
        return sorted(stacks, key=lambda s: (-s.allocs, -s.bytes, s.stack, s.kind))
    return sorted(stacks, key=lambda s: (-s.bytes, -s.allocs, s.stack, s.kind))


LOST_TEXT = [("stacks", "stacks not stored"), ("stacks_missing", "stacks unavailable"),
             ("entries", "allocations not recorded (map full)"),
             ("missed_frees", "addresses reused without a free seen"),
             ("symbols", "stacks left as addresses (no symbols)")]


def render_text(rec: dict[str, Any], out=None) -> None:
    """BCC memleak's report, from a "report" record (json_record) alone: text and --json
    show the same figures; other records print nothing (losses are the sink's)."""
    if rec.get("type") != "report":
        return
    out = out or sys.stdout
    rate = rec["sample_rate"]
    lines = [f"[{rec['time']}] Top {len(rec['stacks'])} stacks with outstanding allocations:"]
    if rate > 1:
        lines.append(f"\t(sampled: every {rate}th allocation of each thread; bytes and "
                     f"allocations below are scaled by {rate})")
    for b in rec.get("blocks", ()):
        lines.append(f"\taddr = {b['addr']:x} size = {b['size_bytes']}")
    for s in rec["stacks"]:
        lines.append(f"\t{s['bytes']} bytes in {s['allocs']} allocations from stack")
        lines.extend(f"\t\t{f}" for f in s["stack"])
    lost = ", ".join(f"{rec['lost'].get(k, 0)} {text}" for k, text in LOST_TEXT)
    lines.append(f"\ttotal: {rec['total_bytes']} bytes in {rec['total_allocs']} allocations "
                 f"from {rec['nr_stacks']} stacks; lost: {lost}")
    out.write("\n".join(lines) + "\n")
    out.flush()


def json_record(rep: Report, top: int, sample_rate: int, mode: str,
                pid: int | None) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "type": "report",
        "time": time.strftime("%H:%M:%S", time.localtime(rep.time)),
        "timestamp": rep.time,
        "mode": mode,
        "pid": pid,
        "final": rep.final,
        "sample_rate": sample_rate,
        "scaled": sample_rate > 1,
        "total_bytes": rep.total_bytes,
        "total_allocs": rep.total_allocs,
        "nr_stacks": len(rep.stacks),
        "stacks": [{"bytes": s.bytes, "allocs": s.allocs, "allocator": s.frames[0].symbol
                    if mode == "user" and s.frames else None,
                    "stack": [str(f) for f in s.frames]} for s in rep.stacks[:top]],
        "lost": dict(rep.lost),
        "counters": dict(rep.counters),
    }
    if rep.blocks is not None:
        rec["blocks"] = [{"addr": a, "size_bytes": sz, "age_ns": age}
                         for a, sz, age in rep.blocks.tolist()]
    return rec


def folded_entries(rep: Report, prefix: list[str]) -> list[tuple[list[str], list[str], int]]:
    """(prefix, frames leaf first, bytes): flame graphs of outstanding bytes (BCC #1125)."""
    return [(prefix, [f.name for f in s.frames], s.bytes) for s in rep.stacks if s.bytes]


def pprof_samples(rep: Report) -> list[tuple]:
    return [(s.frames, s.alloc_objects or s.allocs, s.alloc_bytes or s.bytes, s.allocs,
             s.bytes) for s in rep.stacks]


def allocator_frame(label: str, module: str | None) -> Frame:
    """The leaf frame of a user stack: the allocator that was called (the stack itself is
    taken at its return, so it starts at the caller)."""
    return Frame(0, label, 0, module)
