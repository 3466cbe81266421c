# SPDX-License-Identifier: GPL-2.0-only
"""The counting tools without a kernel: text renderers on report records recorded from
real runs (golden text, under 80 columns), count's --by parsing, probe spec errors and the
kprobe fallback message, and the function name of a printed frame."""
from __future__ import annotations

import subprocess

import pytest

from memlens.core import kernel, probespec
from memlens.core.countingtool import render_stacks, render_table
from memlens.core.engine import Engine
from memlens.errors import KernelLacks, UsageError
from memlens.output.folded import frame_name, read_folded
from memlens.output.sinks import FoldedSink, folded_entries
from memlens.tools.count import COMMAND as COUNT
from tests.conftest import memlens_cmd

# -- records as the tools wrote them (--json), trimmed ----------------------------------------

FUNCCOUNT_REPORT = {
    "type": "report", "time": "10:47:38", "timestamp": 1796122058.0, "final": True,
    "interval_s": None,
    "entries": [{"probe": "t:syscalls:sys_enter_getppid", "count": 23},
                {"probe": "t:syscalls:sys_enter_getpriority", "count": 4099}]}

COUNT_REPORT = {
    "type": "report", "time": "10:48:06", "timestamp": 1796122086.0, "final": False,
    "interval_s": 1.0,
    "entries": [{"comm": "syscall_loop", "pid": 12816, "count": 23},
                {"comm": "syscall_loop", "pid": 12817, "count": 31},
                {"comm": "touch_pages", "pid": 13208, "count": 4099}]}

SUM_REPORT = {
    "type": "report", "time": "10:48:39", "timestamp": 1796122119.7, "final": True,
    "interval_s": None, "entries": [{"pid": 14661, "count": 23, "sum": 96468992}]}

FIELD_REPORT = {
    "type": "report", "time": "10:48:40", "timestamp": 1796122120.0, "final": True,
    "interval_s": None,
    "entries": [{"pid": 14661, "behavior": 14, "count": 23},
                {"pid": 14661, "behavior": 0, "count": 31}]}

PPID_STACK = ["ppid_level2+0x1d [syscall_loop]", "ppid_level1+0x9 [syscall_loop]",
              "main+0x112 [syscall_loop]", "__libc_start_call_main+0x7a [libc.so.6]"]
KERNEL_STACK = ["syscall_trace_enter+0x180", "do_syscall_64+0x20f",
                "entry_SYSCALL_64_after_hwframe+0x76"]

STACK_REPORT = {
    "type": "report", "time": "10:47:46", "timestamp": 1796122066.0, "final": True,
    "interval_s": None,
    "entries": [
        {"pid": 12877, "comm": "touch_pages", "stack": ["[missed user stack]"],
         "user_stack": ["[missed user stack]"], "count": 2},
        {"pid": 12876, "comm": "syscall_loop", "stack": KERNEL_STACK + PPID_STACK,
         "kernel_stack": KERNEL_STACK, "user_stack": PPID_STACK, "count": 23}]}


def _render(fn, *args, **kw) -> str:
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        fn(*args, **kw)
    return out.getvalue()


# -- render_table -----------------------------------------------------------------------------

def test_funccount_table_golden():
    text = _render(render_table, FUNCCOUNT_REPORT, interval=False, titles={"probe": "FUNC"})
    assert text == (
        "FUNC                             COUNT\n"
        "t:syscalls:sys_enter_getppid        23\n"
        "t:syscalls:sys_enter_getpriority  4099\n")


def test_count_table_golden_with_interval_header():
    text = _render(render_table, COUNT_REPORT, interval=True)
    assert text == (
        "\n"
        "[10:48:06]\n"
        "COMM           PID COUNT\n"
        "syscall_loop 12816    23\n"
        "syscall_loop 12817    31\n"
        "touch_pages  13208  4099\n")
    assert all(len(line) < 80 for line in text.splitlines())


