# SPDX-License-Identifier: GPL-2.0-only
"""`pip install .` builds every BPF object into the wheel, and the installed wheel runs
from outside the source tree with no compiler involved at run time."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def test_wheel_carries_objects_and_runs_without_the_source_tree(tmp_path: Path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("memlens-*.whl"))
    assert wheel.name.endswith(f"-py3-none-linux_{os.uname().machine}.whl")
    names = zipfile.ZipFile(wheel).namelist()
    sources = sorted(str(p.relative_to(ROOT / "src")) for p in (ROOT / "src").rglob("*.bpf.c"))
    assert sources, "no BPF sources found"
    for src in sources:
        assert src[: -len(".c")] + ".o" in names, f"{src} not compiled into the wheel"
        assert src not in names  # sources stay out of the wheel (they are in the sdist)
    # install into a fresh venv that sees this venv's numpy/rich (a plain path entry: the
    # editable-install .pth of this venv is not processed, so the source tree stays hidden)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    import numpy

    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "deps.pth").write_text(str(Path(numpy.__file__).parent.parent) + "\n")
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True)
    # no compiler reachable: the run-time path must not need one
    env = {"PATH": str(venv / "bin"), "BPF_CLANG": "/nonexistent/clang",
           "PYTHONPATH": ""}
    r = subprocess.run([str(venv / "bin" / "memlens"), "oomkill", "-d", "0.2", "--json"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Tracing OOM kills" in r.stderr
    r = subprocess.run([str(venv / "bin" / "python"), "-c",
                        "import memlens, sys; print(memlens.__file__)"],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert str(venv) in r.stdout and str(ROOT) not in r.stdout
