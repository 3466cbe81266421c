# SPDX-License-Identifier: GPL-2.0-only
"""The common command lines parsed without importing argparse (issue 12: every tracing tool
reaches its banner in at most half of bpftrace's time).

argparse is the parser of every command: its help, its usage errors and every unusual form
of a command line.  But importing it costs ~16-20 ms of each start on a slow machine (it
imports re, enum, gettext and warnings), a third of the budget of `memlens count`, so it is
too slow for the start-up path.  Here a command's `add_arguments(parser)` is given a
`Recorder`, which notes each add_argument call, and `quick_parse` parses the command line
with argparse's rules (those of its `_parse_known_args`, Python 3.11) for what it can parse
with certainty.  Anything else (-h, `--`, an abbreviated or unknown option, a negative
number, a value its type refuses, a missing or an extra argument, two options of one
mutually exclusive group) returns None, and the caller asks argparse, which prints the help
or the error as it always did.  What quick_parse returns is what argparse would return
(tests/unit/test_quickargs.py compares the two on every command's examples and more).

Where argparse's behaviour changed between Python versions (3.12 and 3.13: `--`, `-x=VALUE`,
flags joined to a `-` character, values equal to the default in a mutually exclusive group,
an optional positional met just before an option), the forms concerned either return None
here or parse the same in every version.
"""
from __future__ import annotations

SUPPRESS = "==SUPPRESS=="  # argparse.SUPPRESS
# nargs -> (fewest, most) arguments; an int N is (N, N).  REMAINDER ("..."), PARSER
# ("A...") and SUPPRESS are not parsed here.
_BOUNDS = {None: (1, 1), "?": (0, 1), "*": (0, None), "+": (1, None)}
# the keywords each action accepts (argparse raises TypeError on any other)
_KWARGS = {
    "store": {"nargs", "const", "default", "type", "choices", "required", "help", "metavar"},
    "append": {"nargs", "const", "default", "type", "choices", "required", "help", "metavar"},
    "store_const": {"const", "default", "required", "help", "metavar"},
    "append_const": {"const", "default", "required", "help", "metavar"},
    "store_true": {"default", "required", "help"},
    "store_false": {"default", "required", "help"},
    "count": {"default", "required", "help"},
}


class Namespace:
    """What argparse.Namespace offers a command: attributes, vars(), `in`, ==."""

    __hash__ = None  # type: ignore[assignment]  # as argparse's (it defines __eq__)

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)

    def __contains__(self, key: str) -> bool:
        return key in self.__dict__

    def __eq__(self, other):
        if not isinstance(other, Namespace) and not (
                type(other).__name__ == "Namespace" and type(other).__module__ == "argparse"):
            return NotImplemented
        return vars(self) == vars(other)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"Namespace({fields})"


class _Arg:
    """One add_argument call, with argparse's defaults applied."""

    __slots__ = ("options", "dest", "action", "nargs", "const", "default", "type", "choices",
                 "required", "conflicts", "exclusive")

    def __init__(self, options, dest, action, nargs, const, default, type_, choices,
                 required):
        self.options, self.dest, self.action, self.nargs = options, dest, action, nargs
        self.const, self.default, self.type, self.choices = const, default, type_, choices
        self.required = required
        self.conflicts: list[_Arg] = []  # the other members of its exclusive groups
        self.exclusive = False


_HELP = _Arg(("-h", "--help"), SUPPRESS, "help", 0, None, SUPPRESS, None, None, False)


