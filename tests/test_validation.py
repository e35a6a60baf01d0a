"""The shared argument checks: messages name the key and the accepted values; choices come from Literal types."""

from __future__ import annotations

import math
from typing import Literal

import pytest

from pkkd_lightning.validation import check_choice, check_int, check_number, choices

Colour = Literal["red", "green"]


def test_choices_come_from_the_literal_type_in_order():
    assert choices(Colour) == ("red", "green")
    with pytest.raises(TypeError):
        choices(str)


def test_check_choice_names_the_key_and_every_accepted_value():
    check_choice("model.colour", "red", Colour)
    with pytest.raises(ValueError, match=r"`model\.colour` must be one of 'red', 'green'; got 'blue'"):
        check_choice("model.colour", "blue", Colour)


@pytest.mark.parametrize(
    "value,kwargs,ok",
    [
        (0.5, {"low": 0.0, "high": 1.0}, True),
        (0.0, {"low": 0.0, "high": 1.0}, True),
        (0.0, {"low": 0.0, "low_open": True}, False),
        (1.5, {"low": 0.0, "high": 1.0}, False),
        (math.nan, {}, False),
        (math.inf, {}, False),
        (True, {}, False),
        ("0.1", {}, False),
        (None, {"optional": True}, True),
        (None, {}, False),
        (3, {"low": 0.0}, True),
    ],
)
def test_check_number(value, kwargs, ok):
    if ok:
        check_number("model.x", value, **kwargs)
    else:
        with pytest.raises(ValueError, match=r"`model\.x` must be a finite number in"):
            check_number("model.x", value, **kwargs)


def test_check_number_spells_out_the_interval():
    with pytest.raises(ValueError, match=r"in \(0\.0, inf\] or null; got -1"):
        check_number("model.eta", -1, low=0.0, low_open=True, optional=True)


@pytest.mark.parametrize("value,ok", [(3, True), (2, True), (1, False), (2.0, False), (True, False), (None, False)])
def test_check_int(value, ok):
    if ok:
        check_int("data.batch_size", value, 2)
    else:
        with pytest.raises(ValueError, match=r"`data\.batch_size` must be an int >= 2; got"):
            check_int("data.batch_size", value, 2)
