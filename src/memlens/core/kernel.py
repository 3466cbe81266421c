# SPDX-License-Identifier: GPL-2.0-only
"""What the running kernel offers, found by probing — never by version numbers.

tracefs: libbpf attaches tracepoints through tracefs (events/<cat>/<name>/id), and tracefs
is not mounted at boot on some machines (ours): mount it once, as root, and say so.
"""
from __future__ import annotations

import os
import sys

from memlens.core.memo import memo
from memlens.errors import KernelLacks

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
_announced_mount = False


def _mounts() -> list[tuple[str, str]]:
    try:
        with open("/proc/mounts") as f:
            return [(p[1], p[2]) for p in (line.split() for line in f) if len(p) > 2]
    except OSError:
        return []


_tracefs_seen: str | None = None  # the last mount point found (checked again by a stat)


def tracefs_path() -> str | None:
    """Where tracefs is mounted (with an events/ directory), else None."""
    global _tracefs_seen
    # asked for every tracepoint a tool opens: /proc/mounts read each time was ~2 ms a
    # call (26 ms of drsnoop's start); the mount point found stays while its events/ does
    if _tracefs_seen and os.path.isdir(os.path.join(_tracefs_seen, "events")):
        return _tracefs_seen
    _tracefs_seen = None
    for mnt, fstype in _mounts():
        if fstype == "tracefs" and os.path.isdir(os.path.join(mnt, "events")):
            _tracefs_seen = mnt
            return mnt
    for cand in TRACEFS_CANDIDATES:
        if os.path.isdir(os.path.join(cand, "events")):
            _tracefs_seen = cand
            return cand
    return None


def _unreadable_tracefs() -> str | None:
    """A tracefs mount point this process may not search (EACCES), else None."""
    for mnt, fstype in _mounts():
        if fstype == "tracefs" and not os.access(mnt, os.R_OK | os.X_OK):
            return mnt
    return None


def ensure_tracefs(quiet: bool = False) -> str:
    """Return tracefs's mount point, mounting it at /sys/kernel/tracing if needed."""
    global _announced_mount
    path = tracefs_path()
    if path:
        return path
    unreadable = _unreadable_tracefs()
    if unreadable:
        # mounted, but this user cannot look inside (mode 0700, root's): CAP_BPF and
        # CAP_PERFMON attach tracepoints but do not open directories; saying "not mounted"
        # here (and exit 4) sent users to mount what was mounted
        from memlens.errors import NotPermitted

        raise NotPermitted(f"tracefs is mounted at {unreadable} but not readable by this "
                           "user (tracepoints are looked up there): run as root, add "
                           "CAP_DAC_READ_SEARCH to CAP_BPF+CAP_PERFMON, or make it readable "
                           f"(mount -o remount,mode=755 {unreadable})")
    target = TRACEFS_CANDIDATES[0]
    if os.geteuid() != 0:
        raise KernelLacks("tracefs is not mounted; as root run: "
                          f"mount -t tracefs nodev {target}")
    import subprocess  # imported here: most runs never mount (start-up time, bench/)

    rc = subprocess.run(["mount", "-t", "tracefs", "nodev", target],
                        capture_output=True, text=True)
    if rc.returncode != 0 or not os.path.isdir(os.path.join(target, "events")):
        raise KernelLacks(f"tracefs is not mounted and mounting it at {target} failed: "
                          f"{rc.stderr.strip() or 'no events/ directory'}")
    if not quiet and not _announced_mount:
        print(f"memlens: mounted tracefs at {target} (needed to attach tracepoints)",
              file=sys.stderr)
    _announced_mount = True
    return target


def tracepoint_exists(category: str, name: str) -> bool:
    base = tracefs_path()
    if base is None:
        return False
    return os.path.isdir(os.path.join(base, "events", category, name))


@memo
def has_btf() -> bool:
    return os.path.exists("/sys/kernel/btf/vmlinux")


@memo
def _btf_names() -> bytes:
    try:
        with open(VMLINUX_BTF, "rb") as f:
            return f.read()
    except OSError:
        return b""


VMLINUX_BTF = "/sys/kernel/btf/vmlinux"


