# SPDX-License-Identifier: GPL-2.0-only
"""Where memleak's uprobes go: which object, which symbols, at which file offsets.

- The allocator object is the target's libc (found in its memory map, or for `-c` in the
  loader's answer for the command's binary), `-O OBJ`, or the binary itself when it is
  static.  C++ `operator new` variants are probed in libstdc++ when the target maps it, so
  the stack of a `new` starts at the code that called `new` (BCC #4958).
- Aliases (glibc's aligned_alloc *is* memalign) are probed once: two uprobes at one address
  would count every call twice.
- Entry offset: an x86 uprobe on an instruction the kernel cannot emulate is single-stepped
  out of line, a second trap (KERNEL.md §10: glibc's free starts with `test %rdi,%rdi` and
  costs 5.8 µs a call against malloc's 1.3 µs, whose first instruction, a push, is
  emulated).  `entry_skip()` moves the probe past leading instructions that change neither
  the stack pointer, memory, nor an argument register, onto an instruction the kernel
  emulates (push, jcc, jmp, call, nop), and only if no branch in the function lands on the
  new offset.  The entry probe and the uretprobe then share that one breakpoint.
"""
from __future__ import annotations

import os
import struct

from memlens.errors import UsageError

# enum ml_kind (memleak.h)
KINDS = {
    "malloc": 0, "calloc": 1, "realloc": 2, "posix_memalign": 3, "aligned_alloc": 4,
    "valloc": 5, "memalign": 6, "pvalloc": 7, "mmap": 8, "mremap": 9, "new": 10,
    "new[]": 11, "kmalloc": 16, "kmem_cache_alloc": 17, "page": 18, "percpu": 19,
}
KIND_NAMES = {v: k for k, v in KINDS.items()}

# (symbol without prefix, entry program, kind, required)
C_ALLOCATORS = [
    ("malloc", "ml_enter_size1", "malloc", True),
    ("calloc", "ml_enter_calloc", "calloc", False),
    ("realloc", "ml_enter_realloc", "realloc", False),
    ("posix_memalign", "ml_enter_posix_memalign", "posix_memalign", False),
    ("aligned_alloc", "ml_enter_size2", "aligned_alloc", False),
    ("memalign", "ml_enter_size2", "memalign", False),
    ("valloc", "ml_enter_size1", "valloc", False),
    ("pvalloc", "ml_enter_size1", "pvalloc", False),
    ("mmap", "ml_enter_size2", "mmap", False),
    ("mremap", "ml_enter_mremap", "mremap", False),
]
C_FREES = [("free", True), ("munmap", False)]
# Itanium-mangled operator new variants: plain, nothrow, aligned (C++17), aligned nothrow.
# operator delete is not probed: libstdc++'s delete calls free, whose probe already removes
# the block, and every probe costs a trap on each call.
CXX_NEW = [
    ("_Znwm", "ml_enter_size1", "new"),
    ("_ZnwmRKSt9nothrow_t", "ml_enter_size1", "new"),
    ("_ZnwmSt11align_val_t", "ml_enter_size1", "new"),
    ("_ZnwmSt11align_val_tRKSt9nothrow_t", "ml_enter_size1", "new"),
    ("_Znam", "ml_enter_size1", "new[]"),
    ("_ZnamRKSt9nothrow_t", "ml_enter_size1", "new[]"),
    ("_ZnamSt11align_val_t", "ml_enter_size1", "new[]"),
    ("_ZnamSt11align_val_tRKSt9nothrow_t", "ml_enter_size1", "new[]"),
]


class MissingSymbol(UsageError):
    """The allocator object has no such function: the user's -O or --symbols-prefix names
    something that is not there (exit 2, naming the symbol and the file), not a kernel
    that lacks a hook."""


# --- ELF: exported functions and their file offsets ---------------------------------------

