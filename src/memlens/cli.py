# SPDX-License-Identifier: GPL-2.0-only
"""`memlens <command>`: one explicit list of commands, imported lazily.

Only the chosen command's module is imported, so `memlens oomkill` does not pay for rich,
psutil or the other tools at start-up (launch-to-attached is a measured figure, see bench/).
Each command module defines `COMMAND`, an object with:
    name, summary, epilog (examples), add_arguments(parser), run(args) -> int
add_arguments is given a core/quickargs Recorder first: argparse is imported only for the
command lines that need it (help, errors, unusual forms; see parse_args).
Errors are typed (memlens.errors) and caught only here.

Signals: the first thing the command line does, before importing anything heavy, is to
install handlers that only set a stop Event (core/runner.SIGNALS): a Ctrl-C during an
import, while libbpf loads, or inside libbpf's print callback can then never become a
KeyboardInterrupt traceback or a half-imported module.  Tracing tools stop at the next
safe point: 0 after attach (final report), 128 + signal (130 for SIGINT) before it.
Commands that load nothing (check, top, pmap, doctor) get Python's usual Ctrl-C back.
"""
from __future__ import annotations

import _signal  # the C module under `signal`: the same calls without its enums (~0.5 ms)
import os
import sys


def _launched_as_cli() -> bool:
    """This import is the command line's (`memlens ...` or `python -m memlens`), not a
    library's or a test's: only then are signal handlers installed at import."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name == "memlens.__main__":
        return True
    return os.path.basename(getattr(main, "__file__", "") or "") == "memlens"


if _launched_as_cli():
    from memlens.core.runner import SIGNALS as _SIGNALS
    from memlens.core.runner import pause_gc

    _SIGNALS.install()
    pause_gc()  # until the tool is attached (core/runner.py: 1.2-2.7 ms of its start)

from memlens import __version__, registry  # noqa: E402
from memlens.errors import EXIT_USAGE, MemlensError  # noqa: E402

# (name, module, one-line summary), from the one registry (memlens/registry.py), which
# imports no tool: `memlens --help` stays cheap.
COMMANDS: list[tuple[str, str, str]] = [(t.name, t.module, t.summary) for t in registry.TOOLS]


def _usage() -> str:
    width = max(len(n) for n, _, _ in COMMANDS)
    lines = [
        "usage: memlens [--version] [COMMAND [ARGS...]]",
        "",
        "Linux memory observability with eBPF. With no command: the checklist, then `doctor`.",
        "",
        "commands:",
    ]
    lines += [f"  {n:<{width}}  {s}" for n, _, s in COMMANDS]
    lines += ["", "`memlens COMMAND --help` for each command's options and examples.",
              "Exit codes: 0 ok, 1 failure, 2 usage, 3 not permitted, 4 kernel lacks a hook."]
    return "\n".join(lines)


def build_parser(name: str, command):
    """The command's argparse parser (core/argparser.py, which imports argparse)."""
    from memlens.core.argparser import build_parser as build

    return build(name, command)


def parse_args(name: str, command, argv: list[str]):
    """The command line's options.  argparse is the parser (help, usage errors, every
    unusual form), but importing it costs ~16-20 ms of a start on a slow machine, too slow
    for the way to a tracing tool's banner (issue 12): the common command lines are parsed
    by core/quickargs from the same add_arguments, and argparse is asked only when
    quick_parse is not certain to give what it would."""
    from memlens.core.quickargs import Recorder, quick_parse

    recorder = Recorder()
    command.add_arguments(recorder)
    args = quick_parse(recorder, argv)
    if args is None:
        args = build_parser(name, command).parse_args(argv)
    return args


def _command_of(module: str):
    """The module's COMMAND (importlib.import_module without importing importlib: ~0.3 ms
    of every start)."""
    __import__(module)
    return sys.modules[module].COMMAND


def load_command(name: str):
    for cmd_name, module, _ in COMMANDS:
        if cmd_name == name:
            return _command_of(module)
    return None


