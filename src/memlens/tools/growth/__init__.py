# SPDX-License-Identifier: GPL-2.0-only
"""growth: why does this process's RSS keep growing?

Every interval, the process's RSS split as the kernel counts it (RssAnon, RssFile and
RssShmem of /proc/PID/status) with how much each grew since the last interval, beside the
user stacks of the page faults that brought new pages in, ranked by pages faulted.  At the
end, a summary of which paths faulted how much over the run, against the growth of each
kind of RSS.

The faults come from the counting engine (core/engine.py): the perf software event
page-faults on every CPU, for this PID only, keyed by user stack and by the kind of mapping
holding the fault address (bpf_find_vma in the kernel: anonymous, file, hugetlb; a file on
tmpfs, memfd or SysV shm is counted here as shmem, as RssShmem counts it).  No kprobe.

`-c CMD` runs the command, held until the probes are attached (core/command.TracedCommand:
a fork that waits on a pipe, ptrace-seized to see its exit); its RSS starts from zero at its
exec.
The fork's faults before the exec are told apart by its comm, renamed for the fork.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
import time

from memlens.core.command import split_command
from memlens.core.session import (
    add_common_options,
    map_entries,
    pid_arg,
    positive_float,
    positive_int,
)
from memlens.errors import UsageError
from memlens.output.sinks import add_output_options, check_output_options

from .paths import PathTable, Rss, kind_of, render_report, render_summary

TYPE_CHECKING = False  # argparse costs ~16-20 ms of start-up (issue 12): for annotations only
if TYPE_CHECKING:
    import argparse
    from typing import Any  # typing (with re and enum): ~16 ms of the start here

EXAMPLES = """\
examples:
  memlens growth -p 1234          # every second: RSS by kind, the fault paths
  memlens growth -p 1234 5 12     # every 5 s, 12 times
  memlens growth -c "python3 build.py" --html growth.html   # from its exec
  memlens growth -p 1234 -d 60 --json > growth.ndjson
  memlens growth -p 1234 -t 10 -T 20  # 10 paths per interval, 20 at the end

output:
  TIME         RSS    ANON   +ANON    FILE   +FILE   SHMEM  +SHMEM FAULTED
  14:02:11   34.9M   32.1M  +12.0M   2.77M      +0       0      +0    3072
      PAGES KIND  PATH (leaf first; pages faulted, not kept)
       2304 anon  grow_fast < main < __libc_start_call_main
        768 anon  grow_slow < main < __libc_start_call_main

