# SPDX-License-Identifier: GPL-2.0-only
"""BpfObject: the libbpf skeleton lifecycle, from Python.

    with BpfObject.open(path) as obj:          # open: parse ELF, BTF, relocations
        obj.rodata["targ_tgid"] = pid          # configure: read-only data, map sizes,
        obj.set_max_entries("allocs", 1 << 20) #   which programs autoload
        obj.set_autoload("oom_kill_process", False)
        obj.load()                             # load: CO-RE relocate, verify
        obj.attach_tracepoint("mark_victim", "oom", "mark_victim")   # attach
        ...                                    # poll maps / ring buffers
                                               # exit: links destroyed, object closed

Every phase raises its own error with libbpf's explanation, so a user sees *which* step
failed and why (verifier log tail on load, errno on attach).
"""
from __future__ import annotations

import ctypes as C
import errno
import os
import sys

from memlens.core import libbpf as L
from memlens.core.lazy import np
from memlens.core.memo import memo
from memlens.errors import KernelLacks, MemlensError, NotPermitted

TYPE_CHECKING = False  # typing costs ~7 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    from typing import Any

    import numpy as np

BTF_KIND_INT, BTF_KIND_PTR, BTF_KIND_ARRAY, BTF_KIND_STRUCT, BTF_KIND_UNION = 1, 2, 3, 4, 5
BTF_KIND_ENUM, BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST = 6, 8, 9, 10
BTF_KIND_VAR, BTF_KIND_DATASEC, BTF_KIND_ENUM64 = 14, 15, 19

# (os.path, not pathlib: pathlib costs ~8 ms of every tool's start, bench/launch_phases.py)
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


class BpfError(MemlensError):
    """A lifecycle step failed; the message names the step, the object and the reason."""


def _phase_error(phase: str, what: str, err: int, hint: str = "") -> MemlensError:
    logs = [m for m in L.take_logs(L.LIBBPF_WARN) if m]
    detail = f" ({L.strerror(err)})" if err else ""
    tail = ""
    lines = [ln.strip() for m in logs for ln in m.splitlines() if ln.strip()]
    if "-- END PROG LOAD LOG --" in " ".join(lines):
        # the verifier's verdict is the last lines of the program's log
        end = max(i for i, ln in enumerate(lines) if "-- END PROG LOAD LOG --" in ln)
        lines = lines[max(0, end - 2):end]
    lines = [ln.removeprefix("libbpf: ") for ln in lines]
    if lines:
        tail = "; libbpf: " + " | ".join(lines[-3:])
        hint = hint or " (MEMLENS_DEBUG=1 prints libbpf's full log)"
    msg = f"{phase} {what} failed{detail}{tail}{hint}"
    if err in (errno.EPERM, errno.EACCES):
        if os.geteuid() == 0:
            return KernelLacks(msg + " — refused although root: kernel lockdown or a security "
                               "module forbids this program type here")
        return NotPermitted(msg + " — needs root or CAP_BPF+CAP_PERFMON")
    if phase == "attaching" and err in (errno.ENOENT, errno.EOPNOTSUPP, errno.ENOTSUPP
                                        if hasattr(errno, "ENOTSUPP") else 524):
        return KernelLacks(msg)
    return BpfError(msg)


def object_path(relative: str) -> str:
    """Path of a compiled object shipped in the package, e.g. 'tools/oomkill/oomkill.bpf.o'."""
    path = os.path.join(PACKAGE_ROOT, relative)
    if not os.path.exists(path):
        raise BpfError(f"BPF object {path} is missing: the package was installed without its "
                       "compiled objects (rebuild with `make bpf` or reinstall with clang present)")
    return path


class _Datasec:
    """Dict-like view of a global data section (.rodata/.bss/.data) before load."""

    def __init__(self, obj: BpfObject, map_ptr: int):
        self._obj = obj
        self._map = map_ptr
        size = C.c_size_t()
        self._base = L.lib().bpf_map__initial_value(map_ptr, C.byref(size))
        self._size = size.value
        self.vars: dict[str, tuple[int, int]] = {}
        btf = obj.btf
        type_id = L.lib().bpf_map__btf_value_type_id(map_ptr)
        if not btf or not type_id:
            return
        t = L.lib().btf__type_by_id(btf, type_id).contents
        if (t.info >> 24) & 0x1F != BTF_KIND_DATASEC:
            return
        vlen = t.info & 0xFFFF
        secinfo = C.cast(C.addressof(t) + C.sizeof(L.BtfType), C.POINTER(L.BtfVarSecinfo))
        for i in range(vlen):
            si = secinfo[i]
            var = L.lib().btf__type_by_id(btf, si.type).contents
            name = L.lib().btf__name_by_offset(btf, var.name_off).decode()
            self.vars[name] = (si.offset, si.size)

    def __setitem__(self, name: str, value: Any) -> None:
        if self._obj.loaded:
            raise BpfError(f"cannot set {name}: read-only data is fixed once the object is loaded")
        if name not in self.vars:
            raise BpfError(f"BPF object has no global variable {name!r}")
        off, size = self.vars[name]
        if isinstance(value, (bytes, bytearray)):
            data = bytes(value)[:size].ljust(size, b"\0")
        elif isinstance(value, bool):
            data = int(value).to_bytes(size, "little")
        elif isinstance(value, int):
            data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        else:
            raise BpfError(f"unsupported value type for {name}: {type(value).__name__}")
        C.memmove(self._base + off, data, size)

    def __getitem__(self, name: str) -> bytes:
        off, size = self.vars[name]
        return C.string_at(self._base + off, size)

    def __contains__(self, name: str) -> bool:
        return name in self.vars

    def copy_from(self, other: _Datasec) -> None:
        """Every variable as `other` (the same section of another copy of the object) has
        them: a second copy configured as the first (core/engine's hand-over)."""
        if self._obj.loaded:
            raise BpfError("cannot copy read-only data into a loaded object")
        C.memmove(self._base, other._base, min(self._size, other._size))


