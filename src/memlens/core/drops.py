# SPDX-License-Identifier: GPL-2.0-only
"""Losses counted by the BPF side, reported as "lost" records: one place for every tool.

memlens.bpf.h keeps a per-CPU counter per kind of loss (`drops`); nothing is lost
silently, so each tool reports what is new since its last report (stderr line in text mode,
a "lost" record in JSON) and the run's totals in its summary.
"""
from __future__ import annotations

import struct

# bpf/include/memlens_common.h enum memlens_drop: the indices named here, and every index
# -> (what was lost, why)
DROP_STACK_FULL, DROP_MAP_FULL = 2, 4
DROP_NAMES = {
    0: ("events", "ring buffer full"),
    1: ("stacks", "stack map hash collision"),
    2: ("stacks", "stack map full"),
    3: ("stacks_missing", "no stack available"),
    4: ("entries", "map full"),
    5: ("mappings", "fault address not resolved to its mapping (mmap lock busy)"),
    6: ("announcements", "new keys not announced, ring buffer full: counts intact, "
                         "symbols of short-lived processes may be missing"),
    7: ("unwind_fallback", "user stacks walked (in part) by frame pointers: the DWARF walk "
                           "or their files' unwind tables not loaded yet (or past the memory "
                           "bound)"),
    8: ("unwind_truncated", "user stack cut short: a frame the unwinder could not follow"),
    9: ("stacks", "no memory for a new stack at that moment (a burst emptied the kernel's "
                  "cache of free entries)"),
    10: ("entries", "no memory for a new entry at that moment (a burst emptied the kernel's "
                    "cache of free entries)"),
}


class Losses:
    """The `drops` map of one BPF object, read as increments since the last call."""

    def __init__(self, obj=None, *, missing_stacks: bool = True,
                 hints: dict[int, str] | None = None):
        self.obj = obj
        # "no stack to walk" only means something to tools that asked for stacks
        self.missing_stacks = missing_stacks
        # what the user can do about a kind of loss (the option sizing the full map),
        # by DROP_NAMES index: the record's "hint"
        self.hints = hints or {}
        self._reported: dict[int, int] = {}
        # losses user space sees itself, {(what, why): total} and what new() reported
        self._user: dict[tuple[str, str], int] = {}
        self._user_reported: dict[tuple[str, str], int] = {}

    def count(self, what: str, reason: str, n: int) -> None:
        """A loss user space saw itself (events left unread in a ring at the stop):
        reported by new() and totals() beside the kernel's."""
        if n > 0:
            self._user[(what, reason)] = self._user.get((what, reason), 0) + n

    def _totals_by_index(self) -> dict[int, int]:
        if self.obj is None or not self.obj.has_map("drops"):
            return {}
        drops = self.obj.map("drops")
        out = {}
        for idx in DROP_NAMES:
            # a handful of per-CPU slots: plain lookups, no numpy needed
            raw = drops.lookup(idx.to_bytes(4, "little")) or b""
            out[idx] = sum(struct.unpack(f"<{len(raw) // 8}Q", raw))
        return out

    def new(self, obj=None) -> list[dict]:
        """Losses since the last call, as "lost" records (of `obj` when the tool's object
        is made after this accounting)."""
        if obj is not None:
            self.obj = obj
        out = []
        for idx, total in self._totals_by_index().items():
            delta = total - self._reported.get(idx, 0)
            if delta <= 0:
                continue
            self._reported[idx] = total
            if idx == 3 and not self.missing_stacks:
                continue
            what, reason = DROP_NAMES[idx]
            rec = {"type": "lost", "what": what, "reason": reason, "count": delta,
                   "total": total}
            if idx in self.hints:
                rec["hint"] = self.hints[idx]
            out.append(rec)
        for (what, reason), total in self._user.items():
            delta = total - self._user_reported.get((what, reason), 0)
            if delta > 0:
                self._user_reported[(what, reason)] = total
                out.append({"type": "lost", "what": what, "reason": reason, "count": delta,
                            "total": total})
        return out

    def totals(self) -> dict[str, int]:
        """The summary's "lost": what was reported over the run, by what was lost."""
        totals: dict[str, int] = {}
        for idx, total in self._reported.items():
            if idx == 3 and not self.missing_stacks:
                continue
            what = DROP_NAMES[idx][0]
            totals[what] = totals.get(what, 0) + total
        for (what, _), total in self._user_reported.items():
            totals[what] = totals.get(what, 0) + total
        return totals
