# SPDX-License-Identifier: GPL-2.0-only
"""Launch-to-banner time of memlens command lines, each from its own source tree, run in
turn (A B C A B C ...): the A/B of a start-up change, against a worktree of the commit
before it.  Runs vary by 3-5 ms here; only many alternating runs tell 1-2 ms apart.

    git worktree add /tmp/before HEAD~1 && cp src/memlens/**/*.bpf.o ... (the objects:
    untracked, built by hatch_build.py) && python -m compileall -q /tmp/before/src/memlens
    python bench/launch_ab.py 31 "/tmp/before/src|faults" "src|faults"

Each case is "SOURCE_DIR|ARGS"; the same interpreter (this one) runs all of them, with
PYTHONPATH=SOURCE_DIR.  Printed per case: first quartile, median and mean in ms.
"""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time

LAUNCH = "import sys; from memlens.cli import main; sys.argv[0] = 'memlens'; sys.exit(main())"


def once(src: str, args: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(src))
    t = time.monotonic()
    p = subprocess.Popen([sys.executable, "-c", LAUNCH, *args], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    line = p.stderr.readline()
    took = time.monotonic() - t
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=30)
    if b"Tracing" not in line:
        raise SystemExit(f"no banner from {src} {' '.join(args)}: {line!r}")
    return took * 1e3


def main(argv: list[str]) -> None:
    runs = int(argv[0])
    cases = [(src, args.split()) for src, _, args in (c.partition("|") for c in argv[1:])]
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(runs):
        for k, (src, args) in enumerate(cases):
            times[k].append(once(src, args))
    for (src, args), t in zip(cases, times):
        t.sort()
        print(f"{src[-24:]:24} {' '.join(args)[:40]:40} q1 {t[len(t) // 4]:6.1f}  "
              f"median {statistics.median(t):6.1f}  mean {statistics.mean(t):6.1f} ms")


if __name__ == "__main__":
    main(sys.argv[1:])