_perf_links: bool | None = None  # whether the kernel makes perf links (None: not tried)


class BpfObject:
    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        self.name = os.path.basename(self.path)
        self.loaded = False
        self.links: list[tuple[str, int]] = []
        self.raw_links: list[tuple[str, int]] = []  # link fds made without libbpf
        self._maps: dict[str, Any] = {}
        self.attach_types: dict[str, int] = {}  # set_expected_attach_type's, by program
        lb = L.lib()
        L.take_logs()
        from memlens.core import btfcache

        # CO-RE against this object's minimal kernel BTF when one was made (core/btfcache:
        # libbpf's parse of all of vmlinux BTF was most of the load)
        self.custom_btf = btfcache.cached(self.path)
        opts = None
        if self.custom_btf:
            self._opts = L.ObjectOpenOpts(sz=C.sizeof(L.ObjectOpenOpts),
                                          btf_custom_path=self.custom_btf.encode())
            opts = C.addressof(self._opts)
        ptr = lb.bpf_object__open_file(str(self.path).encode(), opts)
        if not ptr:
            raise _phase_error("opening", f"BPF object {self.name}", L.last_errno())
        self.ptr: int = ptr
        self.btf = lb.bpf_object__btf(ptr)
        self._map_ptrs: dict[str, int] = {}
        self._sized: dict[str, tuple[str, int]] = {}  # map -> (option, entries asked)
        self._unmade: set[str] = set()  # maps left unmade (skip_maps)
        m = lb.bpf_object__next_map(ptr, None)
        while m:
            self._map_ptrs[lb.bpf_map__name(m).decode()] = m
            m = lb.bpf_object__next_map(ptr, m)
        self._progs: dict[str, int] = {}
        p = lb.bpf_object__next_program(ptr, None)
        while p:
            self._progs[lb.bpf_program__name(p).decode()] = p
            p = lb.bpf_object__next_program(ptr, p)
        self.rodata = self._datasec(".rodata")
        self.bss = self._datasec(".bss")
        L.raise_deferred_interrupt()  # a Ctrl-C inside libbpf's print callback (libbpf.py)

    @classmethod
    def open(cls, relative_or_path: str | os.PathLike[str]) -> BpfObject:
        path = os.fspath(relative_or_path)
        if not os.path.isabs(path):
            path = object_path(path)
        return cls(path)

    # -- configure -------------------------------------------------------------------------
    def _datasec(self, suffix: str) -> _Datasec | None:
        for name, m in self._map_ptrs.items():
            if name.endswith(suffix):
                return _Datasec(self, m)
        return None

    def set_max_entries(self, map_name: str, n: int, option: str | None = None) -> None:
        """Size a map; `option` names the command-line option the size came from, so a
        size the kernel refuses at load is a usage error naming it, not libbpf's E2BIG."""
        rc = L.lib().bpf_map__set_max_entries(self._map_ptr(map_name), int(n))
        if rc:
            raise _phase_error("configuring", f"map {map_name} size", rc)
        if option:
            self._sized[map_name] = (option, int(n))

    def set_value_size(self, map_name: str, size: int) -> None:
        """Before load: the map's values `size` bytes (fewer than its BTF type's: a struct
        whose tail a run leaves unused).  The kernel refuses a map whose value size differs
        from its BTF type's, so make such a map with premake_maps (no BTF)."""
        rc = L.lib().bpf_map__set_value_size(self._map_ptr(map_name), int(size))
        if rc:
            raise _phase_error("configuring", f"map {map_name} value size", rc)

    def share_map(self, map_name: str, loaded: BpfObject) -> None:
        """Before load: this object's map is `loaded`'s map of that name (a second copy of
        one object, sharing its state: core/engine's hand-over)."""
        rc = L.lib().bpf_map__reuse_fd(self._map_ptr(map_name), loaded.map(map_name).fd)
        if rc:
            raise _phase_error("configuring", f"map {map_name} shared", rc)

    def map_spec(self, map_name: str) -> tuple[int, int, int, int, int, str]:
        """The map as configured: (type, key_size, value_size, max_entries, flags, name),
        map_create's arguments."""
        m, lb = self._map_ptr(map_name), L.lib()
        return (int(lb.bpf_map__type(m)), int(lb.bpf_map__key_size(m)),
                int(lb.bpf_map__value_size(m)), int(lb.bpf_map__max_entries(m)),
                int(lb.bpf_map__map_flags(m)), map_name)

    def premake_maps(self, names: tuple[str, ...] | list[str],
                     made: dict[str, tuple[tuple, int]] | None = None) -> int:
        """Before load: make these maps as configured, from two threads (the first named
        alone in one: name the biggest first; each bpf() call releases the GIL, and the
        kernel's work runs on two CPUs), and hand them to libbpf (bpf_map__reuse_fd),
        which makes the others and loads the programs.  libbpf makes its maps one after
        the other inside the load: memleak -p's took ~30 ms of it (strace -T: allocs ~15
        ms, 2^20 buckets zeroed even without preallocation).

        `made`: maps another thread made already (name -> (map_spec, fd), map_create's
        fd or -errno), taken if made as configured, else closed and made again here; the
        dict is emptied (their fds are this object's business from here).  Made here
        without BTF: only plain maps whose values hold no lock, timer nor kptr (hashes,
        arrays, stack traces, rings: PREMADE_TYPES), never a section's (.rodata...: libbpf
        fills those as it makes them).  A map that cannot be made here (ENOMEM, E2BIG)
        is left to libbpf, whose failure then names the option that sized it.  Returns
        how many were handed over."""
        if self.loaded:
            raise BpfError("cannot make maps for an object already loaded")
        specs = {}
        for name in names:
            if self.has_map(name) and "." not in name:
                spec = self.map_spec(name)
                if spec[0] in PREMADE_TYPES and not spec[4] & BPF_F_NUMA_NODE:
                    specs[name] = spec
        fds: dict[str, int] = {}
        for name, (spec, fd) in (made or {}).items():
            if fd >= 0 and specs.get(name) == tuple(spec):
                fds[name] = fd
            elif fd >= 0:
                os.close(fd)  # not as configured after all: made again below
        if made is not None:
            made.clear()
        todo = [(name, spec) for name, spec in specs.items() if name not in fds]

        def make(items) -> None:
            for name, spec in items:
                fds[name] = map_create(*spec)

        if len(todo) > 1:
            # the biggest in one thread, the others in a second (run_all: _thread's)
            run_all([lambda: make(todo[:1]), lambda: make(todo[1:])], max_threads=2)
        else:
            make(todo)
        handed = 0
        lb = L.lib()
        for name, fd in fds.items():
            if fd < 0:
                continue
            try:
                if lb.bpf_map__reuse_fd(self._map_ptrs[name], fd) == 0:
                    handed += 1
            finally:
                os.close(fd)  # libbpf holds its own duplicate
        return handed

    def allocate_on_insert(self, *map_names: str) -> None:
        """The named hash maps (those this object has) allocate their entries as they are
        inserted where the kernel lets tracing programs use such maps
        (hash_maps_may_allocate), and are preallocated where it does not (the flag is
        cleared if the object set it).  A preallocated hash is allocated and zeroed when
        it is made, whatever it will hold: the stack store (10 MB) was ~3.5 ms of a stack
        tool's load, the count table ~1 ms."""
        allowed = hash_maps_may_allocate()
        lb = L.lib()
        for name in map_names:
            if not self.has_map(name):
                continue
            m = self._map_ptr(name)
            if lb.bpf_map__type(m) != L.BPF_MAP_TYPE_HASH:
                continue
            flags = lb.bpf_map__map_flags(m)
            want = flags | BPF_F_NO_PREALLOC if allowed else flags & ~BPF_F_NO_PREALLOC
            if want != flags:
                rc = lb.bpf_map__set_map_flags(m, want)
                if rc:
                    raise _phase_error("configuring", f"map {name} flags", rc)

    def warm_allocation(self, *map_names: str) -> None:
        """After the load, before attaching: the named hash maps that allocate their
        entries on insert get their per-CPU cache of free entries filled on every CPU.
        The kernel's allocator (bpf_mem_alloc) starts each CPU with one free entry over 256
        bytes (four if smaller) and refills when it runs low, asynchronously (irq_work): a
        program storing two new stacks at once (a user and a kernel one) found no memory
        for the second, the first event on each CPU (a stack lost at every start of
        faults).  An insert on a CPU starts its refill: here an insert and a delete of a
        zero key (the programs are not attached yet), from each CPU in turn.  ~20 us a
        CPU and map."""
        lb = L.lib()
        maps = []
        for name in map_names:
            if not self.has_map(name):
                continue
            m = self._map_ptr(name)
            if (lb.bpf_map__type(m) != L.BPF_MAP_TYPE_HASH
                    or not lb.bpf_map__map_flags(m) & BPF_F_NO_PREALLOC
                    or lb.bpf_map__max_entries(m) < 2):
                continue
            key = C.create_string_buffer(lb.bpf_map__key_size(m))
            value = C.create_string_buffer(lb.bpf_map__value_size(m))
            maps.append((lb.bpf_map__fd(m), key, value))
        if not maps:
            return
        try:
            allowed = os.sched_getaffinity(0)
        except OSError:
            return
        try:
            for cpu in sorted(allowed):
                try:
                    os.sched_setaffinity(0, {cpu})
                except OSError:
                    continue
                for fd, key, value in maps:
                    if lb.bpf_map_update_elem(fd, key, value, 1) == 0:  # BPF_NOEXIST
                        lb.bpf_map_delete_elem(fd, key)
        finally:
            try:
                os.sched_setaffinity(0, allowed)
            except OSError:
                pass

    def set_expected_attach_type(self, prog_name: str, attach_type: int) -> None:
        rc = L.lib().bpf_program__set_expected_attach_type(self.prog(prog_name), attach_type)
        if rc:
            raise _phase_error("configuring", f"program {prog_name} attach type", rc)
        self.attach_types[prog_name] = int(attach_type)

    def expected_attach_type(self, prog_name: str) -> int | None:
        """The attach type set by set_expected_attach_type, or None (the section's, which a
        second copy of the object opened from the same file gets alike)."""
        self.prog(prog_name)
        return self.attach_types.get(prog_name)

    def skip_maps(self, prefixes: tuple[str, ...]) -> list[str]:
        """Maps no program of this load refers to and user space leaves alone, named by
        their prefixes: not made at all (libbpf's autocreate off; a loaded program that
        referred to one would fail to load).  Returns their names; none where libbpf
        cannot leave a map unmade (before 0.8)."""
        lb = L.lib()
        try:
            set_autocreate = lb.bpf_map__set_autocreate
        except AttributeError:
            return []
        names = [n for n in self._map_ptrs if n.startswith(prefixes)]
        for n in names:
            set_autocreate(self._map_ptrs[n], False)
        self._unmade.update(names)
        return names

    def set_autoload(self, prog_name: str, autoload: bool) -> None:
        L.lib().bpf_program__set_autoload(self.prog(prog_name), bool(autoload))

    def autoload(self, prog_name: str) -> bool:
        return bool(L.lib().bpf_program__autoload(self.prog(prog_name)))

    def programs(self) -> list[str]:
        return list(self._progs)

    def section(self, prog_name: str) -> str:
        return L.lib().bpf_program__section_name(self.prog(prog_name)).decode()

    # -- load ------------------------------------------------------------------------------
    def load(self) -> None:
        early = sys.modules.get("memlens.core.earlymaps")
        if early is not None:
            early.close_unclaimed()  # (a map made at the start is taken before a load)
        L.take_logs()
        rc = L.lib().bpf_object__load(self.ptr)
        if rc:
            L.raise_deferred_interrupt()
            raise self._map_size_error(rc) or _phase_error("loading",
                                                           f"BPF object {self.name}", rc)
        self.loaded = True
        if self.custom_btf is None:
            from memlens.core import btfcache

            btfcache.build_in_background(self.path)  # for the next runs (~2 ms, once a boot)
        L.raise_deferred_interrupt()

    def _map_size_error(self, rc: int) -> MemlensError | None:
        """A map sized from an option that the kernel would not create: say which option,
        the value, and what the kernel said (exit 2: the user chose the size)."""
        import re

        err = abs(rc)
        if err not in (errno.E2BIG, errno.ENOMEM, errno.EINVAL) or not self._sized:
            return None
        failed = None
        for msg in L.peek_logs():
            m = re.search(r"map '([\w.]+)': failed to create", msg) or re.search(
                r"bpf_create_map_xattr\(([\w.]+)\)", msg)
            if m and m.group(1) in self._sized:
                failed = m.group(1)
        if failed is None:
            return None
        L.take_logs()
        from memlens.core.session import map_limit

        option, n = self._sized[failed]
        mtype = L.lib().bpf_map__type(self._map_ptr(failed))
        limit = map_limit(mtype)
        if err == errno.ENOMEM:
            why = ("the kernel could not allocate it (ENOMEM: not enough memory, or the "
                   "memory cgroup's limit)")
        else:
            why = f"the kernel refused it ({L.strerror(err)})"
        hint = f"; the kernel's limit for this map is {limit}" if limit else ""
        from memlens.errors import UsageError

        return UsageError(f"{option} {n} is too large: map {failed} with {n} entries: {why}"
                          f"{hint}; give a smaller {option}")

    # -- attach ----------------------------------------------------------------------------
    def _link(self, what: str, link: int | None) -> int:
        if not link:
            raise _phase_error("attaching", what, L.last_errno())
        self.links.append((what, link))
        return link

    def attach_tracepoint(self, prog: str, category: str, name: str, cookie: int = 0) -> int:
        if cookie:  # bpf_get_attach_cookie() on tracepoint programs: kernel >= 5.15
            opts = L.TracepointOpts(sz=C.sizeof(L.TracepointOpts), bpf_cookie=cookie)
            return self._link(f"tracepoint {category}:{name}",
                              L.lib().bpf_program__attach_tracepoint_opts(
                                  self.prog(prog), category.encode(), name.encode(),
                                  C.byref(opts)))
        return self._link(f"tracepoint {category}:{name}", L.lib().bpf_program__attach_tracepoint(
            self.prog(prog), category.encode(), name.encode()))

    def attach_tracepoint_id(self, prog: str, category: str, name: str, tp_id: int,
                             cookie: int = 0) -> int:
        """attach_tracepoint for a tracepoint whose id is known (its format file's ID line,
        read anyway): its perf event opened here and linked by attach_perf_event; libbpf's
        attach read the id file again (and probed for perf links, below)."""
        if _perf_links is False:
            return self.attach_tracepoint(prog, category, name, cookie)
        what = f"tracepoint {category}:{name}"
        # as libbpf's: PERF_TYPE_TRACEPOINT (2), config the id, no sampling (a period
        # would make the kernel take a sample of every hit); every CPU's hits run the
        # program (pid -1, cpu 0)
        pfd = L.perf_event_open(L.perf_event_attr(2, tp_id), -1, 0, -1,
                                L.PERF_FLAG_FD_CLOEXEC)
        if pfd < 0:
            raise _phase_error("attaching", what, -pfd)
        try:
            return self.attach_perf_event(prog, pfd, cookie, what=what)
        except BaseException:
            os.close(pfd)  # not linked: still ours
            raise

    def attach_raw_tracepoint(self, prog: str, name: str) -> int:
        return self._link(f"raw tracepoint {name}", L.lib().bpf_program__attach_raw_tracepoint(
            self.prog(prog), name.encode()))

    def attach_auto(self, prog: str) -> int:
        """Attach as the SEC() name says (tp_btf/, fentry/, tracepoint/cat/name...)."""
        return self._link(f"program {prog} ({self.section(prog)})",
                          L.lib().bpf_program__attach(self.prog(prog)))

    def attach_perf_event(self, prog: str, fd: int, cookie: int = 0,
                          what: str | None = None) -> int:
        """Attach to a perf event fd.  On success the link owns fd: detaching closes it, so
        the caller must not (on failure the caller closes it).  The perf link is made here
        (bpf_link_create): libbpf's attach first loads a program and makes a link to learn
        whether the kernel has perf links (~0.3 ms of a start).  Where it has none (before
        5.15: EINVAL), libbpf's attach, which falls back to the perf event's ioctl, from
        then on."""
        global _perf_links
        what = what or f"perf event fd {fd}"
        if _perf_links is not False:
            link = L.link_create_perf_event(self.prog_fd(prog), fd, cookie)
            if link >= 0:
                _perf_links = True
                self.raw_links.append((what, link))
                self.raw_links.append((what + " (its perf event)", fd))
                return link
            if link != -errno.EINVAL or _perf_links is not None:
                raise _phase_error("attaching", what, -link)
            _perf_links = False  # no perf links: libbpf's way from now on
        opts = L.PerfEventOpts(sz=C.sizeof(L.PerfEventOpts), bpf_cookie=cookie)
        return self._link(what, L.lib().bpf_program__attach_perf_event_opts(
            self.prog(prog), fd, C.byref(opts)))

    def attach_kprobe(self, prog: str, func: str, retprobe: bool = False, cookie: int = 0) -> int:
        opts = L.KprobeOpts(sz=C.sizeof(L.KprobeOpts), retprobe=retprobe, bpf_cookie=cookie)
        kind = "kretprobe" if retprobe else "kprobe"
        return self._link(f"{kind} {func}", L.lib().bpf_program__attach_kprobe_opts(
            self.prog(prog), func.encode(), C.byref(opts)))

    def attach_uprobe(self, prog: str, binary: str, func: str | None = None, pid: int = -1,
                      retprobe: bool = False, offset: int = 0, cookie: int = 0) -> int:
        """uprobe/uretprobe on `func` (or a raw offset) in `binary`; pid=-1 means every process."""
        opts = L.UprobeOpts(sz=C.sizeof(L.UprobeOpts), retprobe=retprobe, bpf_cookie=cookie,
                            func_name=func.encode() if func else None)
        kind = "uretprobe" if retprobe else "uprobe"
        where = f"{binary}:{func or hex(offset)}" + (f" pid {pid}" if pid >= 0 else "")
        return self._link(f"{kind} {where}", L.lib().bpf_program__attach_uprobe_opts(
            self.prog(prog), pid, binary.encode(), offset, C.byref(opts)))

    def attach_uprobe_multi(self, prog: str, binary: str, offsets: list[int],
                            cookies: list[int], pid: int = -1, retprobe: bool = False) -> int:
        """One uprobe_multi link for many offsets in one file (the program must have been
        given attach type BPF_TRACE_UPROBE_MULTI before load).  One link instead of one per
        function: attaching and detaching pay the kernel's uprobe teardown once."""
        kind = "uretprobe" if retprobe else "uprobe"
        what = f"{kind}.multi {binary} ({len(offsets)} offsets)" + (
            f" pid {pid}" if pid >= 0 else "")
        fd = L.link_create_uprobe_multi(self.prog_fd(prog), binary, offsets, cookies, pid,
                                        retprobe)
        if fd < 0:
            raise _phase_error("attaching", what, -fd)
        self.raw_links.append((what, fd))
        return fd

    def attach_usdt(self, prog: str, binary: str, provider: str, name: str, pid: int = -1,
                    cookie: int = 0) -> int:
        opts = L.UsdtOpts(sz=C.sizeof(L.UsdtOpts), usdt_cookie=cookie)
        return self._link(f"usdt {binary}:{provider}:{name}", L.lib().bpf_program__attach_usdt(
            self.prog(prog), pid, binary.encode(), provider.encode(), name.encode(),
            C.byref(opts)))

    def detach_all(self) -> None:
        # Each link's teardown waits for the kernel: closing a tracepoint's perf event
        # waits for RCU grace periods (57-80 ms each here, under the kernel's event_mutex
        # for part of it), so drsnoop's 6 tracepoints took ~0.45 s to detach one after
        # the other and 0.25 s from one thread each (the waits overlap in part); the
        # program stays loaded until every link is gone.  Each uprobe link ~100 ms
        # (memleak's 37 libc probes ~2 s; threads saved only 10 % there: the kernel
        # serializes unregistration); uprobe_multi links (one for all, kernel >= 6.6)
        # need libbpf >= 1.3, Debian 12 ships 1.1, memleak makes them itself.
        lb = L.lib()
        closes = [lambda fd=fd: os.close(fd) for _, fd in self.raw_links]
        closes += [lambda link=link: lb.bpf_link__destroy(link) for _, link in self.links]
        self.raw_links.clear()
        self.links.clear()
        run_all(closes)

    # -- access ----------------------------------------------------------------------------
    def prog(self, name: str) -> int:
        try:
            return self._progs[name]
        except KeyError:
            raise BpfError(f"{self.name} has no program {name!r}") from None

    def prog_fd(self, name: str) -> int:
        return int(L.lib().bpf_program__fd(self.prog(name)))

    def _map_ptr(self, name: str) -> int:
        try:
            return self._map_ptrs[name]
        except KeyError:
            raise BpfError(f"{self.name} has no map {name!r}") from None

    def _made_map_ptr(self, name: str) -> int:
        """_map_ptr of a map that is made (configuring an unmade one is harmless; using
        one is a bug: its fd would be -1)."""
        if name in self._unmade:
            raise BpfError(f"{self.name}: map {name!r} is not made in this run (skip_maps)")
        return self._map_ptr(name)

    def map(self, name: str):
        if name not in self._maps:
            from memlens.core.maps import Map

            self._maps[name] = Map(self, name, self._made_map_ptr(name))
        return self._maps[name]

    def map_fd(self, name: str) -> int:
        """A map's fd, without making its Map (core/maps: ~0.5 ms of a start to import)."""
        return int(L.lib().bpf_map__fd(self._made_map_ptr(name)))

    def map_names(self) -> list[str]:
        return list(self._map_ptrs)

    def has_map(self, name: str) -> bool:
        return name in self._map_ptrs

    def struct_ctype(self, name: str):
        """ctypes Structure of a C struct from the object's BTF (no numpy needed)."""
        return btf_ctype(self.btf, self._struct_id(name))

    def struct_size(self, name: str) -> int:
        """sizeof a C struct, from the object's BTF (the type's header alone)."""
        return L.lib().btf__type_by_id(self.btf, self._struct_id(name)).contents.size_or_type

    def member_offset(self, struct: str, member: str) -> int:
        """Byte offset of a C struct's member (a direct one) from the object's BTF: one
        level read, not the whole type made (struct_ctype: ~0.5 ms for engine_event)."""
        t = L.lib().btf__type_by_id(self.btf, self._struct_id(struct)).contents
        for name, byte_off, _ in _btf_members(self.btf, t):
            if name == member:
                return byte_off
        raise BpfError(f"{self.name}: struct {struct} has no member {member}")

    def _struct_id(self, name: str) -> int:
        type_id = L.lib().btf__find_by_name_kind(self.btf, name.encode(), BTF_KIND_STRUCT)
        if type_id < 0:
            raise BpfError(f"{self.name}: struct {name} not in BTF (is it used by a map "
                           "or a global so that clang emits it?)")
        return type_id

    def struct_dtype(self, name: str) -> np.dtype:
        """numpy dtype of a C struct from the object's BTF: the .h shared with the BPF side
        is the single source of truth for record layouts (no hand-kept Python mirror)."""
        return btf_dtype(self.btf, self._struct_id(name))

    # -- teardown --------------------------------------------------------------------------
    def close(self) -> None:
        self.detach_all()
        for m in self._maps.values():
            m.close()
        self._maps.clear()
        if self.ptr:
            L.lib().bpf_object__close(self.ptr)
            self.ptr = 0

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# map types premake_maps makes itself (enum bpf_map_type): hash, array, per-CPU hash and
# array, stack trace, LRU hashes, ring buffer.  Not map-in-map (an inner map), local
# storages (BTF), bloom filters (map_extra), struct_ops...
PREMADE_TYPES = frozenset({1, 2, 5, 6, 7, 9, 10, 27})
BPF_F_NUMA_NODE = 4  # a node premake_maps does not pass
BPF_MAP_CREATE = 0
_SYS_BPF = {"x86_64": 321, "aarch64": 280}


