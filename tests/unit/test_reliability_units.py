# SPDX-License-Identifier: GPL-2.0-only
"""Issue 11, without the kernel: output paths (FIFOs, devices, symlinks, unwritable places),
signals before attach, a -p target that exits, -c's child outliving memlens, numbers that
are not numbers, wrong exit codes, and stacks left unsymbolized.  Each test fails on the
code before the fix (README "Reliability: what was tried, what happens")."""
from __future__ import annotations

import argparse
import ctypes
import errno
import importlib
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from memlens import registry
from memlens.core import session
from memlens.core.runner import Runner, SignalStop, run_cli
from memlens.errors import MemlensError, NotPermitted, UsageError
from memlens.output import sinks
from memlens.output.files import OutputFile, write_file_atomic

ROOT = os.geteuid() == 0


def _args(**kw):
    base = {"json": False, "folded": False, "html": None, "pprof": None}
    return argparse.Namespace(**{**base, **kw})


# --- 1. output paths never replace what is not a regular file -------------------------------

class TestOutputPaths:
    def test_a_fifo_stays_a_fifo_and_its_reader_gets_the_data(self, tmp_path):
        fifo = tmp_path / "out.fifo"
        os.mkfifo(fifo)
        out = OutputFile(fifo, "--html")
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
        reader.start()
        out.commit(b"<html>flame</html>")
        reader.join(5)
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        assert got == [b"<html>flame</html>"]

    @staticmethod
    def _device(tmp_path, name: str, minor: int) -> str:
        """A character device of our own (mem 1:minor: 3 null, 7 full) in tmp_path: a test
        of code that replaces devices must not be able to replace /dev/null."""
        if not ROOT:
            pytest.skip("mknod needs root")
        path = str(tmp_path / name)
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
        return path

    def test_a_character_device_is_written_not_replaced(self, tmp_path):
        null = self._device(tmp_path, "null", 3)
        write_file_atomic(null, b"data")
        st = os.stat(null)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
        assert sorted(os.listdir(tmp_path)) == ["null"]

    def test_a_full_device_is_one_error_and_stays_a_device(self, tmp_path):
        full = self._device(tmp_path, "full", 7)
        out = OutputFile(full, "--pprof")
        with pytest.raises(MemlensError, match=r"cannot write --pprof .*full: No space"):
            out.commit(b"x" * 100)
        assert stat.S_ISCHR(os.stat(full).st_mode)

    def test_a_symlink_is_followed_and_stays(self, tmp_path):
        target = tmp_path / "real.html"
        target.write_text("old")
        link = tmp_path / "link.html"
        link.symlink_to(target)
        write_file_atomic(link, b"new")
        assert link.is_symlink() and target.read_bytes() == b"new"

    @pytest.mark.skipif(not ROOT, reason="needs root to plant a link owned by another user")
    def test_a_link_planted_by_another_user_in_a_sticky_dir_is_refused(self, tmp_path):
        sticky = tmp_path / "tmp"
        sticky.mkdir()
        sticky.chmod(0o1777)
        victim = tmp_path / "victim"
        victim.write_text("precious")
        link = sticky / "out.html"
        link.symlink_to(victim)
        os.lchown(link, 65534, 65534)
        with pytest.raises(UsageError, match="owned by another user"):
            OutputFile(link, "--html")
        assert victim.read_text() == "precious"

    def test_a_new_file_is_private_whatever_the_umask(self, tmp_path):
        old = os.umask(0)
        try:
            write_file_atomic(tmp_path / "p.pb.gz", b"profile")
        finally:
            os.umask(old)
        assert stat.S_IMODE(os.stat(tmp_path / "p.pb.gz").st_mode) == 0o600

    def test_a_replaced_file_keeps_its_mode_and_owner(self, tmp_path):
        path = tmp_path / "f.html"
        path.write_text("old")
        path.chmod(0o640)
        if ROOT:
            os.chown(path, 65534, 65534)
        write_file_atomic(path, b"new")
        st = os.stat(path)
        assert path.read_bytes() == b"new" and stat.S_IMODE(st.st_mode) == 0o640
        if ROOT:
            assert (st.st_uid, st.st_gid) == (65534, 65534)

    def test_dash_is_standard_output(self, capfdbinary, monkeypatch):
        import io

        buf = io.BytesIO()
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buf))
        write_file_atomic("-", b"<html/>")
        assert buf.getvalue() == b"<html/>"

    @pytest.mark.parametrize("where,needle", [("dir", "is a directory"),
                                              ("blockdev", "block device")])
    def test_directories_and_block_devices_are_refused(self, tmp_path, where, needle):
        if where == "dir":
            path = str(tmp_path)
        else:
            path = next((f"/dev/{n}" for n in sorted(os.listdir("/dev"))
                         if stat.S_ISBLK(os.stat(f"/dev/{n}").st_mode)), None)
            if path is None:
                pytest.skip("no block device in /dev")
        with pytest.raises(UsageError, match=needle):
            OutputFile(path, "--html")

    def test_discard_leaves_the_path_and_the_directory_untouched(self, tmp_path):
        path = tmp_path / "f.html"
        path.write_text("keep")
        OutputFile(path, "--html").discard()
        OutputFile(tmp_path / "new.html", "--html").discard()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f.html"]
        assert path.read_text() == "keep"


