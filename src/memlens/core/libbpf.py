# SPDX-License-Identifier: GPL-2.0-only
"""Thin private ctypes binding over the system libbpf (libbpf.so.1, Debian `libbpf1`).

Why ctypes and not a PyPI binding: pylibbpf 0.0.7 cannot attach with runtime parameters
(pid, function, offset), has no ring-buffer consumer and no rodata access; BCC needs kernel
headers at run time (../shared/BPF-PYTHON.md §1).  libbpf's ABI is stable and its option
structs are size-versioned (`sz` first), so declaring the 1.1 layouts works with newer libbpf.

Conventions of libbpf ≥ 1.0 relied upon here: pointer-returning calls give NULL and set
errno on failure; int-returning calls return -errno.
"""
from __future__ import annotations

import ctypes as C
import errno as errno_mod
import os
import sys

# threading.Lock itself: threading imports functools, collections and weakref machinery
# (~5 ms of every start on this VM, bench/)
from _thread import allocate_lock

from memlens.errors import MemlensError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_lib: C.CDLL | None = None
_libc = C.CDLL(None, use_errno=True)
_logs: list[tuple[int, str]] = []
_log_lock = allocate_lock()

LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2

# enum bpf_map_type / bpf_prog_type values used by memlens (UAPI, stable)
BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_HASH = 1, 2, 5
BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_STACK_TRACE = 6, 7
BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH, BPF_MAP_TYPE_RINGBUF = 9, 10, 27
PERCPU_MAP_TYPES = {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY,
                    BPF_MAP_TYPE_LRU_PERCPU_HASH}
BPF_PROG_TYPE_KPROBE, BPF_PROG_TYPE_TRACEPOINT, BPF_PROG_TYPE_PERF_EVENT = 2, 5, 7
BPF_PROG_TYPE_RAW_TRACEPOINT, BPF_PROG_TYPE_TRACING = 17, 26
BPF_MAP_TYPE_NAMES = {1: "hash", 2: "array", 5: "percpu_hash", 6: "percpu_array",
                      7: "stack_trace", 9: "lru_hash", 10: "lru_percpu_hash", 27: "ringbuf"}


class LibbpfUnavailable(MemlensError, OSError):
    """libbpf.so.1 cannot be loaded: an install problem (exit 1, the message says what to
    install).  Also an OSError for callers that only ask "can libbpf be used?"."""


# The option and BTF structs, each made at its first use (`L.UprobeOpts`: the module's
# __getattr__ below): a tool uses 3 or 4 of the 11, and each ctypes Structure class cost
# ~40 us of every start here.
_STRUCTS: dict[str, list[tuple[str, Any]]] = {
    # struct bpf_uprobe_opts, libbpf 1.1 layout (size-versioned, forward compatible)
    "UprobeOpts": [("sz", C.c_size_t), ("ref_ctr_offset", C.c_size_t),
                   ("bpf_cookie", C.c_uint64), ("retprobe", C.c_bool),
                   ("func_name", C.c_char_p)],
    # struct bpf_object_open_opts, libbpf 1.1, up to btf_custom_path (sz says where it ends)
    "ObjectOpenOpts": [("sz", C.c_size_t), ("object_name", C.c_char_p),
                       ("relaxed_maps", C.c_bool), ("pin_root_path", C.c_char_p),
                       ("_attach_prog_fd", C.c_uint32), ("kconfig", C.c_char_p),
                       ("btf_custom_path", C.c_char_p)],
    "UsdtOpts": [("sz", C.c_size_t), ("usdt_cookie", C.c_uint64)],
    "KprobeOpts": [("sz", C.c_size_t), ("bpf_cookie", C.c_uint64), ("offset", C.c_size_t),
                   ("retprobe", C.c_bool)],
    "TracepointOpts": [("sz", C.c_size_t), ("bpf_cookie", C.c_uint64)],
    "PerfEventOpts": [("sz", C.c_size_t), ("bpf_cookie", C.c_uint64)],
    # struct btf_type: name_off, info (vlen:16, kind:5 @24, kflag @31), size|type
    "BtfType": [("name_off", C.c_uint32), ("info", C.c_uint32),
                ("size_or_type", C.c_uint32)],
    "BtfMember": [("name_off", C.c_uint32), ("type", C.c_uint32), ("offset", C.c_uint32)],
    "BtfArray": [("type", C.c_uint32), ("index_type", C.c_uint32), ("nelems", C.c_uint32)],
    "BtfVarSecinfo": [("type", C.c_uint32), ("offset", C.c_uint32), ("size", C.c_uint32)],
    # struct btf_param: follows a FUNC_PROTO's btf_type, vlen of them
    "BtfParam": [("name_off", C.c_uint32), ("type", C.c_uint32)],
}
_structs_lock = allocate_lock()