def map_create(mtype: int, key_size: int, value_size: int, max_entries: int, flags: int,
               name: str) -> int:
    """bpf(BPF_MAP_CREATE) without BTF (for values that hold no lock, timer nor kptr):
    the fd, or -errno.  Any thread, before the object that will take the map is opened
    (BpfObject.premake_maps' `made`).  union bpf_attr: map_type, key_size, value_size,
    max_entries, map_flags, inner_map_fd, numa_node (u32 each), then map_name[16]."""
    import struct

    attr = bytearray(72)
    struct.pack_into("<IIIII", attr, 0, mtype, key_size, value_size, max_entries, flags)
    raw = name.encode()[:15]
    attr[28:28 + len(raw)] = raw
    return _bpf(BPF_MAP_CREATE, bytes(attr))


BPF_PROG_LOAD = 5
BPF_F_NO_PREALLOC = 1  # map_flags: entries allocated as they are inserted


def _bpf(cmd: int, attr: bytes) -> int:
    """bpf(cmd, attr): the result, or -errno."""
    buf = C.create_string_buffer(attr, len(attr))
    libc = C.CDLL(None, use_errno=True)
    rc = libc.syscall(C.c_long(_SYS_BPF[os.uname().machine]), C.c_int(cmd), buf,
                      C.c_uint(len(attr)))
    return rc if rc >= 0 else -C.get_errno()


