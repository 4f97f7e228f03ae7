"""Price-time priority matching, as a pure plan.

:func:`plan` walks the opposite side of the book best-first, in batches fetched by the caller (so
only the rows a taker can reach are read, never the whole book), and returns the fills a taker
would get. It writes nothing: the order service checks the plan (funds, FOK, LIMIT_MAKER, the key's
notional limit) and then applies it in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from keyplane.exchange.markets import Market

# The first read is small (most takers fill against one or two orders); later ones are larger.
FIRST_BATCH = 8
BATCH = 64


@dataclass(frozen=True, slots=True)
class Resting:
    order_id: int
    user_id: int
    price: int
    remaining: int
    sort_key: int
    sibling: int | None = None  # the other leg of its OCO list: a trade of this order cancels it


@dataclass(frozen=True, slots=True)
class Fill:
    maker: Resting
    qty: int
    quote: int


@dataclass(slots=True)
class Taker:
    user_id: int
    side: str  # BUY | SELL
    limit: int | None  # None: a market order
    qty: int | None  # None: a market order by quote amount
    quote_budget: int | None = None
    stp: str = "EXPIRE_TAKER"


@dataclass(slots=True)
class Plan:
    fills: list[Fill] = field(default_factory=list)
    qty: int = 0
    quote: int = 0
    # Why matching stopped early: "stp" (self-trade prevention), "budget" (quote amount used up).
    stopped: str | None = None


# fetch(after, n) returns the next (at most n) resting orders on the opposite side, best first,
# strictly after ``after`` = (sort_key, order_id), or from the top when ``after`` is None. It may
# leave out orders that cannot cross the taker's limit: fewer than n rows means none is left.
Fetch = Callable[[tuple[int, int] | None, int], Sequence[Resting]]


def plan(market: Market, taker: Taker, fetch: Fetch) -> Plan:
    out = Plan()
    after: tuple[int, int] | None = None
    n = FIRST_BATCH
    limit, buys = taker.limit, taker.side == "BUY"
    while True:
        batch = fetch(after, n)
        for maker in batch:
            # Past the taker's limit price (a market order has none), no maker crosses any more.
            if limit is not None and (maker.price > limit if buys else maker.price < limit):
                return out
            if maker.user_id == taker.user_id and taker.stp != "NONE":
                out.stopped = "stp"
                return out
            if taker.qty is not None:
                qty = min(taker.qty - out.qty, maker.remaining)
            else:
                budget = (taker.quote_budget or 0) - out.quote
                qty = min(market.qty_for_quote(budget, maker.price), maker.remaining)
                if qty <= 0:
                    out.stopped = "budget"
                    return out
            quote = market.notional(qty, maker.price)
            out.fills.append(Fill(maker, qty, quote))
            out.qty += qty
            out.quote += quote
            if taker.qty is not None and out.qty >= taker.qty:
                return out
            if taker.qty is None and qty < maker.remaining:
                out.stopped = "budget"  # what is left buys less than one step at the best price
                return out
        if len(batch) < n:
            return out
        last = batch[-1]
        after = (last.sort_key, last.order_id)
        n = BATCH