def __getattr__(name: str) -> Any:
    """`L.BtfType` and the other structs of _STRUCTS, made once (under a lock: a second
    class of the same name would not be accepted where the first is declared)."""
    fields = _STRUCTS.get(name)
    if fields is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _structs_lock:
        cls = globals().get(name)
        if cls is None:
            cls = globals()[name] = type(name, (C.Structure,),
                                         {"_fields_": fields, "__module__": __name__})
    return cls


def _ctype(t: Any) -> Any:
    """A signature's type: "BtfType *" or "c_uint32 *" is a pointer to that type."""
    if isinstance(t, str):
        name = t.removesuffix(" *")
        return C.POINTER(getattr(C, name) if name.startswith("c_") else __getattr__(name))
    return t


PRINT_FN = C.CFUNCTYPE(C.c_int, C.c_int, C.c_char_p, C.c_void_p)

_SIGNATURES = {
    # name: (restype, argtypes)
    "libbpf_major_version": (C.c_uint32, []),
    "libbpf_minor_version": (C.c_uint32, []),
    "libbpf_set_print": (C.c_void_p, [PRINT_FN]),
    "libbpf_num_possible_cpus": (C.c_int, []),
    "libbpf_probe_bpf_prog_type": (C.c_int, [C.c_int, C.c_void_p]),
    "libbpf_probe_bpf_map_type": (C.c_int, [C.c_int, C.c_void_p]),
    "libbpf_probe_bpf_helper": (C.c_int, [C.c_int, C.c_int, C.c_void_p]),
    "bpf_object__open_file": (C.c_void_p, [C.c_char_p, C.c_void_p]),
    "bpf_object__load": (C.c_int, [C.c_void_p]),
    "bpf_object__close": (None, [C.c_void_p]),
    "bpf_object__btf": (C.c_void_p, [C.c_void_p]),
    "bpf_object__next_map": (C.c_void_p, [C.c_void_p, C.c_void_p]),
    "bpf_object__next_program": (C.c_void_p, [C.c_void_p, C.c_void_p]),
    "bpf_map__name": (C.c_char_p, [C.c_void_p]),
    "bpf_map__fd": (C.c_int, [C.c_void_p]),
    "bpf_map__type": (C.c_int, [C.c_void_p]),
    "bpf_map__key_size": (C.c_uint32, [C.c_void_p]),
    "bpf_map__value_size": (C.c_uint32, [C.c_void_p]),
    "bpf_map__max_entries": (C.c_uint32, [C.c_void_p]),
    "bpf_map__set_max_entries": (C.c_int, [C.c_void_p, C.c_uint32]),
    "bpf_map__set_autocreate": (C.c_int, [C.c_void_p, C.c_bool]),
    "bpf_map__set_value_size": (C.c_int, [C.c_void_p, C.c_uint32]),
    "bpf_map__set_map_flags": (C.c_int, [C.c_void_p, C.c_uint32]),
    "bpf_map__map_flags": (C.c_uint32, [C.c_void_p]),
    "bpf_map__reuse_fd": (C.c_int, [C.c_void_p, C.c_int]),
    "bpf_map__initial_value": (C.c_void_p, [C.c_void_p, "c_size_t *"]),
    "bpf_map__btf_value_type_id": (C.c_uint32, [C.c_void_p]),
    "bpf_program__name": (C.c_char_p, [C.c_void_p]),
    "bpf_program__section_name": (C.c_char_p, [C.c_void_p]),
    "bpf_program__set_autoload": (C.c_int, [C.c_void_p, C.c_bool]),
    "bpf_program__set_expected_attach_type": (C.c_int, [C.c_void_p, C.c_int]),
    "bpf_program__autoload": (C.c_bool, [C.c_void_p]),
    "bpf_program__fd": (C.c_int, [C.c_void_p]),
    "bpf_program__attach": (C.c_void_p, [C.c_void_p]),
    "bpf_program__attach_tracepoint": (C.c_void_p, [C.c_void_p, C.c_char_p, C.c_char_p]),
    "bpf_program__attach_tracepoint_opts": (C.c_void_p, [C.c_void_p, C.c_char_p, C.c_char_p,
                                                         "TracepointOpts *"]),
    "bpf_program__attach_raw_tracepoint": (C.c_void_p, [C.c_void_p, C.c_char_p]),
    "bpf_program__attach_trace": (C.c_void_p, [C.c_void_p]),
    "bpf_program__attach_perf_event_opts": (C.c_void_p, [C.c_void_p, C.c_int,
                                                         "PerfEventOpts *"]),
    "bpf_program__attach_kprobe_opts": (C.c_void_p, [C.c_void_p, C.c_char_p,
                                                     "KprobeOpts *"]),
    "bpf_program__attach_uprobe_opts": (C.c_void_p, [C.c_void_p, C.c_int, C.c_char_p,
                                                     C.c_size_t, "UprobeOpts *"]),
    "bpf_program__attach_usdt": (C.c_void_p, [C.c_void_p, C.c_int, C.c_char_p, C.c_char_p,
                                              C.c_char_p, "UsdtOpts *"]),
    "bpf_link__destroy": (C.c_int, [C.c_void_p]),
    "bpf_map_lookup_elem": (C.c_int, [C.c_int, C.c_void_p, C.c_void_p]),
    "bpf_map_update_elem": (C.c_int, [C.c_int, C.c_void_p, C.c_void_p, C.c_uint64]),
    "bpf_map_delete_elem": (C.c_int, [C.c_int, C.c_void_p]),
    "bpf_map_get_next_key": (C.c_int, [C.c_int, C.c_void_p, C.c_void_p]),
    "bpf_map_lookup_batch": (C.c_int, [C.c_int, C.c_void_p, C.c_void_p, C.c_void_p,
                                       C.c_void_p, "c_uint32 *", C.c_void_p]),
    "bpf_map_lookup_and_delete_batch": (C.c_int, [C.c_int, C.c_void_p, C.c_void_p, C.c_void_p,
                                                  C.c_void_p, "c_uint32 *", C.c_void_p]),
    "bpf_map_lookup_and_delete_elem": (C.c_int, [C.c_int, C.c_void_p, C.c_void_p]),
    "bpf_map_delete_batch": (C.c_int, [C.c_int, C.c_void_p, "c_uint32 *",
                                       C.c_void_p]),
    "btf__find_by_name_kind": (C.c_int32, [C.c_void_p, C.c_char_p, C.c_uint32]),
    "btf__type_by_id": ("BtfType *", [C.c_void_p, C.c_uint32]),
    "btf__name_by_offset": (C.c_char_p, [C.c_void_p, C.c_uint32]),
    "btf__resolve_size": (C.c_int64, [C.c_void_p, C.c_uint32]),
    "btf__resolve_type": (C.c_int, [C.c_void_p, C.c_uint32]),
    "btf__load_vmlinux_btf": (C.c_void_p, []),
    "btf__free": (None, [C.c_void_p]),
    "btf__parse": (C.c_void_p, [C.c_char_p, C.c_void_p]),
    "btf__type_cnt": (C.c_uint32, [C.c_void_p]),
    # BTF writer (tests synthesize small BTF blobs with it)
    "btf__new_empty": (C.c_void_p, []),
    "btf__add_int": (C.c_int, [C.c_void_p, C.c_char_p, C.c_size_t, C.c_int]),
    "btf__add_struct": (C.c_int, [C.c_void_p, C.c_char_p, C.c_uint32]),
    "btf__add_field": (C.c_int, [C.c_void_p, C.c_char_p, C.c_int, C.c_uint32, C.c_uint32]),
    "btf__add_ptr": (C.c_int, [C.c_void_p, C.c_int]),
    "btf__add_typedef": (C.c_int, [C.c_void_p, C.c_char_p, C.c_int]),
    "btf__add_func_proto": (C.c_int, [C.c_void_p, C.c_int]),
    "btf__add_func_param": (C.c_int, [C.c_void_p, C.c_char_p, C.c_int]),
    "btf__raw_data": (C.c_void_p, [C.c_void_p, "c_uint32 *"]),
}