# Plain classes, not dataclasses, and no numpy: the plan is made while the BPF object
# loads (-p) and the attach waits for it; dataclasses' import (inspect) and numpy's were
# most of its time.

class ElfFunctions:
    """path; funcs: name (no @version) -> (vaddr, size); loads: PT_LOAD (p_offset, p_vaddr,
    p_filesz) by offset; buf: the file (mapped)."""

    def __init__(self, path: str, funcs: dict[str, tuple[int, int]],
                 loads: list[tuple[int, int, int]], buf=b""):
        self.path, self.funcs, self.loads, self.buf = path, funcs, loads, buf

    @classmethod
    def read(cls, path: str) -> ElfFunctions:
        from memlens.core.elf import ElfError, function_names

        try:
            funcs, loads, data = function_names(path)
        except (OSError, ElfError) as err:
            raise UsageError(f"cannot read {path} as an ELF object: {err}") from None
        return cls(path, funcs, loads, data)

    def file_offset(self, vaddr: int) -> int:
        for off, va, sz in self.loads:
            if va <= vaddr < va + sz:
                return vaddr - va + off
        raise ValueError(f"{self.path}: address {vaddr:#x} is in no loaded segment")

    def code(self, name: str) -> bytes:
        vaddr, size = self.funcs[name]
        off = self.file_offset(vaddr)
        return self.buf[off:off + max(size, 16)]


# --- x86-64 entry skip --------------------------------------------------------------------

# Registers the BPF side reads at entry: rdi rsi rdx rcx r8 r9 (args) and rsp; rbp/rbx and
# r12-r15 are callee-saved (a function cannot write them before saving them).  What a
# skipped instruction may write: rax, r10, r11 (scratch) and the flags.
_SCRATCH = {0, 10, 11}  # rax, r10, r11


def _emulated(code: bytes, i: int) -> bool:
    """The kernel emulates this instruction (arch/x86/kernel/uprobes.c branch_setup_xol_ops,
    push_setup_xol_ops): no single-step."""
    if i >= len(code):
        return False
    b = code[i]
    if 0x50 <= b <= 0x57 or b in (0x70 + k for k in range(16)) or b in (0xE8, 0xE9, 0xEB, 0x90):
        return True
    if b == 0x41 and i + 1 < len(code) and 0x50 <= code[i + 1] <= 0x57:
        return True
    return b == 0x0F and i + 1 < len(code) and 0x80 <= code[i + 1] <= 0x8F


def _skippable(code: bytes, i: int) -> int:
    """Length of the instruction at i if it writes only flags/scratch registers and neither
    memory nor rsp, else 0.  Deliberately few patterns: what compilers put first."""
    n = len(code)
    if code[i:i + 4] == b"\xf3\x0f\x1e\xfa":         # endbr64
        return 4
    rex = 0
    j = i
    if j < n and 0x40 <= code[j] <= 0x4F:
        rex, j = code[j], j + 1
    if j + 1 >= n:
        return 0
    op, modrm = code[j], code[j + 1]
    mod, reg, rm = modrm >> 6, (modrm >> 3) & 7, modrm & 7
    rex_r, rex_b = (rex >> 2) & 1, rex & 1
    if op in (0x84, 0x85, 0x38, 0x39, 0x3A, 0x3B) and mod == 3:  # test/cmp reg, reg
        return j + 2 - i
    if op == 0xF7 and mod == 3 and reg == 0:          # test $imm32, r32/r64
        return j + 6 - i
    if op == 0xF6 and mod == 3 and reg == 0:          # test $imm8, r8
        return j + 3 - i
    if op in (0x80, 0x83) and mod == 0 and rm == 5 and reg == 7:  # cmp $imm8, disp32(%rip)
        return j + 7 - i
    if op == 0x81 and mod == 0 and rm == 5 and reg == 7:          # cmp $imm32, disp32(%rip)
        return j + 10 - i
    if op == 0x89 and mod == 3 and (rm | rex_b << 3) in _SCRATCH:   # mov r, scratch
        return j + 2 - i
    if op == 0x8B and mod == 3 and (reg | rex_r << 3) in _SCRATCH:  # mov scratch, r
        return j + 2 - i
    if rex in (0, 0x40) and code[i] == 0xB8:                        # mov $imm32, %eax
        return 5
    return 0