def test_sum_and_field_columns_golden():
    assert _render(render_table, SUM_REPORT, interval=False) == (
        "  PID COUNT      SUM\n"
        "14661    23 96468992\n")
    assert _render(render_table, FIELD_REPORT, interval=False) == (
        "  PID BEHAVIOR COUNT\n"
        "14661       14    23\n"
        "14661        0    31\n")


def test_empty_report():
    empty = {**COUNT_REPORT, "entries": []}
    assert _render(render_table, empty, interval=True) == "\n[10:48:06]\n  (no events)\n"
    assert _render(render_table, empty, interval=False) == ""
    assert _render(render_table, {"type": "lost", "count": 3}, interval=True) == ""


def test_hostile_comm_is_escaped_in_the_table():
    rec = {**COUNT_REPORT, "entries": [{"comm": "evil\n\x1b[2J", "pid": 1, "count": 1}]}
    text = _render(render_table, rec, interval=False)
    assert text.count("\n") == 2 and "\x1b" not in text
    assert "evil\\x0a\\x1b[2J" in text


def test_long_cgroup_path_fits_80_columns():
    rec = {**COUNT_REPORT, "entries": [
        {"cgroup": "/sys/fs/cgroup/memory/" + "a" * 50 + "/" + "b" * 40, "comm": "bash",
         "count": 3},
        {"cgroup": "/", "comm": "x", "count": 12345}]}
    text = _render(render_table, rec, interval=False)
    assert all(len(line) < 80 for line in text.splitlines()), text


# -- render_stacks ----------------------------------------------------------------------------

def test_stacks_golden():
    text = _render(render_stacks, STACK_REPORT, interval=False)
    assert text == (
        "  [missed user stack]\n"
        "    touch_pages [12877]\n"
        "    2\n"
        "\n"
        "  syscall_trace_enter+0x180\n"
        "  do_syscall_64+0x20f\n"
        "  entry_SYSCALL_64_after_hwframe+0x76\n"
        "  ppid_level2+0x1d [syscall_loop]\n"
        "  ppid_level1+0x9 [syscall_loop]\n"
        "  main+0x112 [syscall_loop]\n"
        "  __libc_start_call_main+0x7a [libc.so.6]\n"
        "    syscall_loop [12876]\n"
        "    23\n"
        "\n")
    assert all(len(line) < 80 for line in text.splitlines())


def test_stacks_without_pid_and_empty_interval():
    rec = {**STACK_REPORT, "entries": [{"comm": "x", "stack": ["f+0x1 [x]"], "count": 5},
                                       {"stack": ["g+0x2 [y]"], "count": 7}]}
    assert _render(render_stacks, rec, interval=True) == (
        "\n[10:47:46]\n  f+0x1 [x]\n    x\n    5\n\n  g+0x2 [y]\n    7\n\n")
    empty = {**STACK_REPORT, "entries": []}
    assert _render(render_stacks, empty, interval=True, what="calls") == \
        "\n[10:47:46]\n  (no calls)\n"
    assert _render(render_stacks, empty, interval=False) == ""


def test_folded_of_a_stack_report_keeps_every_count():
    entries = folded_entries(STACK_REPORT)
    assert [(p, c) for p, _, c in entries] == [(["touch_pages"], 2), (["syscall_loop"], 23)]
    import io

    out = io.StringIO()
    sink = FoldedSink(stream=out)
    sink.emit(STACK_REPORT)
    folded = read_folded(out.getvalue())
    assert sum(folded.values()) == sum(e["count"] for e in STACK_REPORT["entries"])
    assert folded == {
        "touch_pages;[missed user stack]": 2,
        "syscall_loop;__libc_start_call_main;main;ppid_level1;ppid_level2;"
        "entry_SYSCALL_64_after_hwframe;do_syscall_64;syscall_trace_enter": 23}