class _Lib:
    """Attribute access to libbpf functions with their signatures set, each looked up and
    declared at its first use (a tool calls ~25 of the 70: declaring them all when libbpf
    was loaded cost ~1 ms of every start)."""

    def __init__(self, cdll: C.CDLL):
        self._cdll = cdll

    def __getattr__(self, name: str):
        try:
            res, args = _SIGNATURES[name]
        except KeyError:
            raise AttributeError(f"libbpf binding has no {name}") from None
        fn = getattr(self._cdll, name)  # older libbpf: AttributeError (see has())
        fn.restype, fn.argtypes = _ctype(res), [_ctype(a) for a in args]
        setattr(self, name, fn)  # found in the instance from now on: __getattr__ no more
        return fn

    def has(self, name: str) -> bool:
        return hasattr(self, name)


_DEBUG = bool(os.environ.get("MEMLENS_DEBUG"))
# verifier logs arrive as one message: one buffer sized for a whole log, reused (callbacks
# run one at a time, under the GIL).  Made at the first message: a load that goes well
# hands Python none (debug lines stop in _debug_filter), and zeroing 1 MiB at import cost
# ~2 ms of every start (256 page faults) and 1 MiB of RSS.
_PRINT_BUF_SIZE = 1 << 20
_print_buf: C.Array[C.c_char] | None = None