def _branch_lands_on(code: bytes, target: int) -> bool:
    """Could any direct branch in the function land on `target` (0 < target)?  Every byte
    position is tried as an opcode, so this over-approximates: a false hit only keeps the
    probe at the entry."""
    n = len(code)
    for p in range(n):
        b = code[p]
        if (0x70 <= b <= 0x7F or b == 0xEB) and p + 1 < n:
            if p + 2 + struct.unpack_from("b", code, p + 1)[0] == target:
                return True
        elif b in (0xE8, 0xE9) and p + 4 < n:
            if p + 5 + struct.unpack_from("<i", code, p + 1)[0] == target:
                return True
        elif b == 0x0F and p + 5 < n and 0x80 <= code[p + 1] <= 0x8F:  # noqa: SIM102 (same shape as above)
            if p + 6 + struct.unpack_from("<i", code, p + 2)[0] == target:
                return True
    return False


def entry_skip(code: bytes, max_insns: int = 4) -> int:
    """Offset of the first emulated instruction reachable by skipping only harmless
    instructions at the function's start; 0 when there is nothing to gain or it is unsafe."""
    if not code or _emulated(code, 0):
        return 0
    i = 0
    for _ in range(max_insns):
        step = _skippable(code, i)
        if not step:
            return 0
        i += step
        if _emulated(code, i):
            return 0 if _branch_lands_on(code, i) else i
    return 0


# --- target libraries ---------------------------------------------------------------------

def process_maps_paths(pid: int) -> list[str]:
    """Paths of the files mapped executable by pid, in map order, each once."""
    out: list[str] = []
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and "x" in parts[1] and parts[5].startswith("/"):
                    path = parts[5].rstrip("\n")
                    if path.endswith(" (deleted)"):
                        continue
                    if path not in out:
                        out.append(path)
    except FileNotFoundError:
        raise UsageError(f"no process with PID {pid}") from None
    except PermissionError:
        from memlens.errors import NotPermitted

        raise NotPermitted(f"cannot read /proc/{pid}/maps (another user namespace, or "
                           "ptrace access denied)") from None
    return out


def _lib_named(base: str, stem: str) -> bool:
    """A file name `lib<stem>.so...` or `lib<stem>-<version>.so...` (the version digits and
    dots, as glibc's old libc-2.31.so).  Plain string tests: re costs ~5 ms of memleak -p's
    start, before its banner."""
    rest = base.removeprefix(f"lib{stem}")
    if rest == base:
        return False
    if rest.startswith(".so"):
        return True
    version, so, _ = rest[1:].partition(".so")
    return rest.startswith("-") and bool(so) and bool(version) and \
        all(c.isdigit() or c == "." for c in version)


def _is_libc(path: str) -> bool:
    return _lib_named(os.path.basename(path), "c")


def find_library(paths: list[str], name: str) -> str | None:
    """`name` as BCC's -O accepts it: "c", "libc", "jemalloc", "libjemalloc.so.2"."""
    stem = name.removeprefix("lib")
    for p in paths:
        base = os.path.basename(p)
        if _lib_named(base, stem) or base == name:
            return p
    return None


