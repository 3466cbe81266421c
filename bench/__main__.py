# SPDX-License-Identifier: GPL-2.0-only
"""`make bench`: every bench/bench_*.py in turn, then docs/BENCHMARKS.md written from what
they measured (the machine, the versions, a summary per tool as ratios against the peer
measured beside it, and each bench's own table).  Never edit BENCHMARKS.md by hand.

    python -m bench                 every bench but the long ones; writes docs/BENCHMARKS.md
    python -m bench NAME...         those only (events, launch, ...); the report is not written
    python -m bench --long          the long ones (churn: 10 minutes): docs/BENCHMARKS-long.md
    python -m bench --report        the report again from the last full run's saved figures

Each bench runs in its own interpreter (a failing bench is reported, the others still run),
its output shown as it comes.  Figures for the summary travel as JSON lines in the file
named by $BENCH_RESULTS (bench/common.py: emit_result).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REPORT = ROOT / "docs" / "BENCHMARKS.md"
SAVED = ROOT / "build" / "bench-last-run.json"  # the last full run, for --report
LONG = {"churn"}  # `make bench-long`
# the default run stays within ~10 minutes: the longest benches get smaller defaults here
# (each bench's own default, run alone, is the thorough one)
QUICK_ENV = {"BENCH_RINGBUF_N": "1000000"}


def run_bench(path: Path, results: Path) -> tuple[int, float, str]:
    """(exit status, seconds, output) of one bench, its output echoed as it comes."""
    env = {**QUICK_ENV, **os.environ, "BENCH_RESULTS": str(results),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    out = []
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        out.append(line)
    rc = proc.wait()
    return rc, time.monotonic() - t0, "".join(out)


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:  # not a bench name: without this, every bench ran
        print(__doc__)
        return 0
    if "--report" in argv:
        from bench.report import write_report

        saved = json.loads(SAVED.read_text())
        for r in saved["runs"]:
            r["path"] = Path(r["path"])
        write_report(REPORT, saved["runs"], saved["figures"], saved["total"],
                     when=saved.get("when") or SAVED.stat().st_mtime)
        print(f"wrote {REPORT.relative_to(ROOT)} from {SAVED.relative_to(ROOT)}")
        return 0
    long_run = "--long" in argv
    wanted = [a for a in argv if not a.startswith("--")]
    benches = []
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if wanted:
            if name in wanted or path.stem in wanted:
                benches.append((name, path))
        elif (name in LONG) == long_run:
            benches.append((name, path))
    runs = []
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as results:
        t0 = time.monotonic()
        for name, path in benches:
            print(f"\n### {path.stem}", flush=True)
            rc, secs, out = run_bench(path, Path(results.name))
            print(f"({secs:.0f} s{'' if rc == 0 else f', exit {rc}'})", flush=True)
            runs.append({"name": name, "path": path, "rc": rc, "secs": secs, "out": out})
        figures = [json.loads(line) for line in Path(results.name).read_text().splitlines()
                   if line.strip()]
        total = time.monotonic() - t0
    if not wanted:
        from bench.report import write_report

        if not long_run:
            SAVED.parent.mkdir(exist_ok=True)
            SAVED.write_text(json.dumps({
                "runs": [{**r, "path": str(r["path"])} for r in runs],
                "figures": figures, "total": total, "when": time.time()}))
        target = REPORT if not long_run else REPORT.with_name("BENCHMARKS-long.md")
        write_report(target, runs, figures, total, long_run=long_run)
        print(f"\nwrote {target.relative_to(ROOT)} ({total / 60:.1f} min)")
    return 0 if all(r["rc"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
