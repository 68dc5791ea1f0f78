"""validation: each check returns what it was given (as int or float) or raises one message form that names
the argument, what it got and what it expects."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from luna_semantic_detailer import validation


@given(st.integers(-5, 5), st.integers(-3, 3))
def test_int_at_least_is_the_plain_predicate(value, minimum):
    if value >= minimum:
        assert validation.int_at_least("count", value, minimum) == value
    else:
        with pytest.raises(ValueError, match=rf"^count is {value}; expected an int >= {minimum}$"):
            validation.int_at_least("count", value, minimum)


@pytest.mark.parametrize("value", [True, 1.0, "1", None, torch.tensor(1)])
def test_int_checks_refuse_what_is_not_an_int(value):
    for check in (lambda v: validation.int_at_least("n", v, 0), lambda v: validation.positive_int("n", v), validation.seed):
        with pytest.raises(ValueError, match="expected an int"):
            check(value)


def test_positive_int_and_seed_bounds():
    assert validation.positive_int("width", np.int64(3)) == 3 and type(validation.positive_int("width", np.int64(3))) is int
    with pytest.raises(ValueError, match=r"^width is 0; expected an int >= 1$"):
        validation.positive_int("width", 0)
    assert validation.seed(0) == 0 and validation.seed(2**64 - 1) == 2**64 - 1
    for bad in (-1, 2**64):
        with pytest.raises(ValueError, match=r"^seed is .*; expected an int in \[0, 2\*\*64 - 1\]$"):
            validation.seed(bad)
    with pytest.raises(ValueError, match="^noise seed is -1"):
        validation.seed(-1, "noise seed")


@pytest.mark.parametrize("value, expected", [(3, 3.0), (0.25, 0.25), (np.float32(0.5), 0.5), (torch.tensor(2.0), 2.0)])
def test_finite_number_takes_real_scalars(value, expected):
    result = validation.finite_number("score", value)
    assert result == expected and type(result) is float


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, "0.5", None, torch.tensor([1.0, 2.0]), [1.0]])
def test_finite_number_refuses_the_rest(value):
    with pytest.raises(ValueError, match=r"^score is .*; expected a finite number$"):
        validation.finite_number("score", value)


def test_number_at_least():
    assert validation.number_at_least("crop_factor", 1, 1.0) == 1.0
    with pytest.raises(ValueError, match=r"^crop_factor is 0.5; expected a number >= 1$"):
        validation.number_at_least("crop_factor", 0.5, 1.0)
    with pytest.raises(ValueError, match="expected a finite number"):
        validation.number_at_least("crop_factor", math.nan, 1.0)


def test_finite_numbers():
    assert validation.finite_numbers("box", (1, np.float64(2.5), torch.tensor(3.0), 4), 4, "4 numbers") == (1.0, 2.5, 3.0, 4.0)
    cases = [((1, 2, 3), r"^box has 3 numbers \(\(1, 2, 3\)\); expected 4 numbers$"),
             ((1, 2, 3, math.nan), r"^box contains NaN or infinity .*; expected 4 numbers$"),
             ((1, 2, "3", 4), r"^box is \(1, 2, '3', 4\); expected 4 numbers$"),
             ((1, 2, True, 4), "expected 4 numbers"), ("1234", "expected 4 numbers"), (5, r"^box is 5; expected 4 numbers$")]
    for values, message in cases:
        with pytest.raises(ValueError, match=message):
            validation.finite_numbers("box", values, 4, "4 numbers")


def test_number_range():
    assert validation.number_range("score", 0, 1) == (0.0, 1.0) and validation.number_range("area", 0.5, 0.5) == (0.5, 0.5)
    with pytest.raises(ValueError, match=r"^score range is empty: min 0.8 > max 0.2; expected min <= max$"):
        validation.number_range("score", 0.8, 0.2)
    for low, high in ((math.nan, 1.0), (0.0, math.nan), ("a", 1.0)):
        with pytest.raises(ValueError, match="^area range is .*; expected two numbers, not NaN, with min <= max$"):
            validation.number_range("area", low, high)


def test_one_of():
    assert validation.one_of("order", "score desc", ("score desc", "input order")) == "score desc"
    with pytest.raises(ValueError, match=r"^unknown order 'best'; expected one of score desc, input order$"):
        validation.one_of("order", "best", ("score desc", "input order"))
