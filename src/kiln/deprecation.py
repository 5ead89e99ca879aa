"""What kiln deprecated: old spellings that still work, with a warning naming the new one.

Each old spelling is kept for a while so that code written against it does not break silently:
it works as before and warns once per call with a `FutureWarning` (shown by default, unlike
`DeprecationWarning`) that says what to write instead.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

Function = TypeVar("Function", bound=Callable[..., Any])


def warn(old: str, new: str) -> None:
    """Warn that `old` is deprecated, and say to write `new` instead.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn("fit(epoch_hook=f)", "a callback")
        >>> str(caught[0].message)
        'fit(epoch_hook=f) is deprecated and will be removed; use a callback instead.'
    """
    warnings.warn(f"{old} is deprecated and will be removed; use {new} instead.", FutureWarning, 3)


def keywords_after(count: int, names: Sequence[str], owner: str) -> Callable[[Function], Function]:
    """Accept, with a warning, positional arguments that are now keyword-only.

    The decorated function takes `count` positional arguments (`self` included); older code
    passed `names`, in this order, positionally after them.

    Example:
        >>> @keywords_after(1, ["b"], "f")
        ... def f(a, *, b=0):
        ...     return a + b
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     f(1, 2)
        3
    """

    def decorate(function: Function) -> Function:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if len(args) > count:
                extra = args[count:]
                if len(extra) > len(names):
                    raise TypeError(
                        f"{owner} takes at most {count + len(names)} positional arguments; "
                        f"received {len(args)}."
                    )
                moved = dict(zip(names, extra, strict=False))
                twice = sorted(set(moved) & set(kwargs))
                if twice:
                    raise TypeError(f"{owner} received {', '.join(twice)} twice.")
                spelled = ", ".join(f"{name}=..." for name in moved)
                warn(f"Passing {', '.join(moved)} to {owner} by position", f"`{spelled}`")
                args, kwargs = args[:count], {**kwargs, **moved}
            return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def fit_epoch_hook(deprecated: dict[str, Any]) -> Callable[..., Any] | None:
    """Return `fit`'s deprecated `epoch_hook` (with a warning), refusing any other keyword.

    Raises:
        TypeError: For a keyword `fit` does not take.
    """
    hook = cast("Callable[..., Any] | None", deprecated.pop("epoch_hook", None))
    if deprecated:
        raise TypeError(f"fit() got unexpected keyword arguments: {', '.join(sorted(deprecated))}.")
    if hook is not None:
        warn("fit(epoch_hook=fn)", "a callback whose on_epoch_end(trainer) calls fn")
    return hook
