# SPDX-License-Identifier: GPL-2.0-only
"""`memo`: a function's answers kept by its arguments, as functools.cache does.

Written here because importing functools pulls in collections, operator, keyword and
reprlib: ~2.5 ms of every tool's start on this VM (bench/bench_launch.py), for the few
answers about the kernel (is there BTF, can this hook attach) that are asked on the way to
the banner.  Arguments must be hashable (keyword arguments are keyed in the order given);
unbounded unless @memo(maxsize=N) (the flag-text caches of the event tools).
`fn.cache_clear()` forgets, as with functools."""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def memo(fn: Callable[..., Any] | None = None, *, maxsize: int | None = None):
    """@memo, or @memo(maxsize=N): at most N answers kept (all forgotten when the N+1th
    comes: the uses bounded here see a handful of distinct arguments, the bound is against
    a flood of odd values, not an LRU)."""
    if fn is None:
        return lambda f: memo(f, maxsize=maxsize)
    answers: dict[tuple, Any] = {}

    def cached(*args: Any, **kwargs: Any) -> Any:
        key = (args, tuple(kwargs.items())) if kwargs else args
        try:
            return answers[key]
        except KeyError:
            pass
        if maxsize is not None and len(answers) >= maxsize:
            answers.clear()
        answer = answers[key] = fn(*args, **kwargs)
        return answer

    cached.cache_clear = answers.clear  # type: ignore[attr-defined]
    cached.__name__, cached.__qualname__ = fn.__name__, fn.__qualname__
    cached.__doc__, cached.__wrapped__ = fn.__doc__, fn  # type: ignore[attr-defined]
    return cached
