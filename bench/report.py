# SPDX-License-Identifier: GPL-2.0-only
"""docs/BENCHMARKS.md from one `python -m bench` run: the machine and versions, a summary
per tool (memlens against the peer measured beside it, as ratios), and each bench's own
output.  Written whole each run; never edited by hand."""
from __future__ import annotations

import datetime
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cmd(*argv: str) -> str:
    if not shutil.which(argv[0]):
        return "not installed"
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def _read(path: str, key: str) -> str:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip() if ":" in line else \
                        line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "?"


def machine() -> list[tuple[str, str]]:
    from memlens import __version__
    from memlens.core import libbpf

    try:
        import numpy
        np_version = numpy.__version__
    except ImportError:
        np_version = "not installed"
    try:
        lb = ".".join(str(v) for v in libbpf.version())
    except Exception:  # the report still says what it can
        lb = "?"
    flags = _read("/proc/cpuinfo", "flags")
    commit = _cmd("git", "-C", str(ROOT), "describe", "--always", "--dirty")
    return [
        ("CPU", f"{_read('/proc/cpuinfo', 'model name')}, {os.cpu_count()} CPUs"
                + (" (virtual machine)" if "hypervisor" in flags.split() else "")),
        ("memory", _read("/proc/meminfo", "MemTotal")),
        ("kernel", f"{platform.release()} {platform.version()}"),
        ("system", _read("/etc/os-release", "PRETTY_NAME")),
        ("load average at the end", " ".join(Path("/proc/loadavg").read_text().split()[:3])),
        ("memlens", f"{__version__} ({commit})"),
        ("Python", platform.python_version()),
        ("numpy", np_version),
        ("libbpf", lb),
        ("clang", _cmd("clang-19", "--version")),
        ("bpftrace (peer)", _cmd("bpftrace", "--version")),
        ("perf (peer)", _cmd("perf", "--version")),
    ]


def _ratio(a, b) -> str:
    try:
        return f"{a / b:.2f}x" if a is not None and b else "-"
    except TypeError:
        return "-"


