# SPDX-License-Identifier: GPL-2.0-only
"""memlens.core.symbols against binaries built here, with nm / gdb / readelf as witnesses.

No root needed, except for the tests that say so (real kallsyms, deleted-file via map_files).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from memlens.core.stacks import Frame
from memlens.core.symbols import (
    ElfSymbols,
    KernelSymbolizer,
    LineSymbolizer,
    PerfMap,
    ProcessSymbolizer,
    SymbolCache,
    demangle,
    parse_maps,
)
from tests.conftest import fresh_python

WORKLOADS = Path(__file__).resolve().parent.parent / "workloads"
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
IS_ROOT = os.geteuid() == 0

VARIANTS = {
    "pie_fp": ["-pie", "-fPIE", "-fno-omit-frame-pointer"],
    "pie_nofp": ["-pie", "-fPIE", "-fomit-frame-pointer"],
    "nopie_fp": ["-no-pie", "-fno-pie", "-fno-omit-frame-pointer"],
    "nopie_nofp": ["-no-pie", "-fno-pie", "-fomit-frame-pointer"],
}


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """libsym_lib.so and one sym_target per variant, compiled at test time."""
    _need("gcc")
    d = tmp_path_factory.mktemp("symbins")
    subprocess.run(["gcc", "-O2", "-g", "-shared", "-fPIC", "-o", str(d / "libsym_lib.so"),
                    str(WORKLOADS / "sym_lib.c")], check=True)
    out = {}
    for name, flags in VARIANTS.items():
        exe = d / f"sym_target_{name}"
        subprocess.run(["gcc", "-O2", "-g", *flags, "-o", str(exe),
                        str(WORKLOADS / "sym_target.c"), f"-L{d}", "-lsym_lib",
                        f"-Wl,-rpath,{d}"], check=True)
        out[name] = exe
    return out


class Target:
    """A running sym_target: `addrs` maps each printed name to its runtime address."""

    def __init__(self, exe: Path):
        self.proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.addrs: dict[str, int] = {}
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "READY":
                break
            k, v = line.split()
            self.addrs[k] = int(v, 16)
        self.pid = self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=10)


@pytest.fixture
def run_target():
    started: list[Target] = []

    def start(exe: Path) -> Target:
        t = Target(exe)
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


def gdb_info_symbol(pid: int, addrs: list[int]) -> list[tuple[str, int] | None]:
    """gdb's own answer for runtime addresses of a live process (independent witness)."""
    gdb = _need("gdb")
    cmd = [gdb, "-batch", "-nx", "-iex", "set debuginfod enabled off", "-p", str(pid)]
    for a in addrs:
        cmd += ["-ex", f"echo @@{a:#x}\\n", "-ex", f"info symbol {a:#x}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    out: dict[int, tuple[str, int] | None] = {}
    cur = None
    for line in res.stdout.splitlines():
        if line.startswith("@@"):
            cur = int(line[2:], 0)
            out[cur] = None
            continue
        m = re.match(r"^(\S+)(?: \+ (\d+))? in section", line)
        if m and cur is not None and out.get(cur) is None:
            out[cur] = (m.group(1), int(m.group(2) or 0))
    if not out:
        pytest.skip(f"gdb could not attach: {res.stderr.strip()[:200]}")
    return [out.get(a) for a in addrs]


def nm_funcs(path: str, dynamic: bool = False) -> dict[int, set[str]]:
    """Address -> names of defined function symbols according to binutils nm."""
    args = ["nm", "--defined-only", "-S"] + (["-D"] if dynamic else []) + [path]
    res = subprocess.run(args, capture_output=True, text=True, check=True)
    out: dict[int, set[str]] = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "TtWwi":
            out.setdefault(int(parts[0], 16), set()).add(parts[3].split("@")[0])
    return out


def nm_sizes(path: str) -> dict[int, int]:
    """Address -> largest size of a defined function symbol there, according to nm -S."""
    res = subprocess.run(["nm", "--defined-only", "-S", path], capture_output=True, text=True,
                         check=True)
    out: dict[int, int] = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "TtWwi":
            a = int(parts[0], 16)
            out[a] = max(out.get(a, 0), int(parts[1], 16))
    return out


# --- user processes ----------------------------------------------------------------------

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_exact_symbols_in_running_target(built, run_target, variant):
    t = run_target(built[variant])
    sym = ProcessSymbolizer(t.pid, SymbolCache())
    names = ["sym_alpha", "sym_alpha+5", "sym_gamma_static", "sym_leaf", "sym_lib_func",
             "malloc"]
    frames = sym.resolve([t.addrs[n] for n in names])
    exe = built[variant].name
    assert [str(f) for f in frames] == [
        f"sym_alpha+0x0 [{exe}]", f"sym_alpha+0x5 [{exe}]", f"sym_gamma_static+0x0 [{exe}]",
        f"sym_leaf+0x0 [{exe}]", "sym_lib_func+0x0 [libsym_lib.so]", "malloc+0x0 [libc.so.6]"]
    assert all(isinstance(f, Frame) and not f.approx for f in frames)


@pytest.mark.parametrize("variant", ["pie_fp", "nopie_nofp"])
def test_against_gdb(built, run_target, variant):
    """Our names and offsets equal gdb's `info symbol` for the same runtime addresses."""
    t = run_target(built[variant])
    sym = ProcessSymbolizer(t.pid, SymbolCache())
    base = [t.addrs[k] for k in ("sym_alpha", "sym_gamma_static", "sym_leaf", "sym_lib_func",
                                 "malloc", "ret_in_sym_caller")]
    addrs = sorted({a + d for a in base for d in (0, 1, 3, 7)})
    ours = sym.resolve(addrs)
    theirs = gdb_info_symbol(t.pid, addrs)
    aliases = nm_funcs(_debug_file_of(LIBC) or LIBC)
    for a, f, g in zip(addrs, ours, theirs):
        assert g is not None, hex(a)
        assert f.offset == g[1], (hex(a), str(f), g)
        if f.symbol != g[0]:   # gdb may pick another alias at the same libc address
            start = a - f.offset
            libc_base = t.addrs["malloc"] - _vaddr_of(LIBC, "malloc")
            assert {f.symbol, g[0]} <= aliases.get(start - libc_base, set()), (str(f), g)


def test_return_address_and_stack(built, run_target):
    t = run_target(built["pie_fp"])
    sym = ProcessSymbolizer(t.pid, SymbolCache())
    ra = t.addrs["ret_in_sym_caller"]
    exact, = sym.resolve([ra])
    as_ret, = sym.resolve([ra], return_address=True)
    # Same function either way here (the call is not the caller's last instruction), and the
    # offset is always reported from the IP itself, as BCC does.
    assert exact.symbol == as_ret.symbol == "sym_caller"
    assert as_ret.offset == exact.offset > 0
    stack = sym.resolve_stack([t.addrs["sym_leaf"] + 1, ra])
    assert [f.symbol for f in stack] == ["sym_leaf", "sym_caller"]
    assert stack[0].offset == 1


def test_return_address_at_function_end():
    """A call as a function's last instruction (to a noreturn function) leaves a return
    address equal to the next function's first byte: only the ip-1 lookup names the caller."""
    syms = ElfSymbols(LIBC)
    adjacent = np.flatnonzero((syms.ends[:-1] == syms.addrs[1:]) & ~syms.approx[:-1])
    assert len(adjacent) > 100
    i = int(adjacent[len(adjacent) // 2])
    nxt = int(syms.addrs[i + 1])
    (k_exact,), _ = syms.lookup([nxt])
    (k_ret,), (off,) = syms.lookup([nxt - 1])
    assert (k_exact, k_ret) == (i + 1, i)
    assert off == int(syms.ends[i] - syms.addrs[i]) - 1


def test_process_exit_after_snapshot(built):
    t = Target(built["pie_nofp"])
    sym = ProcessSymbolizer(t.pid, SymbolCache())
    t.stop()
    assert not os.path.exists(f"/proc/{t.pid}/maps")
    f1, f2 = sym.resolve([t.addrs["sym_alpha+5"], t.addrs["sym_lib_func"]])
    assert (f1.symbol, f1.offset, f2.symbol) == ("sym_alpha", 5, "sym_lib_func")
    with pytest.raises(ProcessLookupError):
        sym.refresh()
    assert sym.resolve([t.addrs["malloc"]])[0].symbol == "malloc"   # old snapshot kept


def test_unresolved_frames(built, run_target):
    t = run_target(built["pie_fp"])
    sym = ProcessSymbolizer(t.pid, SymbolCache())
    stack_top = next(m for m in sym.maps if m.path == "[stack]").start
    f_nomap, f_stack = sym.resolve([0x10, stack_top + 8])
    assert str(f_nomap) == "0x10 [unknown]"
    assert str(f_stack).endswith("[unknown]")


def _readelf_build_id(path: Path) -> str:
    out = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return re.search(r"Build ID: ([0-9a-f]+)", out).group(1)


def _file_offset_of(exe: Path, name: str) -> int:
    """Where `name` starts in the file, by nm (its address) and readelf (the segments)."""
    nm = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True).stdout
    vaddr = int(re.search(rf"^([0-9a-f]+) [Tt] {name}$", nm, re.MULTILINE).group(1), 16)
    segs = subprocess.run(["readelf", "-lW", str(exe)], capture_output=True, text=True,
                          check=True).stdout
    for m in re.finditer(r"^\s+LOAD\s+0x([0-9a-f]+) 0x([0-9a-f]+) 0x[0-9a-f]+ "
                         r"0x([0-9a-f]+)", segs, re.MULTILINE):
        off, va, filesz = (int(g, 16) for g in m.groups())
        if va <= vaddr < va + filesz:
            return vaddr - va + off
    raise AssertionError(f"{name} in no LOAD segment of {exe}")


@pytest.fixture
def stripped(built, tmp_path):
    """sym_target (PIE, no frame pointers) stripped, and the unstripped original."""
    exe = tmp_path / "sym_target_stripped"
    shutil.copy(built["pie_nofp"], exe)
    subprocess.run(["strip", "--strip-all", str(exe)], check=True)
    return exe, built["pie_nofp"]


def test_stripped_binary_prints_module_and_file_offset(stripped, run_target):
    """No symbol, no debug file: `module+0xOFFSET`, the offset in the file (nm and readelf
    on the unstripped original say where sym_alpha is), and the mapping with the build id
    readelf -n reads from the stripped file."""
    exe, original = stripped
    t = run_target(exe)
    sym = ProcessSymbolizer(t.pid, SymbolCache(debug_root=str(exe.parent / "no-debug")))
    f_alpha, f_lib = sym.resolve([t.addrs["sym_alpha"], t.addrs["sym_lib_func"]])
    # sym_alpha is not exported: no name, but the file and the place in it are known
    off = _file_offset_of(original, "sym_alpha")
    assert str(f_alpha) == f"sym_target_stripped+{off:#x}"
    assert f_alpha.symbol is None and f_alpha.file_offset == off
    m = f_alpha.mapping
    assert m.path == str(exe) and m.build_id.hex() == _readelf_build_id(exe)
    line = next(x for x in sym.maps if x.start <= t.addrs["sym_alpha"] < x.end)
    assert (m.start, m.end, m.pgoff) == (line.start, line.end, line.pgoff)
    assert str(f_lib) == "sym_lib_func+0x0 [libsym_lib.so]"


def test_stripped_binary_resolves_through_build_id_debug_file(stripped, run_target, tmp_path):
    """The debug file installed as <root>/.build-id/xx/yyyy.debug (what Debian's -dbgsym
    packages do under /usr/lib/debug) names what the stripped file does not."""
    exe, original = stripped
    bid = _readelf_build_id(exe)
    dbg = tmp_path / "debug" / ".build-id" / bid[:2] / f"{bid[2:]}.debug"
    dbg.parent.mkdir(parents=True)
    subprocess.run(["objcopy", "--only-keep-debug", str(original), str(dbg)], check=True)
    t = run_target(exe)
    sym = ProcessSymbolizer(t.pid, SymbolCache(debug_root=str(tmp_path / "debug")))
    (f_alpha,) = sym.resolve([t.addrs["sym_alpha+5"]])
    assert (f_alpha.symbol, f_alpha.offset, f_alpha.module) == \
        ("sym_alpha", 5, "sym_target_stripped")
    assert sym.cache.get(str(exe)).source.startswith(f"debug:{dbg}")


def test_stripped_binary_resolves_through_gnu_debuglink(stripped, run_target, tmp_path):
    """No build-id file, but a .gnu_debuglink naming a debug file beside the binary."""
    exe, original = stripped
    dbg = exe.parent / "sym_target_stripped.dbg"
    subprocess.run(["objcopy", "--only-keep-debug", str(original), str(dbg)], check=True)
    subprocess.run(["objcopy", f"--add-gnu-debuglink={dbg.name}", str(exe)], check=True,
                   cwd=exe.parent)
    t = run_target(exe)
    sym = ProcessSymbolizer(t.pid, SymbolCache(debug_root=str(tmp_path / "no-debug")))
    (f_alpha,) = sym.resolve([t.addrs["sym_alpha+5"]])
    assert (f_alpha.symbol, f_alpha.offset) == ("sym_alpha", 5)
    assert sym.cache.get(str(exe)).source.startswith(f"debug:{dbg}")


def test_debug_dir_from_the_environment(stripped, run_target, tmp_path, monkeypatch):
    """MEMLENS_DEBUG_DIR (colon-separated, searched before /usr/lib/debug) points every
    tool's symbolizer at debug files kept elsewhere: by build id and by .gnu_debuglink's
    name under the root's copy of the binary's directory.  Without it, no name."""
    from memlens.core import symbols

    exe, original = stripped
    bid = _readelf_build_id(exe)
    by_id = tmp_path / "by-id"
    dbg = by_id / ".build-id" / bid[:2] / f"{bid[2:]}.debug"
    dbg.parent.mkdir(parents=True)
    subprocess.run(["objcopy", "--only-keep-debug", str(original), str(dbg)], check=True)
    t = run_target(exe)
    addr = t.addrs["sym_alpha+5"]
    monkeypatch.delenv("MEMLENS_DEBUG_DIR", raising=False)
    (f,) = ProcessSymbolizer(t.pid, SymbolCache()).resolve([addr])
    assert f.symbol is None
    monkeypatch.setenv("MEMLENS_DEBUG_DIR", f"{tmp_path / 'empty'}:{by_id}")
    assert symbols.debug_roots() == (str(tmp_path / "empty"), str(by_id), "/usr/lib/debug")
    (f,) = ProcessSymbolizer(t.pid, SymbolCache()).resolve([addr])
    assert (f.symbol, f.offset) == ("sym_alpha", 5)
    # the cache every tool shares reads it too
    monkeypatch.setattr(symbols, "_default_cache", None)
    (f,) = ProcessSymbolizer(t.pid).resolve([addr])
    assert (f.symbol, f.offset) == ("sym_alpha", 5)
    monkeypatch.setattr(symbols, "_default_cache", None)
    # .gnu_debuglink: <root>/<the binary's directory>/<name>
    linked = tmp_path / "linked"
    name = "sym_target_stripped.dbg"
    linked_dir = linked / str(exe.parent.resolve()).lstrip("/")
    linked_dir.mkdir(parents=True)
    subprocess.run(["objcopy", "--only-keep-debug", str(original), str(linked_dir / name)],
                   check=True)
    exe2 = exe.parent / "sym_target_linked"
    shutil.copy(exe, exe2)
    subprocess.run(["objcopy", f"--add-gnu-debuglink={linked_dir / name}", str(exe2)],
                   check=True)
    t2 = run_target(exe2)
    monkeypatch.setenv("MEMLENS_DEBUG_DIR", str(linked))
    (f,) = ProcessSymbolizer(t2.pid, SymbolCache()).resolve([t2.addrs["sym_alpha+5"]])
    assert (f.symbol, f.offset) == ("sym_alpha", 5)
    assert SymbolCache().get(str(exe2)).source.startswith(f"debug:{linked_dir / name}")


def test_pprof_of_a_stripped_binary_is_symbolized_later(stripped, run_target, tmp_path):
    """--pprof keeps the mapping (file, build id, start, limit, offset) and the address of
    a frame left unnamed; the process gone, `go tool pprof` names it later from the
    unstripped build of the same file (same build id)."""
    from memlens.output.pprof import write_profile
    from tests.unit.test_output_pprof import _pprof, decode

    exe, original = stripped
    t = run_target(exe)
    sym = ProcessSymbolizer(t.pid, SymbolCache(debug_root=str(tmp_path / "no-debug")))
    frames = sym.resolve([t.addrs["sym_alpha+5"], t.addrs["sym_lib_func"]])
    line = next(x for x in sym.maps if x.start <= t.addrs["sym_alpha"] < x.end)
    t.stop()
    path = tmp_path / "p" / "faults.pb.gz"
    path.parent.mkdir()
    write_profile(path, [("faults", "count")], [(frames, [23])])
    p = decode(path)
    s = p.string_table
    (m,) = [m for m in p.mapping if s[m.filename] == str(exe)]
    bid = _readelf_build_id(exe)
    assert (s[m.build_id], m.memory_start, m.memory_limit, m.file_offset, m.has_functions) \
        == (bid, line.start, line.end, line.pgoff, False)
    (loc,) = [x for x in p.location if x.mapping_id == m.id]
    assert loc.address == t.addrs["sym_alpha+5"] and not loc.line  # for pprof to name
    top = _pprof(path, "-top", "-nodefraction=0")
    # the binary as it was: the frame is its file (pprof's name for an unknown address)
    assert re.search(r"^\s*23\s+100%\s+100%\s+23\s+100%\s+\[sym_target_stripped\]$",
                     top, re.M), top
    # where the file has its symbols (the same build, unstripped: same build id), pprof
    # names the frame from the address and the mapping alone.  (By build id from
    # PPROF_BINARY_PATH with a newer pprof: Debian 12's Go 1.19 one reads an empty build
    # id from these gcc 12 binaries and refuses them there as a build-id mismatch.)
    shutil.copy(original, exe)
    assert _readelf_build_id(exe) == bid
    top = _pprof(path, "-top", "-nodefraction=0")
    assert re.search(r"^\s*23\s+100%\s+100%\s+23\s+100%\s+sym_alpha$", top, re.M), top


def test_deleted_binary(built, tmp_path):
    exe = tmp_path / "sym_target_deleted"
    shutil.copy(built["nopie_fp"], exe)
    t = Target(exe)
    try:
        exe.unlink()
        sym = ProcessSymbolizer(t.pid, SymbolCache())
        m = next(m for m in sym.maps if m.path.endswith("sym_target_deleted"))
        assert m.deleted
        f, = sym.resolve([t.addrs["sym_alpha+5"]])
        assert f.module == "sym_target_deleted"
        if IS_ROOT:   # /proc/PID/map_files needs CAP_SYS_ADMIN
            assert (f.symbol, f.offset) == ("sym_alpha", 5)
        # reading still works after the process is gone: it was parsed while alive
        t.stop()
        f2, = sym.resolve([t.addrs["sym_alpha"]])
        assert f2.symbol == f.symbol
    finally:
        t.stop()


def test_perf_map_for_jit_frames(built, run_target):
    t = run_target(built["pie_fp"])
    jit = t.addrs["jit"]
    path = Path(f"/tmp/perf-{t.pid}.map")
    path.write_text(f"{jit:x} 40 LazyCompile:foo bar.js:1\n{jit + 0x40:x} 20 Builtin:Baz\n"
                    "garbage line\n")
    try:
        sym = ProcessSymbolizer(t.pid, SymbolCache())
        f1, f2, f3 = sym.resolve([jit + 0x10, jit + 0x45, jit + 0x100])
        assert (f1.symbol, f1.offset) == ("LazyCompile:foo bar.js:1", 0x10)
        assert (f2.symbol, f2.offset) == ("Builtin:Baz", 5)
        assert f3.symbol is None
        assert str(f1) == f"LazyCompile:foo bar.js:1+0x10 [perf-{t.pid}.map]"
    finally:
        path.unlink()


def test_perf_map_parse(tmp_path):
    p = tmp_path / "perf-1.map"
    p.write_text("7f0000001000 100 b\n7f0000000000 10 a\n0x7f0000002000 8 c d e\n")
    pm = PerfMap(str(p))
    idx, off = pm.lookup([0x7F0000000005, 0x7F0000001080, 0x7F0000002007, 0x7F0000000010])
    assert [pm.names[i] if i >= 0 else None for i in idx] == ["a", "b", "c d e", None]
    assert list(off[:3]) == [5, 0x80, 7]


def test_symbol_cache_shares_libc(built, run_target):
    cache = SymbolCache()
    t1 = run_target(built["pie_fp"])
    t2 = run_target(built["nopie_fp"])
    for t in (t1, t2):
        ProcessSymbolizer(t.pid, cache).resolve([t.addrs["malloc"], t.addrs["sym_lib_func"]])
    # libc and libsym_lib.so parsed once each although mapped by two processes
    assert cache.loads == 2
    assert cache.get(LIBC) is cache.get(os.path.realpath(LIBC))


def test_vdso_resolves():
    sym = ProcessSymbolizer(os.getpid(), SymbolCache())
    vdso = next((m for m in sym.maps if m.path == "[vdso]"), None)
    if vdso is None:
        pytest.skip("no vdso")
    mod = sym._mod_of[sym.maps.index(vdso)]
    syms = sym._syms(mod) if mod is not None else None  # the image parsed at first use
    if syms is None:
        pytest.skip("vdso not readable through /proc/self/mem")
    # the vdso exports clock_gettime and __vdso_clock_gettime at one address: we show the
    # plain alias
    a = syms.address_of("clock_gettime")
    assert a is not None
    f, = sym.resolve([vdso.start + a + 2])   # vdso is linked at 0: vaddr == offset in image
    assert (f.symbol, f.offset, f.module) == ("clock_gettime", 2, "vdso")


def test_a_snapshot_is_taken_without_numpy():
    """memleak -p snapshots its target's map before its banner (a target gone right after
    it keeps its frames): the snapshot (maps, files located, the vdso's image copied)
    imports no numpy, whose import delayed the banner; the first lookup does."""
    code = ("import os, sys\n"
            "from memlens.core.symbols import ProcessSymbolizer, SymbolCache\n"
            "sym = ProcessSymbolizer(os.getpid(), SymbolCache())\n"
            "print('numpy' in sys.modules)\n"
            "import ctypes\n"
            "libc = ctypes.CDLL('libc.so.6')\n"
            "addr = ctypes.cast(libc.malloc, ctypes.c_void_p).value\n"
            "f, = sym.resolve([addr])\n"
            "print(f.symbol, 'numpy' in sys.modules)\n")
    words = fresh_python(code)
    assert words == ["False", "malloc", "True"]


# --- ELF reader against binutils ------------------------------------------------------------

def _debug_file_of(path: str) -> str | None:
    bid = ElfSymbols(path, find_debug=False).build_id
    if not bid:
        return None
    p = f"/usr/lib/debug/.build-id/{bid[:1].hex()}/{bid[1:].hex()}.debug"
    return p if os.path.exists(p) else None


def _vaddr_of(path: str, name: str) -> int:
    for a, names in nm_funcs(path, dynamic=True).items():
        if name in names:
            return a
    raise KeyError(name)


def test_libc_dynsym_matches_nm_D():
    syms = ElfSymbols(LIBC, find_debug=False)
    assert syms.source == "dynsym"
    ref = nm_funcs(LIBC, dynamic=True)
    addrs = np.array(sorted(ref), np.uint64)
    idx, off = syms.lookup(addrs)
    assert (idx >= 0).all() and (off == 0).all()
    bad = [(hex(a), syms.name(int(i))) for a, i in zip(addrs.tolist(), idx)
           if syms.name(int(i)) not in ref[a]]
    assert not bad, bad[:10]
    assert len(syms) == len(ref)


def test_libc_debug_symtab_matches_nm():
    dbg = _debug_file_of(LIBC)
    if dbg is None:
        pytest.skip("libc6-dbg not installed (no /usr/lib/debug/.build-id file for libc)")
    syms = ElfSymbols(LIBC)
    assert syms.source.startswith("debug:") and syms.source.endswith("+dynsym")
    ref = nm_funcs(dbg)
    assert len(syms) >= len(ref) > 3000   # debug .symtab: thousands more than .dynsym
    sizes = nm_sizes(dbg)
    addrs = np.array(sorted(ref), np.uint64)
    mid = np.array([sizes[a] // 2 for a in addrs.tolist()], np.uint64)   # inside each function
    idx, off = syms.lookup(addrs + mid)
    names = [syms.name(int(i)) if i >= 0 else None for i in idx]
    wrong = [(hex(a), n) for a, n in zip(addrs.tolist(), names) if n not in ref[a]]
    assert not wrong, wrong[:10]
    assert (off == mid).all()
    assert syms.name(int(syms.lookup([_vaddr_of(LIBC, "malloc")])[0][0])) == "malloc"
    # a static function that only the debug file names
    local = next(n for ns in ref.values() for n in ns if n == "_int_malloc")
    assert syms.address_of(local) is not None


def test_size_zero_symbols_are_approximate(tmp_path):
    src = tmp_path / "z.s"
    src.write_text(".text\n.globl nosize\nnosize:\n nop\n nop\n ret\n"
                   ".globl sized\n.type sized,@function\nsized:\n ret\n.size sized, 1\n")
    obj = tmp_path / "z.o"
    subprocess.run(["gcc", "-c", "-o", str(obj), str(src)], check=True)
    exe = tmp_path / "z.so"
    subprocess.run(["gcc", "-shared", "-nostdlib", "-o", str(exe), str(obj)], check=True)
    syms = ElfSymbols(str(exe))
    # nosize has no .type either: it is STT_NOTYPE, so not a function -> not listed
    assert syms.address_of("nosize") is None
    a = syms.address_of("sized")
    (i,), (o,) = syms.lookup([a])
    assert syms.name(int(i)) == "sized" and o == 0 and not syms.approx[i]
    assert syms.lookup([a + 1])[0][0] == -1   # past its size


def test_cxx_demangling(tmp_path):
    _need("g++")
    src = tmp_path / "cxx.cc"
    src.write_text("namespace ns { struct K { __attribute__((noinline)) int f(int x); };\n"
                   "int K::f(int x) { return x * 3; } }\n"
                   "int main() { ns::K k; return k.f(2) == 6 ? 0 : 1; }\n")
    exe = tmp_path / "cxx"
    subprocess.run(["g++", "-O2", "-o", str(exe), str(src)], check=True)
    syms = ElfSymbols(str(exe))
    mangled = "_ZN2ns1K1fEi"
    assert syms.address_of(mangled) is not None   # the table keeps raw names
    assert demangle(mangled) == "ns::K::f(int)"
    assert demangle("not_mangled") == "not_mangled"
    assert demangle("_Z_garbage_") == "_Z_garbage_"


def test_llvm_symbolizer_lines(built, run_target):
    _need("llvm-symbolizer-19")
    t = run_target(built["pie_fp"])
    sym = ProcessSymbolizer(t.pid, SymbolCache())
    f, = sym.lines(sym.resolve([t.addrs["sym_alpha"]]))
    line = next(i for i, s in enumerate((WORKLOADS / "sym_target.c").read_text().splitlines(), 1)
                if "int sym_alpha(int x)" in s)
    assert f.source == f"sym_target.c:{line}"
    assert str(f).endswith(f"(sym_target.c:{line})")
    LineSymbolizer.shared().close()
    LineSymbolizer._shared = None


def test_parse_maps():
    text = ("55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234   /opt/my app/bin x\n"
            "7f0000000000-7f0000002000 r-xp 00002000 08:01 99 /tmp/x.so (deleted)\n"
            "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]\n"
            "7f1000000000-7f1000001000 rw-p 00000000 00:00 0 \n")
    m = parse_maps(text)
    assert [x.path for x in m] == ["/opt/my app/bin x", "/tmp/x.so", "[stack]", ""]
    assert m[1].deleted and m[1].pgoff == 0x2000 and m[1].inode == 99
    assert not m[0].deleted and m[0].start == 0x55D0C0A00000


# --- kernel -----------------------------------------------------------------------------------

def test_kallsyms_fake(tmp_path):
    p = tmp_path / "kallsyms"
    p.write_text("ffffffff81000000 T _stext\n"
                 "ffffffff81000100 t helper\n"
                 "ffffffff81000200 D some_data\n"
                 "ffffffff81000300 W weak_fn\n"
                 "ffffffffc0001000 t mod_fn\t[xfs]\n"
                 "ffffffff81000180 T unsorted\n")
    k = KernelSymbolizer(str(p))
    assert k.available and len(k) == 5   # data symbol dropped
    fr = k.resolve([0xFFFFFFFF81000110, 0xFFFFFFFF81000190, 0xFFFFFFFF81000250,
                    0xFFFFFFFFC0001004, 0x1000])
    assert [str(f) for f in fr] == ["helper+0x10", "unsorted+0x10", "unsorted+0xd0",
                                    "mod_fn+0x4 [xfs]", "0x1000 [unknown]"]
    st = k.resolve_stack([0xFFFFFFFF81000110, 0xFFFFFFFF81000180])
    # return address at the first byte of `unsorted` belongs to the caller `helper`
    assert [str(f) for f in st] == ["helper+0x10", "helper+0x80"]


def test_kallsyms_zero_addresses_unavailable(tmp_path):
    p = tmp_path / "kallsyms"
    p.write_text("0000000000000000 T _stext\n0000000000000000 t helper\n")
    k = KernelSymbolizer(str(p))
    assert not k.available
    assert str(k.resolve([0xFFFFFFFF81000010])[0]) == "0xffffffff81000010 [unknown]"


def test_kallsyms_real_round_trip():
    if not IS_ROOT:
        pytest.skip("needs root: /proc/kallsyms addresses read as 0 otherwise")
    t0 = time.perf_counter()
    k = KernelSymbolizer()
    load_ms = (time.perf_counter() - t0) * 1e3
    if not k.available:
        pytest.skip("kptr_restrict hides kallsyms addresses")
    assert len(k) > 50_000
    ref = {}
    with open("/proc/kallsyms") as f:
        for line in f:
            a, typ, name = line.split()[:3]
            if typ in "tTwW" and name in ("do_anonymous_page", "handle_mm_fault",
                                          "exc_page_fault"):
                ref[name] = int(a, 16)
    assert ref
    for name, a in ref.items():
        assert k.address_of(name) == a
        f0, f1 = k.resolve([a, a + 0x1D])
        assert (f0.symbol, f0.offset, f0.module) == (name, 0, None)
        assert (f1.symbol, f1.offset) == (name, 0x1D)
    assert load_ms < 1000   # measured ~80 ms, most of it the kernel generating the text
    assert KernelSymbolizer.get() is KernelSymbolizer.get()


def test_binary_in_other_mount_namespace(built, tmp_path):
    """The mapped path exists only in the target's mount namespace (bpftrace #968): we read
    it through /proc/PID/root, and keep it for after the process exits."""
    unshare = _need("unshare")
    if not IS_ROOT:
        pytest.skip("needs root to create a mount namespace")
    d = tmp_path / "nsroot"
    d.mkdir()
    script = (f"mount -t tmpfs none {d} && cp {built['pie_fp']} {d}/sym_target_ns "
              f"&& exec {d}/sym_target_ns")
    proc = subprocess.Popen([unshare, "--mount", "--propagation", "private", "sh", "-c", script],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        addrs = {}
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.strip() == "READY":
                break
            k, v = line.split()
            addrs[k] = int(v, 16)
        assert addrs, "target did not start in its namespace"
        assert not (d / "sym_target_ns").exists()   # invisible from here
        sym = ProcessSymbolizer(proc.pid, SymbolCache())
        f, = sym.resolve([addrs["sym_alpha+5"]])
        assert str(f) == "sym_alpha+0x5 [sym_target_ns]"
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=10)
    f, = sym.resolve([addrs["sym_gamma_static"]])
    assert (f.symbol, f.offset) == ("sym_gamma_static", 0)
