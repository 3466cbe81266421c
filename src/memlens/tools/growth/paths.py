# SPDX-License-Identifier: GPL-2.0-only
"""Fault paths: the engine's entries (pid, comm, user stack, mapping kind, file) grouped
into paths (stack, kind, file), each with the pages its faults brought in; the RSS figures
of /proc/PID/status they are set against; and the text of both.  Plain functions over
plain data, so the rendering is tested without a kernel.

A path's `pages` is a count of page faults: each fault maps at least one page, and one
page for the faults this tool is about (a first touch of anonymous memory).  It is not a
count of pages kept: a page faulted in and then unmapped or reclaimed is still counted,
a write to a page first read from the zero page faults twice for one page, and fault-around
maps up to 16 file pages on one read fault.  Reports say "pages faulted", never "pages kept".
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from memlens.output.folded import frame_name
from memlens.output.table import LINE_WIDTH, escape

# A frame-pointer walk that ends here has reached the bottom of the stack: the stack is
# whole even though this frame is not in the main program.
ROOT_FRAMES = ("__libc_start_call_main", "__libc_start_main", "_start", "start_thread",
               "clone", "clone3", "__clone", "__clone3", "thread_start")
MISSED = "[missed user stack]"
TRUNCATED_ROOT = "[truncated stack]"  # ends a walk cut short (and roots it in flame graphs)
KINDS = ("anon", "file", "shmem", "hugetlb", "none")

_FRAME = re.compile(r"^(?P<sym>.+?)(?:\+0x[0-9a-f]+)?(?: \[(?P<mod>[^\]]*)\])?$")
# files whose pages are counted in RssShmem: shared anonymous memory, memfd, SysV shm
SHMEM_PREFIXES = ("/dev/zero", "/memfd:", "/SYSV", "/dev/shm/", "/[aio]", "/i915")


@dataclass(frozen=True)
class Rss:
    """A process's resident memory from /proc/PID/status, in bytes."""
    anon: int = 0
    file: int = 0
    shmem: int = 0
    hugetlb: int = 0

    @property
    def total(self) -> int:
        return self.anon + self.file + self.shmem

    def minus(self, other: Rss) -> Rss:
        return Rss(self.anon - other.anon, self.file - other.file,
                   self.shmem - other.shmem, self.hugetlb - other.hugetlb)

    def max(self, other: Rss) -> Rss:
        return Rss(max(self.anon, other.anon), max(self.file, other.file),
                   max(self.shmem, other.shmem), max(self.hugetlb, other.hugetlb))

    @classmethod
    def from_status(cls, status: dict) -> Rss | None:
        """From parse_pid_status() (kB fields already in bytes); None for a process that has
        no memory any more (a zombie's status has no Rss lines)."""
        if not isinstance(status.get("RssAnon"), int):
            return None

        def get(key: str) -> int:
            v = status.get(key, 0)
            return v if isinstance(v, int) else 0
        return cls(get("RssAnon"), get("RssFile"), get("RssShmem"), get("HugetlbPages"))


def frame_parts(frame: str) -> tuple[str, str | None]:
    """(function, module) of a printed frame: `grow_fast+0x40 [grow_two]` ->
    ("grow_fast", "grow_two"); `[unknown] [libc.so.6]` -> ("[unknown]", "libc.so.6");
    `git+0x1a2b` -> ("git+0x1a2b", "git")."""
    m = _FRAME.match(frame)
    if not m:
        return frame, None
    if m["mod"] is None and frame != m["sym"]:
        # `git+0x1a2b`: no symbol there, the file and the offset in it (user stacks only
        # here: a named user frame always has its [module])
        return frame, m["sym"]
    if m["mod"] == "unknown" and m["sym"].startswith("0x"):
        return m["sym"], None  # `0x7f.. [unknown]`: an address outside every mapping
    return m["sym"], m["mod"]


def cut_astray(stack: tuple[str, ...]) -> tuple[str, ...]:
    """A walk that reached an address outside every mapping read garbage from there on
    (code without frame pointers used rbp for something else): keep the frames before it
    and end the stack with TRUNCATED_ROOT, so that the faults of one real path, each with
    its own garbage, are one path and not thousands."""
    for i, f in enumerate(stack[1:], 1):
        sym, mod = frame_parts(f)
        if mod is None and sym.startswith("0x"):
            return (*stack[:i], TRUNCATED_ROOT)
    return stack


def truncation(stack: list[str], main_module: str | None) -> str | None:
    """Why a frame-pointer walk is known to be incomplete, or None where we cannot tell.

    - it went astray (cut_astray: it ends with TRUNCATED_ROOT);
    - one or two frames whose outermost is outside the main program and is not a stack's
      bottom (`__libc_start_call_main`, `start_thread`): typical of Debian's libc and
      Python, built without frame pointers (a fault in memset or malloc shows that frame
      and none of its callers)."""
    if not stack or stack[0] == MISSED:
        return None
    if stack[-1] == TRUNCATED_ROOT:
        return "went astray"  # into an address outside every mapping
    if not main_module or len(stack) > 2:
        return None
    sym, mod = frame_parts(stack[-1])
    if mod != main_module and sym not in ROOT_FRAMES:
        return f"ended in {mod or 'unknown code'}"
    return None