# -- count --by -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, keys, field", [
    ("comm,pid", ("comm", "pid"), None),
    ("pid", ("pid",), None),
    (" comm , pid ", ("comm", "pid"), None),
    ("pid,pid,comm", ("pid", "comm"), None),
    ("pid,field:behavior", ("pid", "field"), "behavior"),
    ("probe,cgroup,tid,ustack,kstack", ("probe", "cgroup", "tid", "ustack", "kstack"), None),
])
def test_by_parsing(text, keys, field):
    assert COUNT._parse_by(text) == (keys, field)


@pytest.mark.parametrize("text, named", [
    ("comm,bogus", "'bogus'"),
    ("field", "'field'"),          # the bare word: field needs a name
    ("field:", "needs a field name"),
    ("field:a,field:b", "one field key at most"),
    ("", "at least one key"),
    (",,", "at least one key"),
    ("COMM", "'COMM'"),
])
def test_by_errors(text, named):
    with pytest.raises(UsageError) as err:
        COUNT._parse_by(text)
    assert named in str(err.value)
    assert err.value.exit_code == 2
    assert "\n" not in str(err.value)


def test_by_error_from_the_command_line():
    """Before anything privileged happens: exit 2 and one line, no traceback."""
    r = subprocess.run(memlens_cmd("count", "--by", "comm,bogus", "sw:page-faults"),
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2, r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "'bogus'" in line and "field:NAME" in line


# -- the engine's own checks, before any kernel work ------------------------------------------

def test_engine_rejects_what_it_cannot_do():
    sw = probespec.parse("sw:page-faults")
    with pytest.raises(UsageError, match="no probe given"):
        Engine([], keys=("pid",))
    with pytest.raises(UsageError, match="unknown key 'bogus'"):
        Engine(sw, keys=("pid", "bogus"))
    with pytest.raises(UsageError, match="needs tracepoints"):
        Engine(sw, keys=("pid",), sum_field="len_in")
    with pytest.raises(UsageError, match="needs tracepoints"):
        Engine(sw, keys=("pid",), filter="behavior == 14")
    with pytest.raises(UsageError, match="no field 'behavior'"):
        Engine(sw, keys=("field",), field="behavior")
    Engine(sw, keys=("field",), field="addr")     # a perf event's sampled address: allowed
    for bad in (1000, 2048, 3 << 20):  # not a power of two, or under a page
        with pytest.raises(UsageError, match=f"ring size {bad}: a power of two"):
            Engine(sw, keys=(), trace=True, ring_size=bad)
    assert Engine(sw, keys=(), trace=True, ring_size=1 << 16).ring_size == 1 << 16


# -- probe specs ------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, named", [
    ("bogus:x:y", "'bogus:x:y'"),
    ("t:syscalls", "'t:syscalls'"),
    ("t:a:b:c", "'t:a:b:c'"),
    ("u:c", "'u:c'"),
    ("usdt:lib:provider", "'usdt:lib:provider'"),
    ("k:a:b", "'k:a:b'"),
    ("1abc", "'1abc'"),
    ("", "''"),
    ("sw:no-such-event", "unknown software event 'no-such-event'"),
    ("sw:page-faults:0", "period must be > 0"),
    ("sw:page-faults:-5", "period must be > 0"),
    ("sw:page-faults:often", "period 'often' is not an integer"),
    ("u:/no/such/binary:main", "/no/such/binary: no such file"),
    ("u:no_such_lib_xyz:f", "'no_such_lib_xyz': no such library"),
])
def test_probe_spec_errors(spec, named):
    with pytest.raises(UsageError) as err:
        probespec.parse(spec)
    assert named in str(err.value)
    assert err.value.exit_code == 2 and "\n" not in str(err.value)


def test_bad_spec_message_lists_the_forms():
    with pytest.raises(UsageError) as err:
        probespec.parse("bogus:x:y")
    for form in ("t:CATEGORY:EVENT", "sw:EVENT[:PERIOD]", "u:LIB:FUNC",
                 "usdt:LIB:PROVIDER:NAME", "k:FUNC"):
        assert form in str(err.value)


