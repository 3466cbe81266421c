# SPDX-License-Identifier: GPL-2.0-only
"""Folded stacks: line grammar, merging, sorting, sanitizing, round trip."""
import io
import re

from memlens.output.folded import fold, format_folded, read_folded, sanitize_frame, write_folded

LEAK_A = ["malloc+0x0 [libc.so.6]", "leak_a+0x12 [leaker]", "main+0x30 [leaker]"]
LEAK_B = ["malloc+0x0 [libc.so.6]", "leak_b+0x8 [leaker]", "main+0x40 [leaker]"]
# flamegraph.pl's parser (FlameGraph flamegraph.pl L677): every line we write must match it.
FLAMEGRAPH_PL = re.compile(r"^(.*)\s+?(\d+(?:\.\d*)?)$")


def test_root_first_merged_and_sorted():
    out = io.StringIO()
    write_folded(out, [(["leaker"], LEAK_B, 100), (["leaker"], LEAK_A, 1024),
                       (["leaker"], LEAK_B, 28), (["other"], ["[missed user stack]"], 5)])
    assert out.getvalue() == (
        "leaker;main+0x30 [leaker];leak_a+0x12 [leaker];malloc+0x0 [libc.so.6] 1024\n"
        "leaker;main+0x40 [leaker];leak_b+0x8 [leaker];malloc+0x0 [libc.so.6] 128\n"
        "other;[missed user stack] 5\n")


def test_round_trip():
    entries = [(["a"], LEAK_A, 3), (["b"], LEAK_B, 7), (["a"], LEAK_A, 4), ([], ["x"], 1)]
    folded = fold(entries)
    assert read_folded(format_folded(folded)) == folded
    assert sum(folded.values()) == 15
    assert folded["x"] == 1


def test_zero_totals_are_left_out():
    assert fold([(["c"], ["f"], 0)]) == {}


def test_hostile_frames():
    entries = [(["evil;comm\n"], ["leaf;x\n1 2  ", "\x1b[2Jroot\t", ""], 9)]
    text = format_folded(fold(entries))
    assert text.count("\n") == 1
    m = FLAMEGRAPH_PL.match(text.rstrip("\n"))
    assert m and m.group(2) == "9"
    frames = m.group(1).split(";")
    assert frames == ["evil:comm\\x0a", "[unknown]", "\\x1b[2Jroot\\x09", "leaf:x\\x0a1 2"]
    assert all(f == f.strip() for f in frames)


def test_sanitize_frame():
    assert sanitize_frame("  std::vector<int>::push_back  ") == "std::vector<int>::push_back"
    assert sanitize_frame("a;b") == "a:b"
    assert sanitize_frame(" ") == "[unknown]"


def test_read_folded_tolerates_what_flamegraph_pl_does():
    text = ("a;b 3\n"
            "a;b 2\n"
            "garbage line\n"
            "\n"
            "a;c d 1.5\n"
            "a;b\t4\n")
    assert read_folded(text) == {"a;b": 9, "a;c d": 1.5}