def is_truncated(stack: list[str], main_module: str | None) -> bool:
    return truncation(stack, main_module) is not None


def shmem_file(path: str, tmpfs_mounts: tuple[str, ...]) -> bool:
    """A mapped file whose pages are counted in RssShmem rather than RssFile."""
    if path.startswith(SHMEM_PREFIXES):
        return True
    return any(path.startswith(m.rstrip("/") + "/") for m in tmpfs_mounts if m != "/")


def kind_of(vma: str, file: str, tmpfs_mounts: tuple[str, ...]) -> str:
    if vma == "file" and shmem_file(file, tmpfs_mounts):
        return "shmem"
    return vma if vma in KINDS else "none"


class PathTable:
    """Pages faulted by path (stack, kind, file), merged over an interval or a run."""

    def __init__(self) -> None:
        self.pages: dict[tuple[tuple[str, ...], str, str], int] = {}

    def add(self, stack: tuple[str, ...], kind: str, file: str, pages: int) -> None:
        key = (cut_astray(stack), kind, file if kind in ("file", "shmem") else "")
        self.pages[key] = self.pages.get(key, 0) + pages

    def merge(self, other: PathTable) -> None:
        for (stack, kind, file), n in other.pages.items():
            self.add(stack, kind, file, n)

    def by_kind(self) -> dict[str, int]:
        out = dict.fromkeys(KINDS, 0)
        for (_, kind, _), n in self.pages.items():
            out[kind] += n
        return out

    def total(self) -> int:
        return sum(self.pages.values())

    def __len__(self) -> int:
        return len(self.pages)

    def ranked(self) -> list[tuple[tuple[str, ...], str, str, int]]:
        """Largest first; ties by stack text, so equal runs print the same."""
        return sorted(((s, k, f, n) for (s, k, f), n in self.pages.items()),
                      key=lambda r: (-r[3], r[1], r[0], r[2]))

    def records(self, page_size: int, main_module: str | None, top: int | None,
                peak_growth: Rss | None = None) -> list[dict]:
        out = []
        for stack, kind, file, n in self.ranked()[:top]:
            why = truncation(list(stack), main_module)
            rec: dict = {"stack": list(stack), "vma": kind, "pages": n,
                         "bytes": n * page_size, "truncated": why is not None}
            if why:
                rec["truncated_why"] = why
            if file:
                rec["file"] = file
            if peak_growth is not None:
                # bytes faulted against how far that kind of RSS grew (start to peak):
                # above 100% when pages were faulted and let go, or reclaimed
                grew = getattr(peak_growth, kind) if kind in ("anon", "file", "shmem") else 0
                rec["share_of_peak_growth"] = (round(n * page_size / grew, 4)
                                               if grew > 0 else None)
            out.append(rec)
        return out

    def folded(self, comm: str, main_module: str | None) -> list[tuple[list[str], list[str],
                                                                         int]]:
        """(prefix [comm, kind], stack leaf first, pages) for flame graphs and --folded;
        a truncated walk gets a `[truncated stack]` root so those group together."""
        out = []
        for stack, kind, _file, n in self.ranked():
            # merged by function, as every tool's folded output (`main+0xa7` -> `main`)
            frames = [frame_name(f) for f in stack]
            if frames and frames[-1] != TRUNCATED_ROOT and is_truncated(list(stack),
                                                                       main_module):
                frames.append(TRUNCATED_ROOT)
            out.append(([comm or "?", kind], frames, n))
        return out


# -- text ------------------------------------------------------------------------------------

def human(n: int, signed: bool = False) -> str:
    """Bytes in at most 5 characters (6 with a sign): 0, 512K, 9.99M, 33.1M, 999M, 1.25G."""
    sign = ("+" if n > 0 else "-" if n < 0 else "+") if signed else ("-" if n < 0 else "")
    v = abs(n)
    if v == 0:
        return f"{sign}0"
    unit = "K"
    for unit in "KMGTP":  # noqa: B007 (the unit reached is the one printed)
        v /= 1024
        if v < 999.5:
            break
    if v < 9.995:
        text = f"{v:.2f}"
    elif v < 99.95:
        text = f"{v:.1f}"
    else:
        text = f"{v:.0f}"
    return f"{sign}{text}{unit}"


def short_frame(frame: str) -> str:
    sym, mod = frame_parts(frame)
    if sym == "[unknown]" and mod:
        return f"[{mod}]"
    return sym


def cut_head(text: str, width: int) -> str:
    """A path cut at its start ("...lib/libfoo.so"): its file name is worth more."""
    return text if len(text) <= width else "..." + text[len(text) - max(0, width - 3):]


def path_line(stack: list[str], why: str | None, width: int) -> str:
    """A stack on one line, leaf first (`grow_fast < main < __libc_start_call_main`), cut
    at `width` with "...": the leaf end is the informative one."""
    parts = [short_frame(f) for f in stack if f != TRUNCATED_ROOT] or [MISSED]
    if why:
        parts.append(f"[truncated: {why}]")
    text = escape(" < ".join(parts))
    if len(text) > width:
        text = text[:max(0, width - 3)] + "..."
    return text


