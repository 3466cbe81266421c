# SPDX-License-Identifier: GPL-2.0-only
"""core/btfcache: which minimal BTF file a load may use (it steers the BPF programs' kernel
reads: only from a directory of ours, for this boot and this build of the object)."""
from __future__ import annotations

import os

from memlens.core import btfcache


def _setup(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMLENS_CACHE_DIR", str(tmp_path / "cache"))
    obj = tmp_path / "x.bpf.o"
    obj.write_bytes(b"\x7fELF object")
    d = tmp_path / "cache" / "btf"
    d.mkdir(parents=True, mode=0o700)
    return str(obj), d


def test_a_file_under_this_boot_and_build_is_used(tmp_path, monkeypatch):
    obj, d = _setup(tmp_path, monkeypatch)
    k = btfcache.key(obj)
    assert k.startswith("x.bpf-") and k.endswith(".btf")
    assert btfcache.cached(obj) is None          # not made yet
    (d / k).write_bytes(b"btf")
    assert btfcache.cached(obj) == str(d / k)


def test_a_rebuilt_object_does_not_use_the_old_file(tmp_path, monkeypatch):
    obj, d = _setup(tmp_path, monkeypatch)
    (d / btfcache.key(obj)).write_bytes(b"btf")
    st = os.stat(obj)
    os.utime(obj, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert btfcache.cached(obj) is None


def test_a_directory_others_can_write_to_is_not_trusted(tmp_path, monkeypatch):
    obj, d = _setup(tmp_path, monkeypatch)
    (d / btfcache.key(obj)).write_bytes(b"btf")
    os.chmod(d, 0o777)
    assert btfcache.cached(obj) is None
    assert not btfcache.build_in_background(obj)


def test_an_empty_file_is_not_used_and_the_cache_can_be_off(tmp_path, monkeypatch):
    obj, d = _setup(tmp_path, monkeypatch)
    (d / btfcache.key(obj)).write_bytes(b"")
    assert btfcache.cached(obj) is None
    (d / btfcache.key(obj)).write_bytes(b"btf")
    monkeypatch.setenv("MEMLENS_CACHE_DIR", "off")
    assert btfcache.cache_dir() is None and btfcache.cached(obj) is None


def test_a_new_build_removes_old_files_but_not_the_current_one(tmp_path, monkeypatch):
    """Two runs without the file start a build each: the second's clean-up of old boots'
    and builds' files must not remove the file the first one made meanwhile, which a third
    run may be opening (its start-up failed: "failed to parse target BTF: -2").  Here the
    build itself fails (a bpftool that exits 1): the current file must survive, the stale
    one go."""
    import time

    obj, d = _setup(tmp_path, monkeypatch)
    current = d / btfcache.key(obj)
    current.write_bytes(b"btf")
    stale = d / (btfcache._owner(obj) + "-oldboot-1-2-3.btf")
    elsewhere = d / "x.bpf-0badc0de-oldboot-1-2-3.btf"  # the same object of another tree
    elsewhere.write_bytes(b"theirs")
    stale.write_bytes(b"old")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "bpftool").write_text("#!/bin/sh\nexit 1\n")
    (fake / "bpftool").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    monkeypatch.setattr(os.path, "exists", lambda p: True)  # /sys/kernel/btf/vmlinux
    assert btfcache.build_in_background(obj)
    deadline = time.monotonic() + 10
    while stale.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # the failed build's own clean-up (its temporary file) is done too
    assert not stale.exists()
    assert current.read_bytes() == b"btf"
    assert elsewhere.read_bytes() == b"theirs"
