# SPDX-License-Identifier: GPL-2.0-only
"""`memlens exporter`: a long-running process serving Prometheus /metrics, fed by the same
BPF programs the tools use (the counting engine keyed by memory cgroup, oomkill's program)
and by the checklist's procfs readers.  Prometheus does the scraping, storage and queries.

    memlens exporter                          # http://127.0.0.1:9435/metrics
    curl -s 127.0.0.1:9435/metrics | grep ^memlens_page_faults

The kernel maps are read at each scrape (exporter/collector.py) and added to running
totals (exporter/metrics.py), so counters only go up whatever the engine prunes; between
scrapes a tick every half second keeps the engine's maps small.  Bound to 127.0.0.1 by
default (prometheus-client binds every address unless told): a node's memory behaviour
is not for the whole network to read unless asked (--listen :9435).
"""
from __future__ import annotations

import socket
import sys

from memlens.core.session import type_error
from memlens.errors import MemlensError

TYPE_CHECKING = False  # argparse costs ~16-20 ms of start-up (issue 12): for annotations only
if TYPE_CHECKING:
    import argparse

DEFAULT_LISTEN = "127.0.0.1:9435"  # ebpf_exporter's port, on loopback
TICK_S = 0.5  # the engine's own read interval (core/engine.TICK_S)

EXAMPLES = """\
examples:
  memlens exporter                            # serve http://127.0.0.1:9435/metrics
  memlens exporter --listen :9435             # every address (for a remote Prometheus)
  memlens exporter --listen '[::1]:9500'      # IPv6 loopback, another port
  memlens exporter --cgroup-depth 2           # /kubepods/burstable, not each pod
  memlens exporter --cgroup /sys/fs/cgroup/memory/batch   # one subtree only
  memlens exporter --disable faults           # no per-fault cost (the busiest probe)
  curl -s 127.0.0.1:9435/metrics | grep -v '^#'

output (a scrape; a 64 MiB cgroup that touched 23 pages, then was OOM-killed):
  memlens_page_faults_total{cgroup="/mlt_exporter",type="minor"} 23.0
  memlens_page_faults_total{cgroup="/mlt_exporter",type="major"} 0.0
  memlens_oom_kills_total{cgroup="/mlt_exporter"} 1.0
  memlens_direct_reclaim_episodes_total{cgroup="/batch",reclaim="memcg"} 212.0
  memlens_direct_reclaim_seconds_bucket{reclaim="memcg",le="1.6384e-05"} 187.0
  memlens_lost_total{cause="map_full",source="faults",what="entries"} 0.0
  memlens_probe_attached{probe="sw:minor-faults",source="faults"} 1.0

Sources (--disable any of them): faults (page faults by cgroup, minor/major), oom (OOM
kills by the victim's cgroup), reclaim (episodes, pages and a latency histogram of the
reclaim tasks do themselves), swap (pages swapped in/out).  cgroup is the path in the
memory hierarchy (v1 memory controller, or v2), "/" for the root.  No PID or comm label:
a series per process would grow without bound.  Exit: 0 after Ctrl-C/SIGTERM (everything
detached), 1 if the address cannot be bound (in use), 2 for a bad --listen.
"""

SOURCES = ("faults", "oom", "reclaim", "swap")
WHAT = {"faults": "page faults", "oom": "OOM kills", "reclaim": "reclaim",
        "swap": "swap-ins"}