PAGES are page faults counted by user stack.  A fault brings in one page
(4 KiB) in the common case, but faults are not pages kept: a page faulted and
then unmapped, freed or reclaimed is still counted; a write after a read of
untouched memory faults twice for one page; a read fault on a file mapping maps
up to 16 pages (fault-around), a THP fault 512.  So set a path's pages against
the RSS growth of its kind, as the summary does (SHARE; PEAK: memory let go).
KIND is the mapping faulted in: anon, file, shmem (tmpfs, memfd, SysV shm) or
hugetlb; a write to a private file mapping (a program's data) grows RssAnon.
Stacks are frame-pointer walks: code built without frame pointers (Debian's
libc, Python) gives short stacks; a 1-2 frame stack that ends outside the main
program, or a walk that reaches an unmapped address, is marked truncated.
Only the process is counted (its threads, not its children).  --folded and
--html hold the whole run: comm;kind;root;...;leaf PAGES.
"""

PREEXEC_COMM = b"memlens-prexec"  # the -c fork's comm until it execs the command
PR_SET_NAME, PR_GET_NAME = 15, 16


class GrowthCommand:
    name = "growth"
    summary = "Why RSS grows: anon/file/shmem growth and the fault paths behind it."
    description = ("Why RSS grows: every interval, a process's RSS by kind (anon, file, shmem)\n"
                   "and its growth, tied to the user stacks of the page faults that brought\n"
                   "pages in; at the end, which paths faulted how much over the run.")
    epilog = EXAMPLES

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("-p", "--pid", type=pid_arg, metavar="PID",
                            help="the process to watch (its threads too)")
        target.add_argument("-c", "--command", metavar="CMD",
                            help="run CMD (quoted, with its arguments), watched from its exec; "
                                 "end when it ends (with --json/--folded its stdout goes to "
                                 "our stderr)")
        add_common_options(parser, pid=False, cgroup=False, json=False)
        parser.add_argument("-t", "--top", type=positive_int, default=5, metavar="N",
                            help="paths shown per interval (default 5)")
        parser.add_argument("-T", "--summary-top", type=positive_int, default=10, metavar="N",
                            help="paths shown in the summary (default 10)")
        parser.add_argument("--max-keys", type=map_entries, default=10240, metavar="N",
                            help="size of the in-kernel count table (default 10240)")
        add_output_options(parser, folded=True, html=True, pprof=True)
        from memlens.core.unwind import add_stack_unwind_option

        add_stack_unwind_option(parser)
        parser.add_argument("interval", nargs="?", type=positive_float, default=1.0,
                            help="seconds between reports (default 1)")
        parser.add_argument("count", nargs="?", type=positive_int, default=None,
                            help="number of reports, then exit (with the summary)")

    def run(self, args: argparse.Namespace) -> int:
        from memlens.core.lazy import prefetch_numpy
        from memlens.core.runner import run_cli
        from memlens.output.sinks import JsonSink, Sink

        check_output_options(args)
        if args.command is not None:
            split_command(args.command)  # exit 2 for '' or unbalanced quotes
        prefetch_numpy()
        tool = GrowthTool(args)
        if args.json:
            sink: Sink = JsonSink()
        else:
            sink = Sink(None if args.folded else render_text)
        if args.folded or args.html or args.pprof:
            sink.side.append(_RunFiles(args, tool, sink.stream))
        return run_cli(tool, args, sink)


def render_text(rec: dict) -> None:
    kind = rec.get("type")
    if kind == "report":
        print("\n".join(["", *render_report(rec)]), flush=True)
    elif kind == "summary":
        print("\n".join(render_summary(rec)), flush=True)


class GrowthTool:
    """The runner protocol (core/runner.py): start() attaches the engine for the PID (and
    forks -c's command), poll() reads the process's RSS every poll so that the last figure
    before it exits is known, report() sets the interval's RSS growth beside its fault
    paths, summary() does the same for the whole run."""

    name = "growth"

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.pid: int | None = args.pid
        self.what = ""
        self.engine = None
        self.child = None
        self.page_size = os.sysconf("SC_PAGE_SIZE")
        self.start_time = time.monotonic()
        self.start_rss: Rss | None = None
        self.prev_rss: Rss | None = None
        self.last_rss: Rss | None = None
        self.peak_rss = Rss()        # each kind's largest sample (every poll, ~20 a second)
        self.peak_total = 0
        self.vm_hwm = 0              # the kernel's own peak RSS (VmHWM), since the exec
        self.comm = ""
        self.main_module: str | None = None
        self.run_paths = PathTable()
        self.prexec_pages = 0
        self.tmpfs: tuple[str, ...] = ()
        self._gone = False
        # -c: the command stopped at its exit (tracer thread) until we read its last RSS
        self._exit_req = threading.Event()
        self._exit_ack = threading.Event()

    # -- runner protocol -----------------------------------------------------------------
    def start(self) -> None:
        from memlens import registry
        from memlens.checklist import procfs
        from memlens.core.engine import Engine
        from memlens.core.hooks import choose
        from memlens.core.privileges import require_tracing_privileges
        from memlens.core.probespec import parse_all
        from memlens.core.session import check_pid_exists

        require_tracing_privileges(self.name)
        hook = choose(registry.hooks_of(self.name), self.name)  # exit 4 names it
        self.tmpfs = tuple(m.target for m in procfs.read_mounts() if m.fstype == "tmpfs")
        if self.args.command is None:
            check_pid_exists(self.pid)
            self._sample()
            if self.last_rss is None:
                raise UsageError(f"PID {self.pid} has no memory (a kernel thread or a zombie)")
        event = hook.hooks[0] if hasattr(hook, "hooks") else hook  # AllOf(perf event, helper)
        probes = parse_all([f"sw:{event.name}"])
        # comm: an exec under the PID is seen (a fresh map for its stacks; -c's fork left
        # out); file: a file mapping on tmpfs/memfd is shmem
        self.engine = Engine(probes, keys=("pid", "comm", "ustack", "vma", "file"),
                             max_keys=self.args.max_keys,
                             stack_unwind=getattr(self.args, "stack_unwind", "auto"))
        files = None
        if self.args.command is not None:
            from memlens.core.command import command_libraries

            self._fork_command()
            # the files the command will map: their unwind tables loaded before it runs,
            # so its first faults' stacks are whole (walked by frame pointers until its
            # tables loaded, they ended at libc's start of main: paths split in two)
            import shutil  # (with its imports, ~10 ms: only for a command)

            files = command_libraries(shutil.which(split_command(self.args.command)[0]))
        self.engine.start(pid=self.pid, command_files=files)
        if self.child is not None and self.engine.unwind is not None:
            from memlens.core.command import unwind_at_exec

            self.child.on_exec = unwind_at_exec(self.engine.unwind)  # each image it execs
        if self.args.command is None:
            self._sample()
        self.start_rss = self.prev_rss = self.last_rss or Rss()
        self.start_time = time.monotonic()
        if self.child is not None:
            argv = split_command(self.args.command)
            name = os.path.basename(argv[0]) + (" ..." if len(argv) > 1 else "")
            who = f"command {name!r} (PID {self.pid})"
        else:
            who = f"PID {self.pid} ({self.comm})"
        self.what = f"RSS growth and page faults by user stack of {who}"

    def _fork_command(self) -> None:
        from memlens.core.command import TracedCommand

        argv = split_command(self.args.command)
        import shutil

        if not shutil.which(argv[0]):
            raise UsageError(f"-c: command not found: {argv[0]!r}")
        # The fork is traced from before its exec (the probes must be attached when the
        # command starts): give it a comm of its own so that its faults, made in a copy of
        # this Python, are told from the command's.  prctl names the calling thread, and a
        # fork takes the forking thread's name.
        libc = ctypes.CDLL(None, use_errno=True)
        old = ctypes.create_string_buffer(16)
        libc.prctl(PR_GET_NAME, old, 0, 0, 0)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(PREEXEC_COMM), 0, 0, 0)
        try:
            self.child = TracedCommand(argv, on_exit=self._at_exit,
                                stdout_to_stderr=bool(self.args.json or self.args.folded))
        finally:
            libc.prctl(PR_SET_NAME, old, 0, 0, 0)
        self.pid = self.child.pid

    def _at_exit(self) -> None:
        """Tracer thread, the command stopped at its exit with its memory still mapped:
        hold it until the main thread has read its last RSS and its new stacks."""
        self._exit_req.set()
        self._exit_ack.wait(2.0)

    def poll(self, timeout: float) -> list[dict]:
        assert self.engine is not None
        if self.child is not None and self.child.held():
            self.child.release()  # after the banner: the command starts traced
        self.engine.poll(min(timeout, 0.05))
        self._sample()
        if self._exit_req.is_set() and not self._exit_ack.is_set():
            self.engine.poll(0)  # stacks of new keys resolved while the map is there
            self._sample()
            self._exit_ack.set()
        return self._lost()

    def _lost(self) -> list[dict]:
        assert self.engine is not None
        return [*self.engine.lost()]

    @property
    def finished(self) -> bool:
        if self.child is not None:
            return self.child.exited()
        return self._gone

    @property
    def finish_reason(self) -> str | None:
        return None if self.child is not None else f"PID {self.pid} exited"

    def _sample(self) -> None:
        """The process's RSS now, kept as the last figure while it has memory."""
        from memlens.checklist import procfs

        status = procfs.read_pid_status(self.pid) if self.pid else None
        if status is None:
            self._gone = True
            return
        name = str(status.get("Name", ""))
        if self.child is not None and name == PREEXEC_COMM.decode():
            return  # not exec'd yet: a copy of this Python
        rss = Rss.from_status(status)
        if rss is None:
            self._gone = True  # a zombie
            return
        self.last_rss, self.comm = rss, name
        self.peak_rss = self.peak_rss.max(rss)
        self.peak_total = max(self.peak_total, rss.total)
        hwm = status.get("VmHWM")
        self.vm_hwm = hwm if isinstance(hwm, int) else self.vm_hwm
        try:
            self.main_module = os.path.basename(os.readlink(f"/proc/{self.pid}/exe"))
        except OSError:
            pass

    def _interval_paths(self) -> PathTable:
        assert self.engine is not None
        table = PathTable()
        for e in self.engine.collect():
            p = e.parts
            if self.child is not None and p.get("comm") == PREEXEC_COMM.decode():
                self.prexec_pages += e.count
                continue
            table.add(tuple(p.get("ustack") or ()), kind_of(p["vma"], p.get("file", ""),
                                                            self.tmpfs),
                      p.get("file", ""), e.count)
        return table

    def _rss_fields(self, rss: Rss, prefix: str) -> dict[str, int]:
        return {f"{prefix}_bytes": rss.total, f"{prefix}_anon_bytes": rss.anon,
                f"{prefix}_file_bytes": rss.file, f"{prefix}_shmem_bytes": rss.shmem,
                f"{prefix}_hugetlb_bytes": rss.hugetlb}

    def report(self, final: bool) -> list[dict]:
        table = self._interval_paths()
        self.run_paths.merge(table)
        now = self.last_rss or Rss()
        grew = now.minus(self.prev_rss or Rss())
        self.prev_rss = now
        top = table.records(self.page_size, self.main_module, self.args.top)
        rec: dict[str, Any] = {
            "type": "report", "time": time.strftime("%H:%M:%S"), "timestamp": time.time(),
            "final": final, "interval_s": self.args.interval, "pid": self.pid,
            "comm": self.comm, "alive": not self.finished,
            **self._rss_fields(now, "rss"),
            "growth_bytes": grew.total, "growth_anon_bytes": grew.anon,
            "growth_file_bytes": grew.file, "growth_shmem_bytes": grew.shmem,
            "growth_hugetlb_bytes": grew.hugetlb,
            "faulted_pages": table.total(), "faulted_pages_by_vma": table.by_kind(),
            "paths": top, "paths_total": len(table),
            "other_pages": table.total() - sum(p["pages"] for p in top),
        }
        return [*self._lost(), rec]

    def summary(self) -> list[dict]:
        start, end = self.start_rss or Rss(), self.last_rss or Rss()
        grew = end.minus(start)
        peak = self.peak_rss.max(start)
        paths = self.run_paths.records(self.page_size, self.main_module,
                                       self.args.summary_top, peak_growth=peak.minus(start))
        rec: dict[str, Any] = {
            "type": "summary", "pid": self.pid, "comm": self.comm,
            "duration_s": round(time.monotonic() - self.start_time, 3),
            "page_size": self.page_size,
            **self._rss_fields(start, "rss_start"), **self._rss_fields(end, "rss_end"),
            # each kind's peak as sampled (every ~50 ms); the total's peak is the largest
            # sampled sum; vm_hwm_bytes is the kernel's high-water mark (VmHWM)
            **self._rss_fields(peak, "rss_peak"),
            "rss_peak_bytes": max(self.peak_total, start.total), "vm_hwm_bytes": self.vm_hwm,
            "growth_bytes": grew.total, "growth_anon_bytes": grew.anon,
            "growth_file_bytes": grew.file, "growth_shmem_bytes": grew.shmem,
            "growth_hugetlb_bytes": grew.hugetlb,
            "faulted_pages": self.run_paths.by_kind(),
            "faulted_pages_total": self.run_paths.total(),
            "paths": paths, "paths_total": len(self.run_paths),
            "other_pages": self.run_paths.total() - sum(p["pages"] for p in paths),
            "lost": self.engine.total_lost() if self.engine is not None else {},
            "probes": [p.text for p in self.engine.probes] if self.engine else [],
        }
        if self.child is not None:
            rec["command"] = self.args.command
            rec["prexec_pages"] = self.prexec_pages
            if self.child.status is not None:
                rec["command_status"] = os.waitstatus_to_exitcode(self.child.status)
        return [rec]

    def close(self) -> None:
        self._exit_ack.set()  # never hold the command at its exit past our end
        try:
            if self.engine is not None:
                self.engine.close()
        finally:
            if self.child is not None:
                self.child.end()


class _RunFiles:
    """Sink side writer for --folded (stdout, at the end), --html and --pprof: the fault
    paths of the whole run, every path (not the top N), weighted by pages faulted, rooted at
    comm and the mapping kind."""

    def __init__(self, args: argparse.Namespace, tool: GrowthTool, stream):
        from memlens.output.files import OutputFile

        self.args, self.tool, self.stream = args, tool, stream
        # checked and opened now, before tracing: a bad path is exit 2, not a lost graph
        self.html = OutputFile(args.html, "--html") if args.html else None
        self.pprof = OutputFile(args.pprof, "--pprof") if args.pprof else None

    def add(self, record: dict) -> None:
        pass  # the records hold the top N; the tool holds every path

    def discard(self) -> None:
        for out in (self.html, self.pprof):
            if out is not None:
                out.discard()

    def write(self) -> None:
        t = self.tool
        entries = t.run_paths.folded(t.comm, t.main_module)
        if self.args.folded:
            from memlens.output.folded import write_folded

            write_folded(self.stream, entries)
        if self.html is not None:
            from memlens.output.flamegraph import write_html

            write_html(self.html, entries, count_name="pages faulted",
                       title=f"memlens growth: page faults by path, PID {t.pid} ({t.comm})")
            print(f"memlens: wrote {self.args.html}", file=sys.stderr, flush=True)
        if self.pprof is not None:
            from memlens.output.pprof import write_profile

            # the frames themselves (core/stacks.FrameText: addresses and mappings, for
            # pprof to symbolize again), then the mapping kind and comm as root frames
            samples = [([getattr(f, "frame", None) or f for f in stack], kind, n)
                       for stack, kind, _file, n in t.run_paths.ranked() if n]
            write_profile(self.pprof, [("pages", "count")],
                          [(frames + [kind, t.comm or "?"], [n]) for frames, kind, n in samples])
            print(f"memlens: wrote {self.args.pprof}", file=sys.stderr, flush=True)


COMMAND = GrowthCommand()
