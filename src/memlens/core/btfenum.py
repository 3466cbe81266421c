# SPDX-License-Identifier: GPL-2.0-only
"""Values of kernel enum members read from the running kernel's BTF: tracepoints report
enums as bare numbers, and those numbers move with the config and the version.

The memcg:count_memcg_events tracepoint reports which counter moved as `item`, the member's
position in `enum vm_event_item` (include/linux/vm_event_item.h), whose members before and
between come and go with the config (CONFIG_NUMA, CONFIG_MEMCG, ...) and the version.  So
values are looked up here, never written down: PSWPIN is 2 on 6.18 today, but nothing
promises it.  Filters accept any kernel enum member by name (`item == PSWPIN`).

    values("PSWPIN", "PSWPOUT")   -> {"PSWPIN": 2, "PSWPOUT": 3}   (enum vm_event_item)
    constant("MR_COMPACTION")     -> 0   (any enum; None if no enum has that member)

A kernel without the enum or the member is KernelLacks (exit 4) naming what is missing.
"""
from __future__ import annotations

import ctypes as C

from memlens.core.memo import memo
from memlens.errors import KernelLacks

ENUM = "vm_event_item"
_KIND_ENUM, _KIND_ENUM64 = 6, 19  # BTF_KIND_ENUM / BTF_KIND_ENUM64 (uapi/linux/btf.h)


class _BtfEnum(C.Structure):
    # struct btf_enum: follows an ENUM's btf_type, vlen of them
    _fields_ = [("name_off", C.c_uint32), ("val", C.c_int32)]


class _BtfEnum64(C.Structure):
    # struct btf_enum64 (kernel 6.0+ BTF): follows an ENUM64's btf_type
    _fields_ = [("name_off", C.c_uint32), ("val_lo32", C.c_uint32), ("val_hi32", C.c_uint32)]


def values(*names: str, btf_path: str | None = None, enum: str = ENUM) -> dict[str, int]:
    """{member: value} for each name of `enum`, from vmlinux BTF (or `btf_path`)."""
    members = enum_members(btf_path, enum)
    missing = [n for n in names if n not in members]
    if missing:
        raise KernelLacks(f"the kernel's BTF has no enum {enum} member "
                          f"{', '.join(missing)}: cannot tell which records mean it")
    return {n: members[n] for n in names}


@memo
def enum_members(btf_path: str | None = None, enum: str = ENUM) -> dict[str, int]:
    """Every member of `enum` with its value (cached: BTF does not change while the kernel
    runs)."""
    from memlens.core import hooks
    from memlens.core import libbpf as L

    path = btf_path or hooks.VMLINUX_BTF
    lb = L.lib()
    btf = lb.btf__parse(path.encode(), None)
    if not btf:
        raise KernelLacks(f"cannot read kernel BTF {path} ({L.strerror(L.last_errno())}): "
                          f"the values of enum {enum} come from it")
    try:
        for kind in (_KIND_ENUM, _KIND_ENUM64):
            tid = int(lb.btf__find_by_name_kind(btf, enum.encode(), kind))
            if tid > 0:
                return _members(lb, btf, tid, kind)
        raise KernelLacks(f"no enum {enum} in the kernel's BTF {path}")
    finally:
        lb.btf__free(btf)


@memo
def all_members(btf_path: str | None = None) -> dict[str, int]:
    """Every member of every enum in the kernel's BTF (the first seen wins: C gives enum
    members one namespace, so a name means one value).  Read once, when a filter names a
    constant memlens does not know."""
    from memlens.core import hooks
    from memlens.core import libbpf as L

    path = btf_path or hooks.VMLINUX_BTF
    lb = L.lib()
    btf = lb.btf__parse(path.encode(), None)
    if not btf:
        return {}
    out: dict[str, int] = {}
    try:
        for tid in range(1, int(lb.btf__type_cnt(btf))):
            kind = (lb.btf__type_by_id(btf, tid).contents.info >> 24) & 0x1F
            if kind in (_KIND_ENUM, _KIND_ENUM64):
                for name, value in _members(lb, btf, tid, kind).items():
                    out.setdefault(name, value)
    finally:
        lb.btf__free(btf)
    return out


def constant(name: str, btf_path: str | None = None) -> int | None:
    """The value of a kernel enum member, or None."""
    try:
        return all_members(btf_path).get(name)
    except OSError:
        return None


def _members(lb, btf, tid: int, kind: int) -> dict[str, int]:
    from memlens.core import libbpf as L

    t = lb.btf__type_by_id(btf, tid).contents
    vlen = t.info & 0xFFFF
    signed = bool(t.info >> 31)  # kflag: signed enum
    base = C.addressof(t) + C.sizeof(L.BtfType)
    out = {}
    if kind == _KIND_ENUM:
        arr = C.cast(base, C.POINTER(_BtfEnum))
        for i in range(vlen):
            e = arr[i]
            out[_name(lb, btf, e.name_off)] = int(e.val) if signed else int(e.val) & 0xFFFFFFFF
    else:
        arr64 = C.cast(base, C.POINTER(_BtfEnum64))
        for i in range(vlen):
            e64 = arr64[i]
            v = (int(e64.val_hi32) << 32) | int(e64.val_lo32)
            if signed and v >= 1 << 63:
                v -= 1 << 64
            out[_name(lb, btf, e64.name_off)] = v
    return out


def _name(lb, btf, off: int) -> str:
    raw = lb.btf__name_by_offset(btf, off)
    return raw.decode(errors="replace") if raw else ""
