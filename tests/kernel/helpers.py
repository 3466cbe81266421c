# SPDX-License-Identifier: GPL-2.0-only
"""Shared helpers for kernel tests: run a memlens tool in the background, wait for its
banner (all probes attached), stop it with a signal and collect its output; memory cgroups
that are always removed; memory-cgroup reclaim made for drsnoop's and vmscan's tests
(cache_reclaim), with bpftrace and /proc/vmstat as its witnesses."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import build_workload, memlens_cmd, require


class ToolRun:
    """A memlens tool in the background; stdout and stderr collected by reader threads."""

    def __init__(self, *args: str, env: dict | None = None):
        self.args = args
        self.proc = subprocess.Popen(memlens_cmd(*args), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self._out: list[str] = []
        self._err: list[str] = []
        self._banner = threading.Event()
        self.prog_ids: set[int] = set()
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, self._out),
                                          daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self._err),
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def _pump(self, stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)
            if sink is self._err and "Hit Ctrl-C to end." in line:
                self._banner.set()

    @property
    def stdout(self) -> str:
        return "".join(self._out)

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def wait_attached(self, timeout: float = 20.0) -> None:
        """Block until the banner line 'Tracing ...' is on stderr (all probes attached)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._banner.wait(0.05):
                self.prog_ids = owned_prog_ids(self.proc.pid)
                return
            if self.proc.poll() is not None:
                for t in self._threads:
                    t.join(5)
                raise AssertionError(f"memlens {' '.join(self.args)} exited "
                                     f"rc={self.proc.returncode}: {self.stderr}{self.stdout}")
        self.stop()
        raise AssertionError(f"no banner within {timeout}s: {self.stderr}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(10)
        return rc

    def wait(self, timeout: float = 60.0) -> int:
        rc = self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(10)
        return rc

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def assert_detached(self) -> None:
        """The BPF programs this run held while attached are all gone (by id: other tools
        running on the machine at the same time do not disturb the check)."""
        assert self.prog_ids, "no BPF program was seen held by the tool while attached"
        # the kernel frees a program whose links the exit released after an RCU grace
        # period (a uprobe's: ~10-30 ms here): looked for during a second, not once
        deadline = time.monotonic() + 1.0
        while self.prog_ids & loaded_prog_ids() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not (self.prog_ids & loaded_prog_ids()), "programs left loaded"


def engine_run_on_child(eng, code: str, *, settle: float = 0.05, wait: float = 0.1,
                        inspect: Callable | None = None):
    """An Engine (core/engine.py, trace mode) on a Python child running `code`, which waits
    for a byte on stdin first: started on the child's PID, the child let go, its first line
    read, its exit waited for, the ring polled once, the engine closed.  (events, child's
    PID, that line, inspect(eng) taken before the close)."""
    import sys

    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        eng.start(pid=child.pid)
        child.stdin.write("g")
        child.stdin.flush()
        line = child.stdout.readline()
        child.wait(10)
        time.sleep(settle)
        events = eng.poll(wait)
        extra = inspect(eng) if inspect is not None else None
    finally:
        eng.close()
        if child.poll() is None:
            child.kill()
            child.wait(10)
    return events, child.pid, line, extra


def fdinfo_links(pid: int) -> list[dict[str, str]]:
    """The BPF links a process holds, as their fdinfo's "key: value" lines (link_type:
    uprobe_multi, perf, tracepoint...; path and pid for a uprobe_multi link)."""
    out = []
    base = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(base):
        try:
            with open(f"{base}/{fd}") as f:
                text = f.read()
        except OSError:
            continue
        if "link_type:" in text:
            out.append(dict(line.split(":\t", 1) for line in text.splitlines()
                            if ":\t" in line))
    return out


def fdinfo_ids(pid: int, field: str) -> dict[int, int]:
    """The BPF object ids a process's fds show in their fdinfo under `field` ("prog_id":
    program and link fds, "map_id": map fds), each with the fd showing it."""
    out = {}
    base = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(base):
        try:
            with open(f"{base}/{fd}") as f:
                m = re.search(rf"^{field}:\s*(\d+)", f.read(), re.MULTILINE)
        except OSError:
            continue
        if m:
            out[int(m.group(1))] = int(fd)
    return out


def owned_prog_ids(pid: int) -> set[int]:
    """Ids of the BPF programs a process holds (program and link fds show prog_id)."""
    return set(fdinfo_ids(pid, "prog_id"))


def loaded_prog_ids() -> set[int]:
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True,
                         text=True, check=True).stdout
    return {p["id"] for p in json.loads(out)}


