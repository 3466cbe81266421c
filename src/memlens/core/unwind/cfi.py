# SPDX-License-Identifier: GPL-2.0-only
"""Call frame information (`.eh_frame`, `.debug_frame`) of an x86-64 ELF file, reduced to the
compact rows the BPF unwinder walks (bpf/include/memlens.bpf.h, "DWARF unwinding").

A row says, from its pc up to the next row's: where the CFA (the caller's stack pointer) is
— rsp or rbp plus an offset, or one of the few DWARF expressions compilers and linkers really
emit — and where the caller's rbp was saved.  The return address is at CFA-8, as on every
x86-64 frame but a signal frame's.  Each row is 8 bytes:

    pc       u32   ELF virtual address the row starts at (objects above 4 GiB get no table)
    cfa_off  s16   offset added to the CFA's base register (x8 with CFA_SCALED: frames with
                   big buffers on the stack, 32 KiB and more, are common)
    kind     u8    low 3 bits: CFA rule (CFA_*), bit 3 CFA_SCALED; high nibble: rbp rule
    rbp_off  s8    rbp saved at base + 8*rbp_off (RBP_AT_CFA/RBP_AT_RBP); the PLT threshold

Why not pyelftools: it builds a Python object per instruction and per row (0.2-0.6 s for
libc's symbols alone, BPF-PYTHON.md §4).  Here the bytes are read in place, and an FDE's
program is run once per distinct (CIE, instructions) pair: most functions share a handful of
prologue shapes, so libc's 3,700 FDEs run about 1,000 programs.

The expressions handled, as the peers (Parca's agent, the OpenTelemetry profiler) do:
- the PLT's CFA, `rsp+8 + ((rip & 15) >= K ? 8 : 0)` (binutils writes it for .plt, K = 11,
  or 10 for some IBT layouts): CFA_PLT;
- gcc's stack realignment through a DRAP register: CFA = `*(rbp - 8)` (`DW_OP_breg6 -8;
  DW_OP_deref`), rbp saved at `rbp+0` (`DW_CFA_expression r6: DW_OP_breg6 0`);
- the signal trampoline (`__restore_rt`, CIE augmentation "S"): every register from the
  sigcontext on the stack: CFA_SIGNAL.
Anything else is CFA_UNSUPPORTED: the BPF side stops there and counts the stack truncated.
"""
from __future__ import annotations

import struct
from array import array
from typing import NamedTuple

from memlens.core.lazy import np  # (its import: lazy._import)

# --- row encoding (bpf/include/memlens.bpf.h mirrors these) -------------------------------
CFA_END = 0          # return address undefined: the outermost frame (_start, clone): stop
CFA_RSP = 1          # CFA = rsp + cfa_off
CFA_RBP = 2          # CFA = rbp + cfa_off
CFA_PLT = 3          # CFA = rsp + cfa_off + ((ip & 15) >= rbp_off ? 8 : 0)
CFA_DEREF_RBP = 4    # CFA = *(rbp + cfa_off)
CFA_SIGNAL = 5       # signal frame: rsp at *(rsp + cfa_off), rip 8 above, rbp 40 below
CFA_GAP = 6          # no FDE covers this pc: follow the frame pointer
CFA_UNSUPPORTED = 7  # a rule the unwinder cannot follow: the stack ends here, truncated
CFA_SCALED = 0x08    # cfa_off is in units of 8 bytes
CFA_NAMES = {CFA_END: "end", CFA_RSP: "rsp", CFA_RBP: "rbp", CFA_PLT: "plt",
             CFA_DEREF_RBP: "deref_rbp", CFA_SIGNAL: "signal", CFA_GAP: "gap",
             CFA_UNSUPPORTED: "unsupported"}

RBP_SAME = 0         # rbp unchanged in the caller
RBP_AT_CFA = 1       # caller's rbp saved at CFA + 8*rbp_off
RBP_AT_RBP = 2       # caller's rbp saved at rbp + 8*rbp_off
RBP_UNDEF = 3        # not recoverable (the caller's rbp is unknown from here on)

ROW_DTYPE = np.dtype([("pc", "<u4"), ("cfa_off", "<i2"), ("kind", "u1"), ("rbp_off", "i1")])

# DWARF register numbers (x86-64 psABI)
REG_RBP, REG_RSP, REG_RA = 6, 7, 16

