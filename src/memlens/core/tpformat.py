# SPDX-License-Identifier: GPL-2.0-only
"""Tracepoint format files (events/<cat>/<name>/format), raw record decoding, and a small
filter language compiled to (offset, size, op, value) terms a BPF program can evaluate.

The format file, not vmlinux BTF, is the authority on a classic tracepoint's record layout:
it is what the kernel actually writes, and it exists on kernels without BTF.
"""
from __future__ import annotations

import os
import struct
import sys

from memlens.core.kernel import ensure_tracefs
from memlens.core.memo import memo
from memlens.core.record import record
from memlens.errors import KernelLacks, MemlensError, NotPermitted, UsageError

EQ, NE, LT, LE, GT, GE, AND = 1, 2, 3, 4, 5, 6, 7
MAX_FILTER_TERMS = 4  # the BPF side unrolls a fixed number of term slots
_OPS = {"==": EQ, "!=": NE, "<": LT, "<=": LE, ">": GT, ">=": GE, "&": AND}
_PYOPS = {EQ: lambda a, b: a == b, NE: lambda a, b: a != b, LT: lambda a, b: a < b,
          LE: lambda a, b: a <= b, GT: lambda a, b: a > b, GE: lambda a, b: a >= b,
          AND: lambda a, b: (a & b) != 0}
_MASK64 = (1 << 64) - 1

# asm-generic values (x86, arm64, riscv); alpha/mips/parisc/sparc differ for some MAP_/MADV_
CONSTANTS = {
    "MADV_NORMAL": 0, "MADV_RANDOM": 1, "MADV_SEQUENTIAL": 2, "MADV_WILLNEED": 3,
    "MADV_DONTNEED": 4, "MADV_FREE": 8, "MADV_REMOVE": 9, "MADV_DONTFORK": 10,
    "MADV_DOFORK": 11, "MADV_MERGEABLE": 12, "MADV_UNMERGEABLE": 13, "MADV_HUGEPAGE": 14,
    "MADV_NOHUGEPAGE": 15, "MADV_DONTDUMP": 16, "MADV_DODUMP": 17, "MADV_WIPEONFORK": 18,
    "MADV_KEEPONFORK": 19, "MADV_COLD": 20, "MADV_PAGEOUT": 21, "MADV_POPULATE_READ": 22,
    "MADV_POPULATE_WRITE": 23, "MADV_DONTNEED_LOCKED": 24, "MADV_COLLAPSE": 25,
    "MAP_SHARED": 0x1, "MAP_PRIVATE": 0x2, "MAP_SHARED_VALIDATE": 0x3, "MAP_FIXED": 0x10,
    "MAP_ANONYMOUS": 0x20, "MAP_ANON": 0x20, "MAP_GROWSDOWN": 0x100, "MAP_LOCKED": 0x2000,
    "MAP_NORESERVE": 0x4000, "MAP_POPULATE": 0x8000, "MAP_NONBLOCK": 0x10000,
    "MAP_STACK": 0x20000, "MAP_HUGETLB": 0x40000, "MAP_SYNC": 0x80000,
    "MAP_FIXED_NOREPLACE": 0x100000,
    "PROT_NONE": 0, "PROT_READ": 1, "PROT_WRITE": 2, "PROT_EXEC": 4,
}

# Syscall tracepoints store every argument in an 8-byte unsigned slot even when the C type is
# int: only the type's own width carries meaning (the kernel truncates the register), so
# decoding and filtering read that width, at the slot's low-order end.
_NARROW = {"int": (4, True), "pid_t": (4, True), "key_serial_t": (4, True),
           "clockid_t": (4, True), "rwf_t": (4, True), "mqd_t": (4, True),
           "unsigned int": (4, False), "unsigned": (4, False), "uid_t": (4, False),
           "gid_t": (4, False), "qid_t": (4, False), "u32": (4, False),
           "short": (2, True), "unsigned short": (2, False), "umode_t": (2, False)}
