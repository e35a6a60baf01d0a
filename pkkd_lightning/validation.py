"""Argument checks shared by every constructor: each error names the config key and the accepted values.

Choices are ``typing.Literal`` types, written once where they belong (``ops.backends.AdderBackendName``,
``module.Mode``, ...); :func:`choices` derives the runtime tuple from the type, so the accepted values, the
``--help`` text (jsonargparse reads the annotation) and the tests all come from that one definition.
"""

from __future__ import annotations

import math
from typing import Any, get_args


def choices(literal: Any) -> tuple[Any, ...]:
    """The values of a ``Literal[...]`` type, in the order written."""
    values = get_args(literal)
    if not values:
        raise TypeError(f"{literal!r} is not a Literal type")
    return values


def check_choice(key: str, value: Any, literal: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is one of the values of ``literal``."""
    accepted = choices(literal)
    if value not in accepted:
        raise ValueError(f"`{key}` must be one of {', '.join(map(repr, accepted))}; got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_number(
    key: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    optional: bool = False,
) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number in the interval given by the bounds.

    Args:
        key: the config key, named in the message (``model.beta``).
        value: the value to check.
        low, high: inclusive bounds (``None``: unbounded); ``low_open`` makes the lower bound exclusive.
        optional: accept ``None`` as well.
    """
    if optional and value is None:
        return
    ok = _is_number(value)
    ok = ok and (low is None or (value > low if low_open else value >= low)) and (high is None or value <= high)
    if not ok:
        left = "(" if low_open else "["
        interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        accepted = f"a finite number in {interval}" + (" or null" if optional else "")
        raise ValueError(f"`{key}` must be {accepted}; got {value!r}")


def check_int(key: str, value: Any, minimum: int, optional: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an int ``>= minimum`` (or ``None`` when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        accepted = f"an int >= {minimum}" + (" or null" if optional else "")
        raise ValueError(f"`{key}` must be {accepted}; got {value!r}")
