# SPDX-License-Identifier: GPL-2.0-only
"""core/quickargs against argparse, its witness: for every command, on its --help examples
and on generated command lines (each option alone, --opt=VALUE, -oVALUE, joined flags,
options before, between and after the positionals, bad values, abbreviations, unknown
options, `--`, -h, exclusive pairs), quick_parse gives either None (argparse decides) or
exactly what argparse gives.  The examples must be served by the fast path, and the forms
argparse must decide must not be.  Then the same on parsers made for the test, with the
argparse features no command uses yet, on seeded random command lines."""
from __future__ import annotations

import contextlib
import io
import itertools
import random
import re
import shlex

import pytest

from memlens import cli, registry
from memlens.core.argparser import build_parser
from memlens.core.quickargs import Namespace, Recorder, quick_parse
from tests.conftest import fresh_python

NAMES = [t.name for t in registry.TOOLS] + ["main"]


def _command(name: str):
    return cli._command_of("memlens.mainjob" if name == "main" else registry.find(name).module)


def _parsers(name: str):
    """(argparse's parser, the recorder) of a command, as cli.parse_args makes them."""
    command = _command(name)
    recorder = Recorder()
    command.add_arguments(recorder)
    return cli.build_parser("" if name == "main" else name, command), recorder


def _argparse(parser, argv: list[str]):
    """argparse's Namespace for argv, or None where it prints help or an error."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return parser.parse_args(argv)
        except SystemExit:
            return None
        except Exception:  # a type function's own exception goes through argparse
            return None


def _typed(ns) -> dict:
    """vars(ns) with each value's type: 1, 1.0 and True are equal, but not the same value."""
    return {k: (type(v), v) for k, v in vars(ns).items()}


def _compare(parser, recorder, argv: list[str]) -> tuple[bool, bool]:
    """(argparse accepted argv, quick_parse served it); a served line must be argparse's."""
    expected = _argparse(parser, argv)
    got = quick_parse(recorder, argv)
    if got is not None:
        assert expected is not None, f"{argv}: argparse refuses it, quick_parse gave {got}"
        assert _typed(got) == _typed(expected), argv
        assert got == expected and expected == got
    return expected is not None, got is not None


# -- the examples in each command's --help --------------------------------------------------

def epilog_examples() -> list[tuple[str, list[str]]]:
    """(command, argv) of every `memlens NAME ...` line of the commands' epilogs: comments,
    pipes and redirections cut, a $(...) or a placeholder PID replaced by a number."""
    examples = []
    for name in NAMES:
        text = getattr(_command(name), "epilog", None) or ""
        for line in text.splitlines():
            m = re.search(r"(?<![\w/.-])memlens(?=\s|`|$)(.*)", line)
            if m is None:
                continue
            rest = re.sub(r"\$\([^)]*\)|\bPID\b", "1234", m.group(1).split("`")[0])
            lex = shlex.shlex(rest, posix=True, punctuation_chars="|&;<>")
            lex.whitespace_split, lex.commenters = True, "#"
            words = list(itertools.takewhile(lambda w: w.strip("|&;<>"), lex))
            if not words or words[0].startswith("-"):
                examples.append(("main", words))
            elif words[0] in NAMES:
                examples.append((words[0], words[1:]))
    return examples


EXAMPLES = epilog_examples()


def test_the_examples_are_found():
    assert len(EXAMPLES) > 100
    assert ("count", ["sw:page-faults", "--by", "comm,pid"]) in EXAMPLES
    assert ("memleak", ["-c", "./server --port 8080", "-d", "60", "--pprof", "heap.pb.gz"]) \
        in EXAMPLES
    assert ("main", ["--interval", "5"]) in EXAMPLES
    assert {name for name, _ in EXAMPLES} == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_example_is_parsed_as_argparse_does_without_it(name):
    parser, recorder = _parsers(name)
    for command, argv in EXAMPLES:
        if command == name:
            accepted, served = _compare(parser, recorder, argv)
            assert accepted, f"memlens {name} {shlex.join(argv)}: argparse refuses its example"
            assert served, f"memlens {name} {shlex.join(argv)}: not served by quick_parse"


# -- generated command lines ----------------------------------------------------------------