def summary(figures: list[dict]) -> list[str]:
    """The per-tool table: each cell memlens's figure, the peer's, and the ratio."""
    by = {}
    for f in figures:
        by.setdefault(f["bench"], []).append(f)
    rows: dict[str, dict[str, str]] = {}

    def cell(tool: str, col: str, text: str) -> None:
        rows.setdefault(tool, {})[col] = text

    for f in by.get("launch", []):
        ours, peer = f["attached_s"], f["peer_attached_s"]
        cell(f["tool"], "attached",
             f"{ours * 1e3:.0f} / {peer * 1e3:.0f} ms = **{_ratio(ours, peer)}**")
        cell(f["tool"], "rss", f"{f['rss_mb']:.0f} / {f['peer_rss_mb']:.0f} MB = "
             f"**{_ratio(f['rss_mb'], f['peer_rss_mb'])}**")
    events: dict[str, list[dict]] = {}
    peer_rss = None
    for f in by.get("events", []):
        if f["tool"] != "bpftrace":
            events.setdefault(f["tool"], []).append(f)
        else:
            peer_rss = f.get("peak_rss_mb")
    for tool, cases in events.items():
        costs = [c["cost_ns"] / c["peer_cost_ns"] for c in cases if c.get("peer_cost_ns")]
        if costs:
            cell(tool, "cost", f"{min(c['cost_ns'] for c in cases)}-"
                 f"{max(c['cost_ns'] for c in cases)} ns a call on the traced program, "
                 f"bpftrace {cases[0]['peer_cost_ns']} ns = **{min(costs):.2f}-{max(costs):.2f}x**"
                 " (text/JSON, file/pipe)")
        ok = [c for c in cases if c["zero_loss"]]
        bad = [c for c in cases if not c["zero_loss"]]
        text = (f"{min(c['producer_rate'] for c in cases):,}-"
                f"{max(c['producer_rate'] for c in cases):,}/s: "
                + ("0 lost in all " + str(len(cases)) + " outputs" if not bad else
                   f"0 lost in {len(ok)} of {len(cases)} ("
                   + "; ".join(f"{c['case']}: {c['lost']:,} lost" for c in bad) + ")"))
        if not all(c["exact"] for c in cases):
            text += "; **shown + lost != made**"
        rss = [c["peak_rss_mb"] for c in cases if c.get("peak_rss_mb")]
        if rss and peer_rss:
            text += (f"; peak RSS over the burst {max(rss):.0f} / {peer_rss:.0f} MB = "
                     f"**{_ratio(max(rss), peer_rss)}**")
        cell(tool, "zero_loss", text)
    for f in by.get("counting", []):
        if f.get("ratio") is None:
            txt = (f"+{f['cost_ns']}±{f['cost_noise_ns']} ns, bpftrace +{f['peer_cost_ns']}"
                   f"±{f['peer_cost_noise_ns']} ns (within noise)")
        else:
            txt = (f"+{f['cost_ns']} / +{f['peer_cost_ns']} ns a {f['event']} = "
                   f"**{f['ratio']:.2f}x**")
        if f.get("bpf_ratio") is not None:
            txt += (f"; BPF run time (bpf_stats) {f['bpf_ns']} / {f['peer_bpf_ns']} ns = "
                    f"**{f['bpf_ratio']:.2f}x**")
        tool = f["tool"]
        prev = rows.get(tool, {}).get("cost")
        cell(tool, "cost", f"{prev}; {f['case']}: {txt}" if prev else f"{f['case']}: {txt}")
    # bench_reclaim: shmsnoop, slabratetop, vmscan, drsnoop, compactsnoop, numamove
    for f in by.get("reclaim", []):
        if f.get("cost_ns") is None:  # compactsnoop, numamove: BPF run time alone
            ratio = (f"**{f['bpf_ratio']:.2f}x**" if f.get("bpf_ratio") is not None
                     else "no bpftrace")
            txt = (f"BPF run time (bpf_stats) {f['bpf_ns']}±{f['bpf_noise_ns']} / "
                   f"{f.get('peer_bpf_ns')}±{f.get('peer_bpf_noise_ns')} ns per {f['event']} = "
                   f"{ratio} ({f['bpf_hit_ns']} / {f.get('peer_bpf_hit_ns')} ns a hit); "
                   f"counts against /proc/vmstat: {f['counts']} / {f['peer_counts']}")
            prev = rows.get(f["tool"], {}).get("cost")
            cell(f["tool"], "cost", f"{prev}; {txt}" if prev else txt)
            continue
        if f.get("ratio") is not None:
            txt = (f"+{f['cost_ns']} / +{f['peer_cost_ns']} ns a {f['event']} on the traced "
                   f"program = **{f['ratio']:.2f}x**")
        elif f.get("peer_cost_ns") is not None:
            txt = (f"+{f['cost_ns']}±{f['cost_noise_ns']} ns a {f['event']}, bpftrace "
                   f"+{f['peer_cost_ns']}±{f['peer_cost_noise_ns']} ns (within noise)")
        else:
            txt = f"+{f['cost_ns']}±{f['cost_noise_ns']} ns a {f['event']} (no bpftrace)"
        if f.get("bpf_ratio") is not None:
            txt += (f"; BPF run time (bpf_stats) {f['bpf_ns']} / {f['peer_bpf_ns']} ns per "
                    f"{f.get('bpf_event', 'episode')} = **{f['bpf_ratio']:.2f}x**")
        txt += f"; counts: {f['counts']} / {f['peer_counts']}"
        prev = rows.get(f["tool"], {}).get("cost")
        cell(f["tool"], "cost", f"{prev}; {f['case']}: {txt}" if prev else f"{f['case']}: {txt}")
    for f in by.get("memleak", []):
        cell("memleak", "cost", f"{f['ns_per_pair']} / {f['peer_ns_per_pair']} ns a malloc+free "
             f"pair = **{_ratio(f['ns_per_pair'], f['peer_ns_per_pair'])}**")
    for f in by.get("symbols", []):
        sym = (f"libc's symbols in {f['load_ms']:.1f} / {f['peer_load_ms']:.0f} ms (pyelftools)"
               f" = **{_ratio(f['load_ms'], f['peer_load_ms'])}**; "
               f"{f['lookups_per_s'] / 1e6:.1f} M addresses/s")
        for tool in ("brkstack", "stackcount", "memleak", "faults"):
            cell(tool, "symbols", sym)
    cols = [("attached", "time to attached"), ("rss", "peak RSS"),
            ("cost", "per-event cost"), ("zero_loss", "highest rate with zero loss"),
            ("symbols", "symbolization")]
    out = ["| tool | " + " | ".join(t for _, t in cols) + " |",
           "|---|" + "---|" * len(cols)]
    for tool in sorted(rows):
        out.append(f"| {tool} | " + " | ".join(rows[tool].get(c, "–") for c, _ in cols) + " |")
    return out