@contextlib.contextmanager
def memory_cgroup(name: str, limit: str = "64M") -> Iterator[Path]:
    """A v1 memory cgroup (this machine) or a v2 one, with limit and no swap; removed after."""
    name = f"{name}_{os.getpid()}"
    v1_root = Path("/sys/fs/cgroup/memory")
    if (v1_root / "memory.limit_in_bytes").exists():
        cg = v1_root / name
        cg.mkdir()
        try:
            (cg / "memory.limit_in_bytes").write_text(limit)
            if (cg / "memory.memsw.limit_in_bytes").exists():
                (cg / "memory.memsw.limit_in_bytes").write_text(limit)
            yield cg
        finally:
            _remove_cgroup(cg)
        return
    v2_root = Path("/sys/fs/cgroup")
    if "memory" in (v2_root / "cgroup.controllers").read_text().split():
        cg = v2_root / name
        cg.mkdir()
        try:
            (cg / "memory.max").write_text(limit)
            if (cg / "memory.swap.max").exists():
                (cg / "memory.swap.max").write_text("0")
            yield cg
        finally:
            _remove_cgroup(cg)
        return
    raise RuntimeError("no memory cgroup controller (v1 or v2) available")


def _remove_cgroup(cg: Path) -> None:
    for _ in range(50):
        procs = (cg / "cgroup.procs").read_text().split() if cg.exists() else []
        for pid in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        try:
            cg.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)


def run_in_cgroup(cg: Path, argv: list[str], **kw) -> subprocess.CompletedProcess:
    """Run argv as a process that joins cg before exec (so its whole life is in cg)."""
    def join() -> None:
        (cg / "cgroup.procs").write_text(str(os.getpid()))

    return subprocess.run(argv, preexec_fn=join, **kw)


def read_kmsg() -> list[str]:
    """All kernel log lines currently in the buffer (text part), without blocking."""
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    lines = []
    try:
        while True:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:  # overwritten record: keep reading
                continue
            lines.append(rec.decode(errors="replace").split(";", 1)[-1].split("\n")[0])
    finally:
        os.close(fd)
    return lines


# -- memory-cgroup reclaim (drsnoop, vmscan) --------------------------------------------------
# tests/workloads/reclaim_cache in a 32 MiB memory cgroup reads a 96 MiB file twice from
# disk: every read charges fresh page-cache pages, and each charge at the limit reclaims
# older ones in its own context (mm_vmscan_memcg_reclaim_begin/end), with no swap needed.

FILE_MIB = 96
LIMIT = "32M"
PASSES = 2
GLOBAL_PGSTEAL = ("pgsteal_kswapd", "pgsteal_direct", "pgsteal_khugepaged",
                  "pgsteal_proactive")


@contextlib.contextmanager
def data_file(mib: int = FILE_MIB) -> Iterator[Path]:
    """A file on disk (not tmpfs: reclaiming its pages must need no swap); removed after."""
    path = Path("/var/tmp") / f"memlens_reclaim_{os.getpid()}_{uuid.uuid4().hex[:8]}.dat"
    try:
        chunk = os.urandom(1 << 20)
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        path.chmod(0o644)
        yield path
    finally:
        path.unlink(missing_ok=True)


