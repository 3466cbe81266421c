# SPDX-License-Identifier: GPL-2.0-only
"""doctor and the main job on the real machine: hook kinds agree with independent facts."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from memlens.core import kernel
from tests.conftest import memlens_cmd


def test_doctor_json_agrees_with_the_kernel():
    r = subprocess.run(memlens_cmd("doctor", "--json"), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    hooks = {k: v["works"] for k, v in rep["hooks"].items()}
    # tracefs is mounted (by doctor if it was not) and tracepoints attach
    assert os.path.isdir("/sys/kernel/tracing/events/syscalls")
    assert hooks["tracepoint"] and hooks["ringbuf"] and hooks["uprobe"] and hooks["perf_event"]
    assert hooks["tp_btf"] == os.path.exists("/sys/kernel/btf/vmlinux")
    # kprobes work exactly when the kernel has the kprobe PMU
    assert hooks["kprobe"] == os.path.isdir("/sys/bus/event_source/devices/kprobe")
    assert rep["btf"] is True and rep["root"] is True
    tools = {t["tool"]: t for t in rep["tools"]}
    assert tools["oomkill"]["ready"] and tools["brkstack"]["ready"]
    assert rep["features"]["map types"]["ringbuf"] is True
    # 6.1+ (its any-context allocator, struct bpf_mem_alloc in BTF): this kernel has it
    assert rep["features"]["map types"]["hash without preallocation in tracing"] is \
        kernel.btf_has_name("bpf_mem_alloc")


def test_main_job_prints_checklist_then_readiness():
    r = subprocess.run(memlens_cmd("--interval", "0.2"), capture_output=True, text=True,
                       timeout=90)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.index("== Memory (free") < out.index("memlens doctor: can memlens trace here?")
    assert "hook kinds (loaded and attached for real):" in out
    r = subprocess.run(memlens_cmd("--json", "--interval", "0.2"), capture_output=True,
                       text=True, timeout=90)
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    sections = [x.get("section") for x in recs]
    assert "free" in sections and sections[-1] == "doctor"


def test_doctor_rows_come_from_the_registry_and_follow_the_prototype(monkeypatch):
    """doctor reads the tools' own hook declarations: every BPF tool of the registry has a
    row, and on a kernel whose mark_victim BTF prototype is the pre-6.8 (int pid), doctor
    names the tracepoint fallback, as oomkill itself would choose it."""
    from memlens import doctor, registry
    from memlens.core import hooks, kernel

    kernel.ensure_tracefs(quiet=True)
    works = {k: (True, "") for k in ("tracepoint", "tp_btf", "perf_event", "uprobe")}
    rows = doctor._tool_rows(works)
    names = {r["tool"].split(" ")[0] for r in rows}
    assert {t.name for t in registry.TOOLS} <= names
    oom = next(r for r in rows if r["tool"] == "oomkill")
    assert oom["hook"].startswith("tp_btf/mark_victim")

    btf_dir = Path(__file__).resolve().parents[1] / "unit" / "data" / "btf"
    monkeypatch.setattr(hooks, "VMLINUX_BTF", str(btf_dir / "mark_victim_pre68.btf"))
    hooks.clear_cache()
    try:
        oom = next(r for r in doctor._tool_rows(works) if r["tool"] == "oomkill")
        assert oom["ready"] and oom["hook"] == "tracepoint oom:mark_victim", oom
        # a hook kind that fails to load for real is not "ready" even if declared
        broken = {**works, "tracepoint": (False, "refused")}
        oom = next(r for r in doctor._tool_rows(broken) if r["tool"] == "oomkill")
        assert not oom["ready"] and "BTF prototype" in oom["hook"] and "refused" in oom["hook"]
    finally:
        hooks.clear_cache()