def unwind_lines(figures: list[dict]) -> list[str]:
    """bench_unwind's figures: tables built (against readelf), a whole stack's cost."""
    unwind = [f for f in figures if f["bench"] == "unwind"]
    tables = [f for f in unwind if f.get("case") == "tables"]
    costs = {(f["config"], f["build"]): f for f in unwind if f.get("case") == "cost"}
    out = []
    if tables:
        out.append("- unwind tables built: " + ", ".join(
            f"{f['file']} {f['build_ms']} ms ({f['peak_mb']} MB peak; {f['peer']} "
            f"{f['peer_ms']} ms)" for f in tables))
    dwarf = costs.get(("memlens --stack-unwind dwarf", "nofp"))
    if dwarf:
        peers = [f"{c} ({b} build) +{f['cost_ns']} ns" + (f", {f['note']}" if f["note"] else "")
                 for (c, b), f in costs.items() if not c.startswith("memlens")]
        out.append(f"- a whole user stack (8 frames) without frame pointers: +{dwarf['cost_ns']}"
                   " ns an event (`--stack-unwind dwarf`); " + "; ".join(peers))
    target = [f for f in unwind if f.get("case") == "target"]
    if target:
        out.append(f"- unwinding's target (issue 10): {target[-1]['verdict']}")
    return out


def ring_lines(figures: list[dict]) -> list[str]:
    ring = [f for f in figures if f["bench"] == "ringbuf"]
    out = []
    for f in ring:
        if "drain_records_per_s" in f:
            out.append(f"- ring-buffer drain of a pre-filled ring: "
                       f"{f['drain_records_per_s'] / 1e6:.1f} M records/s")
        elif not f["rate"]:
            out.append(f"- ring buffer at the generator's limit ({f['achieved']:,} events/s): "
                       f"{f['lost']} lost, {f['cpu_s']} s consumer CPU; libbpf callback: "
                       f"{f['peer_lost']} lost, {f['peer_cpu_s']} s "
                       f"({_ratio(f['peer_cpu_s'], f['cpu_s'])} the CPU)")
    return out


def floor_lines(figures: list[dict]) -> list[str]:
    """The Python floor (bench/launch_floor.py), and each tool's distance above it."""
    launch = {f["tool"]: f for f in figures if f["bench"] == "launch"}
    floor = launch.get("python floor")
    if not floor:
        return []
    above = sorted((f["attached_s"] - floor["attached_s"], t) for t, f in launch.items()
                   if t != "python floor")
    out = [f"- the Python floor (`python floor` above, bench/launch_floor.py): this "
           f"interpreter, ctypes and libbpf attaching a one-instruction tracepoint program, "
           f"nothing else: {floor['attached_s'] * 1e3:.0f} ms to attached, bpftrace "
           f"{floor['peer_attached_s'] * 1e3:.0f} ms on the same tracepoint"]
    if above:
        out.append("- each tool above that floor (its own imports, options, maps, verifier, "
                   "attaches): " + ", ".join(f"{t} +{d * 1e3:.0f} ms" for d, t in above))
    return out


README_BEGIN = "<!-- figures: written by `make bench` from docs/BENCHMARKS.md -->"
README_END = "<!-- /figures -->"


def readme_figures(figures: list[dict], when: str) -> list[str]:
    """The README's figures: a few headline ratios per tool, and the figures the README
    has always quoted (memleak per pair, ring-buffer drain, symbol load)."""
    by: dict[str, list[dict]] = {}
    for f in figures:
        by.setdefault(f["bench"], []).append(f)
    rows = []
    launch = {f["tool"]: f for f in by.get("launch", [])}
    events: dict[str, list[dict]] = {}
    for f in by.get("events", []):
        if f["tool"] != "bpftrace":
            events.setdefault(f["tool"], []).append(f)
    counting = {}
    for f in by.get("counting", []):
        counting.setdefault(f["tool"], f)
    for tool in sorted(set(launch) | set(events)):
        cells = []
        if tool in launch:
            f = launch[tool]
            cells.append(f"attached {_ratio(f['attached_s'], f['peer_attached_s'])}, "
                         f"RSS {_ratio(f['rss_mb'], f['peer_rss_mb'])}")
        else:
            cells.append("–")
        if tool in events:
            cases = events[tool]
            costs = [c["cost_ns"] / c["peer_cost_ns"] for c in cases if c.get("peer_cost_ns")]
            lost = sum(c["lost"] for c in cases)
            cells.append((f"{min(costs):.2f}-{max(costs):.2f}x" if costs else "–")
                         + f"; {min(c['producer_rate'] for c in cases):,}-"
                         f"{max(c['producer_rate'] for c in cases):,} calls/s: "
                         + ("0 lost" if not lost else f"{lost:,} lost (counted)"))
        elif tool in counting and counting[tool].get("ratio") is not None:
            cells.append(f"{counting[tool]['ratio']:.2f}x ({counting[tool]['case']})")
        elif tool == "memleak" and by.get("memleak"):
            m = by["memleak"][0]
            cells.append(f"{_ratio(m['ns_per_pair'], m['peer_ns_per_pair'])} "
                         f"({m['ns_per_pair']} ns a malloc+free pair)")
        else:
            cells.append("–")
        rows.append(f"| {tool} | " + " | ".join(cells) + " |")
    out = [README_BEGIN, "",
           f"From [docs/BENCHMARKS.md](docs/BENCHMARKS.md) ({when}): memlens / bpftrace "
           "0.17 measured beside it; below 1, memlens costs less.", "",
           "| tool | launch to attached, peak RSS | per-event cost on the traced program; "
           "loss at the producer's limit |", "|---|---|---|", *rows, ""]
    extra = []
    for f in by.get("memleak", []):
        extra.append(f"memleak {f['ns_per_pair']} ns a malloc+free pair (bpftrace "
                     f"{f['peer_ns_per_pair']} ns)")
    for f in by.get("ringbuf", []):
        if "drain_records_per_s" in f:
            extra.append(f"ring-buffer drain {f['drain_records_per_s'] / 1e6:.1f} M records/s")
    for f in by.get("symbols", []):
        extra.append(f"libc symbols loaded in {f['load_ms']:.1f} ms (pyelftools "
                     f"{f['peer_load_ms']:.0f} ms)")
    if extra:
        out += ["Also: " + "; ".join(extra) + ".", ""]
    unwind = [line[2:] for line in unwind_lines(figures)]
    if unwind:
        out += ["User stack unwinding (`bench_unwind`): " + "; ".join(unwind) + ".", ""]
    return out + [README_END]


