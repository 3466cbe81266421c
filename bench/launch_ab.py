# SPDX-License-Identifier: GPL-2.0-only
"""Launch-to-banner time of memlens command lines, each from its own source tree, run in
turn (A B C A B C ...): the A/B of a start-up change, against a worktree of the commit
before it.  Runs vary by 3-5 ms here; only many alternating runs tell 1-2 ms apart.

    git worktree add /tmp/before HEAD~1 && cp src/memlens/**/*.bpf.o ... (the objects:
    untracked, built by hatch_build.py) && python -m compileall -q /tmp/before/src/memlens
    python bench/launch_ab.py 31 "/tmp/before/src|faults" "src|faults"

Each case is "SOURCE_DIR|ARGS"; the same interpreter (this one) runs all of them, as the
`memlens` command does: a script of that name (cli._launched_as_cli: the command line's own
start, its signal handlers and paused garbage collector) that puts SOURCE_DIR first on
sys.path.  Each start after a pause for the previous one's teardown (SETTLE_S).  Printed
per case: first quartile, median and mean in ms.
"""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

SETTLE_S = 0.3
SCRIPT = ("import sys\nsys.path.insert(0, {src!r})\nfrom memlens.cli import main\n"
          "sys.exit(main())\n")


def launcher(src: str, tmp: str, k: int) -> str:
    """A script named `memlens` that runs the command line from `src`."""
    d = os.path.join(tmp, str(k))
    os.makedirs(d)
    path = os.path.join(d, "memlens")
    with open(path, "w") as f:
        f.write(SCRIPT.format(src=os.path.abspath(src)))
    return path


def once(script: str, args: list[str]) -> float:
    time.sleep(SETTLE_S)
    t = time.monotonic()
    p = subprocess.Popen([sys.executable, script, *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    line = p.stderr.readline()
    took = time.monotonic() - t
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=30)
    if b"Tracing" not in line:
        raise SystemExit(f"no banner from {script} {' '.join(args)}: {line!r}")
    return took * 1e3


def main(argv: list[str]) -> None:
    runs = int(argv[0])
    cases = [(src, args.split()) for src, _, args in (c.partition("|") for c in argv[1:])]
    times: list[list[float]] = [[] for _ in cases]
    with tempfile.TemporaryDirectory() as tmp:
        scripts = [launcher(src, tmp, k) for k, (src, _) in enumerate(cases)]
        for _ in range(runs):
            for k, (_, args) in enumerate(cases):
                times[k].append(once(scripts[k], args))
    for (src, args), t in zip(cases, times):
        t.sort()
        print(f"{src[-24:]:24} {' '.join(args)[:40]:40} q1 {t[len(t) // 4]:6.1f}  "
              f"median {statistics.median(t):6.1f}  mean {statistics.mean(t):6.1f} ms")


if __name__ == "__main__":
    main(sys.argv[1:])