@pytest.mark.parametrize("spec, text, config, period", [
    ("sw:page-faults", "sw:page-faults", 2, 1),
    ("software:page-faults", "sw:page-faults", 2, 1),
    ("sw:faults", "sw:faults", 2, 1),
    ("sw:page-faults:100", "sw:page-faults:100", 2, 100),
    ("sw:major-faults:0x10", "sw:major-faults:16", 6, 16),
    ("sw:cpu-clock", "sw:cpu-clock", 0, 1_000_000),
])
def test_software_specs(spec, text, config, period):
    (p,) = probespec.parse(spec)
    assert (p.kind, p.text, p.config, p.period) == ("perf", text, config, period)


def test_uprobe_spec_with_a_path():
    libc = "/lib/x86_64-linux-gnu/libc.so.6"
    (p,) = probespec.parse(f"u:{libc}:malloc")
    assert (p.kind, p.text, p.binary, p.func) == ("uprobe", f"u:{libc}:malloc", libc, "malloc")
    with pytest.raises(UsageError, match="no function 'main' in /bin/sh"):
        probespec.parse("u:/bin/sh:main")  # dash is stripped: no such symbol


@pytest.fixture
def no_kprobes(monkeypatch):
    monkeypatch.setattr(kernel, "kprobes_supported", lambda: False)


@pytest.mark.parametrize("spec", ["hugepage_madvise", "k:hugepage_madvise",
                                  "kprobe:hugepage_madvise", "p::hugepage_madvise"])
def test_kprobe_without_kprobes_names_the_tracepoint(no_kprobes, spec):
    with pytest.raises(KernelLacks) as err:
        probespec.parse(spec)
    msg = str(err.value)
    assert err.value.exit_code == 4 and "\n" not in msg
    assert msg.startswith("probe k:hugepage_madvise: this kernel has no kprobes")
    assert "t:syscalls:sys_enter_madvise with filter 'behavior == MADV_HUGEPAGE'" in msg


def test_kprobe_message_every_alternative_and_the_generic_hint():
    msg = probespec.kprobe_lacks_message("swap_readpage")
    assert "t:memcg:count_memcg_events with filter 'item == PSWPIN'" in msg
    assert "sw:major-faults (" in msg
    generic = probespec.kprobe_lacks_message("no_such_function")
    assert generic.startswith("probe k:no_such_function: this kernel has no kprobes")
    assert "t:CATEGORY:*" in generic and "sw:page-faults" in generic
    for func in probespec.KPROBE_ALTERNATIVES:
        m = probespec.kprobe_lacks_message(func)
        assert "\n" not in m and "instead: " in m
        for alt, filt, _ in probespec.KPROBE_ALTERNATIVES[func]:
            assert alt in m and (not filt or f"'{filt}'" in m)
            # every alternative is itself a probe spec the tools accept
            assert alt.split(":")[0] in ("t", "sw")


# -- frame_name -------------------------------------------------------------------------------

@pytest.mark.parametrize("printed, name", [
    ("main+0xa7 [prog]", "main"),
    ("ppid_level2+0x1d [syscall_loop]", "ppid_level2"),
    ("__libc_start_call_main+0x7a [libc.so.6]", "__libc_start_call_main"),
    ("do_syscall_64+0x20f", "do_syscall_64"),
    ("ext4_file_write_iter+0x10 [ext4]", "ext4_file_write_iter"),
    ("main", "main"),
    ("main [prog]", "main"),
    ("foo.cold+0x5 [prog]", "foo.cold"),
    ("operator[]+0x5 [libfoo.so]", "operator[]"),
    ("std::string::_M_create[abi:cxx11](unsigned long)+0x10 [libstdc++.so.6]",
     "std::string::_M_create[abi:cxx11](unsigned long)"),
    ("[unknown] [libc.so.6]", "[unknown]"),
    ("0x7f12ab [unknown]", "0x7f12ab"),
    ("[missed user stack]", "[missed user stack]"),
    ("[missed kernel stack]", "[missed kernel stack]"),
])
def test_frame_name(printed, name):
    assert frame_name(printed) == name
