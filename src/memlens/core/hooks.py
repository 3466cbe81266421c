# SPDX-License-Identifier: GPL-2.0-only
"""Hook declarations, checked by what the kernel offers — never by name or version alone.

A tool declares the hooks its BPF object can use, best first, and `choose()` takes the
first the running kernel offers.  Why prototypes and not names: the same hook name can
change shape between kernels (`tp_btf/mark_victim` took `(int pid)` before 6.8 and
`(struct task_struct *, uid_t)` after), and a program written for one shape fails at load
on the other instead of falling back.  So a BTF tracepoint is checked against its
`btf_trace_<event>` prototype, a tracepoint against its tracefs format's fields, a perf
event by opening it.

Declarations are plain data: importing this module loads neither libbpf nor numpy (probes
import what they need when they run).  Probes never raise — every failure becomes the
reason shown to the user — and their results are cached for the life of the process.
Probes have no side effects: tools mount tracefs (kernel.ensure_tracefs) before choosing.
"""
from __future__ import annotations

import errno as errno_mod
import os
from _thread import allocate_lock  # threading.Lock, without importing threading

from memlens.core import kernel
from memlens.core.memo import memo
from memlens.errors import KernelLacks

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

# Where the kernel's facts are read.  Module-level so that tests can point them at
# synthesized files (a BTF blob, a fake tracefs) without root; a hook may also carry its own.
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
TRACEFS_ROOT: str | None = None  # None: wherever tracefs is mounted
EVENT_SOURCE = "/sys/bus/event_source/devices"
KALLSYMS = "/proc/kallsyms"

# BTF kinds (include/uapi/linux/btf.h; stable)
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
_VOLATILE, _CONST, _RESTRICT, _FUNC_PROTO, _FLOAT, _TYPE_TAG, _ENUM64 = 9, 10, 11, 13, 16, 18, 19
_MODIFIERS = (_VOLATILE, _CONST, _RESTRICT, _TYPE_TAG)
_VOID = 0  # type id 0 is void; used as a pseudo-kind
_QUALIFIERS = {"const", "volatile", "restrict"}
_INT_WORDS = {"signed", "unsigned", "char", "short", "int", "long", "_Bool", "bool"}


class _Unavailable(Exception):
    """A probe's answer "no", with the reason (raised inside probes, never out of them)."""


