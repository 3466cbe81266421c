# SPDX-License-Identifier: GPL-2.0-only
"""growth's reading of printed user frames (tools/growth/paths.py)."""
from __future__ import annotations

import pytest

from memlens.tools.growth.paths import frame_parts, short_frame, truncation


@pytest.mark.parametrize("printed, parts", [
    ("grow_fast+0x40 [grow_two]", ("grow_fast", "grow_two")),
    ("[unknown] [libc.so.6]", ("[unknown]", "libc.so.6")),
    ("0x7f12ab [unknown]", ("0x7f12ab", None)),
    ("git+0x1a2b", ("git+0x1a2b", "git")),          # a stripped file: offset in the file
    ("libpython3.11.so.1.0+0x2f00", ("libpython3.11.so.1.0+0x2f00", "libpython3.11.so.1.0")),
])
def test_frame_parts(printed, parts):
    assert frame_parts(printed) == parts


def test_a_stripped_main_program_frame_is_its_own():
    """Two frames ending in the stripped main program: not cut short by a library."""
    assert truncation(["memset+0x10 [libc.so.6]", "git+0x1a2b"], "git") is None
    assert truncation(["memset+0x10 [libc.so.6]"], "git") == "ended in libc.so.6"
    assert short_frame("git+0x1a2b") == "git+0x1a2b"
