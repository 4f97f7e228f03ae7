"""Public market data, read from the book and the trade tape: depth, recent trades, tickers, klines.

Klines are built from trades on request (one pass over the window's trades); intervals with no
trades are left out, as on a market that did not trade.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from keyplane.db import Database
from keyplane.exchange.markets import Market
from keyplane.exchange.rows import PublicTrade
from keyplane.exchange.sql import Raw, read

INTERVALS_MS = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000,
    "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000,
}  # fmt: skip
DAY_MS = 86_400_000

_LEVELS = (
    "SELECT price, SUM(remaining) FROM ex_book WHERE symbol = :s AND side = :side "
    "GROUP BY sort_key, price ORDER BY sort_key LIMIT :n"
)
_SEQ = "SELECT trade_seq FROM ex_markets WHERE symbol = :s"
_TOP_ORDER_ID = "SELECT MAX(order_id) FROM ex_book WHERE symbol = :s"
_RECENT = (
    "SELECT id, price, qty, quote_qty, ts, buyer_is_maker FROM ex_trades WHERE symbol = :s ORDER BY id DESC LIMIT :n"
)
_DAY = (
    "SELECT MIN(id), MAX(id), MAX(price), MIN(price), COALESCE(SUM(qty), 0), COALESCE(SUM(quote_qty), 0), COUNT(*) "
    "FROM ex_trades WHERE symbol = :s AND ts >= :a"
)
_PRICES_OF = "SELECT id, price FROM ex_trades WHERE symbol = :s AND id IN (:f, :l)"
_LAST_PRICE = "SELECT price FROM ex_trades WHERE symbol = :s ORDER BY id DESC LIMIT 1"
_WINDOW = (
    "SELECT ts, price, qty, quote_qty, buyer_is_maker FROM ex_trades WHERE symbol = :s AND ts >= :a AND ts <= :b "
    "ORDER BY id"
)


@dataclass(frozen=True, slots=True)
class Ticker:
    symbol: str
    open: int
    high: int
    low: int
    last: int
    volume: int
    quote_volume: int
    count: int
    first_id: int
    last_id: int
    open_ms: int
    close_ms: int
    bid: tuple[int, int] | None
    ask: tuple[int, int] | None


def _levels(db: Raw, market: Market, side: str, n: int) -> list[tuple[int, int]]:
    """``side``'s best ``n`` price levels as (price, qty), best first."""
    return [(int(p), int(q)) for p, q in db.all(_LEVELS, {"s": market.symbol, "side": side, "n": n})]


def _top(db: Raw, market: Market) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """The best bid and the best ask level, each None on an empty side."""
    bid, ask = _levels(db, market, "BUY", 1), _levels(db, market, "SELL", 1)
    return (bid[0] if bid else None), (ask[0] if ask else None)


class MarketData:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def depth(self, market: Market, limit: int = 100) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]]]:
        """(last update id, bids best first, asks best first) as (price, qty) levels."""
        with read(self.db) as db:
            seq = db.one(_SEQ, {"s": market.symbol})
            bids, asks = _levels(db, market, "BUY", limit), _levels(db, market, "SELL", limit)
            top = db.one(_TOP_ORDER_ID, {"s": market.symbol})
        update_id = max(int((seq and seq[0]) or 0), int((top and top[0]) or 0))
        return update_id, bids, asks

    def recent_trades(self, market: Market, limit: int = 500) -> list[PublicTrade]:
        """The latest trades, oldest first."""
        with read(self.db) as db:
            rows = db.all(_RECENT, {"s": market.symbol, "n": limit})
        return [PublicTrade(i, p, q, qq, ts, bool(m)) for i, p, q, qq, ts, m in reversed(rows)]

    def ticker(self, market: Market) -> Ticker:
        now = int(self.clock() * 1000)
        since = now - DAY_MS
        with read(self.db) as db:
            agg = db.one(_DAY, {"s": market.symbol, "a": since})
            assert agg is not None
            first_id, last_id, high, low, vol, qvol, count = agg
            if count:
                prices = {
                    r[0]: int(r[1]) for r in db.all(_PRICES_OF, {"s": market.symbol, "f": first_id, "l": last_id})
                }
                open_p, last_p = prices[first_id], prices[last_id]
            else:
                last = db.one(_LAST_PRICE, {"s": market.symbol})
                open_p = last_p = int(last[0]) if last else 0
                high = low = last_p
            bid, ask = _top(db, market)
        return Ticker(
            market.symbol, open_p, int(high or 0), int(low or 0), last_p, int(vol), int(qvol), int(count),
            int(first_id or -1), int(last_id or -1), since, now, bid, ask,
        )  # fmt: skip

    def book_ticker(self, market: Market) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        with read(self.db) as db:
            return _top(db, market)

    def last_price(self, market: Market) -> int:
        with read(self.db) as db:
            last = db.one(_LAST_PRICE, {"s": market.symbol})
        return int(last[0]) if last else 0

    def klines(
        self, market: Market, interval: str, *, start_ms: int | None = None, end_ms: int | None = None, limit: int = 500
    ) -> list[list[int]]:
        """[open time, open, high, low, close, volume, close time, quote volume, trades, taker buy base,
        taker buy quote] per interval, oldest first, as integers (the route formats them)."""
        step = INTERVALS_MS[interval]
        end = end_ms if end_ms is not None else int(self.clock() * 1000)
        start = start_ms if start_ms is not None else (end // step - limit + 1) * step
        start -= start % step
        with read(self.db) as db:
            rows = db.all(_WINDOW, {"s": market.symbol, "a": start, "b": end})
        out: dict[int, list[int]] = {}
        for ts, price, qty, quote, buyer_is_maker in rows:
            t0 = ts - ts % step
            k = out.get(t0)
            if k is None:
                if len(out) >= limit:
                    break
                k = out[t0] = [t0, price, price, price, price, 0, t0 + step - 1, 0, 0, 0, 0]
            k[2], k[3], k[4] = max(k[2], price), min(k[3], price), price
            k[5] += qty
            k[7] += quote
            k[8] += 1
            if not buyer_is_maker:  # the taker bought
                k[9] += qty
                k[10] += quote
        return list(out.values())