class Recorder:
    """Given to a command's add_arguments(parser) instead of an argparse parser: it notes
    each argument as argparse would make it (same dest, default, nargs), for quick_parse.
    A call it cannot reproduce with certainty (an action class, a parser-level default, a
    keyword argparse would refuse) marks it unusable: quick_parse then returns None."""

    def __init__(self):
        self.args: list[_Arg] = []
        self.options: dict[str, _Arg] = {"-h": _HELP, "--help": _HELP}  # add_help=True
        self.groups: list[tuple[bool, list[_Arg]]] = []  # (required, members)
        self.unusable = ""  # why quick_parse must not be used

    def add_argument(self, *names: str, **kwargs):
        return self._add(names, kwargs, None)

    def add_mutually_exclusive_group(self, required: bool = False):
        members: list[_Arg] = []
        self.groups.append((required, members))
        return _Group(self, members)

    def add_argument_group(self, *args, **kwargs):
        # an argument group only changes the help: its arguments are the parser's
        return _Group(self, None)

    def set_defaults(self, **kwargs) -> None:
        self.unusable = "set_defaults"

    def _add(self, names, kwargs, group):
        arg = self._make(names, dict(kwargs))
        if arg is None:
            return None
        if group is not None:
            if arg.required:  # argparse: "mutually exclusive arguments must be optional"
                self.unusable = "a required argument in an exclusive group"
                return None
            for other in group:
                other.conflicts.append(arg)
                arg.conflicts.append(other)
            arg.exclusive = True
            group.append(arg)
        for option in arg.options:
            if option in self.options:  # argparse: "conflicting option string"
                self.unusable = f"option {option} given twice"
                return None
            self.options[option] = arg
        self.args.append(arg)
        return arg

    def _make(self, names, kwargs) -> _Arg | None:
        def refuse(why: str) -> None:
            self.unusable = f"{names}: {why}"

        action = kwargs.pop("action", "store")
        if not isinstance(action, str) or action not in _KWARGS:
            return refuse(f"action {action!r}")
        if set(kwargs) - _KWARGS[action] - {"dest"}:
            return refuse(f"keywords {sorted(set(kwargs) - _KWARGS[action])}")
        positional = not names or len(names) == 1 and not names[0].startswith("-")
        if positional:
            if not names or "dest" in kwargs or "required" in kwargs or action != "store":
                return refuse("a positional argument of an unusual form")
            dest, options = names[0], ()
        else:
            if any(len(n) < 2 or not n.startswith("-") for n in names):
                return refuse("an option string")
            dest = kwargs.pop("dest", None)
            if dest is None:
                long = [n for n in names if n.startswith("--")]
                dest = (long or names)[0].lstrip("-").replace("-", "_")
            options = names
        if not dest or dest == SUPPRESS:
            return refuse("dest")
        if action in ("store_true", "store_false"):
            nargs, const = 0, action == "store_true"
            default = kwargs.get("default", not const)
        elif action in ("store", "append"):
            nargs, const = kwargs.get("nargs"), kwargs.get("const")
            default = kwargs.get("default")
            if not (nargs in _BOUNDS or (type(nargs) is int and nargs > 0)):
                return refuse(f"nargs {nargs!r}")
            if const is not None and nargs != "?":
                return refuse("const without nargs='?'")
        else:  # store_const, append_const, count
            nargs, const, default = 0, kwargs.get("const"), kwargs.get("default")
        type_ = kwargs.get("type")
        if type_ is not None and not callable(type_):
            return refuse("type not callable")
        if isinstance(default, str) and default == SUPPRESS:
            return refuse("default=SUPPRESS")
        if positional:
            required = nargs not in ("?", "*") or (nargs == "*" and "default" not in kwargs)
        else:
            required = bool(kwargs.get("required", False))
        return _Arg(tuple(options), dest, action, nargs, const, default, type_,
                    kwargs.get("choices"), required)


class _Group:
    """An argument group or a mutually exclusive group of a Recorder."""

    def __init__(self, recorder: Recorder, members: list[_Arg] | None):
        self._recorder, self._members = recorder, members

    def add_argument(self, *names: str, **kwargs):
        return self._recorder._add(names, kwargs, self._members)

    def add_mutually_exclusive_group(self, required: bool = False):
        if self._members is not None:  # nested in an exclusive group: deprecated, rare
            self._recorder.unusable = "a group nested in an exclusive group"
        return self._recorder.add_mutually_exclusive_group(required)

    def add_argument_group(self, *args, **kwargs):
        self._recorder.unusable = "a group nested in a group"
        return self


