"""The checks a rope type's parameters run in ``__post_init__``: ropekit's own types use them, and so may
a plugin's (README, "Your own rope type"). Each takes the key it checks, so its ``RopeConfigError``
names it: ``check_fields(self, number, "alpha")`` coerces and validates the field ``alpha`` of a frozen
dataclass as a finite number > 0.
"""

from __future__ import annotations

import math
from typing import Any


class RopeConfigError(ValueError):
    """A rope configuration that ropekit refuses; the message names the key and the fix."""


def number(key: str, value: Any, *, minimum: float = 0.0, strict: bool = True) -> float:
    """A finite real number > minimum (or >= minimum when ``strict`` is False)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > minimum if strict else value >= minimum):
        return float(value)
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    raise RopeConfigError(f"{key}={value!r} is not allowed; expected a finite number {bound}")


def is_count(value: Any, minimum: int = 1) -> bool:
    """An integer (not a bool) >= minimum: the one check behind every length, size and count."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def integer(key: str, value: Any) -> int:
    """A positive integer; an integral float (``8192.0`` from some JSON writers) is accepted."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if is_count(value):
        return value
    raise RopeConfigError(f"{key}={value!r} is not allowed; expected a positive integer")


def numbers(key: str, value: Any) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise RopeConfigError(f"{key}={value!r} is not allowed; expected a non-empty list of numbers")
    return tuple(number(f"{key}[{i}]", v) for i, v in enumerate(value))


def set_field(obj: Any, key: str, value: Any) -> None:
    """Store a coerced value on a frozen dataclass (the dataclasses idiom for __post_init__)."""
    object.__setattr__(obj, key, value)


def check_fields(obj: Any, check: Any, *keys: str, optional: bool = False, **options: Any) -> None:
    """Validate and coerce the fields ``keys`` of a frozen dataclass with ``check``; with
    ``optional``, a field left at None is skipped."""
    for key in keys:
        value = getattr(obj, key)
        if not (optional and value is None):
            set_field(obj, key, check(key, value, **options))
