# SPDX-License-Identifier: GPL-2.0-only
"""oomkill against a real OOM kill in a memory cgroup the test makes, with the kernel log
as the independent witness."""
from __future__ import annotations

import re
import subprocess

from tests.conftest import build_workload, memlens_cmd
from tests.kernel.helpers import ToolRun, memory_cgroup, read_kmsg

BARE = re.compile(r"^0x[0-9a-f]+ \[unknown\]$")  # a frame in no known mapping


def _kill_line(pid: int) -> dict:
    pat = re.compile(rf"Killed process {pid} \((?P<comm>[^)]*)\) total-vm:(?P<total_vm>\d+)kB, "
                     r"anon-rss:(?P<anon>\d+)kB, file-rss:(?P<file>\d+)kB, "
                     r"shmem-rss:(?P<shmem>\d+)kB")
    for line in read_kmsg():
        m = pat.search(line)
        if m:
            return {k: (v if k == "comm" else int(v)) for k, v in m.groupdict().items()}
    raise AssertionError(f"no OOM kill of {pid} in the kernel log")


def _memcg_line(pid: int) -> str:
    for line in read_kmsg():
        if "oom-kill:" in line and f",pid={pid}," in line:
            return re.search(r"task_memcg=([^,]*)", line).group(1)
    raise AssertionError(f"no oom-kill line for {pid}")


def test_oom_kill_in_memory_cgroup_matches_kernel_log():
    hog = build_workload("oom_hog")
    with memory_cgroup("mlt_oomkill") as cg:
        # frame pointers: this test's losses are symbols only (the hog, unknown to the
        # unwinder before its kill, would add an unwind_fallback: test_unwind's oomkill test)
        json_run = ToolRun("oomkill", "--json", "--stack-unwind", "fp")
        text_run = ToolRun("oomkill", "--stack-unwind", "fp")
        json_run.wait_attached()
        text_run.wait_attached()
        victim = subprocess.Popen([str(hog), "512"], preexec_fn=lambda: (
            cg / "cgroup.procs").write_text("0"))
        assert victim.wait(timeout=60) == -9
        import time
        time.sleep(0.5)
        assert json_run.stop() == 0
        assert text_run.stop() == 0
    events = [r for r in json_run.records() if r["type"] == "event"]
    mine = [e for e in events if e["victim_pid"] == victim.pid]
    assert len(mine) == 1, json_run.stdout
    ev = mine[0]
    kmsg = _kill_line(victim.pid)
    assert ev["victim_comm"] == "oom_hog" == kmsg["comm"]
    assert ev["trigger_pid"] == victim.pid and ev["trigger_comm"] == "oom_hog"
    assert ev["total_vm_kb"] == kmsg["total_vm"]
    assert ev["anon_rss_kb"] == kmsg["anon"]
    assert ev["file_rss_kb"] == kmsg["file"]
    assert ev["shmem_rss_kb"] == kmsg["shmem"]
    assert 0 < ev["anon_rss_kb"] <= 64 * 1024
    assert ev["cgroup"] == "/" + cg.name == _memcg_line(victim.pid)
    assert ev["cgroup_id"] is not None
    summary = [r for r in json_run.records() if r["type"] == "summary"]
    # the trigger is the victim: gone, or not yet, when its user stack is symbolized;
    # every stack printed as bare addresses is a lost "symbols", and nothing else is lost
    bare = sum(1 for e in events if any(BARE.match(f) for f in e["trigger_user_stack"]))
    assert summary and summary[0]["lost"] == ({"symbols": bare} if bare else {})
    # text mode: BCC's line shape, then the details line
    lines = text_run.stdout.splitlines()
    idx = next(i for i, ln in enumerate(lines) if f"OOM kill of PID {victim.pid} " in ln)
    assert f'Triggered by PID {victim.pid} ("oom_hog")' in lines[idx]
    assert f'("oom_hog"), total-vm {kmsg["total_vm"]} kB, loadavg: ' in lines[idx]
    assert f"rss anon {kmsg['anon']} kB" in lines[idx + 1]
    assert lines[idx + 1].endswith(f"cgroup /{cg.name}")
    # nothing of ours stays loaded
    json_run.assert_detached()
    text_run.assert_detached()