def listen_address(text: str) -> tuple[str, int]:
    """ADDR:PORT, [IPV6]:PORT or :PORT (every address) -> (host, port), checked."""
    host, sep, port_s = text.rpartition(":")
    if not sep:
        raise type_error(f"{text!r}: give ADDR:PORT (e.g. 127.0.0.1:9435)")
    try:
        port = int(port_s)
    except ValueError:
        raise type_error(f"{text!r}: port {port_s!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise type_error(f"{text!r}: port {port} is not in 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise type_error(f"{text!r}: put an IPv6 address in brackets, [::1]:9435")
    if not host:
        host = "0.0.0.0"
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise type_error(f"{text!r}: unknown address {host!r} ({err})") from None
    return host, port


def depth_arg(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise type_error(f"{text!r}: a number of levels, 0 or more")
    return n


def sources_arg(text: str) -> set[str]:
    names = {s.strip() for s in text.split(",") if s.strip()}
    bad = names - set(SOURCES)
    if bad:
        raise type_error(f"unknown source {sorted(bad)[0]!r} "
                         f"(sources: {', '.join(SOURCES)})")
    return names


def serve(host: str, port: int, registry):
    """The HTTP server, bound now: an address in use is one line and exit 1, before any
    probe is attached."""
    from prometheus_client import start_http_server

    try:
        return start_http_server(port, addr=host, registry=registry)
    except OSError as err:
        import errno

        hint = {errno.EADDRINUSE: " (another exporter? choose a port with --listen)",
                errno.EADDRNOTAVAIL: " (not an address of this machine)",
                errno.EACCES: " (a port below 1024 needs CAP_NET_BIND_SERVICE)"}
        shown = f"[{host}]" if ":" in host else host
        raise MemlensError(f"exporter: cannot listen on {shown}:{port}: "
                           f"{err.strerror or err}{hint.get(err.errno, '')}") from None


class ExporterCommand:
    name = "exporter"
    summary = ("Serve Prometheus /metrics: page faults, OOM kills, reclaim and swap by "
               "memory cgroup, from BPF")
    epilog = EXAMPLES

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from memlens.core.session import nonempty, positive_float

        parser.add_argument("--listen", type=listen_address, default=DEFAULT_LISTEN,
                            metavar="ADDR:PORT",
                            help=f"where to serve /metrics (default {DEFAULT_LISTEN}; "
                                 ":PORT for every address, port 0 for any free one)")
        parser.add_argument("--cgroup-depth", type=depth_arg, metavar="N",
                            help="cgroup labels cut to their first N levels (deeper cgroups "
                                 "counted in their ancestor); default: whole paths")
        parser.add_argument("--cgroup", type=nonempty, metavar="PATH",
                            help="only tasks in this memory cgroup and below (v1 or v2 path)")
        parser.add_argument("--disable", type=sources_arg, default=set(), metavar="SRC,...",
                            help=f"sources left out: {', '.join(SOURCES)}")
        parser.add_argument("--forget-after", type=positive_float, default=300.0,
                            metavar="SECONDS",
                            help="series of a removed cgroup are dropped after this long "
                                 "without a change (default 300)")
        parser.add_argument("-d", "--duration", type=positive_float, metavar="SECONDS",
                            help="exit after SECONDS (default: until Ctrl-C/SIGTERM)")

    def run(self, args: argparse.Namespace) -> int:
        from memlens.core import kernel
        from memlens.core.privileges import require_tracing_privileges
        from memlens.core.runner import run_cli
        from memlens.output.sinks import Sink

        require_tracing_privileges("exporter")
        if args.cgroup:
            kernel.cgroup_target(args.cgroup)  # a bad path is a usage error, now
        kernel.ensure_tracefs()
        # the shared lifecycle (core/runner): signals, -d, the banner once attached, exit
        # 128 + the signal before it; the scrapes are the output, no record is printed
        return run_cli(ExporterTool(args), args, Sink())


class ExporterTool:
    """The exporter as a tool of core/runner: start() binds the address, then loads and
    attaches its sources; poll() runs their tick every TICK_S; close() stops serving and
    detaches.  No report: Prometheus reads the collector at each scrape."""

    name = "exporter"

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.what = "nothing"
        self.collector = None
        self.server = self.thread = None
        self.started: list = []
        self._next_tick = 0.0

    def start(self) -> None:
        import time

        from prometheus_client import CollectorRegistry, disable_created_metrics
        from prometheus_client.process_collector import ProcessCollector

        from memlens.core.runner import SIGNALS
        from memlens.exporter import sources
        from memlens.exporter.collector import MemlensCollector

        args = self.args
        disable_created_metrics()
        names = sources.CgroupNames()
        collector = self.collector = MemlensCollector(names, args.cgroup_depth,
                                                      args.forget_after)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, RSS: our own cost
        host, port = args.listen
        self.server, self.thread = serve(host, port, registry)  # in use: exit 1, now
        planned, missing = sources.plan(names, args.cgroup_depth, args.disable)
        collector.missing = missing
        for src_name, hook, why in missing:
            print(f"memlens exporter: no {src_name} {hook} here: {why}", file=sys.stderr)
        if not planned:
            from memlens.errors import KernelLacks

            raise KernelLacks("exporter: no source can be fed by this kernel (or all "
                              "were disabled)")
        for src in planned:
            if SIGNALS.is_set():
                return  # the runner sees the stop: nothing traced, no banner
            src.start(args.cgroup)
            self.started.append(src)
        with collector.lock:
            collector.sources = list(self.started)
        shown = f"[{host}]" if ":" in host else host
        self.what = (f"{', '.join(WHAT[s.name] for s in self.started)} by memory cgroup "
                     f"for Prometheus at http://{shown}:{self.server.server_port}/metrics")
        self._next_tick = time.monotonic() + TICK_S

    def poll(self, timeout: float) -> list:
        """Between scrapes, every TICK_S: the engines' reads and pruning (collector.tick)."""
        import time

        now = time.monotonic()
        if now < self._next_tick:
            time.sleep(min(timeout, self._next_tick - now))
            now = time.monotonic()
        if now >= self._next_tick and self.collector is not None:
            self.collector.tick()
            self._next_tick = now + TICK_S
        return []

    def report(self, final: bool) -> list:
        return []

    def summary(self) -> list:
        return []

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)
        if self.collector is not None:
            with self.collector.lock:
                self.collector.sources = []
        for src in self.started:
            try:
                src.close()
            except Exception:  # close the others whatever happened
                pass
        self.started = []


COMMAND = ExporterCommand()