# sigcontext (struct sigcontext, arch/x86/include/uapi/asm/sigcontext.h): rbp, rsp and rip
# slots relative to the rsp slot
SIG_RBP_FROM_RSP, SIG_RIP_FROM_RSP = -40, 8


class CfiError(Exception):
    """Malformed call frame information."""


class Rows(NamedTuple):
    rows: np.ndarray      # ROW_DTYPE, sorted by pc, consecutive duplicates merged
    fdes: int             # FDEs read
    programs: int         # distinct CFA programs run
    unsupported: int      # rows CFA_UNSUPPORTED


# --- LEB128 and pointer encodings ----------------------------------------------------------

def _uleb(b, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = b[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7


def _sleb(b, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = b[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            if byte & 0x40:
                result -= 1 << shift
            return result, i


DW_EH_PE_omit = 0xFF
_PE_FORMATS = {0x02: ("<H", 2), 0x03: ("<I", 4), 0x04: ("<Q", 8),
               0x0A: ("<h", 2), 0x0B: ("<i", 4), 0x0C: ("<q", 8)}


def _read_encoded(b, i: int, enc: int, field_vaddr: int) -> tuple[int, int]:
    """A DW_EH_PE-encoded pointer at b[i] (field_vaddr: its address, for pcrel)."""
    fmt = enc & 0x0F
    if fmt == 0x00:
        val, n = struct.unpack_from("<Q", b, i)[0], 8
    elif fmt == 0x01:
        val, j = _uleb(b, i)
        n = j - i
    elif fmt == 0x09:
        val, j = _sleb(b, i)
        n = j - i
    else:
        f = _PE_FORMATS.get(fmt)
        if f is None:
            raise CfiError(f"pointer encoding {enc:#x}")
        val, n = struct.unpack_from(f[0], b, i)[0], f[1]
    app = enc & 0x70
    if app == 0x10:  # pcrel
        val += field_vaddr
    elif app not in (0x00,):
        # textrel/datarel/funcrel do not occur in x86-64 .eh_frame FDE addresses
        raise CfiError(f"pointer application {enc:#x}")
    return val & 0xFFFFFFFFFFFFFFFF, i + n


# --- CIEs and FDEs -------------------------------------------------------------------------

class _Cie(NamedTuple):
    code_align: int
    data_align: int
    ra_reg: int
    fde_enc: int
    aug_data: bool        # 'z': FDEs carry an augmentation length
    signal: bool          # 'S': a signal trampoline's frames
    initial: bytes
    key: int              # offset of the CIE: identifies its program


def _parse_cie(b, start: int, end: int, is_eh: bool, key: int) -> _Cie:
    i = start
    version = b[i]
    i += 1
    nul = b.index(b"\0", i) if isinstance(b, bytes) else bytes(b[i:end]).index(b"\0") + i
    aug = bytes(b[i:nul]).decode("ascii", "replace")
    i = nul + 1
    if not is_eh and version >= 4:
        i += 2  # address_size, segment_selector_size
    code_align, i = _uleb(b, i)
    data_align, i = _sleb(b, i)
    if version == 1:
        ra_reg = b[i]
        i += 1
    else:
        ra_reg, i = _uleb(b, i)
    fde_enc = 0x00  # absptr
    signal = False
    aug_data = aug.startswith("z")
    if aug_data:
        alen, i = _uleb(b, i)
        j, after = i, i + alen
        for c in aug[1:]:
            if c == "R":
                fde_enc = b[j]
                j += 1
            elif c == "L":
                j += 1
            elif c == "P":
                penc = b[j]
                j += 1
                # the personality pointer: skipped (its application may be datarel)
                fmt = penc & 0x0F
                if fmt in (0x01, 0x09):
                    _, j = _uleb(b, j)
                else:
                    j += {0x00: 8, 0x02: 2, 0x03: 4, 0x04: 8, 0x0A: 2, 0x0B: 4,
                          0x0C: 8}.get(fmt, 8)
            elif c == "S":
                signal = True
            elif c in "BG":
                pass
            else:
                break  # unknown letter: the rest of the augmentation data is skipped whole
        i = after
    elif aug == "eh":
        i += 8
    elif aug:
        raise CfiError(f"CIE augmentation {aug!r}")
    if "S" in aug:
        signal = True
    return _Cie(code_align, data_align, ra_reg, fde_enc, aug_data, signal,
                bytes(b[i:end]), key)


def _entries(b, sec_vaddr: int, is_eh: bool):
    """(CIE, pc_begin, pc_range, instructions) of every FDE in a .eh_frame/.debug_frame."""
    cies: dict[int, _Cie] = {}
    i, n = 0, len(b)
    while i + 4 <= n:
        length = struct.unpack_from("<I", b, i)[0]
        hdr = 4
        if length == 0:
            if is_eh:
                break  # the terminator
            i += 4
            continue
        if length == 0xFFFFFFFF:
            length = struct.unpack_from("<Q", b, i + 4)[0]
            hdr = 12
            id_size = 8
        else:
            id_size = 4
        body = i + hdr
        end = body + length
        if end > n:
            raise CfiError("entry past the section's end")
        cie_id = int.from_bytes(b[body:body + id_size], "little")
        is_cie = cie_id == 0 if is_eh else cie_id == (0xFFFFFFFF if id_size == 4
                                                        else 0xFFFFFFFFFFFFFFFF)
        if is_cie:
            cies[i] = _parse_cie(b, body + id_size, end, is_eh, i)
        else:
            cie_off = body - cie_id if is_eh else cie_id
            cie = cies.get(cie_off)
            if cie is None:
                # a CIE after its FDE (legal in .debug_frame): parse it where it is
                if not 0 <= cie_off < n:
                    raise CfiError("FDE's CIE outside the section")
                clen = struct.unpack_from("<I", b, cie_off)[0]
                chdr = 4 if clen != 0xFFFFFFFF else 12
                if chdr == 12:
                    clen = struct.unpack_from("<Q", b, cie_off + 4)[0]
                cie = cies[cie_off] = _parse_cie(b, cie_off + chdr + id_size,
                                                 cie_off + chdr + clen, is_eh, cie_off)
            j = body + id_size
            if is_eh:
                enc = cie.fde_enc
                pc_begin, j = _read_encoded(b, j, enc, sec_vaddr + j)
                pc_range, j = _read_encoded(b, j, enc & 0x0F, 0)
                if cie.aug_data:
                    alen, j = _uleb(b, j)
                    j += alen
            else:
                pc_begin, pc_range = struct.unpack_from("<QQ", b, j)
                j += 16
            if pc_range:
                yield cie, pc_begin, pc_range, bytes(b[j:end])
        i = end


# --- DWARF expressions ---------------------------------------------------------------------

def _expr_ops(e: bytes) -> list[tuple[int, int]] | None:
    """The ops of a small expression as (opcode, operand); None for ops not decoded here."""
    out = []
    i = 0
    while i < len(e):
        op = e[i]
        i += 1
        if 0x70 <= op <= 0x8F:      # DW_OP_bregN sleb
            v, i = _sleb(e, i)
            out.append((op, v))
        elif 0x30 <= op <= 0x4F or op in (0x06, 0x1A, 0x22, 0x24, 0x2A):
            out.append((op, 0))     # litN, deref, and, plus, shl, ge
        elif op == 0x23:            # plus_uconst
            v, i = _uleb(e, i)
            out.append((op, v))
        else:
            return None
    return out


_BREG_RBP, _BREG_RSP, _BREG_RIP = 0x76, 0x77, 0x80
_LIT0 = 0x30
_DEREF, _AND, _PLUS, _SHL, _GE = 0x06, 0x1A, 0x22, 0x24, 0x2A


def _cfa_expression(e: bytes) -> tuple[int, int, int] | None:
    """A CFA expression as (CFA rule, cfa_off, rbp_off), or None."""
    ops = _expr_ops(e)
    if ops is None:
        return None
    codes = [o for o, _ in ops]
    # binutils' PLT: breg7 N; breg16 0; lit15; and; litK; ge; lit3; shl; plus
    if (len(ops) == 9 and codes[0] == _BREG_RSP and codes[1] == _BREG_RIP and ops[1][1] == 0
            and codes[2] == _LIT0 + 15 and codes[3] == _AND
            and _LIT0 <= codes[4] <= _LIT0 + 15 and codes[5] == _GE
            and codes[6] == _LIT0 + 3 and codes[7] == _SHL and codes[8] == _PLUS):
        return CFA_PLT, ops[0][1], codes[4] - _LIT0
    if len(ops) == 2 and codes[1] == _DEREF and codes[0] == _BREG_RBP:
        return CFA_DEREF_RBP, ops[0][1], 0
    if len(ops) == 2 and codes[1] == _DEREF and codes[0] == _BREG_RSP:
        return CFA_SIGNAL, ops[0][1], 0   # only kept as such in a signal frame's CIE
    return None


def _breg_only(e: bytes) -> tuple[int, int] | None:
    """`DW_OP_bregN off` alone: (N, off)."""
    ops = _expr_ops(e)
    if ops is None or len(ops) != 1 or not 0x70 <= ops[0][0] <= 0x8F:
        return None
    return ops[0][0] - 0x70, ops[0][1]


# --- the CFA program -----------------------------------------------------------------------

# a rule: None (same value / no rule), ("off", n) saved at CFA+n, ("undef",),
# ("expr", bytes) saved at the address the expression computes, ("other",)
_UNDEF = ("undef",)
_OTHER = ("other",)


def _encode(cfa_reg: int, cfa_off: int, cfa_expr: bytes | None, rbp, ra,
            signal: bool) -> tuple[int, int, int]:
    """One row's (cfa_off, kind, rbp_off) from the interpreter's state."""
    if ra == _UNDEF:
        return 0, CFA_END, 0
    if signal:
        # glibc's __restore_rt: CFA = *(rsp+K); rip at rsp+K+8, rbp at rsp+K-40
        got = _cfa_expression(cfa_expr) if cfa_expr is not None else None
        if (got is not None and got[0] == CFA_SIGNAL and ra is not None and ra[0] == "expr"
                and _breg_only(ra[1]) == (REG_RSP, got[1] + SIG_RIP_FROM_RSP)
                and (rbp is None or (rbp[0] == "expr" and _breg_only(rbp[1])
                                     == (REG_RSP, got[1] + SIG_RBP_FROM_RSP)))
                and -32768 <= got[1] <= 32767):
            return got[1], CFA_SIGNAL, 0
        return 0, CFA_UNSUPPORTED, 0
    if ra != ("off", -8):
        return 0, CFA_UNSUPPORTED, 0
    rbp_off = 0
    if cfa_expr is not None:
        got = _cfa_expression(cfa_expr)
        if got is None or got[0] == CFA_SIGNAL:
            return 0, CFA_UNSUPPORTED, 0
        kind, off, rbp_off = got
        if kind == CFA_PLT:
            if not -32768 <= off <= 32767:
                return 0, CFA_UNSUPPORTED, 0
            return off, CFA_PLT, rbp_off  # rbp is unchanged in a PLT stub
    elif cfa_reg == REG_RSP:
        kind, off = CFA_RSP, cfa_off
    elif cfa_reg == REG_RBP:
        kind, off = CFA_RBP, cfa_off
    else:
        # e.g. r10 for the two instructions of a DRAP prologue
        return 0, CFA_UNSUPPORTED, 0
    if not -32768 <= off <= 32767:
        if off % 8 or not -(32768 * 8) <= off <= 32767 * 8:
            return 0, CFA_UNSUPPORTED, 0
        off //= 8
        kind |= CFA_SCALED
    if rbp is None:
        rk = RBP_SAME
    elif rbp[0] == "off" and rbp[1] % 8 == 0 and -1024 <= rbp[1] <= 1016:
        rk, rbp_off = RBP_AT_CFA, rbp[1] // 8
    elif rbp[0] == "expr":
        got = _breg_only(rbp[1])
        if got is not None and got[0] == REG_RBP and got[1] % 8 == 0 \
                and -1024 <= got[1] <= 1016:
            rk, rbp_off = RBP_AT_RBP, got[1] // 8
        else:
            rk = RBP_UNDEF
    else:
        rk = RBP_UNDEF
    return off, kind | (rk << 4), rbp_off


class _Program:
    """Runs CFA programs: a CIE's initial instructions once, each distinct FDE program once.
    The state is [cfa_reg, cfa_off, cfa_expr, rbp rule, ra rule]."""

    def __init__(self) -> None:
        self._cie_state: dict[int, list] = {}
        self._enc: dict[tuple, tuple[int, int, int]] = {}

    def encode(self, state: list, signal: bool) -> tuple[int, int, int]:
        key = (state[0], state[1], state[2], state[3], state[4], signal)
        got = self._enc.get(key)
        if got is None:
            got = self._enc[key] = _encode(state[0], state[1], state[2], state[3], state[4],
                                           signal)
        return got

    def initial(self, cie: _Cie) -> list:
        st = self._cie_state.get(cie.key)
        if st is None:
            st = [REG_RSP, 8, None, None, None]
            rows: list = []
            self._execute(cie, cie.initial, st, st, rows, 0)
            if rows:
                raise CfiError("a CIE's initial instructions advance the location")
            self._cie_state[cie.key] = st
        return st

    def run(self, cie: _Cie, instr: bytes) -> list[tuple[int, tuple[int, int, int]]]:
        """[(pc offset from the FDE start, row)] of one FDE."""
        initial = self.initial(cie)
        state = list(initial)
        rows: list[tuple[int, tuple[int, int, int]]] = []
        loc = self._execute(cie, instr, state, initial, rows, 0)
        rows.append((loc, self.encode(state, cie.signal)))
        return rows

    def _execute(self, cie: _Cie, b: bytes, state: list, initial: list, rows: list,
                 loc: int) -> int:
        ca, da, signal = cie.code_align, cie.data_align, cie.signal
        encode = self.encode
        stack: list[list] = []
        i, n = 0, len(b)
        while i < n:
            op = b[i]
            i += 1
            if op >= 0x40:
                if op < 0x80:                                # advance_loc
                    delta = (op & 0x3F) * ca
                    if delta:
                        rows.append((loc, encode(state, signal)))
                        loc += delta
                elif op < 0xC0:                              # offset
                    reg = op & 0x3F
                    v = b[i]
                    i += 1
                    if v >= 0x80:
                        v, i = _uleb(b, i - 1)
                    if reg == REG_RBP:
                        state[3] = ("off", v * da)
                    elif reg == REG_RA:
                        state[4] = ("off", v * da)
                else:                                        # restore
                    reg = op & 0x3F
                    if reg == REG_RBP:
                        state[3] = initial[3]
                    elif reg == REG_RA:
                        state[4] = initial[4]
                continue
            if op == 0x0E:                                   # def_cfa_offset
                v = b[i]
                i += 1
                if v >= 0x80:
                    v, i = _uleb(b, i - 1)
                state[1] = v
            elif op == 0x00:                                 # nop
                pass
            elif op in (0x02, 0x03, 0x04):                   # advance_loc1/2/4
                size = 1 << (op - 0x02)
                delta = int.from_bytes(b[i:i + size], "little") * ca
                i += size
                if delta:
                    rows.append((loc, encode(state, signal)))
                    loc += delta
            elif op == 0x0A:                                 # remember_state
                stack.append(list(state))
            elif op == 0x0B:                                 # restore_state
                if stack:
                    state[:] = stack.pop()
            elif op == 0x0C:                                 # def_cfa
                reg, i = _uleb(b, i)
                off, i = _uleb(b, i)
                state[0], state[1], state[2] = reg, off, None
            elif op == 0x0D:                                 # def_cfa_register
                reg, i = _uleb(b, i)
                state[0], state[2] = reg, None
            elif op == 0x01:
                # set_loc: an absolute address (not emitted for x86-64 code; programs are
                # shared between FDEs, so an absolute location is refused)
                raise CfiError("DW_CFA_set_loc")
            else:
                reg = -1
                rule = None
                if op == 0x05:                               # offset_extended
                    reg, i = _uleb(b, i)
                    v, i = _uleb(b, i)
                    rule = ("off", v * da)
                elif op == 0x06:                             # restore_extended
                    reg, i = _uleb(b, i)
                    rule = _get(initial, reg)
                elif op == 0x07:                             # undefined
                    reg, i = _uleb(b, i)
                    rule = _UNDEF
                elif op == 0x08:                             # same_value
                    reg, i = _uleb(b, i)
                elif op == 0x09:                             # register
                    reg, i = _uleb(b, i)
                    _, i = _uleb(b, i)
                    rule = _OTHER
                elif op == 0x0F:                             # def_cfa_expression
                    ln, i = _uleb(b, i)
                    state[2] = bytes(b[i:i + ln])
                    i += ln
                elif op in (0x10, 0x16):                     # expression, val_expression
                    reg, i = _uleb(b, i)
                    ln, i = _uleb(b, i)
                    rule = ("expr", bytes(b[i:i + ln])) if op == 0x10 else _OTHER
                    i += ln
                elif op == 0x11:                             # offset_extended_sf
                    reg, i = _uleb(b, i)
                    v, i = _sleb(b, i)
                    rule = ("off", v * da)
                elif op == 0x12:                             # def_cfa_sf
                    r, i = _uleb(b, i)
                    v, i = _sleb(b, i)
                    state[0], state[1], state[2] = r, v * da, None
                elif op == 0x13:                             # def_cfa_offset_sf
                    v, i = _sleb(b, i)
                    state[1] = v * da
                elif op in (0x14, 0x15):                     # val_offset(_sf)
                    reg, i = _uleb(b, i)
                    _, i = (_uleb if op == 0x14 else _sleb)(b, i)
                    rule = _OTHER
                elif op == 0x2E:                             # GNU_args_size
                    _, i = _uleb(b, i)
                elif op == 0x2F:                             # GNU_negative_offset_extended
                    reg, i = _uleb(b, i)
                    v, i = _uleb(b, i)
                    rule = ("off", -v * da)
                else:
                    raise CfiError(f"CFA opcode {op:#x}")
                if reg == REG_RBP:
                    state[3] = rule
                elif reg == REG_RA:
                    state[4] = rule
        if i != n:
            raise CfiError("instruction past the end of its entry")
        return loc


def _get(state: list, reg: int):
    if reg == REG_RBP:
        return state[3]
    if reg == REG_RA:
        return state[4]
    return None


# --- public --------------------------------------------------------------------------------

def build_rows(sections: list[tuple[bytes, int, bool]]) -> Rows:
    """Rows of the CFI sections given as (bytes, section vaddr, is .eh_frame), in order of
    preference: an FDE of a later section is used only where the earlier ones cover nothing.

    Between FDEs (and after the last) a CFA_GAP row says: no CFI here."""
    runner = _Program()
    memo: dict[tuple[int, bytes], int] = {}      # (CIE, instructions) -> program number
    # compact arrays, not lists of ints: a 120 MB library has 120k FDEs and 1M rows
    p_rel = array("q")                            # every program's rows, one after another
    p_enc = array("I")                            # their rows packed (_pack)
    p_off = array("q")
    p_len = array("q")
    f_start = array("q")
    f_end = array("q")
    f_prog = array("q")
    covered: list[tuple[np.ndarray, np.ndarray]] = []
    unsupported = [(0, (0, CFA_UNSUPPORTED, 0))]
    for si, (data, vaddr, is_eh) in enumerate(sections):
        first = len(f_start)
        for cie, pc_begin, pc_range, instr in _entries(data, vaddr, is_eh):
            if si and _is_covered(covered, pc_begin):
                continue
            key = (si << 48 | cie.key, instr)
            pn = memo.get(key)
            if pn is None:
                try:
                    prog = runner.run(cie, instr)
                except (CfiError, IndexError, struct.error):
                    prog = unsupported
                pn = memo[key] = len(p_off)
                p_off.append(len(p_rel))
                p_len.append(len(prog))
                for rel, row in prog:
                    p_rel.append(rel)
                    p_enc.append(_pack(row))
            if pc_begin >= 1 << 63 or pc_begin + pc_range >= 1 << 63:
                continue  # not an address of this object (a linker's placeholder)
            f_start.append(pc_begin)
            f_end.append(pc_begin + pc_range)
            f_prog.append(pn)
        if len(f_start) > first:
            s = np.asarray(f_start[first:], np.uint64)
            e = np.asarray(f_end[first:], np.uint64)
            o = np.argsort(s, kind="stable")
            covered.append((s[o], e[o]))
    rows = _assemble(f_start, f_end, f_prog, p_rel, p_enc, p_off, p_len)
    bad = int(np.count_nonzero((rows["kind"] & 0x07) == CFA_UNSUPPORTED))
    return Rows(rows, len(f_start), len(memo), bad)


def _pack(row: tuple[int, int, int]) -> int:
    """(cfa_off, kind, rbp_off) as the row's last 4 bytes, little endian (ROW_DTYPE)."""
    off, kind, rbp_off = row
    return (off & 0xFFFF) | (kind << 16) | ((rbp_off & 0xFF) << 24)


def _is_covered(covered, pc: int) -> bool:
    for s, e in covered:
        i = int(np.searchsorted(s, np.uint64(pc), side="right")) - 1
        if i >= 0 and pc < int(e[i]):
            return True
    return False


def _assemble(f_start, f_end, f_prog, p_rel, p_enc, p_off, p_len) -> np.ndarray:
    """FDE programs placed at their addresses, sorted, a GAP row after each FDE not followed
    at once by another, consecutive equal rows merged."""
    if not f_start:
        return np.zeros(0, ROW_DTYPE)
    start = np.frombuffer(f_start, np.int64)
    end = np.frombuffer(f_end, np.int64)
    prog = np.frombuffer(f_prog, np.int64)
    order = np.argsort(start, kind="stable")
    start, end, prog = start[order], end[order], prog[order]
    rel = np.frombuffer(p_rel, np.int64)
    enc = np.frombuffer(p_enc, np.uint32)
    off = np.frombuffer(p_off, np.int64)[prog]
    ln = np.frombuffer(p_len, np.int64)[prog]
    total = int(ln.sum())
    # row k of FDE f is program row off[f] + k
    first = np.repeat(np.cumsum(ln) - ln, ln)
    idx = np.repeat(off, ln) + (np.arange(total) - first)
    del first
    pcs = np.repeat(start, ln) + rel[idx]
    rows_enc = enc[idx]
    del idx
    inside = pcs < np.repeat(end, ln)
    pcs, rows_enc = pcs[inside], rows_enc[inside]
    # a GAP where an FDE ends and the next does not start at once
    nxt = np.append(start[1:], np.iinfo(np.int64).max)
    gap_at = end[nxt > end]
    pcs = np.concatenate([pcs, gap_at])
    rows_enc = np.concatenate([rows_enc, np.full(len(gap_at), _pack((0, CFA_GAP, 0)),
                                                 np.uint32)])
    # sorted by pc; among rows at one pc an FDE's wins over a gap (gaps sort first, and
    # the last of equal pcs is kept)
    is_gap = np.zeros(len(pcs), bool)
    is_gap[len(pcs) - len(gap_at):] = True
    o = np.lexsort((~is_gap, pcs))
    pcs, rows_enc = pcs[o], rows_enc[o]
    keep = np.ones(len(pcs), bool)
    keep[:-1] = pcs[1:] != pcs[:-1]
    pcs, rows_enc = pcs[keep], rows_enc[keep]
    keep = np.ones(len(pcs), bool)
    keep[1:] = rows_enc[1:] != rows_enc[:-1]
    pcs, rows_enc = pcs[keep], rows_enc[keep]
    out = np.zeros(len(pcs), ROW_DTYPE)
    out["pc"] = (pcs & 0xFFFFFFFF).astype(np.uint32)
    out.view(np.uint32).reshape(-1, 2)[:, 1] = rows_enc
    return out


def describe(row) -> str:
    """A row as text, readelf's frames-interp notation: `rsp+8 c-16` (CFA, rbp)."""
    kind = int(row["kind"])
    cfa, rk = kind & 0x07, kind >> 4
    off, ro = int(row["cfa_off"]), int(row["rbp_off"])
    if kind & CFA_SCALED:
        off *= 8
    if cfa in (CFA_RSP, CFA_RBP):
        text = f"{CFA_NAMES[cfa]}{off:+d}"
    elif cfa == CFA_PLT:
        text = f"plt(rsp{off:+d}, {ro})"
    elif cfa == CFA_DEREF_RBP:
        text = f"*(rbp{off:+d})"
    elif cfa == CFA_SIGNAL:
        text = f"signal(rsp{off:+d})"
    else:
        return CFA_NAMES[cfa]
    if cfa in (CFA_PLT, CFA_SIGNAL):
        return text
    rbp = {RBP_SAME: "u", RBP_AT_CFA: f"c{ro * 8:+d}", RBP_AT_RBP: f"*(rbp{ro * 8:+d})",
           RBP_UNDEF: "?"}[rk]
    return f"{text} {rbp}"
