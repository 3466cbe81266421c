# SPDX-License-Identifier: GPL-2.0-only
"""`make bench`: run every bench/bench_*.py (or those named on the command line) in turn.
Each prints its own figures as ratios against a peer measured in the same run."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    wanted = sys.argv[1:]
    for path in sorted(HERE.glob("bench_*.py")):
        if wanted and path.stem.removeprefix("bench_") not in wanted and path.stem not in wanted:
            continue
        print(f"\n### {path.stem}", flush=True)
        runpy.run_path(str(path), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
