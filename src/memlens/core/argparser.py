# SPDX-License-Identifier: GPL-2.0-only
"""The commands' argparse parser: their help, their usage errors, and every command line
core/quickargs does not parse with certainty.  Imported only then (memlens.cli.build_parser):
argparse costs ~16-20 ms of a start on a slow machine (issue 12)."""
from __future__ import annotations

import argparse
import os
import sys

from memlens.errors import EXIT_USAGE


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter, its width found without `shutil` (argparse imports shutil for
    get_terminal_size on every add_argument: ~6 ms of each tool's start, bench/)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None):
        if width is None:
            try:
                width = int(os.environ["COLUMNS"])
            except (KeyError, ValueError):
                try:
                    width = os.get_terminal_size(sys.__stdout__.fileno()).columns
                except (AttributeError, ValueError, OSError):
                    width = 80
            width -= 2  # as argparse does with the terminal's width
        super().__init__(prog, indent_increment, max_help_position, width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        # the description and epilog keep their line breaks (examples, tables of real
        # output); a one-line prose paragraph longer than the width is wrapped
        if "\n" not in text.strip() and len(text) > width:
            import textwrap

            return textwrap.fill(text.strip(), width, initial_indent=indent,
                                 subsequent_indent=indent)
        return super()._fill_text(text, width, indent)


class _Parser(argparse.ArgumentParser):
    """A usage error is one line (what is wrong, where to look), not the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser(name: str, command) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"memlens {name}",
        description=getattr(command, "description", None) or command.summary,
        epilog=getattr(command, "epilog", None),
        formatter_class=_Formatter,
    )
    command.add_arguments(parser)
    return parser
