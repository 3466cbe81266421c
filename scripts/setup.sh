#!/bin/bash
# Idempotent set-up for a Debian 12 machine (run as root): Debian packages, a virtualenv,
# memlens installed editable with its BPF objects built.  A second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# clang-19/llvm-19: compile BPF (Debian's default clang is 14); libbpf-dev: bpf_helpers.h;
# libbpf1: the runtime; bpftool: debugging and vmlinux.h; sysstat/procps: the witnesses the
# checklist tests compare with; gcc/make: test workloads; tmux: drives `memlens top` in tests;
# bpftrace: the peer measured in bench/; libc6-dbg: full libc symbols for stacks;
# linux-perf: `perf stat -e page-faults`, the witness of the fault-counting tools.
PACKAGES="clang-19 llvm-19 libbpf1 libbpf-dev bpftool linux-libc-dev libelf1 gcc g++ make
          procps sysstat tmux bpftrace strace libc6-dbg python3-venv golang-go linux-perf"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing" >&2
    if [ "$(id -u)" != 0 ]; then echo "setup: need root to apt-get install:$missing" >&2; exit 1; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The interpreter: $PYTHON, else the distribution's own (Debian builds it with PGO and LTO
# and links libpython statically), else the first python3 on PATH.  Start-up is a measured
# figure (bench/bench_launch.py): the same tools reach "attached" 12-25 % sooner under
# Debian's /usr/bin/python3 than under a default pyenv build (--enable-shared, no PGO) that
# comes first on PATH here.  A .venv made from another interpreter is made again.
if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif /usr/bin/python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PY=/usr/bin/python3
else
    PY=python3
fi
want_home=$(dirname "$("$PY" -c 'import sys; print(sys.executable)')")
if [ -f .venv/pyvenv.cfg ] && ! grep -qx "home = $want_home" .venv/pyvenv.cfg; then
    echo "setup: .venv was made from another interpreter; making it again from $PY" >&2
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv ($PY)" >&2
    "$PY" -m venv .venv
fi
stamp=.venv/.memlens-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ hatch_build.py -nt "$stamp" ]; then
    echo "setup: installing memlens (editable) into .venv" >&2
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    # quiet on success (the local index mirrors print harmless warnings); all of it on failure
    if ! .venv/bin/python -m pip install -q -e '.[test,bench]' > .venv/pip.log 2>&1; then
        cat .venv/pip.log >&2
        echo "setup: pip install failed (log above)" >&2
        exit 1
    fi
    # setuptools came with the venv (ensurepip) and nothing here uses it (hatchling builds in
    # its own environment); its distutils-precedence.pth ran at every start (~1 ms)
    .venv/bin/python -m pip uninstall -q -y setuptools >/dev/null 2>&1 || true
    touch "$stamp"
fi
# Rebuild BPF objects whose sources changed since the last install (cheap when none did).
.venv/bin/python hatch_build.py
# Byte-compile the package: an editable install has no .pyc, and with PYTHONDONTWRITEBYTECODE
# set (as on these machines) every start would compile ~30 modules again (~70 ms of the
# launch-to-attached time).  Stale files are ignored by Python, so this is always safe.
.venv/bin/python -m compileall -q src/memlens >/dev/null