# values tried for an option, by its type's name (a choice option: each choice and one more)
VALUES = {
    "pid_arg": ["1234", "0", "x", "4194305"],
    "seconds": ["5", "0.5", "0", "nan", "1e400", "x"],
    "count": ["10", "0", "0x10", "x", "99999999999"],
    "nonneg_int": ["0", "500", "x"],
    "_milliseconds": ["60000", "x"],
    "nonempty": ["/tmp/f", "", " "],
    "ring_size_arg": ["4M", "128k", "0", "x"],
    "listen_address": [":9435", "127.0.0.1:9500", "[::1]:9500", "nowhere", "::1:9435"],
    "depth_arg": ["2", "x"],
    "sources_arg": ["faults", "faults,oom", "bogus"],
    "int": ["3", "x"],
    "float": ["1.5", "x"],
    None: ["comm,pid", "x y", ""],
}
# the positionals a command line can give, by dest
POSITIONAL = {"probes": ["sw:page-faults", "t:syscalls:sys_enter_brk"],
              "probe": ["t:syscalls:sys_enter_mmap"], "filter": ["len > 4096"],
              "pid": ["1234"], "interval": ["5"], "count": ["3"],
              "interval_pos": ["2"], "count_pos": ["4"]}


def _options(parser):
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def _values(action) -> list[str]:
    if action.choices is not None:
        return [*action.choices, "bogus"]
    return VALUES.get(getattr(action.type, "__name__", None), VALUES[None])


def generated(parser) -> list[list[str]]:
    positionals = [a for a in parser._actions if not a.option_strings]
    full = [v for a in positionals for v in POSITIONAL[a.dest][:1]]
    needed = [POSITIONAL[a.dest][0] for a in positionals if a.required]
    bases = [needed, full, full + ["extra"]]
    if any(a.nargs == "+" for a in positionals):
        bases.append(needed + POSITIONAL["probes"])

    def placed(words: list[str]) -> list[list[str]]:
        out = []
        for base in bases:
            out += [words + base, base + words]
            out += [base[:i] + words + base[i:] for i in range(1, len(base))]
        return out

    lines: list[list[str]] = [[], ["--"], ["-h"], ["--help"], ["--bogus"], ["-Q"], ["-1"], ["-"],
                              [""], ["--=x"], ["-h", "x"]]
    for base in bases:
        lines += [["--", *base], [*base, "--"], [*base, "-h"], [*base, "--bogus"],
                  [*base, "-1"], [*base, "-", "x"]]
    short_flags = []
    for action in _options(parser):
        shorts = [o for o in action.option_strings if not o.startswith("--")]
        longs = [o for o in action.option_strings if o.startswith("--")]
        forms: list[list[str]] = []
        if action.nargs == 0:
            forms += [[o] for o in action.option_strings]
            forms += [[o + "=x"] for o in longs] + [[o + "x"] for o in shorts]
            forms += [[o, o] for o in action.option_strings[:1]]
            short_flags += shorts
        else:
            forms += [[action.option_strings[0]], [action.option_strings[0], "-p"],
                      [action.option_strings[0], "--json"]]
            for value in _values(action):
                forms += [[o, value] for o in action.option_strings]
                forms += [[o + "=" + value] for o in longs]
                forms += [[o + value] for o in shorts if value]
                forms += [[o + "=" + value] for o in shorts]
            first, second = _values(action)[:2]
            forms.append([action.option_strings[0], first, action.option_strings[-1], second])
        forms += [[o[:-1]] for o in longs if len(o) > 3]       # abbreviations
        forms += [[o[:-1], _values(action)[0]] for o in longs if len(o) > 3]
        for form in forms:
            lines += placed(form)
    # joined flags: -xy, and a flag joined to an option taking a value (-Tp1234)
    for x, y in itertools.permutations(short_flags, 2):
        lines += placed([x + y[1:]])
    for x in short_flags:
        for action in _options(parser):
            shorts = [o for o in action.option_strings if not o.startswith("--")]
            if action.nargs != 0 and shorts:
                value = _values(action)[0]
                lines += placed([x + shorts[0][1:] + value]) + placed([x + shorts[0][1:], value])
        lines += placed([x + "h"]) + placed([x + "-"]) + placed([x + "Q"])
    # the members of each exclusive group, alone, in pairs, none
    for group in parser._mutually_exclusive_groups:
        members = [[a.option_strings[0], _values(a)[0]] for a in group._group_actions]
        for a, b in itertools.permutations(members, 2):
            lines += placed(a + b)
        lines += [m for member in members for m in placed(member)]
    return lines