@memo
def hash_maps_may_allocate() -> bool:
    """Whether tracing programs may use hash maps that allocate their entries as they are
    inserted (BPF_F_NO_PREALLOC), asked of the kernel: a perf_event program that refers to
    such a map is loaded.  The kernel's any-context allocator (6.1) made it safe; before,
    the verifier refused it for perf_event programs (EINVAL, "perf_event programs can
    only use preallocated hash map") and, for the other tracing programs, let it pass
    with a warning and a stack dump in the kernel log (WARN_ONCE) — so the probe is the
    refusal, and nothing that would warn is tried.  The answer is kept for the boot
    (hooks.kernel_answer: the probe was ~0.4 ms of every start)."""
    from memlens.core.hooks import kernel_answer

    return kernel_answer("hash maps allocate on insert in perf_event programs",
                         _probe_hash_allocation)


def _probe_hash_allocation() -> bool | None:
    """True: loaded; False: refused; None: no answer (the map itself not made)."""
    import struct

    fd = map_create(L.BPF_MAP_TYPE_HASH, 4, 8, 1, BPF_F_NO_PREALLOC, "memlens_probe")
    if fd < 0:
        return None
    insns = (struct.pack("<BBhi", 0x18, 0x11, 0, fd)     # r1 = the map (ld_imm64)
             + struct.pack("<BBhi", 0, 0, 0, 0)
             + struct.pack("<BBhi", 0xb7, 0, 0, 0)       # r0 = 0
             + struct.pack("<BBhi", 0x95, 0, 0, 0))      # exit
    code = C.create_string_buffer(insns, len(insns))
    lic = C.create_string_buffer(b"GPL")
    attr = bytearray(128)
    struct.pack_into("<IIQQ", attr, 0, L.BPF_PROG_TYPE_PERF_EVENT, len(insns) // 8,
                     C.addressof(code), C.addressof(lic))
    prog = _bpf(BPF_PROG_LOAD, bytes(attr))
    os.close(fd)
    if prog < 0:  # the verifier's refusal is EINVAL; any other error is no answer
        return False if prog == -errno.EINVAL else None
    os.close(prog)
    return True


