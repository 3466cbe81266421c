# SPDX-License-Identifier: GPL-2.0-only
"""`memlens` with no command: the state of memory first (the checklist), then whether and
how memlens can trace on this machine (doctor)."""
from __future__ import annotations

import sys

TYPE_CHECKING = False  # argparse costs ~16-20 ms of start-up (issue 12): for annotations only
if TYPE_CHECKING:
    import argparse

EXAMPLES = """\
examples:
  memlens                 # checklist, then readiness report
  memlens --json          # both as NDJSON records
  memlens --interval 5    # rate sections (paging, swap) measured over 5 s
"""


class MainCommand:
    name = ""
    summary = "Memory checklist of this machine, then the readiness report (memlens doctor)."
    epilog = EXAMPLES

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="NDJSON output")
        from memlens.core.session import positive_float

        parser.add_argument("--interval", type=positive_float, default=1.0, metavar="SECONDS",
                            help="measuring window of the rate sections (default 1)")

    def run(self, args: argparse.Namespace) -> int:
        from memlens import doctor
        from memlens.checklist.check import run_checklist

        run_checklist(sys.stdout, json_mode=args.json, interval=args.interval)
        if not args.json:
            print()
        import argparse

        doctor.COMMAND.run(argparse.Namespace(json=args.json))
        return 0


COMMAND = MainCommand()