class _Unsure(Exception):
    """argparse would report an error here, or this form is not parsed by quick_parse."""


def _value(arg: _Arg, text: str):
    """argparse's _get_value: the type's conversion; any exception is argparse's to report."""
    if arg.type is None:
        return text
    try:
        return arg.type(text)
    except Exception:
        raise _Unsure from None


def _check(arg: _Arg, value) -> None:
    """argparse's _check_value: a value outside the choices is an error."""
    try:
        if arg.choices is not None and value not in arg.choices:
            raise _Unsure
    except _Unsure:
        raise
    except Exception:
        raise _Unsure from None


def _values(arg: _Arg, strings: list[str]):
    """argparse's _get_values (no `--` is ever among the strings here)."""
    if not strings and arg.nargs == "?":
        value = arg.default if not arg.options else arg.const
        if isinstance(value, str):
            value = _value(arg, value)
            _check(arg, value)
        return value
    if not strings and arg.nargs == "*" and not arg.options:
        value = arg.default if arg.default is not None else strings
        _check(arg, value)
        return value
    if len(strings) == 1 and arg.nargs in (None, "?"):
        value = _value(arg, strings[0])
        _check(arg, value)
        return value
    values = [_value(arg, s) for s in strings]
    for v in values:
        _check(arg, v)
    return values


def _fit(bounds: list[tuple[int, int | None]], n: int) -> list[int] | None:
    """How many of `n` arguments each of a run of positionals takes: the first solution a
    regular expression of greedy groups finds (argparse matches `(A?)(A+)...` on the
    pattern of the command line), or None if there is none."""
    if not bounds:
        return []
    low, high = bounds[0]
    for k in range(n if high is None else min(high, n), low - 1, -1):
        rest = _fit(bounds[1:], n - k)
        if rest is not None:
            return [k, *rest]
    return None


def _bounds(arg: _Arg) -> tuple[int, int | None]:
    return _BOUNDS.get(arg.nargs, (arg.nargs, arg.nargs))


def quick_parse(recorder: Recorder, argv: list[str]) -> Namespace | None:
    """The Namespace argparse would make of `argv`, or None where argparse must parse it
    (it then prints the help, or the usage error)."""
    if recorder.unusable:
        return None
    try:
        return _parse(recorder, list(argv))
    except _Unsure:
        return None