def run_all(calls: list, max_threads: int = 16) -> None:
    """Run the calls (blocking system calls: ctypes and os.close release the GIL) from up
    to `max_threads` threads at once, this one included; the first error is raised once
    all have run.  Threads of the _thread module: threading's import (with functools and
    collections, ~3 ms) came just before a tool's banner, in the uprobe warm-up's thread
    closing its links while the main thread printed."""
    if len(calls) <= 1:
        for call in calls:
            call()
        return
    import _thread

    errors: list[BaseException] = []
    pending = list(reversed(calls))
    lock = _thread.allocate_lock()
    helpers = min(max_threads, len(calls)) - 1
    running = [helpers]
    all_done = _thread.allocate_lock()
    all_done.acquire()  # released by the last helper to finish

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                call = pending.pop()
            try:
                call()
            except BaseException as err:  # raised in the caller's thread below
                errors.append(err)

    def helper() -> None:
        try:
            worker()
        finally:
            with lock:
                running[0] -= 1
                if running[0] == 0:
                    all_done.release()

    for _ in range(helpers):
        _thread.start_new_thread(helper, ())
    worker()
    all_done.acquire()
    if errors:
        raise errors[0]


def _btf_members(btf: int, t):
    """A BTF struct or union's members, one level: (name, byte offset, type id); an
    unnamed one is `_anon<i>`."""
    lb = L.lib()
    kflag = t.info >> 31
    members = C.cast(C.addressof(t) + C.sizeof(L.BtfType), C.POINTER(L.BtfMember))
    for i in range(t.info & 0xFFFF):
        mb = members[i]
        if kflag and mb.offset >> 24:
            raise BpfError("bitfields are not supported in shared structs")
        bit_off = mb.offset & 0xFFFFFF if kflag else mb.offset
        name = lb.btf__name_by_offset(btf, mb.name_off).decode() or f"_anon{i}"
        yield name, bit_off // 8, mb.type


