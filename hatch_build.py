# SPDX-License-Identifier: GPL-2.0-only
"""Compile every src/memlens/**/*.bpf.c into a CO-RE object next to its source.

Used two ways: as the hatchling build hook (so `pip install .`, wheels and editable
installs all carry the objects) and as a script (`python hatch_build.py`, run by
`make bpf`) that rebuilds only stale objects.  The objects are written beside the
sources rather than into build/ because an editable install imports from src/.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "src" / "memlens"
INCLUDE = ROOT / "bpf" / "include"
ARCH = {"x86_64": "x86", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def find_tool(env: str, names: list[str]) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    for name in names:
        if shutil.which(name):
            return name
    return None


def compile_all(force: bool = False, quiet: bool = False) -> list[Path]:
    clang = find_tool("BPF_CLANG", ["clang-19", "clang-18", "clang-17", "clang-16", "clang"])
    strip = find_tool("BPF_STRIP", ["llvm-strip-19", "llvm-strip-18", "llvm-strip"])
    if clang is None:
        raise SystemExit("memlens build: no clang found (apt install clang-19) to compile BPF objects")
    headers = list(INCLUDE.rglob("*.h"))
    built = []
    for source in sorted(SRC.rglob("*.bpf.c")):
        obj = source.with_suffix(".o")
        deps = [source, *headers, *source.parent.glob("*.h")]
        if not force and obj.exists() and obj.stat().st_mtime >= max(d.stat().st_mtime for d in deps):
            continue
        cmd = [clang, "-g", "-O2", "-target", "bpf", f"-D__TARGET_ARCH_{ARCH}",
               f"-I{INCLUDE}", f"-I{INCLUDE / ARCH}", f"-I{source.parent}",
               f"-I/usr/include/{os.uname().machine}-linux-gnu",
               "-Wall", "-Werror", "-Wno-unused-function", "-c", str(source), "-o", str(obj)]
        if not quiet:
            print("  BPF", source.relative_to(ROOT), file=sys.stderr)
        subprocess.run(cmd, check=True)
        if strip:  # drop DWARF, keep .BTF/.BTF.ext (CO-RE needs them)
            subprocess.run([strip, "-g", str(obj)], check=True)
        built.append(obj)
    return built


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # running as a plain script
    BuildHookInterface = object  # type: ignore[assignment,misc]


class CustomBuildHook(BuildHookInterface):  # type: ignore[misc,valid-type]
    def initialize(self, version, build_data):  # noqa: ANN001
        compile_all()
        # The objects are architecture specific (pt_regs layout), the Python is not.
        build_data["pure_python"] = False
        build_data["tag"] = f"py3-none-linux_{os.uname().machine}"


if __name__ == "__main__":
    compile_all(force="--force" in sys.argv)