def _left_to_argparse(recorder, argv: list[str]) -> bool:
    """argv has a form quick_parse leaves to argparse even where argparse accepts it: `--`,
    `-`, an abbreviated option, -x=VALUE, a negative number."""
    for word in argv:
        if word in ("--", "-"):
            return True
        if word.startswith("--") and word.partition("=")[0] not in recorder.options:
            return True
        if word.startswith("-") and not word.startswith("--") and (
                "=" in word or word[1:2].isdigit()):
            return True
    return False


@pytest.mark.parametrize("name", NAMES)
def test_generated_command_lines_are_parsed_as_argparse_does_or_left_to_it(name):
    parser, recorder = _parsers(name)
    lines = generated(parser)
    served = 0
    for argv in lines:
        accepted, fast = _compare(parser, recorder, argv)
        assert fast or not accepted or _left_to_argparse(recorder, argv), \
            f"memlens {name} {shlex.join(argv)}: accepted by argparse, not served"
        served += fast
    assert len(lines) > 50 and served > 5, (len(lines), served)


# -- what argparse must decide ---------------------------------------------------------------

@pytest.mark.parametrize("name,argv", [
    ("count", ["sw:page-faults", "--b", "comm"]),            # an abbreviation
    ("count", ["sw:page-faults", "--by=comm", "--fil=x"]),
    ("count", ["--", "sw:page-faults"]),                      # `--`
    ("count", ["sw:page-faults", "--"]),
    ("brkstack", ["-p", "notapid"]),                          # the type refuses it
    ("brkstack", ["-pnotapid"]),
    ("brkstack", ["--pid=0"]),
    ("top", ["-s", "bogus"]),                                 # not a choice
    ("memleak", ["-p", "1", "-c", "ls"]),                     # an exclusive pair
    ("memleak", ["-c", "ls", "--pid=1"]),
    ("growth", []),                                           # a required group, none given
    ("growth", ["5"]),
    ("count", []),                                            # a missing positional
    ("trace", ["-p", "1"]),
    ("count", ["--bogus", "sw:page-faults"]),                 # unknown options
    ("mmapsnoop", ["-TQ"]),
    ("memleak", ["-p", "1", "5", "3", "7"]),                  # one argument too many
    ("trace", ["t:oom:mark_victim", "-t", "pid > 1"]),        # 3.11: FILTER after an option
    ("count", ["-h"]),                                        # help, wherever it is
    ("count", ["sw:page-faults", "--help"]),
    ("mmapsnoop", ["-Th"]),
    ("drsnoop", ["-u", "-1"]),                                # a negative number
    ("oomkill", ["-d"]),                                      # a value missing
    ("oomkill", ["-d", "--json"]),
    ("oomkill", ["--json=yes"]),                              # a value to a flag
    ("oomkill", ["-d=5"]),                                    # -x=VALUE: 3.12 differs
])
def test_what_argparse_must_decide_is_left_to_it(name, argv):
    parser, recorder = _parsers(name)
    assert quick_parse(recorder, argv) is None
    _compare(parser, recorder, argv)


def test_common_forms_are_served():
    for name, argv in [
        ("count", ["sw:page-faults", "--by=comm,pid", "-t5", "-i", "1"]),
        ("mmapsnoop", ["-Tw", "-p1234"]),
        ("mmapsnoop", ["-Twp", "1234"]),
        ("memleak", ["-p", "1234", "-o", "60000", "30"]),
        ("memleak", ["30", "-p", "1234"]),
        ("growth", ["-c", "python3 -c 'x = 1'", "5", "3"]),
        ("stackcount", ["-U", "sw:page-faults", "u:c:malloc", "-D", "5"]),
        ("exporter", []),   # the string default is converted by its type, as argparse does
        ("exporter", ["--listen", ":9500", "--disable=faults,oom"]),
        ("compactsnoop", ["--extended_fields", "--extended-fields", "-e"]),
    ]:
        parser, recorder = _parsers(name)
        assert _compare(parser, recorder, argv) == (True, True), (name, argv)


def test_the_namespace_behaves_as_argparses():
    parser, recorder = _parsers("count")
    args = quick_parse(recorder, ["sw:page-faults"])
    assert isinstance(args, Namespace)
    assert "by" in args and "bogus" not in args
    assert getattr(args, "bogus", 7) == 7
    assert repr(args) == repr(parser.parse_args(["sw:page-faults"]))
    args.extra = 1
    assert vars(args)["extra"] == 1
    assert args != parser.parse_args(["sw:page-faults"])


# -- argparse features no command uses yet, on parsers made for the test ---------------------

def _choice(text: str) -> str:
    if text == "boom":
        raise KeyError(text)  # argparse lets it through: quick_parse must leave it to it
    return text