class CacheReader:
    """tests/workloads/reclaim_cache in a cgroup (optionally as another user), gated."""

    def __init__(self, cg: Path, path: Path, passes: int = PASSES, uid: int | None = None):
        import subprocess

        def enter() -> None:
            (cg / "cgroup.procs").write_text("0")
            if uid is not None:
                os.setgid(uid)
                os.setuid(uid)

        self.proc = subprocess.Popen([str(build_workload("reclaim_cache")), str(path),
                                      str(passes)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, preexec_fn=enter)
        line = self.proc.stdout.readline()
        m = re.match(r"ready pid=(\d+) pages=(\d+)", line)
        assert m, f"workload did not start: {line!r}"
        self.pid, self.pages = int(m.group(1)), int(m.group(2))
        self.read_ns = 0

    def run(self) -> None:
        """Let it read; returns once it has read everything (it then waits at a gate)."""
        self.proc.stdin.write("g")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        m = re.match(r"read bytes=(\d+) ns=(\d+)", line)
        assert m, f"workload: {line!r}"
        assert int(m.group(1)) == self.pages * os.sysconf("SC_PAGESIZE") * PASSES
        self.read_ns = int(m.group(2))

    def finish(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=20) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)


def vmstat() -> dict[str, int]:
    with open("/proc/vmstat") as f:
        return {k: int(v) for k, v in (line.split() for line in f)}


def memcg_reclaimed(before: dict[str, int], after: dict[str, int]) -> int:
    """Pages freed by memory-cgroup reclaim on the whole machine between two reads."""
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return d["pgsteal_anon"] + d["pgsteal_file"] - sum(d.get(k, 0) for k in GLOBAL_PGSTEAL)


