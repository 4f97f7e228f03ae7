"""Conditional orders' triggers: when a stop-loss or take-profit order starts to work.

A conditional order (``STOP_LOSS``, ``STOP_LOSS_LIMIT``, ``TAKE_PROFIT``, ``TAKE_PROFIT_LIMIT``)
is stored with its order row and an armed trigger (``ex_triggers``), and keeps its funds locked
while it waits. Trades fire it: after every taker's fills, in the same transaction,
:meth:`~keyplane.exchange.orders.OrderService` reads the triggers that those trades' prices can
reach, walks the prices in trade order through :func:`step`, and runs each order that fired as
the plain order it names (market or limit, same id), whose own trades may fire more. An armed
trigger is a row, so a restart loses none, and a fired order, its fills and its ledger entries
commit together or not at all.

Directions, as on Binance: a stop-loss sell and a take-profit buy fire when the price falls to the
stop price (``DOWN``); a stop-loss buy and a take-profit sell when it rises to it (``UP``).

Trailing orders (``trailingDelta``, in basis points) follow the market: active at once without a
stop price, else once a trade reaches the stop price (the activation price, in the same direction);
from then on the best price traded (the highest for a sell, the lowest for a buy) is kept, and the
order fires when a trade retraces ``trailingDelta`` from it.

This module is pure: rules over values. The SQL lives with the order service.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BIPS = 10_000


def direction(order_type: str, side: str) -> str:
    """``DOWN`` for a stop-loss sell or a take-profit buy, ``UP`` for a stop-loss buy or a take-profit sell."""
    stop_loss = order_type.startswith("STOP_LOSS")
    return "DOWN" if stop_loss == (side == "SELL") else "UP"


def reached(way: str, stop_price: int, price: int) -> bool:
    return price <= stop_price if way == "DOWN" else price >= stop_price


@dataclass(slots=True)
class Trigger:
    order_id: int
    user_id: int
    side: str
    direction: str
    stop_price: int | None  # None: a trailing order without an activation price
    trail_bips: int | None  # None: a plain stop
    extreme: int | None  # a trailing order's best price since it became active; None: not active yet
    held: int  # what the order keeps locked while it waits
    sibling: int | None = None  # the other leg of its order list: cancelled when this one fires


COLUMNS = "order_id, user_id, side, direction, stop_price, trail_bips, extreme, held, sibling"


def arm(order_type: str, side: str, stop_price: int, trail_bips: int, last_price: int | None) -> tuple[str, int | None]:
    """The direction of a new conditional order and its trailing start (the last price, for a
    trailing order without activation price; else None). Callers first refuse, with
    ``WouldTrigger``, an order whose stop price ``last_price`` already reaches."""
    way = direction(order_type, side)
    start = last_price if trail_bips and not stop_price else None
    return way, start


def would_trigger(order_type: str, side: str, stop_price: int, last_price: int | None) -> bool:
    """Whether the market has already reached this stop (or activation) price."""
    return bool(stop_price) and last_price is not None and reached(direction(order_type, side), stop_price, last_price)


def step(t: Trigger, prices: Sequence[int]) -> tuple[bool, int | None]:
    """Walk trades' ``prices`` (in trade order) through ``t``: whether it fires, and its trailing
    extreme after them (unchanged for a plain stop)."""
    extreme = t.extreme
    for price in prices:
        if t.trail_bips is None:
            assert t.stop_price is not None
            if reached(t.direction, t.stop_price, price):
                return True, extreme
            continue
        if extreme is None:  # not active yet: this trade may activate it
            if t.stop_price is None or reached(t.direction, t.stop_price, price):
                extreme = price
            continue
        if t.side == "SELL":
            extreme = max(extreme, price)
            if price * BIPS <= extreme * (BIPS - t.trail_bips):
                return True, extreme
        else:
            extreme = min(extreme, price)
            if price * BIPS >= extreme * (BIPS + t.trail_bips):
                return True, extreme
    return False, extreme


def reach(prices: Sequence[int]) -> tuple[int, int]:
    """The lowest and highest of ``prices``: a plain stop that neither reaches cannot fire."""
    return min(prices), max(prices)
