# SPDX-License-Identifier: GPL-2.0-only
"""Log2 histograms, against golden text in BCC's print_log2_hist layout."""
import io

from memlens.output.hist import format_log2_hist, print_log2_hist

GOLDEN = """\
     usecs               : count     distribution
         0 -> 1          : 0        |                                        |
         2 -> 3          : 1        |*                                       |
         4 -> 7          : 5        |******                                  |
         8 -> 15         : 12       |****************                        |
        16 -> 31         : 30       |****************************************|
        32 -> 63         : 7        |*********                               |
        64 -> 127        : 0        |                                        |
       128 -> 255        : 2        |**                                      |
"""


def test_golden_80_columns():
    text = format_log2_hist([0, 1, 5, 12, 30, 7, 0, 2, 0, 0], "usecs")
    assert text == GOLDEN
    assert all(len(line) < 80 for line in text.splitlines())


def test_strip_leading_zero_and_stream():
    out = io.StringIO()
    print_log2_hist([0, 0, 4], "bytes", strip_leading_zero=True, stream=out)
    assert out.getvalue() == (
        "     bytes               : count     distribution\n"
        "         4 -> 7          : 4        |****************************************|\n")


def test_empty_histogram_prints_nothing():
    assert format_log2_hist([0] * 64, "usecs") == ""
    assert format_log2_hist([], "usecs") == ""


def test_wide_layout_past_2_pow_32():
    buckets = [0] * 40
    buckets[0], buckets[39] = 1, 2
    lines = format_log2_hist(buckets, "nsecs").splitlines()
    assert lines[0] == "               nsecs                         : count     distribution"
    assert lines[1] == f"{0:>20} -> {1:<20} : {1:<8} |{'*' * 10:<20}|"
    assert lines[-1] == f"{1 << 39:>20} -> {(1 << 40) - 1:<20} : {2:<8} |{'*' * 20}|"