def btf_has_name(name: str) -> bool:
    """A type/function name in vmlinux BTF (its string section), the answer kept for this
    boot (hooks.vmlinux_btf_answer)."""
    from memlens.core import hooks

    return hooks.vmlinux_btf_answer(
        VMLINUX_BTF, f"name {name}", lambda: b"\0" + name.encode() + b"\0" in _btf_names())


def uprobe_multi_supported() -> bool:
    """uprobe_multi links exist where vmlinux BTF has their type (kernel >= 6.6); set
    MEMLENS_UPROBE_MULTI=0 to use one perf-event uprobe per function instead."""
    if os.environ.get("MEMLENS_UPROBE_MULTI") == "0":
        return False
    return btf_has_name("bpf_uprobe_multi_link")


def tp_btf_exists(event: str) -> bool:
    """A BTF-typed tracepoint needs the btf_trace_<event> typedef in vmlinux BTF."""
    return has_btf() and btf_has_name(f"btf_trace_{event}")


@memo
def kprobes_supported() -> bool:
    return os.path.isdir("/sys/bus/event_source/devices/kprobe")


@memo
def uprobes_supported() -> bool:
    return os.path.isdir("/sys/bus/event_source/devices/uprobe")


def kernel_function_exists(name: str) -> bool:
    try:
        with open("/proc/kallsyms", "rb") as f:
            needle = f" {name}\n".encode()
            return any(line.endswith(needle) or line.endswith(needle[:-1] + b"\t")
                       for line in f if name.encode() in line)
    except OSError:
        return False


def kprobe_exists(func: str) -> bool:
    return kprobes_supported() and kernel_function_exists(func)


def lockdown_mode() -> str | None:
    try:
        with open("/sys/kernel/security/lockdown") as f:
            text = f.read()
    except OSError:
        return None
    for word in text.split():
        if word.startswith("["):
            return word.strip("[]")
    return None


def cgroup_target(path: str) -> tuple[int, bool]:
    """(kernfs id, is_v1) for a --cgroup argument: a path under /sys/fs/cgroup (v1 memory
    hierarchy or v2), or a path relative to the memory hierarchy like /mygroup."""
    from memlens.errors import UsageError

    candidates = [path]
    if not path.startswith("/sys/fs/cgroup"):
        rel = path.lstrip("/")
        candidates += [f"/sys/fs/cgroup/memory/{rel}", f"/sys/fs/cgroup/{rel}",
                       f"/sys/fs/cgroup/unified/{rel}"]
    for cand in candidates:
        if os.path.isdir(cand):
            real = os.path.realpath(cand)
            is_v1 = "/sys/fs/cgroup/memory" in real
            if not is_v1 and not _is_cgroup2(real):
                continue
            return os.stat(real).st_ino, is_v1
    raise UsageError(f"--cgroup {path}: no such cgroup directory (give a path under "
                     "/sys/fs/cgroup/memory for v1 or /sys/fs/cgroup for v2)")


def cgroup_v1_memory() -> bool:
    """Is the memory controller on a v1 hierarchy (this project's machines), so that a
    task's memory cgroup is its v1 memory cgroup rather than its v2 (default) one?"""
    return any(fs == "cgroup" and "memory" in os.path.basename(mnt).split(",")
               for mnt, fs in _mounts())


def memory_headroom(proc_self: str = "/proc/self", cgroup_root: str = "/sys/fs/cgroup",
                    meminfo: str = "/proc/meminfo") -> int | None:
    """Bytes this process may still use before the kernel refuses it or an OOM killer
    acts: MemAvailable, or less when its memory cgroup (v1 memory hierarchy or v2) has a
    limit closer than that (its own level only).  None when neither can be read."""
    room = None
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    room = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"{proc_self}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return room
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if "memory" in controllers.split(","):
            files = (f"{cgroup_root}/memory{path}", "memory.limit_in_bytes",
                     "memory.usage_in_bytes")
        elif controllers == "":
            files = (f"{cgroup_root}{path}", "memory.max", "memory.current")
        else:
            continue
        try:
            with open(os.path.join(files[0], files[1])) as f:
                limit_text = f.read().strip()
            with open(os.path.join(files[0], files[2])) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or not limit_text.isdigit():
            continue
        left = max(0, int(limit_text) - usage)
        room = left if room is None else min(room, left)
    return room


