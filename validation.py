"""Argument checks shared by every layer of the pack: pure Python that imports nothing of it, so the types of
luna_types and the kernels both stand on it.

Each returns the checked value or raises a ValueError of one form, "<name> is <value>; expected <what>", so a message
says which argument, what it got and what to give instead.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

SEED_MAX = 2**64 - 1


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def int_at_least(name: str, value: object, minimum: int) -> int:
    """`value` as an int if it is an integer (not a bool) of at least `minimum`."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name} is {value!r}; expected an int >= {minimum}")
    return int(value)


def positive_int(name: str, value: object) -> int:
    """`value` as an int if it is an integer (not a bool) of at least 1."""
    return int_at_least(name, value, 1)


def seed(value: object, name: str = "seed") -> int:
    """`value` as an int if it is an integer seed in [0, 2**64 - 1], the range torch.Generator.manual_seed takes."""
    if not _is_int(value) or not 0 <= value <= SEED_MAX:
        raise ValueError(f"{name} is {value!r}; expected an int in [0, 2**64 - 1]")
    return int(value)


def _real(value: object) -> float | None:
    """`value` as a float if float() takes it and it is no bool or text (numpy and 0-d torch scalars are), else None."""
    if isinstance(value, (bool, str, bytes)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return None


def finite_number(name: str, value: object) -> float:
    """`value` as a float if it is a finite real number (not a bool or a string)."""
    number = _real(value)
    if number is None or not math.isfinite(number):
        raise ValueError(f"{name} is {value!r}; expected a finite number")
    return number


def number_at_least(name: str, value: object, minimum: float) -> float:
    """`value` as a float if it is a finite real number (not a bool) of at least `minimum`."""
    number = finite_number(name, value)
    if number < minimum:
        raise ValueError(f"{name} is {value!r}; expected a number >= {minimum:g}")
    return number


def finite_numbers(name: str, values: Iterable[object], count: int, expected: str) -> tuple[float, ...]:
    """`count` finite real numbers (see finite_number) from `values` as floats; `expected` describes them in the error."""
    try:
        floats = [_real(v) for v in values]
    except TypeError:
        raise ValueError(f"{name} is {values!r}; expected {expected}") from None
    if isinstance(values, (str, bytes)) or None in floats:
        raise ValueError(f"{name} is {values!r}; expected {expected}")
    if len(floats) != count:
        raise ValueError(f"{name} has {len(floats)} numbers ({values!r}); expected {expected}")
    if not all(math.isfinite(v) for v in floats):
        raise ValueError(f"{name} contains NaN or infinity ({values!r}); expected {expected}")
    return tuple(floats)


def number_range(name: str, low: float, high: float) -> tuple[float, float]:
    """(low, high) as floats if both are real numbers, not NaN, with low <= high."""
    bounds = (_real(low), _real(high))
    if None in bounds or any(math.isnan(v) for v in bounds):
        raise ValueError(f"{name} range is [{low!r}, {high!r}]; expected two numbers, not NaN, with min <= max")
    low, high = bounds
    if low > high:
        raise ValueError(f"{name} range is empty: min {low} > max {high}; expected min <= max")
    return low, high


def one_of(name: str, value: object, choices: Sequence[str]) -> str:
    """`value` if it is one of `choices`."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
    return value
