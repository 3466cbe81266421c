# SPDX-License-Identifier: GPL-2.0-only
"""BPF maps from Python: whole-map reads in one batch syscall, decoded with numpy.

Iterating a 50k-entry hash with get_next_key+lookup through ctypes takes ~480 ms here;
bpf_map_lookup_batch takes ~22 ms (../shared/BPF-PYTHON.md §2), so batch is the default and
the key-by-key walk is the fallback (kernels < 5.6, stack-trace maps).
"""
from __future__ import annotations

import ctypes as C
import errno

from memlens.core import libbpf as L
from memlens.core.lazy import np
from memlens.errors import SystemCallError

TYPE_CHECKING = False  # typing costs ~7 ms of start-up: its names for annotations only
if TYPE_CHECKING:
    from memlens.core.loader import BpfObject

STACK_DEPTH = 127  # PERF_MAX_STACK_DEPTH: the value size of our stack-trace maps / 8


class Map:
    def __init__(self, obj: BpfObject, name: str, ptr: int):
        lb = L.lib()
        self.obj, self.name, self.ptr = obj, name, ptr
        self.type = int(lb.bpf_map__type(ptr))
        self.key_size = int(lb.bpf_map__key_size(ptr))
        self.value_size = int(lb.bpf_map__value_size(ptr))
        self.max_entries = int(lb.bpf_map__max_entries(ptr))
        self.percpu = self.type in L.PERCPU_MAP_TYPES
        self.ncpus = L.ncpus_possible() if self.percpu else 1
        # per-CPU values are laid out one 8-byte-aligned slot per possible CPU
        self.slot = (self.value_size + 7) & ~7 if self.percpu else self.value_size
        self._batch_ok = self.type not in (L.BPF_MAP_TYPE_STACK_TRACE, L.BPF_MAP_TYPE_RINGBUF)
        self._ringbuf = None

    @property
    def fd(self) -> int:
        return int(L.lib().bpf_map__fd(self.ptr))

    # -- single elements -------------------------------------------------------------------
    def lookup(self, key: bytes) -> bytes | None:
        kbuf = C.create_string_buffer(bytes(key), self.key_size)
        vbuf = C.create_string_buffer(self.slot * self.ncpus)
        rc = L.lib().bpf_map_lookup_elem(self.fd, kbuf, vbuf)
        if rc:
            if -rc == errno.ENOENT or C.get_errno() == errno.ENOENT:
                return None
            raise SystemCallError(-rc, f"lookup in map {self.name}: {L.strerror(rc)}")
        return vbuf.raw

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        kbuf = C.create_string_buffer(bytes(key), self.key_size)
        vbuf = C.create_string_buffer(bytes(value), max(len(value), self.slot * self.ncpus))
        rc = L.lib().bpf_map_update_elem(self.fd, kbuf, vbuf, flags)
        if rc:
            raise SystemCallError(-rc, f"update of map {self.name}: {L.strerror(rc)}")

    def lookup_and_delete(self, key: bytes) -> bytes | None:
        """Remove one entry and return its value as it was when removed (hash maps, 5.14+;
        older kernels: a lookup then a delete)."""
        kbuf = C.create_string_buffer(bytes(key), self.key_size)
        vbuf = C.create_string_buffer(self.slot * self.ncpus)
        rc = L.lib().bpf_map_lookup_and_delete_elem(self.fd, kbuf, vbuf)
        if rc == 0:
            return vbuf.raw
        err = -rc if rc < 0 else C.get_errno()
        if err == errno.ENOENT:
            return None
        value = self.lookup(key)
        self.delete(key)
        return value

    def delete(self, key: bytes) -> bool:
        kbuf = C.create_string_buffer(bytes(key), self.key_size)
        return L.lib().bpf_map_delete_elem(self.fd, kbuf) == 0

    # -- whole map -------------------------------------------------------------------------
    def keys_values_raw(self) -> tuple[np.ndarray, np.ndarray]:
        """All entries as (keys uint8[n, key_size], values uint8[n, slot*ncpus])."""
        if self.type in (L.BPF_MAP_TYPE_ARRAY, L.BPF_MAP_TYPE_PERCPU_ARRAY) or not self._batch_ok:
            return self._walk()
        try:
            return self._batch()
        except OSError as err:
            if err.errno in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, 524):
                self._batch_ok = False
                return self._walk()
            raise

    def _batch(self, call=None, doing: str = "batch lookup") -> tuple[np.ndarray, np.ndarray]:
        call = call or L.lib().bpf_map_lookup_batch
        vsize = self.slot * self.ncpus
        chunk = max(1, min(self.max_entries, 8192))
        keys_out, vals_out = [], []
        in_batch = C.create_string_buffer(max(self.key_size, 8))
        out_batch = C.create_string_buffer(max(self.key_size, 8))
        first = True
        while True:
            keys = np.zeros((chunk, self.key_size), np.uint8)
            vals = np.zeros((chunk, vsize), np.uint8)
            count = C.c_uint32(chunk)
            rc = call(self.fd, None if first else in_batch, out_batch,
                                         keys.ctypes.data, vals.ctypes.data, C.byref(count),
                                         None)
            err = -rc if rc < 0 else 0
            if rc and err == 0:
                err = C.get_errno()
            n = count.value
            if n:
                keys_out.append(keys[:n])
                vals_out.append(vals[:n])
            if err == errno.ENOENT:  # end of map
                break
            if err == errno.ENOSPC:  # a bucket larger than the chunk: retry bigger
                chunk *= 2
                continue
            if err:
                raise SystemCallError(err, f"{doing} of map {self.name}: {L.strerror(err)}")
            C.memmove(in_batch, out_batch, len(out_batch.raw))
            first = False
        if not keys_out:
            return (np.zeros((0, self.key_size), np.uint8), np.zeros((0, vsize), np.uint8))
        return np.concatenate(keys_out), np.concatenate(vals_out)

    def _walk(self) -> tuple[np.ndarray, np.ndarray]:
        lb = L.lib()
        vsize = self.slot * self.ncpus
        keys, vals = [], []
        cur = C.create_string_buffer(self.key_size)
        nxt = C.create_string_buffer(self.key_size)
        vbuf = C.create_string_buffer(vsize)
        rc = lb.bpf_map_get_next_key(self.fd, None, nxt)
        while rc == 0:
            if lb.bpf_map_lookup_elem(self.fd, nxt, vbuf) == 0:
                keys.append(nxt.raw)
                vals.append(vbuf.raw)
            C.memmove(cur, nxt, self.key_size)
            rc = lb.bpf_map_get_next_key(self.fd, cur, nxt)
        k = np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), self.key_size)
        v = np.frombuffer(b"".join(vals), np.uint8).reshape(len(vals), vsize)
        return k, v

    def drain(self, key_dtype: np.dtype | str, value_dtype: np.dtype | str,
              ) -> tuple[np.ndarray, np.ndarray]:
        """Read and delete every entry (hash maps): what a BPF program counted since the last
        drain.  Lookup-and-delete is atomic per bucket, so an increment lands either in this
        read or in a fresh entry the next drain sees: nothing is lost between a read and a
        reset, and the map only holds the keys active since the last drain."""
        k, v = self._drain_raw()
        keys = np.ascontiguousarray(k).view(np.dtype(key_dtype)).reshape(len(k))
        return keys, np.ascontiguousarray(v).view(np.dtype(value_dtype)).reshape(len(v))

    def _drain_raw(self) -> tuple[np.ndarray, np.ndarray]:
        if getattr(self, "_drain_batch_ok", True):
            try:
                return self._batch(L.lib().bpf_map_lookup_and_delete_batch, "drain")
            except OSError as err:
                if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, 524):
                    raise
                self._drain_batch_ok = False  # kernel < 5.6: element by element
        lb = L.lib()
        keys, vals = [], []
        nxt = C.create_string_buffer(self.key_size)
        vbuf = C.create_string_buffer(self.slot * self.ncpus)
        # bounded: under a flood of new keys the map would never look empty
        for _ in range(2 * self.max_entries):
            if lb.bpf_map_get_next_key(self.fd, None, nxt) != 0:
                break
            if lb.bpf_map_lookup_and_delete_elem(self.fd, nxt, vbuf) == 0:
                keys.append(nxt.raw)
                vals.append(vbuf.raw)
            elif not self.delete(nxt.raw):  # lookup-and-delete on hash maps needs 5.14
                break
        vsize = self.slot * self.ncpus
        return (np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), self.key_size),
                np.frombuffer(b"".join(vals), np.uint8).reshape(len(vals), vsize))

    def items(self, key_dtype: np.dtype | str, value_dtype: np.dtype | str,
              ) -> tuple[np.ndarray, np.ndarray]:
        """Decoded (keys, values); per-CPU values are summed across CPUs (numeric fields)."""
        k, v = self.keys_values_raw()
        keys = np.ascontiguousarray(k).view(np.dtype(key_dtype)).reshape(len(k))
        vdt = np.dtype(value_dtype)
        if not self.percpu:
            return keys, np.ascontiguousarray(v).view(vdt).reshape(len(v))
        per = np.ascontiguousarray(v).reshape(len(v), self.ncpus, self.slot)[:, :, :vdt.itemsize]
        per = np.ascontiguousarray(per).view(vdt).reshape(len(v), self.ncpus)
        return keys, sum_percpu(per)

    def clear(self) -> int:
        """Delete every entry (between intervals); returns how many were removed."""
        k, _ = self.keys_values_raw() if self._batch_ok else self._walk()
        n = 0
        for row in k:
            n += self.delete(row.tobytes())
        return n

    def array_values(self, value_dtype: np.dtype | str = "<u8") -> np.ndarray:
        """An array map's values in index order (per-CPU arrays summed)."""
        _, vals = self.items("<u4", value_dtype)
        return vals

    def stack(self, stack_id: int) -> list[int]:
        """Addresses of one stack from a stack-trace map, leaf first, zero padding removed."""
        # stack-trace maps are keyed by a u32 id, the shared stack store by a u64 hash
        raw = self.lookup(int(stack_id).to_bytes(self.key_size, "little"))
        if raw is None:
            return []
        ips = np.frombuffer(raw, "<u8")
        nz = np.flatnonzero(ips == 0)
        return ips[: nz[0] if nz.size else len(ips)].tolist()

    def ringbuf(self):
        if self._ringbuf is None:
            from memlens.core.ringbuf import RingBuffer

            self._ringbuf = RingBuffer(self.fd, self.max_entries, self.name)
        return self._ringbuf

    def close(self) -> None:
        if self._ringbuf is not None:
            self._ringbuf.close()
            self._ringbuf = None


def sum_percpu(per: np.ndarray) -> np.ndarray:
    """Sum a (n, ncpus) structured or plain array over CPUs, field by field."""
    if per.dtype.names is None:
        return per.sum(axis=1, dtype=per.dtype)
    out = np.zeros(per.shape[0], per.dtype)
    for f in per.dtype.names:
        if per.dtype[f].kind in "iu":
            out[f] = per[f].sum(axis=1)
        else:  # non-numeric (strings): take the first CPU with data
            out[f] = per[f][:, 0]
    return out
