# SPDX-License-Identifier: GPL-2.0-only
"""Hook choice by what the kernel offers (memlens.core.hooks), without root: BTF blobs
synthesized with libbpf's writer stand in for two kernels' vmlinux BTF, a temporary
directory for tracefs.

The blobs under tests/unit/data/btf/ are committed (a reader can inspect them with
`bpftool btf dump file ...`); regenerate them with
    .venv/bin/python -m tests.unit.test_hooks
and test_committed_btf_blobs_are_regenerable keeps them in step with the code below.
"""
from __future__ import annotations

import ctypes as C
from pathlib import Path

import pytest

from memlens.core import hooks
from memlens.core.hooks import Kprobe, TpBtf, Tracepoint, Uprobe, choose, survey
from memlens.errors import KernelLacks

BTF_DIR = Path(__file__).resolve().parent / "data" / "btf"
OLD_BTF = BTF_DIR / "mark_victim_pre68.btf"  # btf_trace_mark_victim(void *, int)
# btf_trace_mark_victim(void *, struct task_struct *, uid_t)
NEW_BTF = BTF_DIR / "mark_victim_68.btf"

BTF_INT_SIGNED = 1


def _build_btf(new_prototype: bool) -> bytes:
    """A tiny vmlinux-like BTF with the types a mark_victim tracepoint's prototype needs,
    laid out as pahole writes them (anonymous prototype parameters, typedef chains)."""
    from memlens.core import libbpf as L

    lb = L.lib()
    btf = lb.btf__new_empty()
    assert btf, "btf__new_empty failed"
    try:
        def ok(type_id: int) -> int:
            assert type_id > 0, f"libbpf BTF writer failed: {L.strerror(type_id)}"
            return type_id

        int_id = ok(lb.btf__add_int(btf, b"int", 4, BTF_INT_SIGNED))
        uint_id = ok(lb.btf__add_int(btf, b"unsigned int", 4, 0))
        void_ptr = ok(lb.btf__add_ptr(btf, 0))
        task = ok(lb.btf__add_struct(btf, b"task_struct", 8))
        ok(lb.btf__add_field(btf, b"pid", int_id, 0, 0) + 1)  # returns 0 on success
        ok(lb.btf__add_field(btf, b"tgid", int_id, 32, 0) + 1)
        task_ptr = ok(lb.btf__add_ptr(btf, task))
        kuid = ok(lb.btf__add_typedef(btf, b"__kernel_uid32_t", uint_id))
        uid_t = ok(lb.btf__add_typedef(btf, b"uid_t", kuid))
        proto = ok(lb.btf__add_func_proto(btf, 0))  # returns void
        ok(lb.btf__add_func_param(btf, b"", void_ptr) + 1)  # the hidden __data
        if new_prototype:
            ok(lb.btf__add_func_param(btf, b"", task_ptr) + 1)
            ok(lb.btf__add_func_param(btf, b"", uid_t) + 1)
        else:
            ok(lb.btf__add_func_param(btf, b"", int_id) + 1)
        proto_ptr = ok(lb.btf__add_ptr(btf, proto))
        ok(lb.btf__add_typedef(btf, b"btf_trace_mark_victim", proto_ptr))
        size = C.c_uint32(0)
        raw = lb.btf__raw_data(btf, C.byref(size))
        assert raw, "btf__raw_data failed"
        return C.string_at(raw, size.value)
    finally:
        lb.btf__free(btf)


def write_btf_blobs() -> None:
    BTF_DIR.mkdir(parents=True, exist_ok=True)
    OLD_BTF.write_bytes(_build_btf(new_prototype=False))
    NEW_BTF.write_bytes(_build_btf(new_prototype=True))


@pytest.fixture(autouse=True)
def _fresh_probes():
    hooks.clear_cache()
    yield
    hooks.clear_cache()