def btf_layout(btf: int, type_id: int) -> tuple:
    """A BTF type as a small neutral description, shared by the numpy and ctypes builders:
    ("struct", size, is_union, [(name, byte_offset, layout)]), ("array", n, layout),
    ("int", size, signed, is_char, is_bool)."""
    lb = L.lib()
    type_id = lb.btf__resolve_type(btf, type_id)
    t = lb.btf__type_by_id(btf, type_id).contents
    kind = (t.info >> 24) & 0x1F
    extra = C.addressof(t) + C.sizeof(L.BtfType)  # kind-specific data follows btf_type
    if kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
        fields = [(name, off, btf_layout(btf, type_))
                  for name, off, type_ in _btf_members(btf, t)]
        return ("struct", t.size_or_type, kind == BTF_KIND_UNION, fields)
    if kind == BTF_KIND_ARRAY:
        arr = C.cast(extra, C.POINTER(L.BtfArray)).contents
        return ("array", arr.nelems, btf_layout(btf, arr.type))
    if kind == BTF_KIND_INT:
        encoding = C.cast(extra, C.POINTER(C.c_uint32))[0] >> 24
        signed = bool(encoding & 1)
        size = t.size_or_type
        # clang marks plain `char` as a signed 1-byte int: char[N] is a C string
        return ("int", size, signed, size == 1 and (signed or bool(encoding & 2)),
                bool(encoding & 4))
    if kind in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
        return ("int", t.size_or_type, True, False, False)
    if kind == BTF_KIND_PTR:
        return ("int", 8, False, False, False)
    raise BpfError(f"unsupported BTF kind {kind} in a shared struct")


