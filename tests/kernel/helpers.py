# SPDX-License-Identifier: GPL-2.0-only
"""Shared helpers for kernel tests: run a memlens tool in the background, wait for its
banner (all probes attached), stop it with a signal and collect its output; memory cgroups
that are always removed."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import memlens_cmd


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
        assert not (self.prog_ids & loaded_prog_ids()), "programs left loaded"


def owned_prog_ids(pid: int) -> set[int]:
    """Ids of the BPF programs a process holds (program and link fds show prog_id)."""
    ids = set()
    base = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(base):
        try:
            with open(f"{base}/{fd}") as f:
                m = re.search(r"^prog_id:\s*(\d+)", f.read(), re.MULTILINE)
        except OSError:
            continue
        if m:
            ids.add(int(m.group(1)))
    return ids


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