@pytest.fixture
def fake_tracefs(tmp_path, monkeypatch) -> Path:
    """A tracefs with oom:mark_victim as 6.1 shows it (pid only)."""
    event = tmp_path / "events" / "oom" / "mark_victim"
    event.mkdir(parents=True)
    (event / "format").write_text(
        "name: mark_victim\nID: 456\nformat:\n"
        "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
        "\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n"
        "\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n"
        "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n"
        "\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n\n"
        'print fmt: "pid=%d", REC->pid\n')
    monkeypatch.setattr(hooks, "TRACEFS_ROOT", str(tmp_path))
    return tmp_path


def _oomkill_hooks():
    # the real declaration (a cheap import: no libbpf load, no numpy)
    from memlens.tools.oomkill import HOOKS

    return HOOKS


def test_committed_btf_blobs_are_regenerable():
    # GIVEN the committed blobs WHEN rebuilt THEN byte for byte the same
    assert OLD_BTF.read_bytes() == _build_btf(new_prototype=False)
    assert NEW_BTF.read_bytes() == _build_btf(new_prototype=True)


def test_oomkill_takes_tp_btf_where_the_prototype_is_task_uid(monkeypatch, fake_tracefs):
    # GIVEN vmlinux BTF of a >= 6.8 kernel: mark_victim(struct task_struct *, uid_t)
    monkeypatch.setattr(hooks, "VMLINUX_BTF", str(NEW_BTF))
    # WHEN oomkill chooses THEN the typed hook
    chosen = choose(_oomkill_hooks(), "oomkill")
    assert chosen.kind == "tp_btf"
    assert chosen.label == "tp_btf/mark_victim(struct task_struct *, uid_t)"


def test_oomkill_falls_back_to_the_tracepoint_on_the_old_int_pid_prototype(
        monkeypatch, fake_tracefs):
    # GIVEN vmlinux BTF of a 6.1 kernel: the same name, mark_victim(int pid)
    monkeypatch.setattr(hooks, "VMLINUX_BTF", str(OLD_BTF))
    # WHEN oomkill chooses THEN the tracepoint, and survey says why not tp_btf
    chosen = choose(_oomkill_hooks(), "oomkill")
    assert chosen.kind == "tracepoint" and chosen.label == "tracepoint oom:mark_victim"
    (tp_btf, ok, why), (tp, tp_ok, tp_why) = survey(_oomkill_hooks())
    assert not ok
    assert why == ("BTF prototype is (int), this program needs "
                   "(struct task_struct *, uid_t)")
    assert tp_ok and tp_why == ""


def test_old_prototype_is_accepted_by_a_program_written_for_it():
    hook = TpBtf("mark_victim", ("int",), btf_path=str(OLD_BTF))
    assert hook.probe() == (True, "")
    assert not TpBtf("mark_victim", ("int",), btf_path=str(NEW_BTF)).probe()[0]


def test_typedef_chain_matches_at_any_level_or_by_its_final_int():
    # uid_t -> __kernel_uid32_t -> unsigned int: each spelling is the same argument
    for spelling in ("uid_t", "__kernel_uid32_t", "unsigned int", "unsigned"):
        hook = TpBtf("mark_victim", ("struct task_struct *", spelling), btf_path=str(NEW_BTF))
        assert hook.probe() == (True, ""), spelling
    # a different int (signedness) or pointee is not
    for params in (("struct task_struct *", "int"), ("struct mm_struct *", "uid_t"),
                   ("struct task_struct", "uid_t"), ("void *", "uid_t")):
        ok, why = TpBtf("mark_victim", params, btf_path=str(NEW_BTF)).probe()
        assert not ok and why.startswith("BTF prototype is (struct task_struct *, uid_t)")


def test_wrong_parameter_count_is_rejected():
    for params in (("struct task_struct *",), ("struct task_struct *", "uid_t", "int"), ()):
        ok, why = TpBtf("mark_victim", params, btf_path=str(NEW_BTF)).probe()
        assert not ok
        assert why == (f"BTF prototype is (struct task_struct *, uid_t), this program "
                       f"needs ({', '.join(params)})")


def test_missing_typedef_is_rejected_with_a_reason():
    ok, why = TpBtf("no_such_event", (), btf_path=str(NEW_BTF)).probe()
    assert not ok
    assert why == f"no btf_trace_no_such_event in BTF {NEW_BTF} (no such BTF tracepoint)"