class Probe:
    """binary; symbol; offset: file offset of the probe (function start + skip); skip; prog:
    entry program (ml_free: free-like); kind; retprobe; names: the aliases at this address."""

    __slots__ = ("binary", "symbol", "offset", "skip", "prog", "kind", "retprobe", "names")

    def __init__(self, binary: str, symbol: str, offset: int, skip: int, prog: str, kind: int,
                 retprobe: bool, names: list[str]):
        self.binary, self.symbol, self.offset, self.skip = binary, symbol, offset, skip
        self.prog, self.kind, self.retprobe, self.names = prog, kind, retprobe, names

    def __repr__(self) -> str:
        return (f"Probe({self.binary!r}, {self.symbol!r}, {self.offset:#x}, skip={self.skip}, "
                f"{self.prog}, kind={self.kind}, retprobe={self.retprobe}, {self.names})")


class ProbePlan:
    """allocator: the object probed; cxx: where operator new is probed (or None); probes;
    kind_labels: kind -> the label of its stacks' first frame."""

    def __init__(self, allocator: str, cxx: str | None, probes: list[Probe],
                 kind_labels: dict[int, str]):
        self.allocator, self.cxx, self.probes, self.kind_labels = (allocator, cxx, probes,
                                                                   kind_labels)


def plan_probes(mapped: list[str], obj: str | None, prefix: str, target_desc: str,
                skip_entry: bool = True, cxx: bool = True) -> ProbePlan:
    """Choose the allocator object among the files the target maps (or will map) and list
    every probe, deduplicated by address."""
    if obj:
        if "/" in obj:
            if not os.path.exists(obj):
                raise UsageError(f"-O {obj}: no such file")
            allocator = os.path.realpath(obj)
        else:
            allocator = find_library(mapped, obj)
            if allocator is None:
                raise UsageError(f"-O {obj}: {target_desc} maps no library named {obj!r}")
    else:
        allocator = next((p for p in mapped if _is_libc(p)), None) or (mapped[0] if mapped
                                                                        else None)
        if allocator is None:
            raise UsageError(f"cannot find the C library of {target_desc}")
    elf = ElfFunctions.read(allocator)
    probes: list[Probe] = []
    labels: dict[int, str] = {}
    seen: dict[tuple[str, int], Probe] = {}

    def add(e: ElfFunctions, sym: str, prog: str | None, kind_name: str, required: bool,
            label: str) -> None:
        if sym not in e.funcs:
            if required:
                raise MissingSymbol(f"{os.path.basename(e.path)} has no symbol {sym!r} "
                                    f"({e.path}; a static binary or another allocator: "
                                    "try -O OBJ or --symbols-prefix)")
            return
        vaddr, _ = e.funcs[sym]
        start = e.file_offset(vaddr)
        key = (e.path, start)
        if key in seen:
            seen[key].names.append(label)
            return
        skip = entry_skip(e.code(sym)) if skip_entry else 0
        kind = KINDS.get(kind_name, 0)
        p = Probe(e.path, sym, start + skip, skip, prog or "ml_free", kind, prog is not None,
                  [label])
        seen[key] = p
        probes.append(p)

    # labelled by the symbol probed: the allocator called is je_malloc, not malloc
    for name, prog, kind, required in C_ALLOCATORS:
        add(elf, prefix + name, prog, kind, required, prefix + name)
    for name, required in C_FREES:
        add(elf, prefix + name, None, "free", required, prefix + name)
    cxx_path = None
    if cxx:
        cxx_path = next((p for p in mapped if os.path.basename(p).startswith("libstdc++.so")),
                        None)
        # A binary linking libstdc++ statically (or -O naming it) has operator new itself.
        for cand in ([cxx_path] if cxx_path else []) + [allocator]:
            e = elf if cand == allocator else ElfFunctions.read(cand)
            if any(s in e.funcs for s, _, _ in CXX_NEW):
                cxx_path = cand
                for sym, prog, kind in CXX_NEW:
                    add(e, sym, prog, kind, False, kind)
                break
        else:
            cxx_path = None
    for p in probes:
        if p.retprobe:
            labels.setdefault(p.kind, "/".join(dict.fromkeys(p.names)))
    return ProbePlan(allocator, cxx_path, probes, labels)