class Bpftrace:
    """bpftrace (the peer tool) running a program over the same window, its maps read at
    SIGINT.  Why not `perf stat -e vmscan:...`: a BPF program that returns 0 on a tracepoint
    (the engine's do) hides that tracepoint's hits from every perf event
    (perf_trace_run_bpf_submit), so perf stat reads 0 there while a memlens tool runs;
    bpftrace's programs run beside memlens's in the same program array and see every hit."""

    def __init__(self, prog: str):
        import shutil
        import subprocess

        require(shutil.which("bpftrace") is not None, "needs bpftrace as a witness")
        self.proc = subprocess.Popen(["bpftrace", "-e", 'BEGIN { printf("READY\\n"); } '
                                      + prog], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        for line in self.proc.stdout:  # BEGIN runs once every probe is attached
            if line.strip() == "READY":
                return
        raise AssertionError(f"bpftrace did not start: {self.proc.stderr.read()}")

    def stop(self) -> dict[str, int]:
        """Its scalar maps, {"@name": value}; what it printed is kept in `self.out`.
        bpftrace 0.17 sometimes lets a SIGINT that comes soon after its start pass (about
        one run in three here): it is sent again every 2 s until bpftrace prints its maps
        and exits."""
        import signal
        import subprocess

        for _ in range(15):
            self.proc.send_signal(signal.SIGINT)
            try:
                out, _err = self.proc.communicate(timeout=2)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            raise AssertionError("bpftrace did not stop on SIGINT")
        self.out = out
        return {m.group(1): int(m.group(2))
                for m in re.finditer(r"^(@\w+): (\d+)$", out, re.MULTILINE)}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def pair_witness(pid: int, begin: str, end: str) -> Bpftrace:
    """Episodes of one vmscan begin/end pair for one process: @n (ends with a begin),
    @ns (their summed time), @pages (their nr_reclaimed), as the book's vmscan.bt times
    them; each episode is also printed ("EP <ns> <pages>", read by `episodes`)."""
    return Bpftrace(f"tracepoint:vmscan:{begin} /pid == {pid}/ {{ @s[tid] = nsecs; }} "
                    f"tracepoint:vmscan:{end} /pid == {pid} && @s[tid]/ {{ @n = count(); "
                    "$ns = nsecs - @s[tid]; @ns = sum($ns); @pages = sum(args->nr_reclaimed);"
                    ' printf("EP %llu %llu\\n", $ns, args->nr_reclaimed); delete(@s[tid]); }')


def episodes(bt: Bpftrace) -> list[tuple[int, int]]:
    """The (ns, pages) of each episode a stopped pair_witness printed, in order."""
    return [(int(m.group(1)), int(m.group(2)))
            for m in re.finditer(r"^EP (\d+) (\d+)$", bt.out, re.MULTILINE)]


@dataclass
class CacheReclaim:
    """What cache_reclaim saw: the workload (its pid, pages, reading time), the memlens runs
    (stopped), the witness's maps and the episodes it printed (a pair_witness), /proc/vmstat
    before and after the reading, the cgroup."""
    w: CacheReader
    runs: list[ToolRun]
    seen: dict[str, int]
    seen_episodes: list[tuple[int, int]]
    v0: dict[str, int]
    v1: dict[str, int]
    cg: Path


def cache_reclaim(name: str, tools: list[list[str]], witness: Callable[[int], Bpftrace],
                  uid: int | None = None) -> CacheReclaim:
    """Memory-cgroup reclaim under memlens: a data file and a memory cgroup of LIMIT made for
    the test, reclaim_cache in it (as `uid` if given) reading the file; each memlens run of
    `tools` (arguments; "{pid}" and "{cgroup}" stand for the workload's) attached before
    the witness (bpftrace for the workload's PID), the reading done, then all stopped in
    order.  The file, the cgroup, the workload and every tool are gone afterwards, also
    when something failed."""
    with data_file() as path, memory_cgroup(name, LIMIT) as cg:
        w = CacheReader(cg, path, uid=uid)
        runs: list[ToolRun] = []
        bt = None
        try:
            runs = [ToolRun(*(a.format(pid=w.pid, cgroup=cg) for a in args))
                    for args in tools]
            for run in runs:
                run.wait_attached()
            bt = witness(w.pid)
            v0 = vmstat()
            w.run()
            v1 = vmstat()
            seen = bt.stop()
            for run in runs:
                assert run.stop() == 0, run.stderr
            w.finish()
        finally:
            if bt is not None:
                bt.close()
            w.kill()
            for run in runs:
                run.stop(timeout=10)
    return CacheReclaim(w, runs, seen, episodes(bt), v0, v1, cg)


def _fdinfos(pid: int):
    """The fdinfo of each descriptor a process holds, as {field: text} (the kernel's BPF
    objects say what they are there: map_type..., prog_id...)."""
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                yield dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except OSError:
            continue


def _bpftool_names(pid: int, kind: str) -> list[str]:
    """The names bpftool gives the BPF `kind`s ("prog", "map") a process holds (their
    fdinfo's prog_id / map_id)."""
    field = f"{kind}_id"
    ids = sorted({int(info[field]) for info in _fdinfos(pid) if field in info})
    names = []
    for obj_id in ids:
        out = subprocess.run(["bpftool", "-j", kind, "show", "id", str(obj_id)],
                             capture_output=True, text=True)
        if out.returncode == 0:
            names.append(json.loads(out.stdout).get("name", ""))
    return names


def bpf_prog_names_of(pid: int) -> list[str]:
    """The names of the BPF programs a process holds (the kernel keeps 15 characters of a
    name, bpftool gives the whole one from the program's BTF)."""
    return _bpftool_names(pid, "prog")


def bpf_map_names_of(pid: int) -> list[str]:
    """The names of the BPF maps a process holds (the kernel keeps 15 characters)."""
    return _bpftool_names(pid, "map")


def bpf_maps_of(pid: int) -> list[dict[str, int]]:
    """The BPF maps a process holds, as their fdinfo says (map_type, key_size, value_size,
    max_entries, map_flags...: the numeric fields)."""
    # "flags" (the file's, octal) as the rest: only the map's fields are read
    return [{k: int(v, 16) if v.startswith("0x") else int(v) for k, v in info.items()
             if v.startswith("0x") or v.lstrip("-").isdigit()}
            for info in _fdinfos(pid) if "map_type" in info]
