"""The trigger rules of conditional orders (keyplane.exchange.triggers), against a plain reading of
their definition: directions, immediate triggers, plain stops, trailing stops with and without an
activation price."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from keyplane.exchange import triggers as TR


def test_directions_follow_binance():
    assert TR.direction("STOP_LOSS", "SELL") == TR.direction("STOP_LOSS_LIMIT", "SELL") == "DOWN"
    assert TR.direction("TAKE_PROFIT", "BUY") == TR.direction("TAKE_PROFIT_LIMIT", "BUY") == "DOWN"
    assert TR.direction("STOP_LOSS", "BUY") == TR.direction("TAKE_PROFIT_LIMIT", "SELL") == "UP"


def test_would_trigger():
    assert TR.would_trigger("STOP_LOSS", "SELL", 100, 100)
    assert not TR.would_trigger("STOP_LOSS", "SELL", 99, 100)
    assert TR.would_trigger("TAKE_PROFIT", "SELL", 100, 101)
    assert not TR.would_trigger("TAKE_PROFIT", "SELL", 100, None)  # no trade yet: nothing to reach
    assert not TR.would_trigger("STOP_LOSS", "SELL", 0, 100)  # a trailing order without activation price


prices = st.lists(st.integers(1, 1000), min_size=1, max_size=30)


@given(stop=st.integers(1, 1000), side=st.sampled_from(["BUY", "SELL"]), seen=prices)
def test_a_plain_stop_fires_when_a_trade_reaches_it(stop, side, seen):
    way = TR.direction("STOP_LOSS", side)
    t = TR.Trigger(1, 1, side, way, stop, None, None, 0)
    fires, _ = TR.step(t, seen)
    assert fires == any((p <= stop) if way == "DOWN" else (p >= stop) for p in seen)


@given(bips=st.integers(10, 2000), side=st.sampled_from(["BUY", "SELL"]), start=st.integers(1, 1000), seen=prices)
def test_a_trailing_stop_fires_on_the_first_retrace_from_the_best_price_so_far(bips, side, start, seen):
    t = TR.Trigger(1, 1, side, TR.direction("STOP_LOSS", side), None, bips, start, 0)
    fires, extreme = TR.step(t, seen)
    best = start
    expected = False
    for p in seen:
        best = max(best, p) if side == "SELL" else min(best, p)
        retrace = (best - p) / best if side == "SELL" else (p - best) / best
        if retrace * 10_000 >= bips - 1e-9:
            expected = True
            break
    assert fires == expected
    assert extreme == best


@given(bips=st.integers(10, 2000), activation=st.integers(1, 1000), seen=prices)
def test_a_trailing_order_with_an_activation_price_waits_for_it(bips, activation, seen):
    t = TR.Trigger(1, 1, "SELL", "UP", activation, bips, None, 0)  # a trailing take-profit sell
    fires, extreme = TR.step(t, seen)
    reached_at = next((i for i, p in enumerate(seen) if p >= activation), None)
    if reached_at is None:
        assert (fires, extreme) == (False, None)
    else:
        after = TR.Trigger(1, 1, "SELL", "UP", activation, bips, seen[reached_at], 0)
        assert (fires, extreme) == TR.step(after, seen[reached_at + 1 :])