# --- 2. bad output paths are found before the run -----------------------------------------

class TestOutputPathsBeforeTheRun:
    @pytest.mark.parametrize("path", ["/nonexistent/dir/out.html", "/proc/memlens.html"])
    def test_an_unusable_path_is_a_usage_error_when_the_sink_is_made(self, path):
        with pytest.raises(UsageError, match="--html") as info:
            sinks.make_sink(_args(html=path), None)
        assert info.value.exit_code == 2

    def test_a_failed_run_writes_nothing(self, tmp_path):
        sink = sinks.make_sink(_args(pprof=str(tmp_path / "p.pb.gz")), None)
        sink.discard()
        assert list(tmp_path.iterdir()) == []


# --- 3. signals during start-up -----------------------------------------------------------

class _SlowStart:
    what, name = "slow", "slow"

    def __init__(self, stop: threading.Event):
        self.stop, self.calls = stop, []

    def start(self):
        self.calls.append("start")
        self.stop.set()  # a Ctrl-C while libbpf loads

    def poll(self, timeout):
        return []

    def report(self, final):
        self.calls.append("report")
        return [{"type": "report", "entries": []}]

    def summary(self):
        self.calls.append("summary")
        return []

    def close(self):
        self.calls.append("close")


def test_a_stop_before_attach_gives_no_banner_no_report_and_closes():
    runner = Runner()
    tool, ready = _SlowStart(runner.stop), []
    runner.run(tool, lambda r: None, ready.append)
    assert tool.calls == ["start", "close"] and ready == [] and not runner.attached


def test_run_cli_exits_130_before_attach_and_writes_no_file(tmp_path):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    path = tmp_path / "fg.html"
    sink = sinks.make_sink(_args(html=str(path)), None)

    class Interrupted(_SlowStart):
        def start(self):
            self.calls.append("start")
            signal.raise_signal(signal.SIGINT)  # handled: only sets the stop Event

    before = signal.getsignal(signal.SIGINT)
    tool = Interrupted(threading.Event())
    assert run_cli(tool, argparse.Namespace(), sink) == 130
    assert tool.calls == ["start", "close"]
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is before


def test_signal_handlers_only_count_and_set_the_event():
    s = SignalStop()
    s._handler(signal.SIGTERM, None)
    s._handler(signal.SIGINT, None)
    assert s.is_set() and s.count == 2 and s.exit_code == 128 + signal.SIGTERM
    assert s.wait(0)  # a waiting thread's event, made now, is already set


def test_a_keyboardinterrupt_in_libbpfs_print_callback_never_unwinds_into_c(monkeypatch):
    from memlens.core import libbpf

    class Raising:
        def vsnprintf(self, *a):
            raise KeyboardInterrupt

    unraisable: list = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    monkeypatch.setattr(libbpf, "_libc", Raising())
    fmt = ctypes.c_char_p(b"libbpf: %s\n")
    # called through its C function pointer, as libbpf calls it
    assert libbpf._print_cb(libbpf.LIBBPF_WARN, fmt.value, 0) == 0
    assert unraisable == []
    with pytest.raises(KeyboardInterrupt):
        libbpf.raise_deferred_interrupt()  # raised once libbpf has returned
    libbpf.raise_deferred_interrupt()  # and only once


