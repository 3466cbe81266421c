# SPDX-License-Identifier: GPL-2.0-only
"""memleak against workloads whose leaks are known exactly (tests/workloads/leaker*.c*):
23 blocks of 4099 bytes per allocator from named functions, freed blocks that must not
show, threads, sampling, C++ new, -c from the first allocation, kernel allocations of 23
sockets, outputs (folded, pprof read by an independent decoder, HTML), clean detach, and
one-line errors."""
from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import build_workload, memlens_cmd, require
from tests.kernel.helpers import fdinfo_ids

LEAKS, SIZE = 23, 4099
C_LEAKERS = {  # function -> allocator frame label
    "leak_malloc": "malloc", "leak_calloc": "calloc", "leak_realloc": "realloc",
    "leak_posix_memalign": "posix_memalign", "leak_aligned_alloc": "aligned_alloc",
    "leak_memalign": "memalign", "leak_valloc": "valloc", "leak_mmap": "mmap",
}


def _frames_fn(stack: list[str]) -> list[str]:
    return [re.sub(r"(\(\))?\+0x[0-9a-f]+.*$", "", f) for f in stack]


def run_attached(target_argv, memleak_args, settle=0.3, stdin_first=b"x"):
    """Start the target (it prints `ready` and waits), attach memleak -p, release the
    target, wait for `done`, then SIGINT memleak.  Returns (stdout, stderr, rc)."""
    tgt = subprocess.Popen(target_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert tgt.stdout.readline().startswith(b"ready")
        ml = subprocess.Popen(memlens_cmd("memleak", "-p", str(tgt.pid), *memleak_args),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        banner = ml.stderr.readline().decode()
        assert banner.startswith("Tracing"), banner + ml.stderr.read().decode()
        tgt.stdin.write(stdin_first)
        tgt.stdin.flush()
        assert tgt.stdout.readline().strip() == b"done"
        time.sleep(settle)
        ml.send_signal(signal.SIGINT)
        out, err = ml.communicate(timeout=60)
        return out.decode(), banner + err.decode(), ml.returncode
    finally:
        try:
            tgt.stdin.close()
        except BrokenPipeError:
            pass
        tgt.wait(timeout=10)


def final_report(out: str) -> dict:
    # (with -c the command shares stdout: its own lines are not JSON)
    recs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    reps = [r for r in recs if r["type"] == "report"]
    assert reps, out
    return reps[-1]


def stacks_with(rep: dict, fn: str) -> list[dict]:
    return [s for s in rep["stacks"] if fn in _frames_fn(s["stack"])]


@pytest.fixture(scope="module")
def leaker():
    return str(build_workload("leaker", ("-pthread",)))


@pytest.fixture(scope="module")
def leaker_cxx():
    return str(build_workload("leaker_cxx"))


class TestMemleakAgainstLeaker:
    def test_each_allocator_exact_with_direct_caller(self, leaker):
        out, err, rc = run_attached([leaker, "threads", "4"],
                                    ["--json", "-o", "0", "-T", "1000"])
        assert rc == 0, err
        rep = final_report(out)
        for fn, alloc in C_LEAKERS.items():
            found = stacks_with(rep, fn)
            assert len(found) == 1, (fn, found)
            s = found[0]
            assert (s["bytes"], s["allocs"]) == (LEAKS * SIZE, LEAKS), (fn, s)
            names = _frames_fn(s["stack"])
            # leaf: the allocator called (aliases share one probe); next: the direct caller
            assert alloc in names[0].split(" ")[0].split("/"), s["stack"]
            assert names[1] == fn, s["stack"]
            assert "leak_all" in names and "main" in names
        # 4 threads x 23 blocks, all from one stack
        t = stacks_with(rep, "leak_in_thread")
        assert [(s["bytes"], s["allocs"]) for s in t] == [(4 * LEAKS * SIZE, 4 * LEAKS)]
        # freed blocks (churn: every allocator incl. a failed malloc and a 1 MiB one that
        # mmaps inside malloc) and the early blocks realloc'd away never show
        for fn in ("churn", "early_alloc"):
            assert not stacks_with(rep, fn), stacks_with(rep, fn)
        c = rep["counters"]
        assert c["failed"] >= 7          # the 7 impossible mallocs
        assert c["nested"] >= 7          # the 7 mmaps inside malloc(1 MiB)
        assert rep["lost"]["stacks"] == 0 and rep["lost"]["entries"] == 0

    def test_text_report_bcc_format(self, leaker):
        out, err, rc = run_attached([leaker], ["-o", "0", "-T", "3"])
        assert rc == 0, err
        lines = out.splitlines()
        assert re.match(r"^\[\d\d:\d\d:\d\d\] Top 3 stacks with outstanding allocations:$",
                        lines[0])
        heads = [ln for ln in lines if "allocations from stack" in ln]
        assert heads == [f"\t{LEAKS * SIZE} bytes in {LEAKS} allocations from stack"] * 3
        assert re.match(r"^\ttotal: \d+ bytes in \d+ allocations from \d+ stacks; lost: 0 "
                        r"stacks not stored", lines[-1])

    def test_sampling_every_23rd_exact(self, leaker):
        n = LEAKS * LEAKS
        out, err, rc = run_attached([leaker, "sample", str(n)],
                                    ["--json", "-o", "0", "-s", "23", "-T", "1000"])
        assert rc == 0, err
        rep = final_report(out)
        assert rep["scaled"] and rep["sample_rate"] == 23
        s = stacks_with(rep, "sample_leaks")
        assert [(x["bytes"], x["allocs"]) for x in s] == [(n * SIZE, n)]
        assert rep["counters"]["recorded"] >= LEAKS

    def test_size_filters(self, leaker):
        # -Z 4098 hides every 4099-byte block (the 1 MiB churn blocks are freed anyway)
        out, err, rc = run_attached([leaker], ["--json", "-o", "0", "-Z", "4098", "-T", "1000"])
        assert rc == 0, err
        rep = final_report(out)
        assert not any(stacks_with(rep, fn) for fn in C_LEAKERS)

    def test_combined_only_matches(self, leaker):
        out, err, rc = run_attached([leaker], ["--json", "--combined-only", "-T", "1000"])
        assert rc == 0, err
        rep = final_report(out)
        for fn in C_LEAKERS:
            found = stacks_with(rep, fn)
            assert [(s["bytes"], s["allocs"]) for s in found] == [(LEAKS * SIZE, LEAKS)], fn

    def test_cxx_new_with_caller(self, leaker_cxx):
        out, err, rc = run_attached([leaker_cxx], ["--json", "-o", "0", "-T", "1000"])
        assert rc == 0, err
        rep = final_report(out)
        for fn, label in (("leak_new", "new"), ("leak_new_array", "new[]")):
            found = stacks_with(rep, fn)
            assert [(s["bytes"], s["allocs"]) for s in found] == [(LEAKS * SIZE, LEAKS)], fn
            names = _frames_fn(found[0]["stack"])
            assert names[0].startswith(label + " ") or names[0] == label, names
            assert names[1] == fn
        assert not stacks_with(rep, "churn_new")
        # operator new's malloc is part of the new, not a second allocation
        assert not [s for s in rep["stacks"] if _frames_fn(s["stack"])[0].startswith("malloc")
                    and "leak_new" in " ".join(s["stack"])]

    def test_command_traced_from_start(self, leaker):
        proc = subprocess.run(memlens_cmd("memleak", "-c", f"{leaker} start", "--json",
                                          "-T", "1000"), check=False,
                              input=b"x", capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        rep = final_report(proc.stdout.decode())
        assert rep["final"]
        for fn in C_LEAKERS:
            found = stacks_with(rep, fn)
            assert [(s["bytes"], s["allocs"]) for s in found] == [(LEAKS * SIZE, LEAKS)], fn
        assert not stacks_with(rep, "early_alloc")  # realloc'd: freed
        summary = [json.loads(x) for x in proc.stdout.decode().splitlines()
                   if x.startswith("{")][-1]
        assert summary["type"] == "summary" and summary["command_status"] == 0


class TestMemleakOutputs:
    def test_folded_pprof_html_totals(self, leaker, tmp_path):
        pprof, html = tmp_path / "heap.pb.gz", tmp_path / "leaks.html"
        out, err, rc = run_attached([leaker], ["-o", "0", "-T", "1000", "--pprof", str(pprof),
                                               "--html", str(html)])
        assert rc == 0, err
        text_total = int(re.search(r"total: (\d+) bytes", out).group(1))
        heads = [int(m) for m in re.findall(r"^\t(\d+) bytes in", out, re.MULTILINE)]
        assert sum(heads) == text_total
        # HTML: the embedded tree's root is the total of the same report
        data = re.search(r'<script type="application/json"[^>]*>(.*?)</script>',
                         html.read_text(), re.DOTALL).group(1)
        assert json.loads(data)["root"]["v"] == text_total
        # pprof through the protobuf runtime and Profile messages declared independently
        from tests.unit.test_output_pprof import _profile_class

        prof = _profile_class()()
        prof.ParseFromString(gzip.decompress(pprof.read_bytes()))
        st = [prof.string_table[t.type] for t in prof.sample_type]
        assert st == ["alloc_objects", "alloc_space", "inuse_objects", "inuse_space"]
        assert sum(s.value[3] for s in prof.sample) == text_total
        fn_name = {f.id: prof.string_table[f.name] for f in prof.function}
        loc_fns = {loc.id: [fn_name[ln.function_id] for ln in loc.line] for loc in prof.location}
        malloc_leak = [s for s in prof.sample
                       if "leak_malloc" in [n for lid in s.location_id for n in loc_fns[lid]]]
        assert [(s.value[0], s.value[1], s.value[2], s.value[3]) for s in malloc_leak] == \
            [(LEAKS, LEAKS * SIZE, LEAKS, LEAKS * SIZE)]
        # and Go's own reader, the tool users open these files with
        import shutil

        require(shutil.which("go") is not None, "golang-go (go tool pprof) not installed")
        raw = subprocess.run(["go", "tool", "pprof", "-raw", str(pprof)], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
        assert raw.returncode == 0, raw.stderr
        values = [list(map(int, m)) for m in
                  re.findall(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+): ", raw.stdout, re.MULTILINE)]
        assert sum(v[3] for v in values) == text_total
        assert [LEAKS, LEAKS * SIZE, LEAKS, LEAKS * SIZE] in values

    def test_folded_weighted_by_bytes(self, leaker):
        from memlens.output.folded import read_folded

        out, err, rc = run_attached([leaker], ["-o", "0", "--folded"])
        assert rc == 0, err
        folded = read_folded(out)
        assert folded, out
        for fn in C_LEAKERS:
            tot = sum(v for k, v in folded.items() if fn in k.split(";"))
            assert tot == LEAKS * SIZE, (fn, tot)
        assert all(k.startswith("leaker;") for k in folded)


    def test_count_ends_the_run_files_hold_the_state_at_exit(self, leaker, tmp_path):
        """`interval count`: the run ends after the count-th report (no extra final
        report), and --html is still written, from the state at exit."""
        html = tmp_path / "leaks.html"
        tgt = subprocess.Popen([leaker], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert tgt.stdout.readline().startswith(b"ready")
            ml = subprocess.Popen(memlens_cmd("memleak", "-p", str(tgt.pid), "-o", "0", "-T",
                                              "1000", "--html", str(html), "1", "2"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert ml.stderr.readline().startswith("Tracing")
            tgt.stdin.write(b"x")
            tgt.stdin.flush()
            out, err = ml.communicate(timeout=60)
        finally:
            tgt.stdin.close()
            tgt.wait(timeout=10)
        assert ml.returncode == 0, err
        totals = [int(t) for t in re.findall(r"total: (\d+) bytes", out)]
        assert len(totals) == 2 and totals[-1] == len(C_LEAKERS) * LEAKS * SIZE, out
        assert err == f"memlens: wrote {html}\n"
        data = re.search(r'<script type="application/json"[^>]*>(.*?)</script>',
                         html.read_text(), re.DOTALL).group(1)
        assert json.loads(data)["root"]["v"] == totals[-1]


class TestMemleakKernel:
    SOCKS = (
        "import socket, sys\n"
        "print('ready', flush=True); sys.stdin.readline()\n"
        "s = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(23)]\n"
        "print('done', flush=True); sys.stdin.readline()\n"
    )

    def test_sockets_of_one_process_exact(self):
        out, err, rc = run_attached([sys.executable, "-c", self.SOCKS],
                                    ["--kernel", "--json", "-o", "0", "-T", "1000"],
                                    stdin_first=b"x\n")
        assert rc == 0, err
        rep = final_report(out)
        assert rep["mode"] == "kernel"
        # one TCP sock object (sk_prot_alloc) and one socket inode per socket
        for fn in ("sk_prot_alloc", "sock_alloc_inode"):
            direct = [s for s in rep["stacks"] if fn in _frames_fn(s["stack"])[:2]]
            assert sum(s["allocs"] for s in direct) == 23, (fn, direct)

    def test_system_wide_sees_sockets(self):
        tgt = subprocess.Popen([sys.executable, "-c", self.SOCKS], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE)
        try:
            tgt.stdout.readline()
            ml = subprocess.Popen(memlens_cmd("memleak", "--json", "-o", "0", "-T", "100000"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert ml.stderr.readline().startswith(b"Tracing")
            tgt.stdin.write(b"x\n")
            tgt.stdin.flush()
            tgt.stdout.readline()
            time.sleep(0.3)
            ml.send_signal(signal.SIGINT)
            out, _err = ml.communicate(timeout=60)
        finally:
            tgt.stdin.close()
            tgt.wait()
        rep = final_report(out.decode())
        n = sum(s["allocs"] for s in rep["stacks"] if "sk_prot_alloc" in _frames_fn(s["stack"])[:2])
        assert n >= 23


class TestMemleakCleanup:
    def test_no_probes_or_programs_left(self, leaker):
        from tests.kernel.helpers import loaded_prog_ids, owned_prog_ids

        tgt = subprocess.Popen([leaker], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        tgt.stdout.readline()
        ml = subprocess.Popen(memlens_cmd("memleak", "-p", str(tgt.pid), "-o", "0"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert ml.stderr.readline().startswith(b"Tracing")
        held = owned_prog_ids(ml.pid)  # by id: other tracers on the machine don't matter
        assert held and held <= loaded_prog_ids()
        ml.send_signal(signal.SIGTERM)
        ml.communicate(timeout=30)
        assert ml.returncode == 0
        tgt.stdin.write(b"xx")
        tgt.stdin.close()
        tgt.wait()
        # the kernel frees a program its links released after an RCU grace period: gone
        # within ~10-30 ms of the exit here (not the warm-up's 5 s, core/uprobewarm.py)
        deadline = time.monotonic() + 1.0
        while held & loaded_prog_ids() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not (held & loaded_prog_ids())
        for path in ("/sys/kernel/tracing/uprobe_events",
                     "/sys/kernel/debug/tracing/uprobe_events"):
            if os.path.exists(path):
                with open(path) as f:
                    assert "libc" not in f.read()


    def test_sigint_ends_promptly_with_the_final_report(self, leaker):
        """No signal handler of memleak's own: the CLI's turns SIGINT into the runner's stop
        event, seen within its poll period; what remains is the final report and the
        detach (~0.1 s per uprobe link)."""
        tgt = subprocess.Popen([leaker], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert tgt.stdout.readline().startswith(b"ready")
            ml = subprocess.Popen(memlens_cmd("memleak", "-p", str(tgt.pid), "--json"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert ml.stderr.readline().startswith(b"Tracing")
            t0 = time.monotonic()
            ml.send_signal(signal.SIGINT)
            out, err = ml.communicate(timeout=60)
            took = time.monotonic() - t0
        finally:
            tgt.stdin.close()
            tgt.wait(timeout=10)
        assert ml.returncode == 0, err
        recs = [json.loads(line) for line in out.decode().splitlines()]
        assert [(r["type"], r.get("final")) for r in recs] == [("report", True),
                                                               ("summary", None)]
        assert took < 5, took


class TestMemleakBadInput:
    @pytest.mark.parametrize("args,code,needle", [
        (["-p", "999999"], 2, "no process with PID 999999"),
        (["-c", ""], 2, "-c needs a command"),
        (["-c", "/nonexistent/cmd"], 2, "command not found"),
        (["-p", "SELF", "-O", "/nonexistent"], 2, "/nonexistent"),
        # a symbol the allocator lacks is the user's choice (exit 2), not the kernel's
        (["-p", "SELF", "--symbols-prefix", "bogus_"], 2, "bogus_malloc"),
        (["-c", "true", "--quick-start"], 2, "--quick-start is for -p"),
        (["--quick-start"], 2, "--quick-start is for -p"),
    ])
    def test_one_line_error(self, args, code, needle):
        args = [str(os.getpid()) if a == "SELF" else a for a in args]
        p = subprocess.run(memlens_cmd("memleak", *args), check=False, capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == code, p.stderr
        assert p.stderr.count("\n") == 1 and needle in p.stderr, p.stderr
        assert "Traceback" not in p.stderr


def test_command_output_stays_off_json_stdout():
    import json as _json

    r = subprocess.run(memlens_cmd("memleak", "-c", "echo hello-from-command", "--json"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "hello-from-command" in r.stderr
    for line in r.stdout.splitlines():  # every stdout line is one of our JSON records
        assert _json.loads(line)["type"] in ("report", "lost", "summary", "event", "error")


BARE = re.compile(r"^0x[0-9a-f]+ \[unknown\]$")  # a frame in no mapping known for the target


def test_stacks_of_an_unloaded_library_are_counted_as_lost_symbols(tmp_path):
    """The target loads a library, leaks 23 blocks from each of its three functions and 23
    from main's own, unloads the library and exits, all while the tracers are stopped
    (SIGSTOP): they never saw the library mapped, so its three stacks can only be printed
    with addresses.  Each is one lost "symbols" (a lost record, the summary, the report's
    lost object and text total line, the stderr line), exactly as many as are printed so;
    main's stack keeps its symbols."""
    from tests.conftest import WORKLOADS
    from tests.kernel.helpers import ToolRun

    prog = build_workload("leak_dlclose")
    lib = tmp_path / "libleak_dlclose.so"
    subprocess.run(["gcc", "-O2", "-fno-omit-frame-pointer", "-shared", "-fPIC", "-o",
                    str(lib), str(WORKLOADS / "leak_dlclose_lib.c")], check=True)
    tgt = subprocess.Popen([str(prog), str(lib)], stdin=subprocess.PIPE)
    runs = []
    try:
        deadline = time.monotonic() + 5
        while "libc" not in Path(f"/proc/{tgt.pid}/maps").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.005)
        runs = [ToolRun("memleak", "-p", str(tgt.pid), "--json", "-T", "20"),
                ToolRun("memleak", "-p", str(tgt.pid), "-T", "20")]
        for r in runs:
            r.wait_attached(30)
        for r in runs:
            r.proc.send_signal(signal.SIGSTOP)
        try:
            tgt.stdin.write(b"g")
            tgt.stdin.close()
            assert tgt.wait(timeout=30) == 0  # and reaped: its map is gone
        finally:
            for r in runs:
                r.proc.send_signal(signal.SIGCONT)
        assert [r.wait(30) for r in runs] == [0, 0], [r.stderr for r in runs]
    finally:
        for r in runs:
            if r.proc.poll() is None:
                r.proc.kill()
        tgt.kill()
        tgt.wait()
    recs = runs[0].records()
    rep = [r for r in recs if r["type"] == "report"][-1]
    bare = [s for s in rep["stacks"] if any(BARE.match(f) for f in s["stack"])]
    assert [(s["bytes"], s["allocs"]) for s in bare] == [(LEAKS * 102, LEAKS),
                                                         (LEAKS * 101, LEAKS),
                                                         (LEAKS * 100, LEAKS)], rep["stacks"]
    (mine,) = stacks_with(rep, "main_leak")
    assert (mine["bytes"], mine["allocs"]) == (LEAKS * 200, LEAKS)
    assert not any(BARE.match(f) for f in mine["stack"])
    # (the library's frames were walked by frame pointers, its unwind table never loaded:
    # counted as unwind_fallback, a loss of its own)
    lost = [r for r in recs if r["type"] == "lost" and r["what"] == "symbols"]
    assert lost == [{"type": "lost", "what": "symbols",
                     "reason": "process gone before its symbols were read",
                     "count": 3, "total": 3}], lost
    assert rep["lost"]["symbols"] == 3 and recs[-1]["lost"]["symbols"] == 3
    # text: the same stacks printed as addresses, the total line and the stderr line
    out, err = runs[1].stdout, runs[1].stderr
    text_bare = 0
    for block in out.split("allocations from stack\n")[1:]:
        frames = []
        for line in block.splitlines():
            if not line.startswith("\t\t"):
                break
            frames.append(line.strip())
        text_bare += any(BARE.match(f) for f in frames)
    assert text_bare == 3, out
    assert out.rstrip().endswith("3 stacks left as addresses (no symbols)"), out
    assert "memlens: lost 3 symbols (process gone before its symbols were read)" in err, err


def test_a_zombie_target_is_one_line_exit_2():
    """-p of a process that has exited but is not reaped yet (was: "cannot find the C
    library of PID N", untrue)."""
    z = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{z.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        r = subprocess.run(memlens_cmd("memleak", "-p", str(z.pid)), capture_output=True,
                           text=True, timeout=60)
    finally:
        z.wait()
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"memlens: PID {z.pid} has exited (a zombie: its parent has not " \
                       "reaped it yet)\n"


def test_p_is_attached_with_the_walk_loaded_and_without_numpy():
    """memleak -p's start: every probe attached with the target's DWARF tables already in
    the kernel's maps (whole stacks from its first event), and numpy not imported on the
    way (its import, ~0.1-0.4 s of CPU, had been the longest step to the banner: in the
    planning thread, the record dtypes, the target's snapshot)."""
    target = subprocess.Popen(["sleep", "60"])
    code = (
        "import sys\n"
        "import memlens.cli as cli\n"
        "command = cli.load_command('memleak')\n"
        f"args = cli.build_parser('memleak', command).parse_args(['-p', '{target.pid}'])\n"
        "from memlens.tools.memleak import MemleakTool\n"
        "tool = MemleakTool(args)\n"
        "try:\n"
        "    tool.start()\n"
        "    heavy = [m for m in ('numpy', 'typing', 'dataclasses', 'shutil')\n"
        "             if m in sys.modules]\n"
        "    print(tool.unwind is not None and tool.unwind.processes_loaded,\n"
        "          len(tool.obj.raw_links) + len(tool.obj.links), ','.join(heavy) or '-')\n"
        "finally:\n"
        "    tool.close()\n")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60)
    finally:
        target.kill()
        target.wait()
    assert out.returncode == 0, out.stderr
    loaded, links, heavy = out.stdout.split()
    assert loaded == "1"           # the target's entry written before attaching
    assert int(links) >= 3         # the exec tracepoint, entry and return uprobes
    # nor typing (symbols' NamedTuple), dataclasses (the plan's), shutil (tempfile's)
    assert heavy == "-", out.stdout


@pytest.mark.parametrize("extra,stats", [([], 1), (["--combined-only"], 4099),
                                         (["--quick-start"], 1)])
def test_maps_made_before_the_load_are_as_configured(extra, stats):
    """-p makes its biggest maps itself, two at a time, before libbpf's load
    (premake_maps): bpftool's account of the maps the tool holds is what the options and
    the object say (allocs a hash without preallocation, sized by --max-allocs; stacks by
    --stack-storage-size; unwind_rows mmapable); stats holds one entry unless per-stack
    totals are kept."""
    from memlens.core.loader import hash_maps_may_allocate
    from tests.kernel.helpers import ToolRun
    from tests.kernel.test_unwind import tool_maps

    target = subprocess.Popen(["sleep", "60"])
    run = ToolRun("memleak", "-p", str(target.pid), "--max-allocs", "12345",
                  "--stack-storage-size", "4099", *extra)
    try:
        run.wait_attached()
        (allocs,) = tool_maps(run.proc.pid, "allocs")
        (stacks,) = tool_maps(run.proc.pid, "stacks")
        rows_maps = tool_maps(run.proc.pid, "unwind_rows")  # two after a hand-over
        (stats_map,) = tool_maps(run.proc.pid, "stats")
    finally:
        rc = run.stop()
        target.kill()
        target.wait()
    assert rc == 0, run.stderr
    run.assert_detached()
    # allocating on insert (BPF_F_NO_PREALLOC) where the kernel allows it (6.1+: here)
    flags = 1 if hash_maps_may_allocate() else 0
    assert (allocs["type"], allocs["max_entries"], allocs["flags"]) == ("hash", 12345, flags)
    assert (allocs["bytes_key"], allocs["bytes_value"]) == (8, 32)
    assert (stacks["type"], stacks["max_entries"], stacks["flags"]) == ("hash", 4099, flags)
    assert stats_map["flags"] == flags
    assert all(r["type"] == "array" and r["flags"] & 0x400 for r in rows_maps), rows_maps
    # (--quick-start: the first object's walk maps are at their smallest, the hand-over's
    # own made after the banner)
    assert any(r["max_entries"] > 1 for r in rows_maps) or "--quick-start" in extra
    assert stats_map["max_entries"] == stats
    # made here, not by libbpf (which gives its maps the object's BTF)
    assert "btf_id" not in allocs and "btf_id" not in stacks and "btf_id" in stats_map


def test_quick_start_program_array_takes_only_its_twins_attach_type():
    """--quick-start with uprobe_multi links: ml_whole, whose owner is the uprobe_multi
    twin ml_return_handing, takes the whole ml_return core/handover gives the twin's
    expected attach type, and refuses (EINVAL) the same program loaded with its section's:
    why HandOver.open_whole copies it (the kernel's tail-call compatibility check, 6.18
    here).  Nothing is attached: the check is the program array's update."""
    import ctypes as C
    import errno

    from memlens.core import libbpf as L
    from memlens.core.handover import HandOver
    from memlens.core.loader import BpfObject
    from memlens.errors import MemlensError
    from memlens.tools import memleak

    require(memleak.uprobe_multi_supported(), "needs uprobe_multi links (kernel >= 6.6)")
    getter = L.lib()._cdll.bpf_program__expected_attach_type
    getter.restype, getter.argtypes = C.c_int, [C.c_void_p]
    first = BpfObject.open("tools/memleak/memleak.bpf.o")
    kept: list[HandOver] = []
    try:
        first.rodata["targ_tgid"] = 0x7FFFFFFF  # no such process: nothing recorded
        for prog in first.programs():  # as memleak -p configures it
            first.set_autoload(prog, prog in memleak.USER_PROGS)
            if first.section(prog).startswith(("uprobe", "uretprobe")):
                first.set_expected_attach_type(prog, memleak.BPF_TRACE_UPROBE_MULTI)
        armed = HandOver(first, memleak.HANDING)
        armed.arm()
        first.load()

        def hand_over(section_type: bool) -> HandOver:
            ho = HandOver(first, memleak.HANDING)
            kept.append(ho)
            if section_type:  # the copy as it was before: ml_return's section's type
                opened = ho.open_whole

                def open_whole(stack_unwind: str) -> BpfObject:
                    whole = opened(stack_unwind)
                    with BpfObject.open("tools/memleak/memleak.bpf.o") as fresh:
                        whole.set_expected_attach_type(
                            "ml_return", getter(fresh.prog("ml_return")))
                    return whole

                ho.open_whole = open_whole  # type: ignore[method-assign]
            ho.load_whole("fp")
            return ho

        plain = hand_over(section_type=True)
        assert getter(plain.whole.prog("ml_return")) != memleak.BPF_TRACE_UPROBE_MULTI
        with pytest.raises(MemlensError, match=errno.errorcode[errno.EINVAL]):
            plain.install()
        ho = hand_over(section_type=False)
        assert getter(ho.whole.prog("ml_return")) == memleak.BPF_TRACE_UPROBE_MULTI
        ho.install()  # taken
    finally:
        first.close()
        for ho in kept:
            ho.close()


def _fd_map_ids() -> dict[int, int]:
    """This process's BPF map fds by map id (their fdinfo)."""
    return fdinfo_ids(os.getpid(), "map_id")


def _map_id(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return int(re.search(r"^map_id:\s*(\d+)", f.read(), re.MULTILINE).group(1))


def test_premade_maps_are_taken_as_configured_and_the_others_closed():
    """BpfObject.premake_maps (core/loader.py), which memleak -p uses: of the maps made
    beforehand (`made`), one made as configured is the object's after the load, one made
    otherwise (another size) and one not asked for are closed; the asked maps it can make
    (hashes, arrays) are made by it, the others (a program array, a section's) left to
    libbpf, which loads the object with them.  Witness: the map ids of this process's fds
    (fdinfo)."""
    from memlens.core.loader import BpfObject, map_create

    obj = BpfObject.open("tools/memleak/memleak.bpf.o")
    made: dict = {}
    try:
        for prog in obj.programs():
            obj.set_autoload(prog, prog == "ml_exec")
        obj.rodata["min_size"] = 4099
        obj.set_max_entries("allocs", 4099)
        stacks, allocs = obj.map_spec("stacks"), obj.map_spec("allocs")
        made["stacks"] = (stacks, map_create(*stacks))                 # as configured
        made["allocs"] = (allocs[:3] + (10,) + allocs[4:], map_create(*allocs[:3], 10,
                                                                      *allocs[4:]))
        threads = obj.map_spec("threads")
        made["threads"] = (threads, map_create(*threads))               # not asked for
        assert all(fd >= 0 for _, fd in made.values()), made
        ids = {name: _map_id(fd) for name, (_, fd) in made.items()}
        handed = obj.premake_maps(["stacks", "allocs", "counters", "ml_whole",
                                   "memleak.rodata"], made=made)
        assert made == {}
        assert handed == 3  # stacks (taken), allocs (made again), counters
        held = _fd_map_ids()
        assert ids["stacks"] in held  # libbpf's duplicate of the one made before
        assert ids["allocs"] not in held and ids["threads"] not in held  # closed
        obj.load()
        assert _map_id(obj.map("stacks").fd) == ids["stacks"]
        allocs_id = _map_id(obj.map("allocs").fd)
        assert allocs_id != ids["allocs"]
        with open(f"/proc/self/fdinfo/{obj.map('allocs').fd}") as f:
            assert re.search(r"^max_entries:\s*4099$", f.read(), re.MULTILINE)
        # libbpf's own: the section's values as configured, the program array made
        off, size = obj.rodata.vars["min_size"]
        rodata = obj.map("memleak.rodata").lookup(b"\0" * 4)
        assert rodata[off:off + size] == (4099).to_bytes(size, "little")
        assert obj.map("ml_whole").fd >= 0
    finally:
        for _, fd in made.values():
            os.close(fd)
        obj.close()