_deferred_interrupt = False


@PRINT_FN
def _print_cb(level: int, fmt: bytes, va: int) -> int:
    # A ctypes callback must not raise: ctypes would print the exception as "ignored" and
    # return into libbpf as if nothing happened.  The CLI's signal handlers never raise
    # (core/runner.SIGNALS), but a library user's SIGINT handler does: a KeyboardInterrupt
    # caught here is raised again once libbpf has returned (raise_deferred_interrupt).
    global _deferred_interrupt, _print_buf
    try:
        if level >= LIBBPF_DEBUG and not _DEBUG:
            return 0  # ~200 debug lines per load: formatting them cost ~40 ms of start-up
        buf = _print_buf
        if buf is None:
            buf = _print_buf = C.create_string_buffer(_PRINT_BUF_SIZE)
        # On x86-64 and arm64 a va_list argument is passed as a pointer: vsnprintf takes it.
        _libc.vsnprintf(buf, len(buf), fmt, C.c_void_p(va))
        text = buf.value.decode(errors="replace").rstrip()
        if _DEBUG:
            print(text, file=sys.stderr)
        with _log_lock:
            _logs.append((level, text))
            del _logs[:-4000]  # a load with debug lines: engine.bpf.o prints ~530
    except KeyboardInterrupt:
        _deferred_interrupt = True
    except BaseException:
        pass
    return 0


def _debug_filter(callback: int) -> int | None:
    """A native print function for libbpf that drops debug lines and hands the others to
    `callback` (the address of _print_cb's thunk); None where it cannot be made.

    Hand-made (20 bytes of x86-64) because no library offers it and the Python callback is
    too slow for this: libbpf prints ~1000 debug lines to open and load an object
    (memleak's), and a ctypes callback must take the GIL for each, to drop it.  Alone that
    is a few ms of every start; with another thread running Python beside the load (numpy
    imported while the kernel verifies: memleak -p, the snoops' prefetch) each callback
    waits up to the interpreter's switch interval (5 ms) for the GIL, and the load that
    should run beside the other thread crawls behind it.  The filter takes no GIL: libbpf
    calls Python only for warnings and info, which it keeps for the error messages."""
    if os.uname().machine != "x86_64":
        return None
    code = (b"\x83\xff\x02"             # cmp edi, LIBBPF_DEBUG
            b"\x7d\x0c"                  # jge ret0 (+12): a debug line, dropped
            b"\x48\xb8" + callback.to_bytes(8, "little")  # movabs rax, callback
            + b"\xff\xe0"                # jmp rax: the same arguments, tail call
            b"\x31\xc0"                  # ret0: xor eax, eax
            b"\xc3")                      # ret
    try:
        # written, then made executable (never writable and executable at once); private:
        # a shared anonymous page is listed in /proc/PID/maps as "/dev/zero (deleted)", an
        # executable mapping of a file the symbolizer and the unwinder would try to read.
        # libc's mmap through ctypes, not the mmap module (a shared library: ~0.3 ms of
        # every tool's start)
        page = os.sysconf("SC_PAGE_SIZE")
        mmap_ = _libc.mmap
        mmap_.restype = C.c_void_p
        mmap_.argtypes = [C.c_void_p, C.c_size_t, C.c_int, C.c_int, C.c_int, C.c_long]
        addr = mmap_(None, page, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS,
                     -1, 0)
        if addr is None or addr == C.c_void_p(-1).value:
            return None
        C.memmove(addr, code, len(code))
        mprotect = _libc.mprotect
        mprotect.argtypes = [C.c_void_p, C.c_size_t, C.c_int]
        if mprotect(addr, page, _PROT_READ | _PROT_EXEC) != 0:
            return None  # a policy refusing executable memory (SELinux execmem)
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return addr  # mapped for the life of the process: libbpf holds the address