def test_unreadable_btf_is_a_reason_not_an_exception(tmp_path):
    missing = tmp_path / "nothing"
    ok, why = TpBtf("mark_victim", ("int",), btf_path=str(missing)).probe()
    assert not ok and why == f"no BTF at {missing} (ENOENT)"
    junk = tmp_path / "junk.btf"
    junk.write_bytes(b"not BTF at all" * 10)
    ok, why = TpBtf("mark_victim", ("int",), btf_path=str(junk)).probe()
    assert not ok and why.startswith(f"cannot read BTF {junk} (")


def test_tracepoint_fields_come_from_the_format_file(fake_tracefs):
    assert Tracepoint("oom", "mark_victim", fields=("pid",)).probe() == (True, "")
    assert Tracepoint("oom", "mark_victim", fields=("pid", "anon_rss")).probe() == (
        False, "oom:mark_victim has no field anon_rss")
    assert Tracepoint("oom", "skip_task_reaping").probe() == (
        False, "no oom:skip_task_reaping in tracefs")


def test_format_field_names_handles_arrays_and_data_loc():
    text = ("\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n"
            "\tfield:__data_loc char[] name;\toffset:24;\tsize:4;\tsigned:0;\n"
            "\tfield:unsigned long brk;\toffset:16;\tsize:8;\tsigned:0;\n"
            "\tfield:const char * filename;\toffset:32;\tsize:8;\tsigned:0;\n"
            "print fmt: \"field:not_a_field\"\n")
    assert hooks.format_field_names(text) == {"comm", "name", "brk", "filename"}


def test_every_hook_missing_raises_kernel_lacks_naming_each(monkeypatch, tmp_path):
    # GIVEN a kernel with nothing: empty tracefs, no PMUs, BTF without the prototype
    (tmp_path / "events").mkdir()
    (tmp_path / "pmus").mkdir()
    monkeypatch.setattr(hooks, "TRACEFS_ROOT", str(tmp_path))
    monkeypatch.setattr(hooks, "EVENT_SOURCE", str(tmp_path / "pmus"))
    monkeypatch.setattr(hooks, "VMLINUX_BTF", str(OLD_BTF))
    declared = [*_oomkill_hooks(), Kprobe("oom_kill_process"), Uprobe()]
    # WHEN choosing THEN exit 4, one line, every hook with its reason, in order
    with pytest.raises(KernelLacks) as info:
        choose(declared, "oomkill")
    message = str(info.value)
    assert info.value.exit_code == 4
    assert "\n" not in message
    assert message == (
        "the kernel lacks every hook oomkill can use: "
        "tp_btf/mark_victim(struct task_struct *, uid_t): BTF prototype is (int), this "
        "program needs (struct task_struct *, uid_t); "
        "tracepoint oom:mark_victim: no oom:mark_victim in tracefs; "
        "kprobe oom_kill_process: no kprobe PMU (CONFIG_KPROBES off); "
        "uprobes: no uprobe PMU (CONFIG_UPROBE_EVENTS off)")


def test_kprobe_names_the_missing_function(monkeypatch, tmp_path):
    (tmp_path / "pmus" / "kprobe").mkdir(parents=True)
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text("0000000000000000 T handle_mm_fault\n0000000000000000 t foo [mod]\n")
    monkeypatch.setattr(hooks, "EVENT_SOURCE", str(tmp_path / "pmus"))
    monkeypatch.setattr(hooks, "KALLSYMS", str(kallsyms))
    assert Kprobe("handle_mm_fault").probe() == (True, "")
    assert Kprobe("foo").probe() == (True, "")
    assert Kprobe("oom_kill_process").probe() == (
        False, f"no oom_kill_process in {kallsyms}")


def test_probes_are_cached_per_process(monkeypatch, fake_tracefs):
    hook = Tracepoint("oom", "mark_victim")
    assert hook.probe()[0]
    # the event vanishing later does not change this process's answer (one look per run)
    (fake_tracefs / "events" / "oom" / "mark_victim" / "format").unlink()
    (fake_tracefs / "events" / "oom" / "mark_victim").rmdir()
    assert hook.probe()[0]
    hooks.clear_cache()
    assert not hook.probe()[0]


