# SPDX-License-Identifier: GPL-2.0-only
"""Plain value classes for the modules every tracing tool imports before its banner, without
`dataclasses`: that module imports `inspect` (and ast, dis, tokenize with it), ~15 ms of
each tool's start here (bench/launch_phases.py, tests/unit/test_startup_imports.py).

    @record                          # as @dataclass: __init__, __repr__, __eq__
    class Probe:
        kind: str
        text: str
        extra: dict = factory(dict)  # as field(default_factory=dict)

    @record(frozen=True)             # as @dataclass(frozen=True): immutable, hashable
    class Column: ...

    replace(probe, text="t:a:b")     # as dataclasses.replace

Fields are the class's annotations in order (no inheritance, no ClassVar, no field options
beyond a default factory): what the classes using it need, kept small enough to read.
"""
from __future__ import annotations


class FrozenInstanceError(AttributeError):
    pass


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make):
        self.make = make


def factory(make) -> object:
    """A field's default made anew for each instance (a dict, a list)."""
    return _Factory(make)


def _fields(cls) -> tuple[str, ...]:
    return tuple(cls.__dict__.get("__annotations__", {}))


def record(cls=None, *, frozen: bool = False):
    def wrap(cls):
        names = _fields(cls)
        defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
        seen_default = False
        for n in names:  # as dataclasses: no field without a default after one with
            if n in defaults:
                seen_default = True
            elif seen_default:
                raise TypeError(f"non-default field {n!r} follows a default one in "
                                f"{cls.__name__}")
        for n, d in defaults.items():
            if isinstance(d, _Factory):
                delattr(cls, n)
        names_set = frozenset(names)
        # fields go into the instance's __dict__ at once (no per-field __setattr__, which a
        # frozen record refuses anyway): ~2x faster than one setattr each, and the
        # registry, hooks and tracepoint formats make a few hundred records at every start
        def __init__(self, *args, **kwargs):
            if len(args) > len(names):
                raise TypeError(f"{cls.__name__}() takes {len(names)} positional arguments "
                                f"but {len(args)} were given")
            values = dict(zip(names, args)) if args else {}
            if kwargs:
                unknown = kwargs.keys() - names_set
                if unknown:
                    raise TypeError(f"{cls.__name__}() got an unexpected keyword argument "
                                    f"{min(unknown)!r}")
                twice = kwargs.keys() & values.keys()
                if twice:
                    raise TypeError(f"{cls.__name__}() got multiple values for argument "
                                    f"{min(twice)!r}")
                values.update(kwargs)
            if len(values) < len(names):
                for n in names:
                    if n not in values:
                        if n not in defaults:
                            raise TypeError(f"{cls.__name__}() missing required argument: "
                                            f"{n!r}")
                        d = defaults[n]
                        values[n] = d.make() if isinstance(d, _Factory) else d
            # in the fields' order, whatever the arguments' (vars() and JSON keep it)
            self.__dict__.update({n: values[n] for n in names} if kwargs else values)
            post = getattr(self, "__post_init__", None)
            if post is not None:
                post()

        def __repr__(self):
            inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
            return f"{type(self).__qualname__}({inner})"

        def __eq__(self, other):
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in names)

        cls.__init__, cls.__repr__, cls.__eq__ = __init__, __repr__, __eq__
        cls.__record_fields__ = names
        if frozen:
            def __setattr__(self, name, value):
                raise FrozenInstanceError(f"cannot assign to field {name!r}")

            def __delattr__(self, name):
                raise FrozenInstanceError(f"cannot delete field {name!r}")

            def __hash__(self):
                return hash(tuple(getattr(self, n) for n in names))

            cls.__setattr__, cls.__delattr__, cls.__hash__ = __setattr__, __delattr__, __hash__
        else:
            cls.__hash__ = None  # mutable and compared by value: unhashable, as dataclasses
        return cls

    return wrap if cls is None else wrap(cls)


def replace(obj, **changes):
    """A copy of a record with some fields changed."""
    names = type(obj).__record_fields__
    unknown = set(changes) - set(names)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field {sorted(unknown)[0]!r}")
    return type(obj)(**{n: changes.get(n, getattr(obj, n)) for n in names})