def main(argv: list[str] | None = None) -> int:
    from memlens.core.runner import SIGNALS

    installed_here = not SIGNALS.active and SIGNALS.install()
    try:
        code = _main(argv, SIGNALS)
    finally:
        if installed_here:
            SIGNALS.restore()
    if _launched_as_cli():
        # The work is done and the exit code decided: a signal now (a Ctrl-C just as a -p
        # target's exit ended the run) would meet the interpreter's finalization, which
        # puts SIG_DFL back, and kill the process with a signal status instead of `code`.
        for sig in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP):
            _signal.signal(sig, _signal.SIG_IGN)
    return code


def _std_fds() -> None:
    """A standard descriptor closed by the caller (`memlens trace ... >&-`) gets /dev/null:
    else the next file memlens opens (an --html output, a BPF map) would take its number
    and receive what is printed, and Python has set sys.stdout to None (an internal error
    at the first print)."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        try:
            null = os.open(os.devnull, os.O_RDWR)
        except OSError:
            continue
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115


def _main(argv: list[str] | None, signals) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _std_fds()
    # `| head` closes stdout early: die quietly like the classic tools instead of a traceback.
    _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv and argv[0] == "--version":
        print(f"memlens {__version__}")
        return 0
    if not argv or argv[0].startswith("-"):
        name = "main"
        module = "memlens.mainjob"
    else:
        name = argv.pop(0)
        module = next((m for n, m, _ in COMMANDS if n == name), None)
        if module is None:
            print(f"memlens: unknown command {name!r} (see `memlens --help`)", file=sys.stderr)
            return EXIT_USAGE
    tool = registry.find(name)
    if tool is not None and "uprobe" in tool.kinds:
        # a user-space probe's first link waits for an RCU grace period (~10-20 ms here):
        # waited out from now, in a thread, while the tool's modules import and its
        # object loads (core/uprobewarm.py).  The words tested first: the tool needs
        # probespec anyway, uprobewarm only for a u: probe (~0.3 ms of funccount t:'s start)
        from memlens.core.probespec import names_user_probe

        if names_user_probe(argv):
            from memlens.core.uprobewarm import UprobeWarmup

            UprobeWarmup.start_early_for_specs(argv)
    if tool is not None and tool.early_maps:
        # its biggest map made in a thread from now (core/earlymaps.py)
        from memlens.core.earlymaps import start_for

        start_for(tool.early_maps, argv)
    if tool is None or not tool.bpf:
        from memlens.core.runner import resume_gc

        resume_gc()  # no start to hurry (core/runner.py)
        # nothing is loaded into the kernel: Ctrl-C is Python's KeyboardInterrupt again
        # (`memlens top` ends on it), unless it already came
        if signals.is_set():
            return signals.exit_code
        signals.restore()
    try:
        command = _command_of(module)
        args = parse_args(name if name != "main" else "", command, argv)
        return int(command.run(args) or 0)
    except MemlensError as err:
        _report_error(err, argv)
        return err.exit_code
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # Reader went away (`| head`); nothing useful left to print.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 0
    except OSError as err:
        # a system call memlens made (a map, a perf event, a file) failed: one line, with
        # the exit code its errno means (3 not permitted, 4 missing in this kernel)
        from memlens.errors import from_oserror

        typed = from_oserror(err, "system call failed")
        _report_error(typed, argv)
        return typed.exit_code
    except Exception as err:
        if os.environ.get("MEMLENS_DEBUG"):
            raise
        _report_error(MemlensError(f"internal error: {type(err).__name__}: {err} "
                                   "(MEMLENS_DEBUG=1 shows the traceback)"), argv)
        return 1


def _report_error(err: MemlensError, argv: list[str]) -> None:
    if "--json" in argv:
        import json

        try:
            print(json.dumps({"type": "error", "message": str(err),
                              "exit_code": err.exit_code}), flush=True)
        except OSError:
            # stdout is what failed (`--json > /dev/full`, a reader gone): the line on
            # stderr says it, and nothing is left to flush at exit
            try:
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115
            except OSError:
                pass
    print(f"memlens: {err}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
