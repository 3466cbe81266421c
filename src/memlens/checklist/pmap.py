# SPDX-License-Identifier: GPL-2.0-only
"""`memlens pmap PID`: a process's mappings with size, RSS, dirty and swap.

Mimics procps-ng 4.0.2 `pmap -x PID` (pmap.c, the smaps path): Kbytes = (end - start) / 1024,
RSS = Rss, Dirty = Shared_Dirty + Private_Dirty, Mode = `rwx` plus `s` for shared mappings
and a fifth `-`, Mapping = the file's basename, `[ stack ]` for the mapping that holds the
stack start (stat field 28) and `[ anon ]` for every other nameless mapping ([heap], [vdso]
and [vvar] included, as pmap shows them).  memlens adds a Swap column (smaps `Swap`), which
`pmap -x` does not print; the totals line has all four sums.
"""
from __future__ import annotations

import json
import os
import sys

from memlens.checklist import procfs
from memlens.errors import MemlensError, NotPermitted, UsageError


def _start_stack(pid: int) -> int | None:
    text = procfs.read_text(f"proc/{pid}/stat")
    if not text:
        return None
    try:
        # field 28 (startstack); fields after the comm start at 3
        return int(text[text.rfind(")") + 2:].split()[25])
    except (ValueError, IndexError):
        return None


def mapping_name(m: procfs.Mapping, start_stack: int | None) -> str:
    """procps pmap.c mapping_name() without -p: basename, or [ stack ] / [ anon ]."""
    name = m.name
    if m.dev.startswith("00:") and "/SYSV" in name:
        return f"  [ shmid=0x{m.inode:x} ]"
    slash = name.rfind("/")
    if slash >= 0:
        return name[slash + 1:] if slash + 1 < len(name) else name[slash:]
    if start_stack is not None and m.start <= start_stack <= m.end:
        return "  [ stack ]"
    return "  [ anon ]"


def mode(perms: str) -> str:
    return perms[:3] + ("s" if perms[3:4] == "s" else "-") + "-"


def pmap_rows(pid: int) -> tuple[list[dict], dict]:
    """Per-mapping rows and the totals, sizes in bytes; raises for a missing PID."""
    maps = procfs.read_pid_smaps(pid)
    if maps is None:
        if not os.path.exists(procfs.path(f"proc/{pid}")):
            raise UsageError(f"no such process: {pid}")
        try:
            open(procfs.path(f"proc/{pid}/smaps")).close()
        except PermissionError as e:
            raise NotPermitted(f"cannot read /proc/{pid}/smaps: {e.strerror}; run as root or"
                               " as the process owner (ptrace access mode read)") from e
        except OSError as e:
            raise MemlensError(f"cannot read /proc/{pid}/smaps: {e.strerror}") from e
        raise MemlensError(f"cannot read /proc/{pid}/smaps")
    stack = _start_stack(pid)
    rows = []
    for m in maps:
        rows.append({
            "address": m.start, "end": m.end,
            "size_bytes": m.size_bytes,
            "rss_bytes": m.get("Rss"),
            "pss_bytes": m.get("Pss"),
            "dirty_bytes": m.get("Shared_Dirty") + m.get("Private_Dirty"),
            "swap_bytes": m.get("Swap"),
            "mode": mode(m.perms),
            "mapping": mapping_name(m, stack).strip(),
            "path": m.name,
            "offset": m.offset,
        })
    total = {k: sum(r[k] for r in rows) for k in
             ("size_bytes", "rss_bytes", "pss_bytes", "dirty_bytes", "swap_bytes")}
    return rows, total


def render_text(pid: int, rows: list[dict], total: dict, out, width: int = 79) -> None:
    cmd = procfs.read_pid_cmdline(pid) or ""
    if not cmd:
        st = procfs.read_pid_stat(pid)
        cmd = f"[{st.comm}]" if st else ""
    # like procps: control characters (newlines in `python -c` scripts) print as spaces
    cmd = "".join(" " if ord(c) < 0x20 else c for c in cmd)
    out.write(f"{pid}:   {cmd}"[:width] + "\n")
    out.write("Address           Kbytes     RSS   Dirty    Swap Mode  Mapping\n")
    for r in rows:
        line = (f"{r['address']:016x} {r['size_bytes'] >> 10:>7} {r['rss_bytes'] >> 10:>7} "
                f"{r['dirty_bytes'] >> 10:>7} {r['swap_bytes'] >> 10:>7} {r['mode']} "
                f"{'  ' if r['mapping'].startswith('[') else ''}{r['mapping']}")
        out.write(line[:width] + "\n")
    out.write("---------------- ------- ------- ------- -------\n")
    out.write(f"total kB         {total['size_bytes'] >> 10:>7} {total['rss_bytes'] >> 10:>7} "
              f"{total['dirty_bytes'] >> 10:>7} {total['swap_bytes'] >> 10:>7}\n")


def parse_pid(text: str) -> int:
    try:
        pid = int(text, 10)
    except ValueError:
        raise UsageError(f"pmap: PID must be a number, not {text!r}") from None
    if pid <= 0:
        raise UsageError(f"pmap: PID must be positive, not {pid}")
    return pid


class _Pmap:
    name = "pmap"
    summary = "a process's mappings with RSS, dirty and swap (pmap -x)"
    description = ("A process's memory mappings from /proc/PID/smaps: size, RSS, dirty and swap\n"
                   "per mapping and the totals, as `pmap -x PID` prints them (plus Swap).")
    epilog = """examples:
  memlens pmap 1234              # like pmap -x 1234, with a Swap column
  memlens pmap $(pgrep -n redis) --sort rss | head -20
  memlens pmap 1234 --json | jq '.total'
exit codes: 0 ok, 2 bad or unknown PID, 3 not permitted to read its smaps, 1 other failure
"""

    def add_arguments(self, parser) -> None:
        parser.add_argument("pid", metavar="PID", help="process ID")
        parser.add_argument("-x", action="store_true", help="accepted for pmap compatibility"
                            " (the extended format is the only one)")
        parser.add_argument("--sort", choices=("address", "size", "rss", "dirty", "swap"),
                            default="address", help="order of the mappings (default address)")
        parser.add_argument("--json", action="store_true",
                            help="one {type: report, section: pmap} object")

    def run(self, args) -> int:
        pid = parse_pid(args.pid)
        rows, total = pmap_rows(pid)
        if args.sort != "address":
            rows.sort(key=lambda r: r[f"{args.sort}_bytes"], reverse=True)
        if args.json:
            st = procfs.read_pid_stat(pid)
            print(json.dumps({"type": "report", "section": "pmap", "pid": pid,
                              "comm": st.comm if st else None,
                              "cmdline": procfs.read_pid_cmdline(pid),
                              "mappings": rows, "total": total}))
        else:
            render_text(pid, rows, total, sys.stdout)
        return 0


COMMAND = _Pmap()
