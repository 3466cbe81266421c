# SPDX-License-Identifier: GPL-2.0-only
"""NDJSON records: one valid compact object per line, whatever the strings hold."""
import io
import json

import numpy as np
import pytest

from memlens.output.ndjson import JsonWriter, json_safe


class CountingStream(io.StringIO):
    flushes = 0

    def flush(self):
        self.flushes += 1
        super().flush()


def test_one_object_per_line_flushed():
    out = CountingStream()
    w = JsonWriter(out)
    w.emit({"type": "event", "pid": 42, "comm": "leaker", "size_bytes": 4096})
    w.emit({"type": "lost", "events": 3})
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"type": "event", "pid": 42, "comm": "leaker", "size_bytes": 4096},
        {"type": "lost", "events": 3}]
    assert lines[0] == '{"type":"event","pid":42,"comm":"leaker","size_bytes":4096}'
    assert out.flushes == 2


def test_hostile_strings_stay_on_one_line():
    out = io.StringIO()
    comm = b"a\nb\x1b[2J\xff\x00pad"
    JsonWriter(out).emit({"type": "event", "comm": comm, "path": "x\u2028y</script>"})
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "\x1b" not in text and "\u2028" not in text
    record = json.loads(text)
    assert record["comm"] == "a\nb\x1b[2J\ufffd"  # cut at the kernel's NUL terminator
    assert record["path"] == "x\u2028y</script>"


def test_numpy_and_other_values_become_json():
    value = {"a": np.uint64(2**63), "b": np.int32(-5), "c": np.arange(3, dtype=np.uint8),
             "d": (1, 2.5), "e": float("nan"), 7: {"x"}, "f": np.float32(0.5)}
    assert json_safe(value) == {"a": 2**63, "b": -5, "c": [0, 1, 2], "d": [1, 2.5],
                                "e": None, "7": ["x"], "f": 0.5}
    out = io.StringIO()
    JsonWriter(out).emit({"type": "report", **value})
    assert json.loads(out.getvalue())["a"] == 2**63


def test_unknown_record_type_is_refused():
    with pytest.raises(ValueError):
        JsonWriter(io.StringIO()).emit({"type": "lost_events"})
    with pytest.raises(ValueError):
        JsonWriter(io.StringIO()).emit({"pid": 1})