def btf_dtype(btf: int, type_id: int) -> np.dtype:
    """numpy dtype of a BTF type (char[N] becomes bytes `S<N>`)."""
    return _layout_dtype(btf_layout(btf, type_id))


def _layout_dtype(lay: tuple) -> np.dtype:
    if lay[0] == "struct":
        _, size, _, fields = lay
        return np.dtype({"names": [f[0] for f in fields],
                         "formats": [_layout_dtype(f[2]) for f in fields],
                         "offsets": [f[1] for f in fields], "itemsize": size})
    if lay[0] == "array":
        _, n, elem = lay
        if elem[0] == "int" and elem[3]:
            return np.dtype(f"S{n}")
        return np.dtype((_layout_dtype(elem), (n,)))
    _, size, signed, is_char, is_bool = lay
    if is_bool:
        return np.dtype("?")
    return np.dtype(f"<{'i' if signed else 'u'}{size}")


def btf_ctype(btf: int, type_id: int):
    """ctypes type of a BTF type, for tools that decode a few records and should not pay
    numpy's import (see core/lazy.py).  char[N] stays a c_char array (bytes)."""
    return _layout_ctype(btf_layout(btf, type_id))


_CTYPE_INTS = {1: (C.c_uint8, C.c_int8), 2: (C.c_uint16, C.c_int16),
               4: (C.c_uint32, C.c_int32), 8: (C.c_uint64, C.c_int64)}


def _layout_ctype(lay: tuple):
    if lay[0] == "struct":
        _, size, is_union, fields = lay
        cfields, pos = [], 0
        for i, (name, off, sub) in enumerate(fields):
            ctype = _layout_ctype(sub)
            if off > pos and not is_union:
                cfields.append((f"_pad{i}", C.c_uint8 * (off - pos)))
            cfields.append((name, ctype))
            pos = off + C.sizeof(ctype)
        if size > pos and not is_union:
            cfields.append(("_pad_end", C.c_uint8 * (size - pos)))
        base = C.Union if is_union else C.Structure
        return type("btf_struct", (base,), {"_pack_": 1, "_fields_": cfields})
    if lay[0] == "array":
        return _layout_ctype(lay[2]) * lay[1]
    _, size, signed, is_char, is_bool = lay
    if is_char:
        return C.c_char
    if is_bool:
        return C.c_bool
    return _CTYPE_INTS[size][signed]