def test_the_command_line_installs_its_handlers_before_importing_anything_heavy():
    # `python -m memlens`: by the time the registry (hooks, kernel probing) is imported,
    # SIGTERM is already handled by memlens (a Ctrl-C then cannot be a traceback)
    code = textwrap.dedent("""
        import signal, sys, runpy
        import builtins
        real = builtins.__import__
        seen = {}
        def spy(name, *a, **k):
            if name == "memlens.registry" or (name == "memlens" and a and a[2]
                                              and "registry" in a[2]):
                seen.setdefault("handler", signal.getsignal(signal.SIGTERM))
            return real(name, *a, **k)
        builtins.__import__ = spy
        sys.argv = ["memlens", "--version"]
        try:
            runpy.run_module("memlens", run_name="__main__", alter_sys=True)
        except SystemExit:
            pass
        print(getattr(seen.get("handler"), "__self__", None).__class__.__name__)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out[-1] == "SignalStop"


# --- 4. a -p target that exits ends the run ------------------------------------------------

def test_target_exit_is_seen_through_a_pidfd_and_the_runner_says_so():
    child = subprocess.Popen(["sleep", "0.2"])
    target = session.TargetExit(child.pid)
    assert not target.exited()

    class Tool(_SlowStart):
        def start(self):
            self.calls.append("start")

        @property
        def finished(self):
            return target.exited()

        finish_reason = property(lambda self: target.reason)

    tool, notes = Tool(threading.Event()), []
    child.wait()
    runner = Runner(duration=5)
    t0 = time.monotonic()
    runner.run(tool, lambda r: None, None, notes.append)
    assert time.monotonic() - t0 < 1
    assert notes == [f"PID {child.pid} exited: final report"]
    assert tool.calls == ["start", "report", "summary", "close"]
    target.close()


def test_a_tool_with_p_that_says_nothing_is_ended_by_run_cli_when_its_target_exits():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    child = subprocess.Popen(["sleep", "0.3"])

    class Plain(_SlowStart):  # no `finished`: a tool written before (or without) it
        def start(self):
            self.calls.append("start")

    tool = Plain(threading.Event())
    t0 = time.monotonic()
    rc = run_cli(tool, argparse.Namespace(pid=child.pid, duration=30), sinks.Sink(None))
    child.wait()
    assert rc == 0 and time.monotonic() - t0 < 5
    assert tool.calls == ["start", "report", "summary", "close"]


def test_counting_tools_and_the_snoops_finish_when_their_target_exits():
    from memlens.core.countingtool import CountingTool

    for cls in (CountingTool,):
        assert isinstance(getattr(cls, "finished", None), property), cls
    from memlens.tools.mmapsnoop import MmapsnoopTool
    from memlens.tools.oomkill import OomkillTool

    for cls in (OomkillTool, MmapsnoopTool):
        tool = cls(argparse.Namespace(pid=None, name=None, cgroup=None))
        assert tool.finished is False  # no -p: never


# --- 5. -c's child does not outlive memlens ----------------------------------------------

def test_the_traced_command_dies_with_memlens():
    code = textwrap.dedent("""
        import sys, time
        from memlens.core.command import TracedCommand
        c = TracedCommand(["sleep", "60"], on_exit=lambda: None)
        c.release()
        print(c.pid, flush=True)
        time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(holder.stdout.readline())
    try:
        holder.kill()  # SIGKILL: no cleanup code of ours runs
        holder.wait(10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.02)
        assert not _alive(child), "the command outlived memlens"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def _alive(pid: int) -> bool:
    return session.process_alive(pid)


# --- 6. numbers that are not numbers -------------------------------------------------------

BAD_NUMBERS = ["nan", "inf", "-inf", "1e400", "1e20", "-1", "", "  ", "0x", "abc"]
NUMERIC_DESTS = {"duration", "interval", "interval_pos", "count", "count_pos", "max_events",
                 "top", "summary_top", "max_keys", "max_allocs", "stack_storage_size",
                 "sample_rate", "pid", "older", "min_size", "max_size"}


def _parsers():
    from memlens.cli import build_parser

    for tool in registry.TOOLS:
        if not tool.bpf:
            continue  # check/top/pmap validate in run(); their tests are in checklist's
        command = importlib.import_module(tool.module).COMMAND
        yield tool.name, build_parser(tool.name, command)


def test_every_duration_interval_and_count_option_uses_the_one_validator():
    seen = 0
    for name, parser in _parsers():
        for action in parser._actions:
            numeric = action.dest in NUMERIC_DESTS or any(
                w in action.dest for w in ("duration", "interval", "count", "delay", "top",
                                           "max_", "period", "timeout", "size"))
            if numeric and action.type in (float, int):
                pytest.fail(f"{name} {action.option_strings or action.dest}: type "
                            f"{action.type.__name__} accepts nan/inf: use core/session's")
            if action.dest not in NUMERIC_DESTS or action.type is None:
                continue
            seen += 1
            for text in BAD_NUMBERS:
                with pytest.raises((argparse.ArgumentTypeError, ValueError)):
                    action.type(text)
    assert seen >= 30  # every tracing tool has -d, and most an interval and a count


def test_durations_intervals_and_counts_have_sane_bounds():
    assert session.seconds("0.5") == 0.5 and session.seconds("86400") == 86400
    for bad in ("nan", "inf", "1e400", "0", "-1", "1e20", "3e7x"):
        with pytest.raises(argparse.ArgumentTypeError):
            session.seconds(bad)
    assert session.count("23") == 23
    for bad in ("0", "-5", "2147483648", "1.5", "nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            session.count(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="hash map"):
        session.map_entries(str(session.MAP_ENTRIES_MAX + 1))
    for bad in ("0", "-1", "4194305", "1e3"):
        with pytest.raises(argparse.ArgumentTypeError):
            session.pid_arg(bad)


def test_an_empty_cgroup_or_output_path_is_refused_everywhere():
    seen = 0
    for name, parser in _parsers():
        for action in parser._actions:
            if action.dest in ("cgroup", "html", "pprof"):
                seen += 1
                assert action.type is not None, f"{name} --{action.dest}"
                with pytest.raises(argparse.ArgumentTypeError):
                    action.type("")
    assert seen >= 10


# --- 7. wrong codes and untrue messages ----------------------------------------------------

def test_unbalanced_quotes_in_c_are_a_usage_error():
    from memlens.core.command import split_command

    with pytest.raises(UsageError, match="no closing quotation"):
        split_command('unbalanced "q')
    assert split_command("ls -l 'a b'") == ["ls", "-l", "a b"]


def test_a_missing_allocator_symbol_is_a_usage_error():
    from memlens.tools.memleak.probes import MissingSymbol

    assert MissingSymbol("x").exit_code == 2


def test_a_mounted_but_unreadable_tracefs_is_not_permitted_not_missing(monkeypatch):
    from memlens.core import kernel

    monkeypatch.setattr(kernel, "tracefs_path", lambda: None)
    monkeypatch.setattr(kernel, "_mounts", lambda: [("/sys/kernel/tracing", "tracefs")])
    monkeypatch.setattr(kernel.os, "access", lambda p, m: False)
    with pytest.raises(NotPermitted, match="mounted at /sys/kernel/tracing but not readable"
                       ) as info:
        kernel.ensure_tracefs()
    assert info.value.exit_code == 3 and "CAP_DAC_READ_SEARCH" in str(info.value)


def test_a_map_size_the_kernel_refuses_names_the_option(monkeypatch):
    from memlens.core import libbpf as L
    from memlens.core import loader

    obj = loader.BpfObject.__new__(loader.BpfObject)
    obj._sized = {"allocs": ("--max-allocs", 200_000_000)}
    obj._map_ptrs = {"allocs": 1}

    class Lib:
        def bpf_map__type(self, ptr):
            return L.BPF_MAP_TYPE_HASH

    monkeypatch.setattr(L, "lib", lambda: Lib())
    monkeypatch.setattr(L, "peek_logs", lambda *a: [
        "libbpf: map 'allocs': failed to create: Argument list too long(-7)"])
    monkeypatch.setattr(L, "take_logs", lambda *a: [])
    err = obj._map_size_error(-errno.E2BIG)
    assert isinstance(err, UsageError)
    assert "--max-allocs 200000000 is too large" in str(err)
    assert str(session.MAP_ENTRIES_MAX) in str(err)


# --- 8. stacks left unsymbolized are counted ----------------------------------------------

def test_a_stack_of_a_process_gone_before_its_symbols_were_read_is_a_loss():
    from memlens.core.stackresolve import LOST_SYMBOLS_UNMAPPED, StackResolver

    malloc = ctypes.cast(ctypes.CDLL(None).malloc, ctypes.c_void_p).value

    class Stacks:
        def stack(self, sid):
            return [malloc + 4] if sid == 8 else [0x1000 + sid, 0x2000]

    gone = subprocess.Popen(["true"])
    gone.wait()
    res = StackResolver(Stacks())
    frames = res.user_frames(gone.pid, 7)
    assert all(f.symbol is None for f in frames)
    res.user_frames(gone.pid, 7)  # cached: not counted twice
    assert res.new_losses() == [{"type": "lost", "what": "symbols",
                                 "reason": "process gone before its symbols were read",
                                 "count": 1, "total": 1}]
    assert res.new_losses() == []
    assert res.lost_symbols == 1
    res.user_frames(os.getpid(), 8)  # a live process: symbolized, nothing lost
    assert res.new_losses() == []
    res.user_frames(os.getpid(), 9)  # alive, but the addresses are in none of its mappings
    assert [r["reason"] for r in res.new_losses()] == [LOST_SYMBOLS_UNMAPPED]
    assert res.lost_symbols == 2



def test_background_step_shortens_the_switch_interval_until_its_result():
    """runner.Background: from start() to result() the GIL's switch interval is short (the
    main thread's short libbpf calls get the GIL back quickly), then as it was, also when
    the step raised (its error handed to the main thread)."""
    import sys

    import pytest

    from memlens.core.runner import Background

    before = sys.getswitchinterval()
    seen = []

    def step() -> None:
        seen.append(sys.getswitchinterval())
        raise ValueError("the step's own error")

    bg = Background(step, "test-step")
    bg.start()
    with pytest.raises(ValueError, match="the step's own error"):
        bg.result()
    assert seen == [min(before, Background.SWITCH_S)]
    assert sys.getswitchinterval() == before
    bg.restore_switch()  # idempotent
    assert sys.getswitchinterval() == before