def maps_fit(nbytes: int, margin: int = 64 << 20) -> bool:
    """Maps of `nbytes` fit well in the memory this process may use (memory_headroom, with
    `margin` left for the rest of the start: the fixed maps, imports).  Where they do not,
    a tool makes them with nothing else allocating meanwhile: a map's allocation near a
    memory cgroup's limit fails cleanly (ENOMEM: exit 2 naming its option), but another
    thread's allocation at that moment (a page fault, a dentry) meets the cgroup's OOM
    killer (the process killed, -9)."""
    room = memory_headroom()
    return room is None or nbytes + margin < room


def hash_buckets_bytes(max_entries: int) -> int:
    """A BPF hash map's bucket array (made with it, even without preallocation): 16 bytes
    a bucket, buckets a power of two."""
    return 16 << max(0, (max_entries - 1).bit_length())


def cgroup_path_of_id(cg_id: int) -> str | None:
    """The directory of a cgroup from its kernfs id (the inode number of its directory),
    shown relative to its hierarchy's mount; None if it is gone."""
    roots = [mnt for mnt, fs in _mounts() if fs in ("cgroup", "cgroup2")]
    if cgroup_v1_memory():
        roots.sort(key=lambda m: "memory" not in m)  # the hierarchy the key was read from
    for root in roots:
        try:
            if os.stat(root).st_ino == cg_id:
                return "/"
        except OSError:
            continue
        for dirpath, dirnames, _ in os.walk(root):
            for d in dirnames:
                full = os.path.join(dirpath, d)
                try:
                    if os.stat(full).st_ino == cg_id:
                        return "/" + os.path.relpath(full, root)
                except OSError:
                    pass
    return None


def _is_cgroup2(path: str) -> bool:
    best = ""
    fstype = ""
    for mnt, fs in _mounts():
        if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
            best, fstype = mnt, fs
    return fstype == "cgroup2"


# UAPI enum values (include/uapi/linux/bpf.h); stable across kernels
PROG_TYPES = {"kprobe": 2, "tracepoint": 5, "perf_event": 7, "raw_tracepoint": 17,
              "tracing": 26}
MAP_TYPES = {"hash": 1, "percpu_array": 6, "stack_trace": 7, "lru_hash": 9, "ringbuf": 27}
HELPERS = {"probe_read_user": 112, "get_stackid": 27, "get_stack": 67,
           "ringbuf_reserve": 131, "get_current_task_btf": 158, "get_attach_cookie": 174,
           "task_pt_regs": 175, "find_vma": 180, "loop": 181}


@memo
def has_attach_cookie() -> bool:
    """bpf_get_attach_cookie() in tracepoint programs (5.15+): libbpf loads a tiny program
    that calls it and the kernel says whether it knows the helper (kept for the boot)."""
    from memlens.core import hooks

    return hooks.helper_exists("get_attach_cookie", "tracepoint")


def probe_features() -> dict[str, dict[str, bool]]:
    """What the kernel accepts, asked through libbpf's probes (tiny test programs and maps
    the kernel is asked to load); helpers are probed for tracepoint programs."""
    from memlens.core import libbpf as L

    lb = L.lib()
    out: dict[str, dict[str, bool]] = {"program types": {}, "map types": {}, "helpers": {}}
    for name, t in PROG_TYPES.items():
        out["program types"][name] = lb.libbpf_probe_bpf_prog_type(t, None) == 1
    for name, t in MAP_TYPES.items():
        out["map types"][name] = lb.libbpf_probe_bpf_map_type(t, None) == 1
    for name, h in HELPERS.items():
        out["helpers"][name] = lb.libbpf_probe_bpf_helper(PROG_TYPES["tracepoint"], h, None) == 1
    from memlens.core.loader import hash_maps_may_allocate

    # without it (before 6.1) every hash map is preallocated: slower starts, more memory
    out["map types"]["hash without preallocation in tracing"] = hash_maps_may_allocate()
    return out