_PROT_READ, _PROT_WRITE, _PROT_EXEC = 1, 2, 4
_MAP_PRIVATE, _MAP_ANONYMOUS = 0x02, 0x20  # x86_64's (the filter is made only there)
_native_filter: list[int | None] = []  # made once: [address or None]


def _install_printer(cdll) -> None:
    """libbpf's print function: the native debug filter in front of _print_cb, or the
    callback itself (debug lines kept: MEMLENS_DEBUG, keep_debug_lines(); or no filter on
    this machine)."""
    native = None
    if not _DEBUG:
        if not _native_filter:
            thunk = C.cast(_print_cb, C.c_void_p).value
            _native_filter.append(_debug_filter(thunk) if thunk else None)
        native = _native_filter[0]
    if native is None:
        cdll.libbpf_set_print(_print_cb)
    else:
        cdll.libbpf_set_print(C.cast(C.c_void_p(native), PRINT_FN))


def keep_debug_lines(on: bool = True) -> None:
    """libbpf's debug lines reach take_logs(LIBBPF_DEBUG) (and stderr), as with
    MEMLENS_DEBUG, or no longer (tests that read libbpf's own account of a load)."""
    global _DEBUG
    _DEBUG = on
    if _lib is not None:
        _install_printer(_lib)


def raise_deferred_interrupt() -> None:
    """Raise, now that libbpf has returned, a KeyboardInterrupt that arrived inside its
    print callback."""
    global _deferred_interrupt
    if _deferred_interrupt:
        _deferred_interrupt = False
        raise KeyboardInterrupt


def lib() -> _Lib:
    global _lib
    if _lib is None:
        path = os.environ.get("MEMLENS_LIBBPF") or "libbpf.so.1"
        try:
            cdll = C.CDLL(path, use_errno=True)
        except OSError:
            import ctypes.util  # ~10 ms (shutil, tempfile, subprocess): only when needed

            found = ctypes.util.find_library("bpf")
            if not found:
                raise LibbpfUnavailable(
                    "libbpf.so.1 not found: install the libbpf runtime (Debian/Ubuntu: "
                    "apt install libbpf1)") from None
            cdll = C.CDLL(found, use_errno=True)
        _lib = _Lib(cdll)  # type: ignore[assignment]
        _install_printer(_lib)
    return _lib  # type: ignore[return-value]


def version() -> tuple[int, int]:
    lb = lib()
    return int(lb.libbpf_major_version()), int(lb.libbpf_minor_version())


def take_logs(min_level: int = LIBBPF_INFO) -> list[str]:
    """libbpf's messages since the last call (warnings and info; debug dropped)."""
    with _log_lock:
        out = [msg for lvl, msg in _logs if lvl <= min_level]
        _logs.clear()
    return out


def peek_logs(min_level: int = LIBBPF_WARN) -> list[str]:
    """libbpf's messages since the last take_logs(), left in place."""
    with _log_lock:
        return [msg for lvl, msg in _logs if lvl <= min_level]


def last_errno() -> int:
    return C.get_errno()


def strerror(err: int) -> str:
    err = abs(err)
    return f"{errno_mod.errorcode.get(err, err)}: {os.strerror(err)}"


def ncpus_possible() -> int:
    return int(lib().libbpf_num_possible_cpus())


BPF_LINK_CREATE = 28
BPF_TRACE_UPROBE_MULTI = 48
BPF_F_UPROBE_MULTI_RETURN = 1


def _nr_bpf() -> int:
    """bpf(2)'s system call number (the raw calls below: wrappers libbpf 1.1 lacks)."""
    return {"x86_64": 321, "aarch64": 280}[os.uname().machine]