REPORT_HEAD = ("TIME", "RSS", "ANON", "+ANON", "FILE", "+FILE", "SHMEM", "+SHMEM", "FAULTED")


def render_report(rec: dict) -> list[str]:
    """One interval: the RSS line (sizes and growth since the last report), then its top
    paths by pages faulted, largest first."""
    head = f"{REPORT_HEAD[0]:<8}" + "".join(f"{h:>8}" for h in REPORT_HEAD[1:])
    row = f"{rec['time']:<8}" + "".join(f"{c:>8}" for c in (
        human(rec["rss_bytes"]),
        human(rec["rss_anon_bytes"]), human(rec["growth_anon_bytes"], True),
        human(rec["rss_file_bytes"]), human(rec["growth_file_bytes"], True),
        human(rec["rss_shmem_bytes"]), human(rec["growth_shmem_bytes"], True),
        str(rec["faulted_pages"])))
    out = [head, row]
    if rec["paths"]:
        out.append("    PAGES KIND  PATH (leaf first; pages faulted, not kept)")
        for p in rec["paths"]:
            left = f"  {p['pages']:>7} {p['vma']:<5} "
            out.append(left + path_line(p["stack"], p.get("truncated_why"),
                                          LINE_WIDTH - len(left)))
        more = rec["paths_total"] - len(rec["paths"])
        if more > 0:
            out.append(f"  {rec['other_pages']:>7}       ({more} more paths)")
    return out


def render_summary(rec: dict) -> list[str]:
    """The run: RSS of each kind at start, at its peak (as sampled) and at the end, its
    growth (end - start) and the pages faulted in that kind of mapping; then the paths that
    faulted most, with their whole stacks."""
    who = f"PID {rec['pid']}" + (f" ({escape(rec['comm'])})" if rec.get("comm") else "")
    out = ["", f"Summary of {who} over {rec['duration_s']:.1f} s:",
           f"{'':<8}{'START':>8}{'PEAK':>8}{'END':>8}{'GROWTH':>8}{'FAULTED':>9}{'PAGES':>9}"]
    ps = rec["page_size"]
    faulted = rec["faulted_pages"]
    rows = ["anon", "file", "shmem"]
    if rec["rss_peak_hugetlb_bytes"] or rec["rss_start_hugetlb_bytes"] or faulted["hugetlb"]:
        rows.append("hugetlb")
    for kind in rows:
        n = faulted[kind]
        # a hugetlb fault maps one huge page, of a size the fault event does not say
        faulted_bytes = human(n * ps) if kind != "hugetlb" else "-"
        out.append(f"{kind:<8}{human(rec[f'rss_start_{kind}_bytes']):>8}"
                   f"{human(rec[f'rss_peak_{kind}_bytes']):>8}"
                   f"{human(rec[f'rss_end_{kind}_bytes']):>8}"
                   f"{human(rec[f'growth_{kind}_bytes'], True):>8}{faulted_bytes:>9}{n:>9}")
    total_pages = sum(faulted[k] for k in ("anon", "file", "shmem"))
    out.append(f"{'total':<8}{human(rec['rss_start_bytes']):>8}{human(rec['rss_peak_bytes']):>8}"
               f"{human(rec['rss_end_bytes']):>8}"
               f"{human(rec['growth_bytes'], True):>8}{human(total_pages * ps):>9}"
               f"{total_pages:>9}")
    if faulted["none"]:
        out.append(f"({faulted['none']} faults at addresses outside any mapping)")
    if rec.get("prexec_pages"):
        out.append(f"({rec['prexec_pages']} faults of the forked memlens before the command's "
                   "exec: not counted)")
    if not rec["paths"]:
        out.append("No page faults seen.")
        return out
    out.append("")
    out.append("Paths by pages faulted over the run (largest first):")
    out.append("    PAGES    BYTES KIND  SHARE (of its kind's growth to peak)")
    for i, p in enumerate(rec["paths"]):
        if i:
            out.append("")
        share = p.get("share_of_peak_growth")
        share_text = ("-" if share is None else "<1%" if share < 0.01
                      else f"{share * 100:.0f}%")
        left = f"  {p['pages']:>7} {human(p['bytes']):>8} {p['vma']:<5} {share_text:>5}"
        if p.get("file"):
            left += "  " + cut_head(escape(p["file"]), LINE_WIDTH - len(left) - 2)
        out.append(left)
        for f in p["stack"] or [MISSED]:
            if f != TRUNCATED_ROOT:
                out.append(f"        {escape(f)}"[:LINE_WIDTH])
        if p.get("truncated_why"):
            out.append(f"        [truncated stack: the frame-pointer walk "
                       f"{p['truncated_why']}]"[:LINE_WIDTH])
    more = rec["paths_total"] - len(rec["paths"])
    if more > 0:
        out.append(f"  {rec['other_pages']:>7} pages faulted by {more} more paths")
    return out