class Synthetic:
    summary, epilog = "a parser made for the test", None

    def __init__(self, kind: int):
        self.kind = kind

    def add_arguments(self, parser) -> None:
        parser.add_argument("-a", "--all", action="store_true")
        parser.add_argument("-b", "--bee", "--also-bee", dest="bees", action="append")
        parser.add_argument("-v", action="count", default=None)
        parser.add_argument("-c", "--const", action="store_const", const=42, default=7)
        parser.add_argument("-n", "--num", type=int, default="5")
        parser.add_argument("-o", "--opt", nargs="?", const="C", default="D", type=str.upper)
        parser.add_argument("-l", "--list", nargs="*", type=int)
        parser.add_argument("-t", "--two", nargs=2)
        parser.add_argument("-k", "--kind", choices=("x", "y"), type=_choice)
        parser.add_argument("-F", action="store_false")
        g = parser.add_mutually_exclusive_group(required=self.kind == 2)
        g.add_argument("-x", action="store_true")
        g.add_argument("-y", type=int)
        group = parser.add_argument_group("more")
        group.add_argument("--req", required=self.kind == 1)
        if self.kind == 0:
            parser.add_argument("first")
            parser.add_argument("rest", nargs="*", type=int)
        elif self.kind == 1:
            parser.add_argument("one", nargs="?", default="dflt", type=str.upper)
            parser.add_argument("two", nargs="+")
            parser.add_argument("three", nargs="?", choices=("p", "q"))
        elif self.kind == 2:
            parser.add_argument("pair", nargs=2)
            parser.add_argument("more", nargs="*", default=["m"])


WORDS = ["-a", "-b", "--bee", "--also-bee=z", "-bz", "-v", "-vv", "-c", "-n", "-n3", "--num=x",
         "-o", "-ox", "--opt", "--opt=y", "-l", "--list", "-t", "--two", "-k", "-kx", "--kind=y",
         "boom", "-F", "-x", "-y", "-y4", "-xa", "-av", "-avn2", "-ab", "--req", "--req=r",
         "1", "2", "3", "p", "q", "x", "y", "w", "", "-1", "--", "-h", "--al", "-Z"]


# a line each synthetic parser accepts, to which random words are added
VALID = {0: ["1"], 1: ["--req", "r", "w"], 2: ["-x", "p", "q"]}


@pytest.mark.parametrize("kind", [0, 1, 2])
def test_random_command_lines_on_parsers_made_for_the_test(kind):
    command = Synthetic(kind)
    parser = build_parser("synthetic", command)
    recorder = Recorder()
    command.add_arguments(recorder)
    rng = random.Random(kind)
    served = 0
    for _ in range(1500):
        argv = list(VALID[kind])
        for _ in range(rng.randint(0, 5)):
            argv.insert(rng.randint(0, len(argv)), rng.choice(WORDS))
        accepted, fast = _compare(parser, recorder, argv)
        assert fast or not accepted or _left_to_argparse(recorder, argv), argv
        served += fast
    assert served > 150


def test_a_recorder_refuses_what_it_cannot_reproduce():
    for names, kwargs in [(("-z",), {"action": "version", "version": "1"}),
                          (("-z",), {"action": "extend"}),
                          (("-z",), {"nargs": "..."}),
                          (("-z",), {"default": "==SUPPRESS=="}),
                          (("-h",), {}),
                          (("z",), {"dest": "y"}),
                          (("-z",), {"action": "store_true", "type": int})]:
        recorder = Recorder()
        recorder.add_argument(*names, **kwargs)
        assert recorder.unusable and quick_parse(recorder, []) is None, (names, kwargs)


# -- what the fast path imports --------------------------------------------------------------

def test_the_command_line_is_parsed_without_argparse():
    """`memlens count sw:page-faults --by comm,pid` up to its run: argparse and what it
    imports (re, gettext, enum) are ~16-20 ms of a start on a slow machine (issue 12)."""
    code = """
import sys
import memlens.cli as cli
command = cli.load_command("count")
seen = []
command.run = lambda args: seen.append(type(args).__module__)
assert cli.main(["count", "sw:page-faults", "--by", "comm,pid"]) == 0
assert seen == ["memlens.core.quickargs"], seen
print(" ".join(m for m in ("argparse", "gettext", "re", "enum") if m in sys.modules))
"""
    words = fresh_python(code)
    assert words == [], f"imported to parse the command line: {' '.join(words)}"
