# SPDX-License-Identifier: GPL-2.0-only
"""Fixed-column tables: golden text at 80 columns, truncation and escaping."""
import pytest

from memlens.output.table import Column, Table, comm_str, escape

COLUMNS = [Column("TIME", 8), Column("PID", 7, ">", "d"), Column("COMM", 16, fmt=comm_str),
           Column("SIZE", 10, ">", "d"), Column("FILENAME", None, keep="tail")]

GOLDEN = """\
TIME         PID COMM                   SIZE FILENAME
19:20:01    1234 leaker                 4096 /lib/x86_64-linux-gnu/libc.so.6
19:20:02  999999 kworker/u16:2-e    12345678 ...01234567890123456789/leaked.bin
"""


def test_golden_80_columns():
    t = Table(COLUMNS)
    lines = [t.header(),
             t.row(["19:20:01", 1234, b"leaker\0\0\0", 4096,
                    "/lib/x86_64-linux-gnu/libc.so.6"]),
             t.row({"TIME": "19:20:02", "PID": 999999, "COMM": "kworker/u16:2-events",
                    "SIZE": 12345678,
                    "FILENAME": "/" + "x" * 60 + "/" + "0123456789" * 4 + "/leaked.bin"})]
    assert "\n".join(lines) + "\n" == GOLDEN
    assert all(len(line) < 80 for line in lines)


def test_numbers_are_never_cut():
    t = Table([Column("PID", 3, ">", "d"), Column("COMM", 4)])
    assert t.row([123456, "abcdefgh"]) == "123456 a..."
    assert Table([Column("COMM", 6)]).row(["abcdefgh"]) == "abc..."


def test_line_width_none_keeps_last_column_whole():
    t = Table([Column("PID", 5, ">"), Column("PATH", None)], line_width=None)
    assert t.row([1, "p" * 200]) == "    1 " + "p" * 200


@pytest.mark.parametrize("raw, shown", [
    ("plain", "plain"),
    ("a\nb", "a\\x0ab"),
    ("\x1b[2J", "\\x1b[2J"),
    ("tab\there", "tab\\x09here"),
    ("del\x7f", "del\\x7f"),
    ("back\\x41", "back\\\\x41"),
    ("rtl\u202eevil", "rtl\\u202eevil"),
    ("caf\u00e9", "caf\u00e9"),
    (b"bad\xff\xfe", "bad\\xff\\xfe"),
    (b"caf\xc3\xa9", "caf\u00e9"),
])
def test_escape(raw, shown):
    assert escape(raw) == shown


def test_hostile_comm_cannot_break_the_row():
    t = Table([Column("PID", 7, ">", "d"), Column("COMM", 16, fmt=comm_str)])
    line = t.row([1, b"\n\r\x1b]0;pwn\x07xxxx"])
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x07" not in line
    assert len(line) <= 7 + 1 + 16


def test_comm_is_capped_at_kernel_length():
    assert comm_str("0123456789abcdefXYZ") == "0123456789abcde"


def test_only_last_column_may_be_open():
    with pytest.raises(ValueError):
        Table([Column("A", None), Column("B", 3)])
    with pytest.raises(ValueError):
        Table([Column("A", 3)]).row([1, 2])
