# SPDX-License-Identifier: GPL-2.0-only
"""What the kernel's verifier spends on each program a tool loads: its own statistics (log
level 4: time, instructions processed, states), the way to see which program a start-up
waits for (bench_launch.py --phases gives the whole load's time).

    python bench/verifier_stats.py faults -d 0.01        (root; any memlens command line)

Each BpfObject.load() of the run is wrapped: every program it loads gets a log buffer and
log level 4, and the log's last line (the verifier's summary) is printed with the load's
time.  The log costs the verifier a little time of its own.
"""
from __future__ import annotations

import ctypes as C
import sys
import time


def main(argv: list[str]) -> int:
    from memlens.core import libbpf as L
    from memlens.core import loader

    original = loader.BpfObject.load

    def load(self) -> None:
        lb = L.lib()._cdll
        lb.bpf_program__set_log_level.argtypes = [C.c_void_p, C.c_uint32]
        lb.bpf_program__set_log_buf.argtypes = [C.c_void_p, C.c_char_p, C.c_size_t]
        lb.bpf_program__autoload.argtypes = [C.c_void_p]
        lb.bpf_program__autoload.restype = C.c_bool
        logs = {}
        for name, prog in self._progs.items():
            if lb.bpf_program__autoload(prog):
                buf = logs[name] = C.create_string_buffer(1 << 22)
                lb.bpf_program__set_log_buf(prog, buf, len(buf))
                lb.bpf_program__set_log_level(prog, 4)
        t = time.monotonic()
        try:
            original(self)
        finally:
            took = (time.monotonic() - t) * 1e3
            for name, buf in logs.items():
                summary = " ".join(buf.value.decode(errors="replace").split())
                print(f"{self.name} {name}: {summary}", file=sys.stderr)
            print(f"{self.name}: load {took:.1f} ms", file=sys.stderr)

    loader.BpfObject.load = load
    from memlens.cli import main as cli_main

    sys.argv = ["memlens", *argv]
    return cli_main()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