def test_duration_ends_cleanly_and_bad_flag_is_usage_error():
    r = subprocess.run(memlens_cmd("oomkill", "-d", "0.5", "--json"), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "Tracing OOM kills... Hit Ctrl-C to end." in r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith('{"type":"summary"')
    r = subprocess.run(memlens_cmd("oomkill", "--bogus"), capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = subprocess.run(memlens_cmd("oomkill", "-d", "-3"), capture_output=True, text=True)
    assert r.returncode == 2 and "must be > 0" in r.stderr


def test_cgroup_and_pid_filters_select_victims():
    hog = build_workload("oom_hog")
    with memory_cgroup("mlt_oom_a") as cg_a, memory_cgroup("mlt_oom_b") as cg_b:
        by_cgroup = ToolRun("oomkill", "--json", "--cgroup", str(cg_a))
        by_cgroup.wait_attached()
        victims = {}
        for cg in (cg_b, cg_a):
            p = subprocess.Popen([str(hog), "512"],
                                 preexec_fn=lambda cg=cg: (cg / "cgroup.procs").write_text("0"))
            assert p.wait(timeout=60) == -9
            victims[cg.name] = p.pid
        import time
        time.sleep(0.5)
        assert by_cgroup.stop() == 0
    seen = [r["victim_pid"] for r in by_cgroup.records() if r["type"] == "event"]
    assert seen == [victims[cg_a.name]], (seen, victims)
    # -p: a PID that is not the victim sees nothing
    with memory_cgroup("mlt_oom_c") as cg:
        sleeper = subprocess.Popen(["sleep", "30"])
        by_pid = ToolRun("oomkill", "--json", "-p", str(sleeper.pid))
        by_pid.wait_attached()
        p = subprocess.Popen([str(hog), "512"],
                             preexec_fn=lambda: (cg / "cgroup.procs").write_text("0"))
        assert p.wait(timeout=60) == -9
        assert by_pid.stop() == 0
        sleeper.kill()
    assert [r for r in by_pid.records() if r["type"] == "event"] == []


def test_trigger_stacks_when_another_task_is_killed():
    """A small task's page faults trigger the OOM and a bigger idle task is killed: the
    trigger's kernel stack shows the memcg OOM path and its user stack the function that
    touched memory (symbolized through its memory map: it is still alive)."""
    prog = build_workload("oom_trigger")
    with memory_cgroup("mlt_oom_trig") as cg:
        def join() -> None:
            (cg / "cgroup.procs").write_text("0")

        big = subprocess.Popen([str(prog), "48"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, preexec_fn=join)
        assert big.stdout.readline().strip() == "touched"
        small = subprocess.Popen([str(prog), "32", "wait"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, preexec_fn=join)
        run = ToolRun("oomkill", "--json")
        text = ToolRun("oomkill", "-s")
        run.wait_attached()
        text.wait_attached()
        small.stdin.write("g")
        small.stdin.flush()
        assert small.stdout.readline().strip() == "touched"  # it got its memory
        assert big.wait(timeout=30) == -9
        import time
        time.sleep(0.5)
        assert run.stop() == 0 and text.stop() == 0
        small.stdin.close()
        small.wait(timeout=10)
    (ev,) = [r for r in run.records() if r["type"] == "event"]
    assert ev["victim_pid"] == big.pid and ev["trigger_pid"] == small.pid
    kernel = [f.split("+")[0] for f in ev["trigger_kernel_stack"]]
    assert "mem_cgroup_out_of_memory" in kernel and "handle_mm_fault" in kernel, kernel
    assert kernel[0] in ("mark_oom_victim", "__oom_kill_process"), kernel
    user = ev["trigger_user_stack"]
    assert user[0].startswith("touch_pages+") and user[0].endswith("[oom_trigger]"), user
    assert any(f.startswith("main+") for f in user), user
    assert "trigger kernel stack:" in text.stdout and "touch_pages+" in text.stdout


def test_a_trigger_gone_before_its_stack_is_read_is_counted_as_lost_symbols():
    """The tools are stopped (SIGSTOP) while the hog triggers its own OOM kill and is
    reaped: when they read the kill, its memory map is gone, so its user stack can only be
    printed as addresses.  Every such stack is a lost "symbols" (stderr line in text mode,
    "lost" record and summary in JSON), exactly as many as are printed."""
    import signal
    import time

    hog = build_workload("oom_hog")
    with memory_cgroup("mlt_oom_gone") as cg:
        # frame pointers: the losses counted are symbols only (see above)
        json_run = ToolRun("oomkill", "--json", "--stack-unwind", "fp")
        text_run = ToolRun("oomkill", "-s", "--stack-unwind", "fp")
        json_run.wait_attached()
        text_run.wait_attached()
        runs = (json_run, text_run)
        try:
            for r in runs:
                r.proc.send_signal(signal.SIGSTOP)
            victim = subprocess.Popen([str(hog), "512"], preexec_fn=lambda: (
                cg / "cgroup.procs").write_text("0"))
            assert victim.wait(timeout=60) == -9  # killed and reaped: /proc/PID is gone
        finally:
            for r in runs:
                r.proc.send_signal(signal.SIGCONT)
        time.sleep(0.5)
        assert json_run.stop() == 0 and text_run.stop() == 0
    recs = json_run.records()
    events = [r for r in recs if r["type"] == "event"]
    (ev,) = [e for e in events if e["victim_pid"] == victim.pid]
    assert ev["trigger_pid"] == victim.pid
    assert ev["trigger_user_stack"] and all(BARE.match(f) for f in ev["trigger_user_stack"])
    # other OOM kills on the machine meanwhile are counted by the same rule
    bare = sum(1 for e in events if any(BARE.match(f) for f in e["trigger_user_stack"]))
    lost = [r for r in recs if r["type"] == "lost"]
    assert {r["what"] for r in lost} == {"symbols"}, lost
    assert sum(r["count"] for r in lost) == bare >= 1
    assert "process gone before its symbols were read" in {r["reason"] for r in lost}
    assert recs[-1]["type"] == "summary" and recs[-1]["lost"] == {"symbols": bare}
    # text: the frames as printed, and the loss on stderr
    lines = text_run.stdout.splitlines()
    idx = next(i for i, ln in enumerate(lines) if f"OOM kill of PID {victim.pid} " in ln)
    user = lines.index(f'{"":9}trigger user stack:', idx)
    assert lines[user + 1].strip() == ev["trigger_user_stack"][0]
    shown = [ln for ln in text_run.stderr.splitlines() if " symbols (" in ln]
    assert all(ln.startswith("memlens: lost ") for ln in shown), shown
    assert sum(int(ln.split()[2]) for ln in shown) == _bare_text_stacks(lines) >= 1


def _bare_text_stacks(lines: list[str]) -> int:
    """oomkill -s text: the trigger user stacks with a frame printed as an address."""
    n = 0
    for i, line in enumerate(lines):
        if line == f'{"":9}trigger user stack:':
            frames = []
            for nxt in lines[i + 1:]:
                if not nxt.startswith(" " * 11):
                    break
                frames.append(nxt.strip())
            n += any(BARE.match(f) for f in frames)
    return n