def link_create_uprobe_multi(prog_fd: int, path: str, offsets: list[int], cookies: list[int],
                             pid: int, retprobe: bool) -> int:
    """bpf(BPF_LINK_CREATE) of a uprobe_multi link (kernel >= 6.6): one link, one fd, for
    every offset.  libbpf gained a wrapper only in 1.3 (Debian 12 ships 1.1), so the
    `union bpf_attr` is built here (link_create: prog_fd@0, target_fd@4, attach_type@8,
    flags@12, then uprobe_multi {path@16, offsets@24, ref_ctr_offsets@32, cookies@40,
    cnt@48, flags@52, pid@56}).  Returns the link fd or -errno."""
    import struct

    c_path = C.create_string_buffer(path.encode())
    c_offs = (C.c_uint64 * len(offsets))(*offsets)
    c_cookies = (C.c_uint64 * len(cookies))(*cookies)
    attr = bytearray(128)
    struct.pack_into("<IIII", attr, 0, prog_fd, 0, BPF_TRACE_UPROBE_MULTI, 0)
    struct.pack_into("<QQQQIII", attr, 16, C.addressof(c_path), C.addressof(c_offs), 0,
                     C.addressof(c_cookies), len(offsets),
                     BPF_F_UPROBE_MULTI_RETURN if retprobe else 0, max(pid, 0))
    buf = C.create_string_buffer(bytes(attr), len(attr))
    fd = _libc.syscall(C.c_long(_nr_bpf()), C.c_int(BPF_LINK_CREATE), buf,
                       C.c_uint(len(attr)))
    return fd if fd >= 0 else -C.get_errno()


BPF_PERF_EVENT = 41  # enum bpf_attach_type


def link_create_perf_event(prog_fd: int, perf_fd: int, cookie: int = 0) -> int:
    """bpf(BPF_LINK_CREATE) of a perf link (kernel >= 5.15): the program on a perf event,
    with its BPF cookie (link_create: prog_fd@0, target_fd@4, attach_type@8, flags@12,
    perf_event.bpf_cookie@16).  Returns the link fd or -errno (EINVAL before 5.15)."""
    import struct

    attr = bytearray(48)
    struct.pack_into("<IIIIQ", attr, 0, prog_fd, perf_fd, BPF_PERF_EVENT, 0, cookie)
    buf = C.create_string_buffer(bytes(attr), len(attr))
    fd = _libc.syscall(C.c_long(_nr_bpf()), C.c_int(BPF_LINK_CREATE), buf,
                       C.c_uint(len(attr)))
    return fd if fd >= 0 else -C.get_errno()


BPF_PROG_LOAD = 5


def load_return_zero(prog_type: int, expected_attach_type: int = 0) -> int:
    """bpf(BPF_PROG_LOAD) of `r0 = 0; exit`, the least program of a type (prog_type@0,
    insn_cnt@4, insns@8, license@16, expected_attach_type@68).  Returns the fd or -errno."""
    import struct

    insns = C.create_string_buffer(bytes.fromhex("b700000000000000" "9500000000000000"), 16)
    license_ = C.create_string_buffer(b"GPL")
    attr = bytearray(128)
    struct.pack_into("<IIQQ", attr, 0, prog_type, 2, C.addressof(insns),
                     C.addressof(license_))
    struct.pack_into("<I", attr, 68, expected_attach_type)
    buf = C.create_string_buffer(bytes(attr), len(attr))
    fd = _libc.syscall(C.c_long(_nr_bpf()), C.c_int(BPF_PROG_LOAD), buf, C.c_uint(len(attr)))
    return fd if fd >= 0 else -C.get_errno()


PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_ATTR_SIZE = 128  # PERF_ATTR_SIZE_VER7; the kernel accepts any known version


def perf_event_attr(type_: int, config: int, sample_period: int = 0,
                    sample_type: int = 0) -> bytes:
    """struct perf_event_attr: type u32, size u32, config u64, sample_period u64,
    sample_type u64, then zeros (read_format, flags: disabled=bit0 left 0, enabled at
    once).  Here, not in core/perf: the engine opens tracepoints' events without it."""
    return (type_.to_bytes(4, "little") + PERF_ATTR_SIZE.to_bytes(4, "little")
            + config.to_bytes(8, "little") + sample_period.to_bytes(8, "little")
            + sample_type.to_bytes(8, "little") + bytes(PERF_ATTR_SIZE - 32))


def perf_event_open(attr: bytes, pid: int, cpu: int, group_fd: int = -1, flags: int = 0) -> int:
    """perf_event_open(2) through syscall(); returns the fd or -errno."""
    nr = {"x86_64": 298, "aarch64": 241}[os.uname().machine]
    buf = C.create_string_buffer(attr, len(attr))
    fd = _libc.syscall(C.c_long(nr), buf, C.c_int(pid), C.c_int(cpu), C.c_int(group_fd),
                       C.c_ulong(flags))
    return fd if fd >= 0 else -C.get_errno()