class Hook:
    """A way into the kernel a BPF program can attach to.  Subclasses: `kind`, `label`,
    `_where()` (the facts' location, part of the cache key) and `_check(where)`.

    Immutable values (equal and hashed by their fields: they are cache keys).  Not
    dataclasses: importing dataclasses (and inspect with it) adds ~10 ms to the start of
    commands that otherwise never load it."""

    __slots__ = ()
    kind: str = ""

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _init(self, **fields: object) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def _key(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({args})"

    @property
    def label(self) -> str:
        raise NotImplementedError

    def probe(self) -> tuple[bool, str]:
        """(available, reason when not: one short phrase).  Never raises."""
        try:
            return _probe_cached(self, self._where())
        except _Unavailable as why:  # uncached: e.g. tracefs not mounted yet
            return False, _one_line(str(why))
        except Exception as exc:  # a probe must answer, not crash the tool
            return False, _one_line(f"probe failed: {type(exc).__name__}: {exc}")

    def _where(self) -> object:
        return None

    def _check(self, where: object) -> None:
        """Return when available; raise _Unavailable(reason) when not."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.label


@memo
def _probe_cached(hook: Hook, where: object) -> tuple[bool, str]:
    try:
        hook._check(where)
    except _Unavailable as why:
        return False, _one_line(str(why))
    except Exception as exc:
        return False, _one_line(f"probe failed: {type(exc).__name__}: {exc}")
    return True, ""


def clear_cache() -> None:
    """Forget probe results (tests; a long-lived process after the kernel changed)."""
    _probe_cached.cache_clear()
    _Btf._cache.clear()  # the parsed BTF files too
    _answers_read.clear()  # and the answers files read


def _one_line(text: str) -> str:
    return " ".join(text.split())


def choose(hooks: Sequence[Hook], what: str = "this command") -> Hook:
    """The first available hook; KernelLacks (exit 4) naming every hook tried and why not."""
    if not hooks:
        raise ValueError("choose() needs at least one hook")
    tried = []
    for hook in hooks:
        ok, reason = hook.probe()
        if ok:
            return hook
        tried.append(f"{hook.label}: {reason}")
    raise KernelLacks(f"the kernel lacks every hook {what} can use: " + "; ".join(tried))


def survey(hooks: Sequence[Hook]) -> list[tuple[Hook, bool, str]]:
    """Every hook with its probe result (for `memlens doctor`)."""
    return [(hook, *hook.probe()) for hook in hooks]


# ---------------------------------------------------------------------------- tp_btf

class TpBtf(Hook):
    """tp_btf/<event>: available when vmlinux BTF's `btf_trace_<event>` prototype has
    exactly `params` after the hidden `void *__data` (simple C types: "struct task_struct *",
    "uid_t", "int", "const char *").  `btf_path` None: VMLINUX_BTF."""

    __slots__ = ("event", "params", "btf_path")
    kind = "tp_btf"
    event: str
    params: tuple[str, ...]
    btf_path: str | None

    def __init__(self, event: str, params: Sequence[str], btf_path: str | None = None):
        self._init(event=event, params=tuple(params), btf_path=btf_path)

    @property
    def label(self) -> str:
        return f"tp_btf/{self.event}({', '.join(self.params)})"

    def _where(self) -> object:
        path = self.btf_path or VMLINUX_BTF
        try:
            st = os.stat(path)
        except OSError as err:
            raise _Unavailable(f"no BTF at {path} ({_errname(err.errno)})") from None
        return path, st.st_mtime_ns, st.st_size  # a rewritten file is probed afresh

    def _check(self, where: object) -> None:
        # the answer for this boot's vmlinux BTF, kept in memlens's cache directory: the
        # prototype check parses the whole 5.5 MB BTF (~20 ms of oomkill's start) and the
        # answer cannot change until the kernel does
        known = _boot_answers(where).get(self.label)
        if known is not None:
            if known[0]:
                return
            raise _Unavailable(known[1])
        try:
            self._check_btf(where)
        except _Unavailable as why:
            _remember_answer(where, self.label, False, str(why))
            raise
        _remember_answer(where, self.label, True, "")

    def _check_btf(self, where: object) -> None:
        path = where[0]  # type: ignore[index]
        btf = _Btf.get(path)
        source = "vmlinux BTF" if path == "/sys/kernel/btf/vmlinux" else f"BTF {path}"
        typedef = f"btf_trace_{self.event}"
        tid = btf.find(typedef, _TYPEDEF)
        if tid <= 0:
            raise _Unavailable(f"no {typedef} in {source} (no such BTF tracepoint)")
        proto_id = btf.follow(btf.type(tid).size_or_type)  # typedef -> pointer
        t = btf.type(proto_id) if proto_id else None
        if t is None or _kind(t) != _PTR:
            raise _Unavailable(f"{typedef} in {source} is not a function pointer")
        proto_id = btf.follow(t.size_or_type)
        t = btf.type(proto_id) if proto_id else None
        if t is None or _kind(t) != _FUNC_PROTO:
            raise _Unavailable(f"{typedef} in {source} is not a function pointer")
        params = btf.params(proto_id)[1:]  # the first is the hidden void *__data
        if len(params) == len(self.params) and all(
                btf.matches(type_id, want) for (_, type_id), want in zip(params, self.params)):
            return
        have = ", ".join(btf.render(type_id) + (f" {name}" if name else "")
                         for name, type_id in params)
        raise _Unavailable(f"BTF prototype is ({have}), this program needs "
                           f"({', '.join(self.params)})")


def vmlinux_btf_answer(path: str, label: str, compute) -> bool:
    """An answer about the vmlinux BTF at `path` (`compute() -> bool`), kept in memlens's
    cache directory with the tp_btf answers of this boot: it cannot change until the
    kernel does, and finding it reads the whole 5.5 MB file (kernel.btf_has_name: ~9 ms of
    memleak -p's start).  compute() may answer None: no answer (the probe itself failed,
    e.g. not permitted), taken as False and not kept."""
    try:
        st = os.stat(path)
    except OSError:
        return bool(compute())
    where = (path, st.st_mtime_ns, st.st_size)
    known = _boot_answers(where).get(label)
    if known is not None:
        return bool(known[0])
    ok = compute()
    if ok is not None:
        _remember_answer(where, label, bool(ok), "")
    return bool(ok)


def kernel_answer(label: str, compute) -> bool:
    """A yes or no about the running kernel that holds for the boot (a BPF helper it has,
    a map flag its verifier accepts), kept with the vmlinux BTF answers: each such probe
    loads a program (0.2-0.5 ms; faults asked five before its banner).  compute() answers
    True, False, or None (the probe itself failed: not kept)."""
    return vmlinux_btf_answer(VMLINUX_BTF, label, compute)


def _answers_file(where: object, create: bool = False) -> str | None:
    """The file of answers about the kernel of this boot (tp_btf prototypes, names in its
    BTF, helpers, map flags: its name keeps its first use, tp_btf-), keyed by its vmlinux
    BTF (None: no trusted cache directory, or another BTF file)."""
    from memlens.core import btfcache

    path, mtime, size = where  # type: ignore[misc]
    d = btfcache.cache_dir()
    if path != VMLINUX_BTF or d is None:
        return None
    if create:
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
        except OSError:
            return None
    if not btfcache.owned_dir(d):
        return None
    boot = btfcache.boot_id()
    if boot is None:
        return None
    return os.path.join(d, f"tp_btf-{boot}-{size}-{mtime}.tsv")


# The answers file: a line an answer, "1|0 TAB label TAB reason" (read without json: its
# import, with re and enum, was 5-20 ms of oomkill's and memleak -p's start).
def read_answers(path: str) -> dict[str, list]:
    """{label: [ok, reason]} of an answers file; {} when it is missing or unreadable."""
    answers: dict[str, list] = {}
    try:
        with open(path) as f:
            for line in f:
                ok, sep, rest = line.rstrip("\n").partition("\t")
                label, _, reason = rest.partition("\t")
                if sep and ok in ("0", "1") and label:
                    answers[label] = [ok == "1", reason]
    except (OSError, UnicodeDecodeError):
        return {}
    return answers


def format_answers(answers: dict[str, list]) -> str:
    def clean(text: str) -> str:
        return " ".join(str(text).replace("\t", " ").splitlines())

    return "".join(f"{int(bool(ok))}\t{clean(label)}\t{clean(reason)}\n"
                   for label, (ok, reason) in answers.items())


_answers_read: dict[str, dict] = {}  # answers files read, by path: once a process each


def _boot_answers(where: object) -> dict:
    path = _answers_file(where)
    if path is None:
        return {}
    if path not in _answers_read:
        _answers_read[path] = read_answers(path)
    return _answers_read[path]


def _remember_answer(where: object, label: str, ok: bool, reason: str) -> None:
    path = _answers_file(where, create=True)
    if path is None:
        return
    answers = dict(_boot_answers(where))
    if not answers:  # a new boot or kernel: the answers of the old ones go
        d = os.path.dirname(path)
        try:
            names = os.listdir(d)  # (not glob: it imports re, ~5 ms)
        except OSError:
            names = []
        for old in names:  # (not this boot's: another run may have written it meanwhile)
            if old.startswith("tp_btf-") and os.path.join(d, old) != path:
                try:
                    os.unlink(os.path.join(d, old))
                except OSError:
                    pass
    answers = {**read_answers(path), **answers}  # another run's, written meanwhile
    answers[label] = [ok, reason]
    _answers_read[path] = answers
    tmp = f"{path}.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(format_answers(answers))
        os.replace(tmp, path)  # whole or not at all: a reader never sees half a file
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _kind(t) -> int:
    return (t.info >> 24) & 0x1F


def _vlen(t) -> int:
    return t.info & 0xFFFF


def _canon_int(name: str) -> str:
    """'long unsigned int' and 'unsigned long' name one type: compare a canonical form."""
    words = name.split()
    if not words or not set(words) <= _INT_WORDS:
        return name
    unsigned = "unsigned" in words
    longs = words.count("long")
    if "char" in words:
        base = "char"
    elif "short" in words:
        base = "short"
    elif "_Bool" in words or "bool" in words:
        return "_Bool"
    elif longs:
        base = "long long" if longs > 1 else "long"
    else:
        base = "int"
    if base == "char" and "signed" in words and not unsigned:
        return "signed char"  # plain char is a distinct type
    return ("unsigned " if unsigned else "") + base


def _parse_wanted(text: str) -> tuple[int, str, str]:
    """'struct task_struct *' -> (1, 'struct', 'task_struct'); 'uid_t' -> (0, '', 'uid_t');
    'const char *' -> (1, '', 'char'); 'void *' -> (1, 'void', '')."""
    depth = text.count("*")
    words = [w for w in text.replace("*", " ").split() if w not in _QUALIFIERS]
    if words and words[0] in ("struct", "union", "enum"):
        return depth, words[0], " ".join(words[1:])
    if words == ["void"]:
        return depth, "void", ""
    return depth, "", _canon_int(" ".join(words))


class _Btf:
    """One parsed BTF (libbpf's `struct btf *`), kept for the life of the process."""

    _cache: dict[str, _Btf] = {}
    _lock = allocate_lock()

    def __init__(self, path: str):
        from memlens.core import libbpf as L

        self.lb = L.lib()
        self.ptr = self.lb.btf__parse(path.encode(), None)
        if not self.ptr:
            raise _Unavailable(f"cannot read BTF {path} ({_errname(L.last_errno())})")

    @classmethod
    def get(cls, path: str) -> _Btf:
        with cls._lock:
            btf = cls._cache.get(path)
            if btf is None:
                btf = cls._cache[path] = cls(path)
            return btf

    def find(self, name: str, kind: int) -> int:
        return int(self.lb.btf__find_by_name_kind(self.ptr, name.encode(), kind))

    def type(self, type_id: int):
        t = self.lb.btf__type_by_id(self.ptr, type_id)
        if not t:
            raise _Unavailable(f"malformed BTF: no type id {type_id}")
        return t.contents

    def name(self, t) -> str:
        raw = self.lb.btf__name_by_offset(self.ptr, t.name_off)
        return raw.decode(errors="replace") if raw else ""

    def follow(self, type_id: int) -> int:
        """Skip modifiers and typedefs (a prototype may hide behind typedefs too)."""
        for _ in range(64):  # bounded: malformed BTF may loop
            if type_id == 0:
                return 0
            t = self.type(type_id)
            if _kind(t) not in (*_MODIFIERS, _TYPEDEF):
                return type_id
            type_id = t.size_or_type
        raise _Unavailable("malformed BTF: typedef loop")

    def params(self, proto_id: int) -> list[tuple[str, int]]:
        import ctypes as C

        from memlens.core import libbpf as L

        t = self.type(proto_id)
        arr = C.cast(C.addressof(t) + C.sizeof(L.BtfType), C.POINTER(L.BtfParam))
        out = []
        for i in range(_vlen(t)):
            p = arr[i]
            raw = self.lb.btf__name_by_offset(self.ptr, p.name_off) if p.name_off else None
            out.append((raw.decode(errors="replace") if raw else "", int(p.type)))
        return out

    def levels(self, type_id: int) -> list[tuple[frozenset[str], int, str, int]]:
        """A type as its pointer levels: per level (typedef names passed, kind, name, size);
        every level but the last is a pointer.  'uid_t' -> [({uid_t, __kernel_uid32_t},
        INT, 'unsigned int', 4)]."""
        out = []
        for _ in range(16):
            typedefs: set[str] = set()
            for _ in range(64):
                if type_id == 0:
                    break
                t = self.type(type_id)
                k = _kind(t)
                if k == _TYPEDEF:
                    typedefs.add(self.name(t))
                elif k not in _MODIFIERS:
                    break
                type_id = t.size_or_type
            if type_id == 0:
                out.append((frozenset(typedefs), _VOID, "void", 0))
                return out
            k = _kind(t)
            if k == _PTR:
                out.append((frozenset(typedefs), _PTR, "", 0))
                type_id = t.size_or_type
                continue
            if k == _FWD:  # a declared-only struct/union (kflag: union)
                k = _UNION if t.info >> 31 else _STRUCT
            name = self.name(t)
            if k in (_INT, _FLOAT):
                name = _canon_int(name)
            sized = k in (_INT, _FLOAT, _STRUCT, _UNION, _ENUM, _ENUM64)
            out.append((frozenset(typedefs), k, name, t.size_or_type if sized else 0))
            return out
        raise _Unavailable("malformed BTF: pointer chain too deep")

    def matches(self, type_id: int, wanted: str) -> bool:
        depth, keyword, name = _parse_wanted(wanted)
        have = self.levels(type_id)
        if depth >= len(have):
            return False
        if keyword == "" and name in have[depth][0]:
            return True  # the typedef named, at any step of the chain (uid_t, __kernel_uid32_t)
        if len(have) != depth + 1:
            return False
        _, kind, have_name, size = have[depth]
        if keyword == "void":
            return kind == _VOID
        if keyword in ("struct", "union"):
            return kind == (_STRUCT if keyword == "struct" else _UNION) and have_name == name
        if keyword == "enum":
            return kind in (_ENUM, _ENUM64) and have_name == name
        if kind in (_INT, _FLOAT, _ENUM, _ENUM64) and have_name == name:
            return True
        # a typedef spelled differently on either side (uid_t here, unsigned int there):
        # the same final int name and size is the same argument
        tid = self.find(name, _TYPEDEF)
        if tid > 0:
            want = self.levels(tid)
            return len(want) == 1 and want[0][1:] == (kind, have_name, size)
        return False

    def render(self, type_id: int) -> str:
        """A type as C reads it, for reasons: 'struct task_struct *', 'uid_t', 'int'."""
        for _ in range(64):
            if type_id == 0:
                return "void"
            t = self.type(type_id)
            k = _kind(t)
            if k in (_CONST, _VOLATILE):
                return ("const " if k == _CONST else "volatile ") + self.render(t.size_or_type)
            if k in _MODIFIERS:
                type_id = t.size_or_type
                continue
            if k == _PTR:
                inner = self.render(t.size_or_type)
                return inner + ("*" if inner.endswith("*") else " *")
            if k in (_STRUCT, _UNION, _ENUM, _ENUM64, _FWD):
                word = {_STRUCT: "struct", _UNION: "union", _FWD: "struct"}.get(k, "enum")
                if k == _FWD and t.info >> 31:
                    word = "union"
                return f"{word} {self.name(t)}"
            if k == _ARRAY:
                return "array"
            if k == _FUNC_PROTO:
                return "function"
            return self.name(t) or "?"
        return "?"


# ------------------------------------------------------------------------ tracepoint

class Tracepoint(Hook):
    """tracepoint <category>:<name>: available when tracefs has the event and its format
    has every field in `fields` (the ones the program reads, for ones that came and went).
    `tracefs` None: TRACEFS_ROOT, else wherever tracefs is mounted."""

    __slots__ = ("category", "name", "fields", "tracefs")
    kind = "tracepoint"
    category: str
    name: str
    fields: tuple[str, ...]
    tracefs: str | None

    def __init__(self, category: str, name: str, fields: Sequence[str] = (),
                 tracefs: str | None = None):
        self._init(category=category, name=name, fields=tuple(fields), tracefs=tracefs)

    @property
    def label(self) -> str:
        return f"tracepoint {self.category}:{self.name}"

    def _where(self) -> object:
        root = self.tracefs or TRACEFS_ROOT or kernel.tracefs_path()
        if root is None:  # not cached: a tool mounts tracefs and asks again
            if os.geteuid() != 0:
                raise _Unavailable("tracefs not mounted or not readable (needs root)")
            raise _Unavailable(f"tracefs not mounted (as root: mount -t tracefs nodev "
                               f"{kernel.TRACEFS_CANDIDATES[0]})")
        return root

    def _check(self, where: object) -> None:
        event_dir = os.path.join(str(where), "events", self.category, self.name)
        try:
            os.stat(event_dir)
        except FileNotFoundError:
            raise _Unavailable(f"no {self.category}:{self.name} in tracefs") from None
        except PermissionError:
            raise _Unavailable("tracefs not readable (needs root)") from None
        if not self.fields:
            return
        have = self._parsed_field_names(str(where))
        if have is None:
            fmt = os.path.join(event_dir, "format")
            try:
                with open(fmt) as f:
                    have = format_field_names(f.read())
            except OSError as err:
                raise _Unavailable(f"cannot read {self.category}:{self.name} format "
                                   f"({_errname(err.errno)})") from None
        missing = [name for name in self.fields if name not in have]
        if missing:
            raise _Unavailable(f"{self.category}:{self.name} has no field "
                               + ", ".join(missing))

    def _parsed_field_names(self, root: str) -> set[str] | None:
        """The field names of the format the engine will read (tpformat.read_format, read
        and parsed once a process: drsnoop's six tracepoints were read and parsed twice,
        ~2.5 ms of its start); None where that is not the mounted tracefs (a test's), or
        the format does not parse (the text is read here then)."""
        if self.tracefs is not None or TRACEFS_ROOT is not None or \
                root != kernel.tracefs_path():
            return None
        from memlens.core import tpformat

        try:
            fmt = tpformat.read_format(self.category, self.name)
        except Exception:  # a probe never raises: the text path says why
            return None
        return {f.name for f in fmt.fields}


def format_field_names(text: str) -> set[str]:
    """Field names of a tracefs `format` file (lines `field:unsigned long brk;	offset:...`,
    `field:char comm[16];`, `field:__data_loc char[] name;`), each line read as the
    engine reads it (tpformat's parser); a line it cannot read names nothing.  Names only:
    enough to know whether a field exists."""
    from memlens.core.tpformat import _field_line  # ~0.5 ms, for a tracepoint's fields only

    names = set()
    for line in text.splitlines():
        parsed = _field_line(line.strip())
        if parsed is not None:
            names.add(parsed[1])
    return names


# ------------------------------------------------------------------------ perf events

class PerfSoftware(Hook):
    """perf software event (PERF_TYPE_SOFTWARE, `config` = PERF_COUNT_SW_*): available when
    it opens on a CPU (opened disabled and closed at once)."""

    __slots__ = ("name", "config")
    kind = "perf_event"
    name: str
    config: int

    def __init__(self, name: str, config: int):
        self._init(name=name, config=int(config))

    @property
    def label(self) -> str:
        return f"perf software event {self.name}"

    def _check(self, where: object) -> None:
        import struct

        from memlens.core import libbpf as L
        from memlens.core import perf

        cpus = perf.online_cpus()
        attr = bytearray(perf.event_attr(perf.PERF_TYPE_SOFTWARE, self.config,
                                         sample_period=1 << 62))
        struct.pack_into("<Q", attr, 40, 1)  # flags: disabled (counts nothing meanwhile)
        fd = L.perf_event_open(bytes(attr), -1, cpus[0] if cpus else 0, -1,
                               perf.PERF_FLAG_FD_CLOEXEC)
        if fd >= 0:
            os.close(fd)
            return
        err = -fd
        if err in (errno_mod.EACCES, errno_mod.EPERM):
            raise _Unavailable(f"perf events not permitted ({_errname(err)}: needs root or "
                               f"CAP_PERFMON; perf_event_paranoid={_paranoid()})")
        if err in (errno_mod.ENOENT, errno_mod.ENODEV, errno_mod.EOPNOTSUPP):
            raise _Unavailable(f"no software event {self.name} ({_errname(err)})")
        raise _Unavailable(f"perf_event_open of {self.name} failed ({_errname(err)})")


def _paranoid() -> str:
    try:
        with open("/proc/sys/kernel/perf_event_paranoid") as f:
            return f.read().strip()
    except OSError:
        return "?"


# ------------------------------------------------------------------- uprobes, kprobes

class Uprobe(Hook):
    """uprobes (and so USDT): available when the kernel has the uprobe PMU."""

    __slots__ = ()
    kind = "uprobe"

    @property
    def label(self) -> str:
        return "uprobes"

    def _where(self) -> object:
        return EVENT_SOURCE

    def _check(self, where: object) -> None:
        if not os.path.isdir(os.path.join(str(where), "uprobe")):
            raise _Unavailable("no uprobe PMU (CONFIG_UPROBE_EVENTS off)")


class Kprobe(Hook):
    """kprobe on `func`: available when the kernel has the kprobe PMU and the function is in
    /proc/kallsyms (inlined or static-renamed functions are not)."""

    __slots__ = ("func",)
    kind = "kprobe"
    func: str

    def __init__(self, func: str):
        self._init(func=func)

    @property
    def label(self) -> str:
        return f"kprobe {self.func}"

    def _where(self) -> object:
        return EVENT_SOURCE, KALLSYMS

    def _check(self, where: object) -> None:
        event_source, kallsyms = where  # type: ignore[misc]
        # the PMU first: without it the function's presence does not matter (and
        # kallsyms is ~10 MB to read)
        if not os.path.isdir(os.path.join(event_source, "kprobe")):
            raise _Unavailable("no kprobe PMU (CONFIG_KPROBES off)")
        if self.func not in _kallsyms_names(kallsyms):
            raise _Unavailable(f"no {self.func} in {kallsyms}")


# ------------------------------------------------------------- BPF helpers, and both

class BpfHelper(Hook):
    """A BPF helper a program calls (bpf_find_vma: 5.17+), asked of the kernel through
    libbpf's probe (a tiny program calling it, for the given program type)."""

    __slots__ = ("helper", "prog_type")
    kind = "helper"
    helper: str
    prog_type: str

    def __init__(self, helper: str, prog_type: str = "perf_event"):
        self._init(helper=helper, prog_type=prog_type)

    @property
    def label(self) -> str:
        return f"helper bpf_{self.helper}"

    def _check(self, where: object) -> None:
        ok = helper_exists(self.helper, self.prog_type)
        if not ok:
            raise _Unavailable(f"the kernel has no bpf_{self.helper} for {self.prog_type} "
                               "programs")


def helper_exists(helper: str, prog_type: str = "tracepoint") -> bool:
    """The kernel has BPF helper bpf_<helper> for `prog_type` programs: libbpf's probe (a
    tiny program calling it), its answer kept for the boot (kernel_answer)."""
    def probe() -> bool | None:
        from memlens.core import libbpf as L

        try:
            rc = L.lib().libbpf_probe_bpf_helper(kernel.PROG_TYPES[prog_type],
                                                 kernel.HELPERS[helper], None)
        except AttributeError:
            return None  # an old libbpf without the probe: no answer
        return None if rc < 0 else rc == 1

    return kernel_answer(f"helper bpf_{helper} {prog_type}", probe)


class AllOf(Hook):
    """Several things one program needs at once (a perf event and bpf_find_vma): available
    when each is; the reason names the first that is not."""

    __slots__ = ("hooks",)
    hooks: tuple

    def __init__(self, *hooks: Hook):
        self._init(hooks=tuple(hooks))

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.hooks[0].kind  # what doctor loads for real

    @property
    def label(self) -> str:
        tps = [h for h in self.hooks if isinstance(h, Tracepoint)]
        if len(tps) == len(self.hooks) > 1 and len({h.category for h in tps}) == 1:
            # "tracepoints vmscan:mm_vmscan_direct_reclaim_begin, ...end": one line in doctor
            names = [h.name for h in tps]
            common = os.path.commonprefix(names)
            rest = [f"...{n[len(common):]}" for n in names[1:]]
            return f"tracepoints {tps[0].category}:{names[0]}, " + ", ".join(rest)
        return " + ".join(h.label for h in self.hooks)

    def probe(self) -> tuple[bool, str]:
        for h in self.hooks:
            ok, why = h.probe()
            if not ok:
                return False, f"{h.label}: {why}"
        return True, ""


@memo
def _kallsyms_names(path: str) -> frozenset[str]:
    names = set()
    with open(path, "rb") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:  # "addr type name [module]"
                names.add(parts[2].decode(errors="replace"))
    return frozenset(names)


def _errname(err: int | None) -> str:
    if not err:
        return "unknown error"
    return errno_mod.errorcode.get(err, str(err))
