# SPDX-License-Identifier: GPL-2.0-only
"""Human-readable sizes and rates for the checklist's text output (JSON keeps raw numbers)."""
from __future__ import annotations


def human_bytes(n: float | None) -> str:
    """Mimics `free -h`: binary units, 3 significant figures, `Ki/Mi/Gi/Ti` suffixes."""
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "Ki", "Mi", "Gi", "Ti", "Pi"):
        if abs(n) < 1024 or unit == "Pi":
            if unit == "B":
                return f"{int(n)}B"
            return f"{n:.1f}{unit}" if abs(n) < 10 else f"{n:.0f}{unit}"
        n /= 1024
    return f"{n:.0f}Pi"


def rate(n: float | None, digits: int = 2) -> str:
    return "-" if n is None else f"{n:.{digits}f}"


def percent(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return part / whole * 100
