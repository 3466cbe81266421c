# SPDX-License-Identifier: GPL-2.0-only
"""Power-of-two histograms printed as BCC's `print_log2_hist` prints them.

Bucket convention (libbpf-tools' `log2l()` in bits.bpf.h, which our BPF side uses):
`buckets[i]` counts values v with floor(log2(v)) == i, bucket 0 also holding v == 0, so row
i is labelled `2**i -> 2**(i+1) - 1` and row 0 `0 -> 1`.  BCC's own `bpf_log2l()` is one
higher and keeps zeros in a slot it never prints; with this convention zeros are shown.
The text (header, widths, 40-star bar, narrower layout past 2**32) is BCC's, so output
diffs cleanly against BCC tools.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO

STARS_MAX = 40


def _stars(val: int, val_max: int, width: int) -> str:
    # floor(width * val / val_max) stars, as BCC's _stars loop computes it.
    return "*" * min(width, (width * val) // val_max) if val_max else ""


def format_log2_hist(buckets: Sequence[int], val_type: str = "value",
                     strip_leading_zero: bool = False) -> str:
    """Return the histogram as text (lines ending in newline); "" when every bucket is 0."""
    counts = [int(v) for v in buckets]
    nonzero = [i for i, v in enumerate(counts) if v > 0]
    if not nonzero:
        return ""
    idx_max = nonzero[-1]
    val_max = max(counts)
    if idx_max + 1 <= 32:  # BCC compares its (one-higher) slot index with 32
        header = f"     {val_type:<19} : count     distribution"
        num_width, stars = 10, STARS_MAX
    else:
        header = f"               {val_type:<29} : count     distribution"
        num_width, stars = 20, STARS_MAX // 2
    lines = [header]
    for i in range(idx_max + 1):
        val = counts[i]
        if strip_leading_zero and not val:
            continue
        strip_leading_zero = False
        low, high = 1 << i, (1 << (i + 1)) - 1
        if i == 0:
            low = 0
        lines.append(f"{low:>{num_width}} -> {high:<{num_width}} : {val:<8} "
                     f"|{_stars(val, val_max, stars):<{stars}}|")
    return "\n".join(lines) + "\n"


def print_log2_hist(buckets: Sequence[int], val_type: str = "value",
                    strip_leading_zero: bool = False, stream: IO[str] | None = None) -> None:
    """Write `format_log2_hist(...)` to `stream` (stdout by default)."""
    (stream or sys.stdout).write(format_log2_hist(buckets, val_type, strip_leading_zero))
