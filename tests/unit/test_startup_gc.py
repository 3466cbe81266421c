# SPDX-License-Identifier: GPL-2.0-only
"""The command line's start runs with the cyclic garbage collector paused (core/runner.py:
its collections were 1.2-2.7 ms of the time to the banner): paused at the CLI's import, on
again once the tool is attached or at once for a command that loads nothing, and never
touched where memlens is a library."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])  # for tests.runner_stub

PROBE = textwrap.dedent("""
    import gc, sys
    import memlens.cli
    print("at import:", gc.isenabled())
    from memlens.core.runner import Runner
    from tests.runner_stub import IdleTool

    class Tool(IdleTool):
        def start(self):
            print("in start:", gc.isenabled())

    frozen = gc.get_freeze_count()
    Runner(duration=0.01).run(Tool(), lambda rec: None,
                              ready=lambda what: print("banner:", gc.isenabled()))
    print("after the start:", gc.isenabled(), gc.get_freeze_count() > frozen)
""")


def _run_as(tmp_path, name: str) -> list[str]:
    script = tmp_path / name
    script.write_text(PROBE)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": ROOT}).stdout
    return out.splitlines()


def test_paused_from_the_cli_import_until_the_tool_is_attached(tmp_path):
    # (the console script is named memlens: cli._launched_as_cli)
    assert _run_as(tmp_path, "memlens") == [
        "at import: False", "in start: False", "banner: False", "after the start: True True"]


def test_a_library_import_leaves_it_alone(tmp_path):
    assert _run_as(tmp_path, "embed.py") == [
        "at import: True", "in start: True", "banner: True", "after the start: True False"]


def test_a_command_that_loads_nothing_gets_it_back_at_once(tmp_path):
    # `memlens pmap 1`, its run replaced by one that prints the collector's state
    code = ("import gc, sys; import memlens.cli as cli; print('at import:', gc.isenabled()); "
            "import memlens.checklist.pmap as p; "
            "p.COMMAND.run = lambda args: print('in run:', gc.isenabled()) or 0; "
            "sys.exit(cli.main(['pmap', '1']))")
    script = tmp_path / "memlens"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.stdout.splitlines() == ["at import: False", "in run: True"], (out.stdout,
                                                                             out.stderr)