def _parse(rec: Recorder, argv: list[str]) -> Namespace:
    options = rec.options
    # each option's index: (arg, option string, explicit argument); pattern: "O" for an
    # option, "A" for an argument, as argparse classifies them (its _parse_optional)
    found: dict[int, tuple[_Arg, str, str | None]] = {}
    pattern = []
    for i, token in enumerate(argv):
        if not token or token[0] != "-":
            pattern.append("A")
            continue
        if token in options:
            found[i] = (options[token], token, None)
        elif token == "-" or token == "--":
            raise _Unsure  # a positional '-'; `--` changed meaning in 3.12
        elif token[1] == "-":
            # --opt=VALUE; else an abbreviation, an unknown option or a value with a space:
            # argparse decides
            name, eq, value = token.partition("=")
            if not eq or name not in options:
                raise _Unsure
            found[i] = (options[name], name, value)
        else:
            # -xVALUE or -xyz: argparse 3.12 and later refuse some forms with '=' (-x=VALUE)
            # that 3.11 accepts; a negative number, an unknown or a prefix of a longer
            # single-dash option: argparse decides
            if "=" in token or token[:2] not in options or any(
                    o.startswith(token) for o in options):
                raise _Unsure
            found[i] = (options[token[:2]], token[:2], token[2:])
        if found[i][0] is _HELP:
            raise _Unsure
        pattern.append("O")

    ns: dict[str, object] = {}
    for arg in rec.args:
        if arg.dest not in ns:
            ns[arg.dest] = arg.default
    seen: set[_Arg] = set()
    seen_non_default: set[_Arg] = set()

    def take(arg: _Arg, strings: list[str]) -> None:
        seen.add(arg)
        value = _values(arg, strings)
        if arg.exclusive and (value is not arg.default) != bool(arg.options or strings):
            # present in its exclusive group for 3.13 (given), absent for 3.11 (its value
            # is the default's object), or the reverse
            raise _Unsure
        if value is not arg.default:
            seen_non_default.add(arg)
            if any(c in seen_non_default for c in arg.conflicts):
                raise _Unsure  # "not allowed with argument ..."
        act = arg.action
        if act == "store":
            ns[arg.dest] = value
        elif act in ("store_const", "store_true", "store_false"):
            ns[arg.dest] = arg.const
        elif act == "count":
            n = ns.get(arg.dest)
            ns[arg.dest] = (0 if n is None else n) + 1
        else:  # append, append_const
            items = ns.get(arg.dest)
            if items is not None and type(items) is not list:
                raise _Unsure  # argparse copies it with copy.copy
            ns[arg.dest] = [*(items or ()), value if act == "append" else arg.const]

    def leading_arguments(start: int) -> int:
        n = 0
        while start + n < len(pattern) and pattern[start + n] == "A":
            n += 1
        return n

    def consume_optional(start: int) -> int:
        arg, option, explicit = found[start]
        taken = []
        while True:
            if explicit is not None:
                if arg.nargs == 0 and option[1] != "-":
                    # -xyz: flags joined; the next letter is an option of its own
                    taken.append((arg, []))
                    option = "-" + explicit[0]
                    if explicit[0] == "-" or option not in options:
                        raise _Unsure  # "ignored explicit argument"
                    arg, explicit = options[option], explicit[1:] or None
                    if arg is _HELP:
                        raise _Unsure
                    continue
                if arg.nargs == 0 or _bounds(arg)[0] > 1:
                    raise _Unsure  # "ignored explicit argument", "expected N arguments"
                taken.append((arg, [explicit]))
                stop = start + 1
                break
            n = leading_arguments(start + 1)
            low, high = _bounds(arg) if arg.nargs != 0 else (0, 0)
            if n < low:
                raise _Unsure  # "expected one argument"
            count = n if high is None else min(high, n)
            taken.append((arg, argv[start + 1:start + 1 + count]))
            stop = start + 1 + count
            break
        for a, strings in taken:
            take(a, strings)
        return stop

    positionals = [a for a in rec.args if not a.options]

    def consume_positionals(start: int) -> int:
        n = leading_arguments(start)
        for i in range(len(positionals), 0, -1):  # argparse's _match_arguments_partial
            counts = _fit([_bounds(a) for a in positionals[:i]], n)
            if counts is not None:
                break
        else:
            counts = []
        for arg, count in zip(positionals, counts):
            take(arg, argv[start:start + count])
            start += count
        del positionals[:len(counts)]
        return start

    # argparse's loop: the positionals before each option, the option, and so on
    start = 0
    last_option = max(found, default=-1)
    while start <= last_option:
        next_option = min(i for i in found if i >= start)
        if start != next_option:
            end = consume_positionals(start)
            if end > start:
                start = end
                continue
        if start not in found:
            raise _Unsure  # arguments no positional takes: "unrecognized arguments"
        start = consume_optional(start)
    if consume_positionals(start) != len(argv):
        raise _Unsure  # "unrecognized arguments"

    for arg in rec.args:
        if arg in seen:
            continue
        if arg.required:
            raise _Unsure  # "the following arguments are required"
        if isinstance(arg.default, str) and ns[arg.dest] is arg.default:
            ns[arg.dest] = _value(arg, arg.default)  # argparse converts a string default
    for required, members in rec.groups:
        if required and not any(m in seen_non_default for m in members):
            raise _Unsure  # "one of the arguments ... is required"
    return Namespace(**ns)
