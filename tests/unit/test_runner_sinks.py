# SPDX-License-Identifier: GPL-2.0-only
"""The runner (lifecycle without printing or signals) and the sinks (outputs chosen once),
driven by a fake tool: no kernel needed."""
from __future__ import annotations

import argparse
import errno
import io
import json
import signal
import threading

import pytest

from memlens.core.runner import Runner, stop_on_signals
from memlens.errors import MemlensError, SystemCallError, UsageError
from memlens.output import sinks


class FakeTool:
    what = "fake events"
    name = "fake"

    def __init__(self, fail_on_poll: Exception | None = None):
        self.calls: list[str] = []
        self.fail = fail_on_poll
        self.n = 0

    def start(self):
        self.calls.append("start")

    def poll(self, timeout):
        if self.fail:
            raise self.fail
        self.n += 1
        return [{"type": "event", "n": self.n}] if self.n <= 2 else []

    def report(self, final):
        self.calls.append(f"report final={final}")
        return [{"type": "report", "final": final, "entries": [
            {"comm": "prog", "stack": ["leaf+0x1 [prog]", "main+0x9 [prog]"], "count": 3}]}]

    def summary(self):
        return [{"type": "summary", "events": self.n}]

    def close(self):
        self.calls.append("close")


def test_runner_reports_per_interval_then_stops_after_count():
    tool, out = FakeTool(), []
    Runner(interval=0.05, count=3).run(tool, out.append, lambda what: out.append(what))
    assert out[0] == "fake events"  # ready is called once, after start
    assert tool.calls == ["start"] + ["report final=False"] * 3 + ["close"]
    assert [r["type"] for r in out[1:3]] == ["event", "event"]
    assert out[-1]["type"] == "summary"


def test_runner_in_a_thread_is_stopped_by_its_event_and_installs_no_signal_handler():
    before = signal.getsignal(signal.SIGINT)
    tool, out = FakeTool(), []
    runner = Runner()
    attached = threading.Event()
    t = threading.Thread(target=runner.run, args=(tool, out.append, lambda _: attached.set()))
    t.start()
    assert attached.wait(5)  # a stop before attach ends the run without a report
    runner.stop.set()
    t.join(5)
    assert not t.is_alive()
    assert tool.calls[-2:] == ["report final=True", "close"]
    assert signal.getsignal(signal.SIGINT) is before


def test_stop_on_signals_restores_the_previous_handlers():
    before = signal.getsignal(signal.SIGTERM)
    stop = threading.Event()
    with stop_on_signals(stop):
        signal.raise_signal(signal.SIGTERM)
        assert stop.is_set()
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_oserror_becomes_a_typed_error_and_the_tool_is_closed():
    tool = FakeTool(fail_on_poll=PermissionError(errno.EPERM, "Operation not permitted"))
    with pytest.raises(MemlensError) as info:
        Runner().run(tool, lambda r: None)
    assert info.value.exit_code == 3 and "fake" in str(info.value)
    assert tool.calls[-1] == "close"
    assert SystemCallError(errno.ENOENT, "x").exit_code == 4


def _args(**kw):
    base = {"json": False, "folded": False, "html": None, "pprof": None}
    return argparse.Namespace(**{**base, **kw})


def test_json_and_folded_clash_with_one_message():
    with pytest.raises(UsageError, match="--json and --folded are exclusive"):
        sinks.make_sink(_args(json=True, folded=True), None)


def test_every_tool_gets_the_same_output_options():
    p = argparse.ArgumentParser()
    sinks.add_output_options(p, folded=True, html=True, pprof=True)
    a = p.parse_args(["-f", "--html", "x.html", "--pprof", "x.pb.gz"])
    assert (a.folded, a.html, a.pprof, a.json) == (True, "x.html", "x.pb.gz", False)


def test_json_sink_writes_every_record(capsys):
    s = sinks.make_sink(_args(json=True), None)
    for rec in FakeTool().report(True) + [{"type": "lost", "what": "events", "reason": "r",
                                           "count": 2}]:
        s.emit(rec)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["type"] for r in lines] == ["report", "lost"]


