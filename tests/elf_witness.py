# SPDX-License-Identifier: GPL-2.0-only
"""readelf as the witness of memlens's own ELF readers (core/elf.py): a file's defined
function symbols of .dynsym and its PT_LOAD segments, as binutils prints them."""
from __future__ import annotations

import subprocess


def dynsym_functions(path: str) -> tuple[list[tuple[str, int, int]], list[tuple[int, int, int]]]:
    """([(name without @version, value, size)] of each defined FUNC/IFUNC with a value, in
    .dynsym's order], [(p_offset, p_vaddr, p_filesz)] of the PT_LOADs)."""
    out = subprocess.run(["readelf", "--dyn-syms", "-lW", path], capture_output=True,
                         text=True, check=True).stdout
    funcs, loads = [], []
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            loads.append((int(f[1], 16), int(f[2], 16), int(f[4], 16)))
        elif len(f) >= 8 and f[0].endswith(":") and f[3] in ("FUNC", "IFUNC") \
                and f[6] != "UND" and int(f[1], 16):
            funcs.append((f[7].split("@", 1)[0], int(f[1], 16), int(f[2], 0)))
    return funcs, loads


def dynsym_kinds(path: str) -> dict[str, list[str]]:
    """{name without @version: ["FUNC" or "IFUNC", once per defined entry of .dynsym]}."""
    out = subprocess.run(["readelf", "--dyn-syms", "-W", path], capture_output=True,
                         text=True, check=True).stdout
    kinds: dict[str, list[str]] = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 8 and f[0].endswith(":") and f[3] in ("FUNC", "IFUNC") \
                and f[6] != "UND" and int(f[1], 16):
            kinds.setdefault(f[7].split("@", 1)[0], []).append(f[3])
    return kinds