_ELEM = {"char": 1, "unsigned char": 1, "u8": 1, "__u8": 1, "s8": 1, "bool": 1,
         "short": 2, "unsigned short": 2, "u16": 2, "__u16": 2, "s16": 2,
         "int": 4, "unsigned int": 4, "unsigned": 4, "u32": 4, "__u32": 4, "s32": 4}
_INT = {1: "b", 2: "h", 4: "i", 8: "q"}

# compiled at first use (formats: not read by perf-event tools; filters, flag names: most
# runs need neither; ~0.25 ms each of every start that compiled them)
_TERM = (r"\s*(?P<field>[A-Za-z_]\w*)\s*(?P<op>==|!=|<=|>=|<|>|&)\s*"
         r"(?P<const>\S.*?)\s*$")


def _re(pattern: str):
    """A compiled pattern, re imported only here: format files are parsed without it (re,
    with the enum module it imports, is ~8-14 ms of every tracepoint tool's start on this
    VM, bench/); filters and flag names, which few runs use, need it.  re keeps its own
    cache of compiled patterns."""
    import re

    return re.compile(pattern)


@record(frozen=True)
class Field:
    name: str
    type: str
    offset: int
    size: int
    signed: bool
    is_common: bool
    data_loc: bool
    array_len: int | None
    is_string: bool
    is_pointer: bool


@record(frozen=True)
class TracepointFormat:
    category: str
    name: str
    id: int
    fields: tuple[Field, ...]

    @property
    def event(self) -> str:
        return f"{self.category}:{self.name}" if self.category else self.name

    @property
    def size(self) -> int:
        return max((f.offset + f.size for f in self.fields), default=0)

    def user_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if not f.is_common)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        names = ", ".join(f.name for f in self.user_fields()) or "none"
        raise UsageError(f"no field {name!r} in {self.event} (fields: {names})")

    @property
    def _decoder(self) -> _Decoder:
        # made once, kept in __dict__ (as functools.cached_property would: frozen is no
        # obstacle to object.__setattr__)
        decoder = self.__dict__.get("_decoder_made")
        if decoder is None:
            decoder = _Decoder(self)
            object.__setattr__(self, "_decoder_made", decoder)
        return decoder


_QUALIFIERS = frozenset(("const", "volatile", "__data_loc", "__rel_loc"))


def _base_type(type_: str) -> str:
    """The C type without qualifiers, array brackets and extra blanks: "const char *" ->
    "char *", "__data_loc char[]" -> "char" (as re.sub of \\b(const|...)\\b and \\[...\\],
    written without re: see _re)."""
    out, i, n = [], 0, len(type_)
    while i < n:
        if _is_word(type_[i]):
            j = i
            while j < n and _is_word(type_[j]):
                j += 1
            word = type_[i:j]
            out.append(" " if word in _QUALIFIERS else word)
            i = j
        else:
            out.append(type_[i])
            i += 1
    t = "".join(out)
    while True:
        i = t.find("[")
        j = t.find("]", i + 1) if i >= 0 else -1
        if j < 0:
            break
        t = f"{t[:i]} {t[j + 1:]}"
    return " ".join(t.split())


def _is_word(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "_")


