"""Argument checks shared by every layer, with one error policy.

A value of the wrong *type* raises ``TypeError``; a value of the right type but outside what
is allowed raises ``ValueError``. Every message names the argument, says what was expected
and shows what came. This module imports nothing from flowinfer, so any layer may use it.

Example:
    >>> check_int(3, "epochs")
    3
    >>> check_int(0, "epochs")
    Traceback (most recent call last):
        ...
    ValueError: epochs must be an integer >= 1, got 0
    >>> check_number(0.5, "lr", low=0.0, low_open=True)
    0.5
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_bool", "check_callable", "check_choice", "check_int", "check_number",
           "check_shape", "is_int", "is_number"]


def is_int(value: Any) -> bool:
    """True for a Python or numpy integer that is not a bool."""
    import numbers

    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for a real Python or numpy number that is not a bool."""
    import numbers

    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(value: Any, name: str, lowest: int = 1, *, highest: int | None = None,
              allow_none: bool = False) -> Any:
    """Return ``value`` as an ``int`` if it is an integer in ``[lowest, highest]``.

    Args:
        value: what the caller passed.
        name: the argument's name, for the message.
        lowest: the smallest allowed value.
        highest: the largest allowed value (None: no upper bound).
        allow_none: accept (and return) None.

    Raises:
        TypeError: ``value`` is not an integer (bools are not integers here).
        ValueError: ``value`` is outside ``[lowest, highest]``.
    """
    if value is None and allow_none:
        return None
    extra = " or None" if allow_none else ""
    if not is_int(value):
        raise TypeError(f"{name} must be an integer >= {lowest}{extra}, got "
                        f"{type(value).__name__} {value!r}")
    if value < lowest or (highest is not None and value > highest):
        bound = f"in [{lowest}, {highest}]" if highest is not None else f">= {lowest}"
        raise ValueError(f"{name} must be an integer {bound}{extra}, got {value!r}")
    return int(value)


def check_number(value: Any, name: str, *, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False,
                 allow_none: bool = False) -> Any:
    """Return ``value`` as a finite ``float`` inside the given interval.

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: it is NaN, infinite, or outside the interval.
    """
    if value is None and allow_none:
        return None
    want = "a finite number" + _interval(low, high, low_open, high_open)
    if allow_none:
        want += " or None"
    if not is_number(value):
        raise TypeError(f"{name} must be {want}, got {type(value).__name__} {value!r}")
    v = float(value)
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if not math.isfinite(v) or too_low or too_high:
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return v


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if math.isinf(low) and math.isinf(high):
        return ""
    if math.isinf(high):
        return f" {'>' if low_open else '>='} {low:g}"
    if math.isinf(low):
        return f" {'<' if high_open else '<='} {high:g}"
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    return f" in {left}{low:g}, {high:g}{right}"


def check_bool(value: Any, name: str, *, allow_none: bool = False) -> Any:
    """Return ``value`` if it is True or False (or None when allowed), else ``TypeError``."""
    if value is None and allow_none:
        return None
    if not isinstance(value, bool):
        extra = " or None" if allow_none else ""
        raise TypeError(f"{name} must be True or False{extra}, got {type(value).__name__} "
                        f"{value!r}")
    return value


def check_choice(value: Any, name: str, choices: tuple) -> Any:
    """Return ``value`` if it is one of ``choices``, else ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_callable(value: Any, name: str, *, allow_none: bool = False) -> Any:
    """Return ``value`` if it is callable (or None when allowed), else ``TypeError``."""
    if value is None and allow_none:
        return None
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    return value


def check_shape(value: Any, name: str, *, rank: int | None = None) -> tuple[int, ...]:
    """Return ``value`` as a tuple of positive ints (a tensor shape such as ``(C, H, W)``).

    Args:
        value: what the caller passed: a sequence (or ``torch.Size``) of integers.
        name: the argument's name, for the message.
        rank: the required number of sizes (None: any non-zero number).

    Raises:
        TypeError: ``value`` is not a sequence of integers.
        ValueError: it has the wrong number of sizes, or a size below 1.

    Example:
        >>> check_shape([1, 28, 28], "shape", rank=3)
        (1, 28, 28)
    """
    from collections.abc import Sequence

    want = "a (C, H, W) sequence of 3 positive integers" if rank == 3 else (
        f"a sequence of {rank} positive integers" if rank is not None
        else "a non-empty sequence of positive integers")
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        # torch.Size is a tuple, hence a Sequence.
        raise TypeError(f"{name} must be {want}, got {type(value).__name__} {value!r}")
    sizes = tuple(value)
    if not all(is_int(s) for s in sizes):
        raise TypeError(f"{name} must be {want}, got {value!r}")
    if (rank is not None and len(sizes) != rank) or not sizes or min(sizes) < 1:
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return tuple(int(s) for s in sizes)
