# SPDX-License-Identifier: GPL-2.0-only
"""core/record: the few dataclass behaviours the start-up modules rely on."""
from __future__ import annotations

import pytest

from memlens.core.record import FrozenInstanceError, factory, record, replace


@record
class Mutable:
    a: int
    b: str = "x"
    c: dict = factory(dict)


@record(frozen=True)
class Frozen:
    a: int
    b: tuple = ()


def test_init_defaults_and_factories():
    m = Mutable(1)
    assert (m.a, m.b, m.c) == (1, "x", {})
    assert Mutable(1).c is not m.c  # a new dict each time
    assert Mutable(2, b="y", c={"k": 1}) == Mutable(2, "y", {"k": 1})
    assert Mutable(1) != Mutable(2) and Mutable(1) != (1, "x", {})
    assert repr(Mutable(1)) == "Mutable(a=1, b='x', c={})"


def test_bad_arguments_are_type_errors():
    with pytest.raises(TypeError, match="missing required argument: 'a'"):
        Mutable()
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        Mutable(1, z=2)
    with pytest.raises(TypeError, match="multiple values for argument 'a'"):
        Mutable(1, a=2)
    with pytest.raises(TypeError, match="takes 3 positional arguments but 4"):
        Mutable(1, "b", {}, 4)
    with pytest.raises(TypeError, match="non-default field 'b' follows"):
        @record
        class Bad:
            a: int = 0
            b: int


def test_frozen_is_immutable_and_hashable_mutable_is_not_hashable():
    f = Frozen(1, (2,))
    with pytest.raises(FrozenInstanceError):
        f.a = 2
    with pytest.raises(AttributeError):  # dataclasses' FrozenInstanceError is one too
        del f.b
    assert hash(f) == hash(Frozen(1, (2,))) and len({f, Frozen(1, (2,))}) == 1
    with pytest.raises(TypeError):
        hash(Mutable(1))


def test_replace():
    m = Mutable(1, "y", {"k": 1})
    r = replace(m, a=5)
    assert r == Mutable(5, "y", {"k": 1}) and m.a == 1
    assert replace(Frozen(1), b=(3,)) == Frozen(1, (3,))
    with pytest.raises(TypeError, match="no field 'q'"):
        replace(m, q=1)