def _field_line(line: str) -> tuple[str, str, str | None, int, int, bool] | None:
    """`field:DECL;<tab>offset:N;<tab>size:N;[<tab>signed:N;]` as (type, name, array
    length text or None, offset, size, signed), None if the line is not of that form.
    String operations, not re (see _re)."""
    parts = line.split(";")
    if len(parts) < 4 or not parts[0].startswith("field:"):
        return None
    decl = parts[0][len("field:"):].strip()
    items = []
    for part in parts[1:]:
        key, sep, value = part.strip().partition(":")
        if sep:
            items.append((key, value))
    if len(items) < 2 or items[0][0] != "offset" or items[1][0] != "size" \
            or not (items[0][1].isdigit() and items[1][1].isdigit()):
        return None
    signed = len(items) > 2 and items[2][0] == "signed" and items[2][1] == "1"
    arr = None
    if decl.endswith("]"):
        i = decl.rfind("[")
        if i < 0 or "]" in decl[i + 1:-1]:
            return None
        arr, decl = decl[i + 1:-1], decl[:i].rstrip()
    i = len(decl)
    while i and _is_word(decl[i - 1]):
        i -= 1
    while i < len(decl) and decl[i].isdigit():  # a name starts with a letter or _
        i += 1
    name, type_ = decl[i:], decl[:i].rstrip()
    if not name:
        return None
    return type_, name, arr, int(items[0][1]), int(items[1][1]), signed


def parse_format(text: str, category: str = "", name: str = "") -> TracepointFormat:
    """Fields exactly as the file states them (size, signedness), even where the C type
    disagrees; decode() and parse_filter() apply the type's own width (see _NARROW)."""
    tp_id = None
    fields = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("name:") and not name:
            name = line[5:].strip()
        elif line.startswith("ID:"):
            tp_id = int(line[3:])
        elif line.startswith("field:"):
            parsed = _field_line(line)
            if parsed is None:
                raise MemlensError(f"{category}:{name}: cannot parse format line {line!r}")
            type_, field_name, arr, offset, size, signed = parsed
            data_loc = type_.startswith(("__data_loc", "__rel_loc"))
            array_len = None
            if arr is not None:
                type_ += f"[{arr}]"
                elem = _ELEM.get(_base_type(type_), 8)
                # a length given as a macro name (old kernels) is recovered from the size
                array_len = int(arr) if arr.isdigit() else size // elem
            fields.append(Field(
                name=field_name, type=type_, offset=offset, size=size,
                signed=signed, is_common=field_name.startswith("common_"),
                data_loc=data_loc, array_len=array_len,
                is_string=(data_loc or arr is not None) and _base_type(type_) == "char",
                is_pointer="*" in type_ and not data_loc))
    if tp_id is None or not fields:
        raise MemlensError(f"{category}:{name}: not a tracepoint format file (no ID or fields)")
    return TracepointFormat(category, name, tp_id, tuple(fields))


def _events_dir(root: str | None) -> str:
    return root if root is not None else os.path.join(ensure_tracefs(quiet=True), "events")


@memo
def read_format(category: str, name: str, root: str | None = None) -> TracepointFormat:
    """The format of tracepoint category:name; root is an events/ directory (tests)."""
    path = os.path.join(_events_dir(root), category, name, "format")
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise KernelLacks(f"this kernel has no tracepoint {category}:{name} "
                          f"({path} does not exist)") from None
    except PermissionError:
        raise NotPermitted(f"reading {path} needs root") from None
    return parse_format(text, category, name)


def list_events(pattern: str, root: str | None = None) -> list[tuple[str, str]]:
    """(category, name) of tracepoints matching 'cat:name' wildcards; a pattern without ':'
    matches event names in every category."""
    import fnmatch  # only for wildcards: not imported by every tracepoint tool's start

    cat_pat, _, name_pat = pattern.rpartition(":")
    cat_pat, name_pat = cat_pat or "*", name_pat or "*"
    base = _events_dir(root)
    found = []
    try:
        cats = [e for e in os.scandir(base) if e.is_dir() and fnmatch.fnmatchcase(e.name, cat_pat)]
    except FileNotFoundError:
        raise KernelLacks(f"no tracepoint directory {base}") from None
    for cat in cats:
        for ev in os.scandir(cat.path):
            if (fnmatch.fnmatchcase(ev.name, name_pat) and ev.is_dir()
                    and os.path.isfile(os.path.join(ev.path, "format"))):
                found.append((cat.name, ev.name))
    return sorted(found)


