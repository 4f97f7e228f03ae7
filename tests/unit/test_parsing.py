"""The shared parsers: strict, bounded, and raising nothing but ParseError, whatever the input."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyplane import parsing


@pytest.mark.parametrize("bad", ["²", "１２", "١٢", "1e3", "-1", " ", "0x10", "1_0", "+1"])
def test_whole_numbers_are_ascii_digits(bad):
    with pytest.raises(parsing.ParseError) as e:
        parsing.whole(bad, "limit")
    assert e.value.illegal


def test_whole_numbers_fit_64_bits():
    assert parsing.whole(str(2**63 - 1), "id") == 2**63 - 1
    for bad in (str(2**63), "9" * 5000):
        with pytest.raises(parsing.ParseError) as e:
            parsing.whole(bad, "id")
        assert not e.value.illegal
    assert parsing.whole("-5", "t", lo=-10) == -5


def test_decimals_are_plain_and_bounded():
    assert parsing.plain_decimal("1000.50", "x") == Decimal("1000.50")
    for bad in ("1e999999999", "NaN", "Infinity", "1.", ".5", "１", "1" * 21):
        with pytest.raises(parsing.ParseError):
            parsing.plain_decimal(bad, "x")
    with pytest.raises(parsing.ParseError):
        parsing.bounded_decimal(Decimal("1E+999999999"), "x")


def test_durations_and_moments_are_bounded():
    assert parsing.duration("1w 2d", "d") == dt.timedelta(days=9)
    for bad in ("99999999999w", "9" * 40, "³d", "１d", "d", ""):
        with pytest.raises(parsing.ParseError):
            parsing.duration(bad, "d")
    assert parsing.moment("2027-01-31", "m") == dt.datetime(2027, 1, 31, 23, 59, 59, tzinfo=dt.UTC)
    assert parsing.moment("2027-01-31T12:00:00+02:00", "m") == dt.datetime(2027, 1, 31, 10, tzinfo=dt.UTC)
    for bad in ("9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00", "2027-02-30", "２０２７-01-01"):
        with pytest.raises(parsing.ParseError):
            parsing.moment(bad, "m")


def test_text_refuses_control_characters_and_surrogates():
    assert parsing.text("  café 🚀 ", "label", max_len=10) == "café 🚀"
    assert parsing.text("a\nb", "ips", max_len=10, multiline=True) == "a\nb"
    for bad in ("a\x00b", "a\x07", "\x9f", "\ud800", "a\nb"):
        with pytest.raises(parsing.ParseError) as e:
            parsing.text(bad, "label", max_len=10)
        assert e.value.illegal
    with pytest.raises(parsing.ParseError):
        parsing.text("x" * 11, "label", max_len=10)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(), max_size=40))
def test_no_input_raises_anything_else(value):
    for call in (
        lambda: parsing.whole(value, "n"),
        lambda: parsing.whole(value, "n", lo=-5),
        lambda: parsing.plain_decimal(value, "d"),
        lambda: parsing.duration(value, "t"),
        lambda: parsing.moment(value, "m"),
        lambda: parsing.text(value, "s", max_len=20),
    ):
        try:
            call()
        except parsing.ParseError as e:
            assert e.message  # noqa: PT017 - any other exception fails the test
