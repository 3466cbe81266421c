# SPDX-License-Identifier: GPL-2.0-only
"""A tool for core/runner that traces nothing: what the start-up tests run through a real
Runner (the banner, the prefetch, the garbage collector's pause) in a fresh interpreter."""
from __future__ import annotations


class IdleTool:
    what = "nothing"

    def start(self) -> None:
        pass

    def poll(self, timeout: float) -> list:
        return []

    def report(self, final: bool) -> list:
        return []

    def summary(self) -> list:
        return []

    def close(self) -> None:
        pass