def value_layout(f: Field) -> tuple[int, int, bool]:
    """(offset, size, signed) of the bytes that hold a scalar field's value (a syscall's
    `int` argument is 4 bytes of its 8-byte slot)."""
    return _value_layout(f)


def _value_layout(f: Field) -> tuple[int, int, bool]:
    """(offset, size, signed) of the bytes that hold a scalar field's value."""
    narrow = _NARROW.get(_base_type(f.type))
    if narrow and narrow[0] < f.size and not f.is_pointer and f.array_len is None:
        n, signed = narrow
        return (f.offset if sys.byteorder == "little" else f.offset + f.size - n), n, signed
    return f.offset, f.size, f.signed


# decode steps: what to do with the unpacked value(s) at an index of the struct's tuple
_PLAIN, _BOOL, _STR, _LIST, _ODD, _DSTR, _DLIST, _TSTR, _TLIST = range(9)


class _Decoder:
    """One struct.Struct for all fixed user fields, so a record costs one unpack_from."""

    def __init__(self, fmt: TracepointFormat):
        codes, self.steps, pos, idx = ["="], [], 0, 0
        for f in sorted(fmt.user_fields(), key=lambda f: f.offset):
            base = _base_type(f.type)
            if f.array_len is not None and f.size == 0:  # flexible array: the record's tail
                self.steps.append((f.name, _TSTR if f.is_string else _TLIST, 0, f.offset,
                                   _elem_struct(base, f.signed)))
                continue
            off, size, signed = (f.offset, f.size, False) if f.data_loc else _value_layout(f)
            if off < pos:
                raise MemlensError(f"{fmt.event}: field {f.name} overlaps the field before it")
            codes.append(f"{off - pos}x" if off > pos else "")
            pos = off + size
            if f.data_loc:
                codes.append("I")
                # __rel_loc offsets count from the end of the field itself
                rel = f.offset + f.size if f.type.startswith("__rel_loc") else 0
                self.steps.append((f.name, _DSTR if f.is_string else _DLIST, idx, rel,
                                   _elem_struct(base, f.signed)))
            elif f.is_string:
                codes.append(f"{size}s")
                self.steps.append((f.name, _STR, idx, 0, None))
            elif f.array_len:
                elem = size // f.array_len
                codes.append(f"{f.array_len}{_int_code(elem, signed)}")
                self.steps.append((f.name, _LIST, idx, f.array_len, None))
                idx += f.array_len - 1
            elif size in _INT:
                codes.append(_int_code(size, signed))
                self.steps.append((f.name, _BOOL if base == "bool" else _PLAIN, idx, 0, None))
            else:
                codes.append(f"{size}s")
                self.steps.append((f.name, _ODD, idx, signed, None))
            idx += 1
        self.struct = struct.Struct("".join(codes))
        self.event = fmt.event

    def __call__(self, raw: bytes) -> dict[str, object]:
        if len(raw) < self.struct.size:
            raise MemlensError(f"{self.event}: record of {len(raw)} bytes is shorter than the "
                               f"{self.struct.size} its fields need")
        vals = self.struct.unpack_from(raw)
        out: dict[str, object] = {}
        for name, kind, i, arg, elem in self.steps:
            if kind == _PLAIN:
                out[name] = vals[i]
            elif kind == _STR:
                out[name] = vals[i].split(b"\0", 1)[0].decode(errors="replace")
            elif kind == _BOOL:
                out[name] = bool(vals[i])
            elif kind == _LIST:
                out[name] = list(vals[i:i + arg])
            elif kind == _ODD:
                out[name] = int.from_bytes(vals[i], sys.byteorder, signed=arg)
            else:
                if kind in (_DSTR, _DLIST):
                    loc = vals[i]
                    start, end = arg + (loc & 0xFFFF), arg + (loc & 0xFFFF) + (loc >> 16)
                    # the BPF side may have copied only the fixed part of the record
                    chunk = raw[start:end] if end <= len(raw) else None
                else:
                    chunk = raw[arg:]
                if kind in (_DSTR, _TSTR):
                    out[name] = ("?" if chunk is None
                                 else chunk.split(b"\0", 1)[0].decode(errors="replace"))
                else:
                    out[name] = None if chunk is None else [
                        v[0] for v in elem.iter_unpack(chunk[:len(chunk) // elem.size
                                                             * elem.size])]
        return out