def test_hooks_are_values():
    a = TpBtf("mark_victim", ["struct task_struct *", "uid_t"])
    assert a == TpBtf("mark_victim", ("struct task_struct *", "uid_t"))
    assert hash(a) == hash(TpBtf("mark_victim", ("struct task_struct *", "uid_t")))
    assert a != Tracepoint("oom", "mark_victim")
    with pytest.raises(AttributeError):
        a.event = "other"  # type: ignore[misc]
    assert [h.kind for h in (a, Tracepoint("a", "b"), Uprobe(), Kprobe("f"))] == [
        "tp_btf", "tracepoint", "uprobe", "kprobe"]


def test_importing_hooks_loads_neither_libbpf_nor_numpy():
    import subprocess
    import sys

    code = ("import sys, memlens.core.hooks, memlens.tools.oomkill as o; "
            "import memlens.core.libbpf as L; "
            "print(L._lib is None, 'numpy' in sys.modules, len(o.HOOKS))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True)
    assert r.stdout.split() == ["True", "False", "2"]


if __name__ == "__main__":
    write_btf_blobs()
    print(f"wrote {OLD_BTF} and {NEW_BTF}")


def test_tp_btf_answers_are_kept_per_boot_and_vmlinux_btf_in_the_cache_dir(tmp_path,
                                                                            monkeypatch):
    """The prototype check parses the whole vmlinux BTF (~20 ms of oomkill's start): its
    answer is kept in memlens's cache directory under the boot id and the BTF file's size
    and mtime, and read back instead of parsing; another BTF file is parsed afresh."""
    import os
    import shutil

    btf = tmp_path / "vmlinux"
    shutil.copy(NEW_BTF, btf)
    monkeypatch.setattr(hooks, "VMLINUX_BTF", str(btf))
    monkeypatch.setenv("MEMLENS_CACHE_DIR", str(tmp_path / "cache"))
    want = ("struct task_struct *", "uid_t")
    hooks.clear_cache()
    assert TpBtf("mark_victim", want, btf_path=str(btf)).probe() == (True, "")
    (kept,) = (tmp_path / "cache" / "btf").glob("tp_btf-*.tsv")
    st = btf.stat()
    assert kept.name.endswith(f"-{st.st_size}-{st.st_mtime_ns}.tsv")
    assert kept.read_text() == f"1\ttp_btf/mark_victim({', '.join(want)})\t\n"
    assert hooks.read_answers(str(kept)) == {
        f"tp_btf/mark_victim({', '.join(want)})": [True, ""]}
    assert oct(kept.parent.stat().st_mode & 0o777) == "0o700"
    # read back, not parsed: an answer planted in the file is what the next probe says
    kept.write_text(hooks.format_answers(
        {f"tp_btf/mark_victim({', '.join(want)})": [False, "planted"]}))
    hooks.clear_cache()
    assert TpBtf("mark_victim", want, btf_path=str(btf)).probe() == (False, "planted")
    # the kernel's BTF changed (another size or mtime): parsed afresh, old answers gone
    shutil.copy(OLD_BTF, btf)
    os.utime(btf, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    hooks.clear_cache()
    ok, why = TpBtf("mark_victim", want, btf_path=str(btf)).probe()
    assert not ok and "BTF prototype is (int)" in why
    assert [p.name for p in (tmp_path / "cache" / "btf").glob("tp_btf-*.tsv")] != [kept.name]
    hooks.clear_cache()


def test_a_vmlinux_btf_name_is_searched_once_a_boot(tmp_path, monkeypatch):
    """kernel.btf_has_name reads all of vmlinux BTF (~9 ms of memleak -p's start): its
    answer is kept with the tp_btf ones and read back."""
    import shutil

    from memlens.core import kernel

    btf = tmp_path / "vmlinux"
    shutil.copy(NEW_BTF, btf)
    monkeypatch.setattr(hooks, "VMLINUX_BTF", str(btf))
    monkeypatch.setattr(kernel, "VMLINUX_BTF", str(btf))
    monkeypatch.setenv("MEMLENS_CACHE_DIR", str(tmp_path / "cache"))
    kernel._btf_names.cache_clear()
    try:
        assert kernel.btf_has_name("task_struct") is True
        assert kernel.btf_has_name("no_such_type_here") is False
        (kept,) = (tmp_path / "cache" / "btf").glob("tp_btf-*.tsv")
        assert hooks.read_answers(str(kept)) == {"name task_struct": [True, ""],
                                                 "name no_such_type_here": [False, ""]}
        kept.write_text(hooks.format_answers({"name no_such_type_here": [True, ""]}))
        hooks.clear_cache()  # the file is read again
        assert kernel.btf_has_name("no_such_type_here") is True
    finally:
        kernel._btf_names.cache_clear()


def test_kernel_answers_are_kept_for_the_boot_and_no_answer_is_not(tmp_path, monkeypatch):
    """A probe of the running kernel (a helper, a map flag: a program loaded each, 0.2-0.5
    ms) is asked once a boot: its yes or no is read back from the answers file, in this
    process and the next; a probe that could not answer (None) is asked again."""
    import shutil

    btf = tmp_path / "vmlinux"
    shutil.copy(NEW_BTF, btf)
    monkeypatch.setattr(hooks, "VMLINUX_BTF", str(btf))
    monkeypatch.setenv("MEMLENS_CACHE_DIR", str(tmp_path / "cache"))
    hooks.clear_cache()
    asked = []

    def probe(answer):
        asked.append(answer)
        return answer

    assert hooks.kernel_answer("helper x", lambda: probe(True)) is True
    assert hooks.kernel_answer("helper x", lambda: probe(False)) is True  # kept
    hooks.clear_cache()  # as the next process: read from the file
    assert hooks.kernel_answer("helper x", lambda: probe(False)) is True
    assert hooks.kernel_answer("flag y", lambda: probe(None)) is False
    assert hooks.kernel_answer("flag y", lambda: probe(False)) is False
    assert asked == [True, None, False]
    (kept,) = (tmp_path / "cache" / "btf").glob("tp_btf-*.tsv")
    assert hooks.read_answers(str(kept)) == {"helper x": [True, ""], "flag y": [False, ""]}
    hooks.clear_cache()


def test_answers_files_round_trip_and_survive_tabs_newlines_and_junk(tmp_path):
    """The answers file is read without json (its import, with re and enum, was 5-20 ms of
    a start): labels and reasons with tabs or newlines are written on one line, and lines
    that are not answers are skipped."""
    answers = {"tp_btf/a(int)": [True, ""], "name x\ty": [False, "no\nsuch\ttype"]}
    path = tmp_path / "answers.tsv"
    path.write_text(hooks.format_answers(answers) + "junk line\n2\tbad\t\n\n")
    assert hooks.read_answers(str(path)) == {"tp_btf/a(int)": [True, ""],
                                             "name x y": [False, "no such type"]}
    assert hooks.read_answers(str(tmp_path / "missing")) == {}


def test_format_field_names_reads_every_field_the_engine_reads():
    """The hook check names the fields the engine's parser reads (tpformat.parse_format),
    on every copied format file; lines it cannot read name nothing."""
    from pathlib import Path

    from memlens.core import tpformat
    from memlens.core.hooks import format_field_names

    paths = list((Path(__file__).parent / "data" / "tracefs").glob("*/*/format"))
    assert len(paths) > 5
    for p in paths:
        text = p.read_text()
        assert format_field_names(text) == {f.name for f in tpformat.parse_format(text).fields}
    odd = ("field:char a[1] b[2];\nfield:int x]y;\nfield:int [;\nfield:;\n"
           "field:__data_loc char[] name;\toffset:8;\tsize:4;\n"
           "field:int 9z;\toffset:12;\tsize:4;\n")
    assert format_field_names(odd) == {"name", "z"}