def update_readme(readme: Path, figures: list[dict], when: str) -> bool:
    """Replace the README's figures block (between the markers); False if it has none."""
    text = readme.read_text()
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        return False
    block = "\n".join(readme_figures(figures, when))
    readme.write_text(text[:start] + block + text[end + len(README_END):])
    return True


def write_report(path: Path, runs: list[dict], figures: list[dict], total_s: float,
                 long_run: bool = False, when: float | None = None) -> None:
    """`when`: the run's end (a timestamp); now if not given."""
    moment = datetime.datetime.fromtimestamp(when) if when else datetime.datetime.now()
    now = moment.astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = ["# Benchmarks" + (" (long runs)" if long_run else ""), "",
             "<!-- Generated by `make bench" + ("-long" if long_run else "")
             + "` (bench/__main__.py, bench/report.py): do not edit by hand. -->", "",
             f"Written {now} by `make bench{'-long' if long_run else ''}` in "
             f"{total_s / 60:.1f} minutes. "
             + ("Each tool's RSS over a long run; no peer. The short benches are in "
                "[BENCHMARKS.md](BENCHMARKS.md)." if long_run else
                "Every figure comes with the peer's, measured in the same run on the same "
                "machine (alternating or interleaved, see each bench); the ratios are memlens "
                "/ peer (below 1: memlens costs less). The machine is a shared 2-CPU VM where "
                "other work runs too: absolute times move between runs, and under load (see "
                "the load average below) so do the ratios of costs paid on a busy CPU, such "
                "as a traced program's slowdown. The 10-minute churn run "
                "is [BENCHMARKS-long.md](BENCHMARKS-long.md) (`make bench-long`)."), "",
             "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine()]
    if not long_run:
        lines += ["", "## Summary per tool", "",
                  "memlens / peer (bpftrace 0.17 unless said): time from exec to every probe "
                  "attached and peak RSS (`bench_launch`, medians), per-event cost on the "
                  "traced program (`bench_events`, `bench_counting`, `bench_reclaim`, "
                  "`bench_memleak`), the "
                  "highest event rate seen with zero loss (`bench_events`: the producer at "
                  "its limit), symbolization (`bench_symbols`). Tools measured by the other "
                  "benches (faults, unwinding) are in their sections "
                  "below.", ""]
        lines += summary(figures)
        extra = floor_lines(figures) + ring_lines(figures) + unwind_lines(figures)
        if extra:
            lines += ["", *extra]
    lines += ["", "## Each bench", ""]
    for r in runs:
        doc = _docstring(r["path"])
        status = "" if r["rc"] == 0 else f", **failed: exit {r['rc']}**"
        lines += [f"### {r['path'].stem} ({r['secs']:.0f} s{status})", "", doc, "", "```",
                  _clean(r["out"]).rstrip(), "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")
    if not long_run:
        update_readme(ROOT / "README.md", figures, now)


def _docstring(path: Path) -> str:
    text = path.read_text()
    m = re.search(r'"""(.*?)"""', text, re.S)
    if not m:
        return ""
    para = m.group(1).strip().split("\n\n")[0]
    return " ".join(para.split())


def _clean(out: str) -> str:
    """Bench output for a fenced block: no ``` inside, no trailing spaces."""
    return "\n".join(line.rstrip().replace("```", "'''") for line in out.splitlines())