def test_folded_sink_writes_root_first_by_function_and_losses_to_stderr(capsys):
    s = sinks.make_sink(_args(folded=True), None)
    s.emit(FakeTool().report(True)[0])
    s.emit({"type": "lost", "what": "stacks", "reason": "map full", "count": 4})
    out = capsys.readouterr()
    assert out.out == "prog;main;leaf 3\n"
    assert "lost 4 stacks (map full)" in out.err


def test_a_loss_with_a_hint_names_the_option_to_raise(capsys):
    s = sinks.make_sink(_args(), None)
    s.emit({"type": "lost", "what": "stacks", "reason": "stack map full", "count": 7,
            "hint": "raise --stack-storage-size, now 16"})
    assert capsys.readouterr().err == ("memlens: lost 7 stacks (stack map full; raise "
                                       "--stack-storage-size, now 16)\n")


def test_text_sink_calls_the_tools_renderer(tmp_path):
    seen = []
    s = sinks.make_sink(_args(html=str(tmp_path / "f.html")), seen.append, title="t")
    rec = FakeTool().report(True)[0]
    s.emit(rec)
    s.close()
    assert seen == [rec]
    assert "leaf" in (tmp_path / "f.html").read_text()


def test_pprof_side_file_holds_the_run(tmp_path):
    import gzip

    s = sinks.make_sink(_args(pprof=str(tmp_path / "p.pb.gz")), lambda r: None, unit="events")
    s.emit(FakeTool().report(False)[0])
    s.emit(FakeTool().report(True)[0])
    s.close()
    data = gzip.decompress((tmp_path / "p.pb.gz").read_bytes())
    assert b"leaf" in data and b"events" in data


def test_sink_streams_are_plain_files():
    buf = io.StringIO()
    s = sinks.JsonSink(buf)
    s.emit({"type": "summary", "x": 1})
    assert json.loads(buf.getvalue()) == {"type": "summary", "x": 1}


def test_a_stop_reads_every_batch_still_in_the_ring():
    """A poll reads a bounded batch (core/engine EVENT_BATCH: peak RSS); after the stop the
    runner reads batch after batch until the ring is empty, not one batch (which lost the
    rest of a burst silently)."""
    class Ring:
        what = "a burst"

        def __init__(self):
            self.pending = 10 * 4096
            self.closed = False

        def start(self):
            pass

        def poll(self, timeout):
            if timeout > 0:  # the run's loop: the stop comes, the burst still in the ring
                stop.set()
                return []
            n = min(self.pending, 4096)
            self.pending -= n
            return [{"type": "event", "i": i} for i in range(n)]

        def report(self, final):
            return []

        def summary(self):
            return []

        def close(self):
            self.closed = True

    tool, seen = Ring(), []
    stop = threading.Event()
    Runner(stop=stop).run(tool, seen.append)
    assert len(seen) == 10 * 4096 and tool.pending == 0 and tool.closed


def test_a_flood_that_outlasts_the_drain_is_counted_lost_not_dropped(monkeypatch):
    """The drain after a stop is bounded in time (runner.DRAIN_S); a ring still filling
    when it ends has its rest counted lost by its engine (drop_unread), before the final
    report, which then shows the loss."""
    from memlens.core import runner

    monkeypatch.setattr(runner, "DRAIN_S", 0.0)

    class Engine:
        def __init__(self):
            self.unread = 0

        def drop_unread(self):
            self.unread = 7
            return 7

    class Flood:
        what = "a flood"

        def __init__(self):
            self.engine = Engine()
            self.polls = 0

        def start(self):
            pass

        def poll(self, timeout):
            if timeout > 0:
                stop.set()
                return []
            self.polls += 1
            return [{"type": "event"}]  # never empty: the kernel keeps writing

        def report(self, final):
            return [{"type": "lost", "count": self.engine.unread}]

        def summary(self):
            return []

        def close(self):
            pass

    tool, seen = Flood(), []
    stop = threading.Event()
    Runner(stop=stop).run(tool, seen.append)
    assert tool.polls == 1 and seen[-1] == {"type": "lost", "count": 7}