def _int_code(size: int, signed: bool) -> str:
    c = _INT.get(size, "B")
    return c if signed else c.upper()


def _elem_struct(base: str, signed: bool) -> struct.Struct:
    return struct.Struct("=" + _int_code(_ELEM.get(base, 8), signed))


def decode(fmt: TracepointFormat, raw: bytes) -> dict[str, object]:
    """The user fields of one raw record (as the kernel wrote it, common fields first)."""
    return fmt._decoder(raw)


@record(frozen=True)
class FilterTerm:
    offset: int
    size: int
    signed: bool
    op: int
    value: int  # u64: negative constants in two's complement
    text: str


def field_columns(fmt: TracepointFormat, data, sizes):
    """(names, value lists) of a probe's fields read as numpy columns from `data` (a batch's
    records, one uint8 row each, `sizes` their lengths), or None when a field is not a
    plain integer or a record is shorter than the fields (decode those one by one).  The
    first record decoded by decode() is the reference: same names, same values, and its
    bools make bool columns.  Event tools (trace, shmsnoop) read a poll's records so."""
    fields = fmt.user_fields()
    if not fields or any(f.data_loc or f.is_string or f.array_len is not None
                         or f.size not in (1, 2, 4, 8) for f in fields):
        return None
    end = max(f.offset + f.size for f in fields)
    if int(sizes.min()) < end:
        return None
    ref = decode(fmt, bytes(data[0][:int(sizes[0])]))
    names, values = [], []
    for f in sorted(fields, key=lambda f: f.offset):
        off, size, signed = value_layout(f)
        col = data[:, off:off + size].copy().view(f"<{'i' if signed else 'u'}{size}").ravel()
        if isinstance(ref.get(f.name), bool):
            col = col.astype(bool)
        names.append(f.name)
        values.append(col.tolist())
    if list(ref) != names or [ref[n] for n in names] != [v[0] for v in values]:
        return None
    return names, values


def _kernel_enum(name: str) -> int | None:
    """A kernel enum member by name (`item == PSWPIN`), from the running kernel's BTF: the
    values tracepoints report move between kernels, the names do not."""
    if not name.isidentifier():
        return None
    from memlens.core import btfenum

    return btfenum.constant(name)


def _constant(text: str, term: str) -> int:
    value = 0
    for part in text.split("|"):  # MAP_SHARED|MAP_ANONYMOUS
        p = part.strip()
        try:
            value |= int(p, 0)
        except ValueError:
            if p.upper() in CONSTANTS:
                value |= CONSTANTS[p.upper()]
                continue
            kernel_value = _kernel_enum(p)
            if kernel_value is None:
                family = p.upper().split("_", 1)[0] + "_"
                known = [k for k in CONSTANTS if k.startswith(family)]
                hint = f" (like it: {', '.join(known)})" if known else ""
                raise UsageError(f"filter {term!r}: {p!r} is not a number, a constant memlens "
                                 f"knows{hint} or a kernel enum member") from None
            value |= kernel_value
    return value


def parse_filter(expr: str, fmt: TracepointFormat) -> list[FilterTerm]:
    """Compile 'FIELD OP CONST && ...' against fmt; every term must hold."""
    import re  # filters only (see _re)

    if "||" in expr or re.search(r"\bor\b|[()]", expr):
        raise UsageError(f"filter {expr!r}: only && (or 'and') may join terms; "
                         "|| and parentheses are not supported")
    parts = re.split(r"&&|\band\b", expr)
    if len(parts) > MAX_FILTER_TERMS:
        raise UsageError(f"filter {expr!r}: {len(parts)} terms, at most {MAX_FILTER_TERMS}")
    terms = []
    for part in parts:
        term = part.strip()
        m = _re(_TERM).match(term)
        if not m:
            raise UsageError(f"filter {term or expr!r}: expected FIELD OP VALUE with OP one of "
                             f"{' '.join(_OPS)}")
        fname, op, const = m.group("field", "op", "const")
        try:
            f = fmt.field(fname)
        except UsageError as e:
            raise UsageError(f"filter {term!r}: {e}") from None
        if f.data_loc or f.array_len is not None:
            kind = "a string" if f.is_string else "an array"
            raise UsageError(f"filter {term!r}: field {fname!r} is {kind} ({f.type}); "
                             "filters compare integer and pointer fields only")
        if f.size > 8:
            raise UsageError(f"filter {term!r}: field {fname!r} is {f.size} bytes; "
                             "filters compare fields of at most 8 bytes")
        offset, size, signed = _value_layout(f)
        bits = size * 8
        value = _constant(const, term)
        if not -(1 << (bits - 1)) <= value < (1 << bits):
            raise UsageError(f"filter {term!r}: {value} does not fit the {size}-byte field "
                             f"{fname!r}")
        # the constant is read as a bit pattern of the field's width, then widened the way
        # the BPF side widens the field (sign- or zero-extension), so 0xffffffff == -1 for int
        value &= (1 << bits) - 1
        if signed and value >> (bits - 1):
            value -= 1 << bits
        terms.append(FilterTerm(offset, size, signed, _OPS[op], value & _MASK64,
                                f"{fname} {op} {const}"))
    return terms


def evaluate(terms: list[FilterTerm], raw: bytes) -> bool:
    """What the BPF side computes: every term holds (a record too short to hold a term's
    field does not match)."""
    for t in terms:
        end = t.offset + t.size
        if len(raw) < end:
            return False
        v = int.from_bytes(raw[t.offset:end], sys.byteorder, signed=t.signed)
        c = t.value - (1 << 64) if t.signed and t.value >> 63 else t.value
        if t.op == AND:
            v, c = v & _MASK64, t.value
        if not _PYOPS[t.op](v, c):
            return False
    return True


# -- flags named by an event's print format ----------------------------------------------
# gfp bits moved between kernels (6.9 made them an enum), so tools read a flag's bit from
# the event's own print fmt instead of writing it down.
_CASTS = r"\(\s*(?:unsigned\s+long|__force\s+gfp_t|gfp_t)\s*\)|\bgfp_t\b"
_SUFFIX = r"(?<=[0-9a-fA-F])[uU][lL]{0,2}\b|(?<=\d)[lL]{1,2}\b"
_ONE_BIT = r"(?P<num>0[xX][0-9a-fA-F]+|\d+)(?:<<(?P<shift>\d+))?"


def gfp_bit(format_text: str, name: str) -> int | None:
    """The value of the one-bit gfp flag `name` as the event's print fmt spells it for
    __print_flags: `{( unsigned long)(( gfp_t)((((1UL))) << (19))), "__GFP_NOMEMALLOC"}`
    (6.9+, bits from an enum) or `{(unsigned long)((__force gfp_t)0x80000u),
    "__GFP_NOMEMALLOC"}` (older).  None when the format does not name it as one bit."""
    end = format_text.find(f', "{name}"}}')
    start = format_text.rfind("{", 0, end)
    if end < 0 or start < 0:
        return None
    import re  # flag names only (see _re)

    expr = _re(_SUFFIX).sub("", _re(_CASTS).sub("", format_text[start + 1:end]))
    m = _re(_ONE_BIT).fullmatch(re.sub(r"[()\s]", "", expr))
    if not m:
        return None
    value = int(m["num"], 0) << int(m["shift"] or 0)
    return value if value > 0 and value & (value - 1) == 0 else None
