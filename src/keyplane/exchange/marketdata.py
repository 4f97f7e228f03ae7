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
from keyplane.exchange.sql import Raw, read, write

INTERVALS_MS = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000,
    "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000,
}  # fmt: skip
DAY_MS = 86_400_000

_LEVELS = (
    "SELECT price, SUM(remaining) FROM ex_book WHERE symbol = :s AND side = :side "
    "GROUP BY sort_key, price ORDER BY sort_key LIMIT :n"
)
_SEQ = "SELECT book_seq FROM ex_markets WHERE symbol = :s"
_CONSISTENT_TRIES = 20
_CHANGES = "SELECT seq, side, price FROM ex_book_changes WHERE symbol = :s AND seq > :a AND seq <= :b"
_OLDEST_CHANGE = "SELECT MIN(seq) FROM ex_book_changes WHERE symbol = :s"
_PRUNE = "DELETE FROM ex_book_changes WHERE symbol = :s AND seq <= :b"
KEEP_CHANGES = 100_000  # book changes kept per market (a diff-depth reader further behind re-reads all)
_RECENT = (
    "SELECT id, price, qty, quote_qty, ts, buyer_is_maker FROM ex_trades WHERE symbol = :s ORDER BY id DESC LIMIT :n"
)
_DAY = (
    "SELECT MIN(id), MAX(id), MAX(price), MIN(price), COALESCE(SUM(qty), 0), COALESCE(SUM(quote_qty), 0), COUNT(*) "
    "FROM ex_trades WHERE symbol = :s AND ts >= :a"
)
_PRICES_OF = "SELECT id, price, qty FROM ex_trades WHERE symbol = :s AND id IN (:f, :l)"
_LAST_PRICE = "SELECT price, qty FROM ex_trades WHERE symbol = :s ORDER BY id DESC LIMIT 1"
_WINDOW = (
    "SELECT ts, price, qty, quote_qty, buyer_is_maker FROM ex_trades WHERE symbol = :s AND ts >= :a AND ts <= :b "
    "ORDER BY id"
)


@dataclass(frozen=True, slots=True)
class Candle:
    """One kline interval as it stands; an interval without trades is flat at the last price."""

    open_ms: int
    close_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    count: int
    taker_buy_volume: int
    taker_buy_quote: int
    first_id: int
    last_id: int


_CANDLE = (
    "SELECT MIN(id), MAX(id), MAX(price), MIN(price), COALESCE(SUM(qty), 0), COALESCE(SUM(quote_qty), 0), COUNT(*), "
    "COALESCE(SUM(CASE WHEN buyer_is_maker THEN 0 ELSE qty END), 0), "
    "COALESCE(SUM(CASE WHEN buyer_is_maker THEN 0 ELSE quote_qty END), 0) "
    "FROM ex_trades WHERE symbol = :s AND ts >= :a AND ts <= :b"
)
_PRICE_BEFORE = "SELECT price FROM ex_trades WHERE symbol = :s AND ts < :a ORDER BY id DESC LIMIT 1"
_TRADES_AFTER = (
    "SELECT id, price, qty, quote_qty, ts, buyer_is_maker FROM ex_trades WHERE symbol = :s AND id > :after "
    "ORDER BY id LIMIT :n"
)


@dataclass(frozen=True, slots=True)
class Ticker:
    symbol: str
    open: int
    high: int
    low: int
    last: int
    last_qty: int
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
        """(last update id, bids best first, asks best first) as (price, qty) levels, read in one
        transaction: the update id is the market's book sequence, bumped by every transaction that
        changes the book, so diff-depth stream events (U/u) line up with it."""
        with read(self.db) as db:
            # Each statement of a PostgreSQL read sees the latest commits (read committed): the
            # levels belong to ``seq`` only if no change to the book committed while they were read,
            # which the sequence itself tells (every such commit bumps it).
            seq = db.one(_SEQ, {"s": market.symbol})
            for _ in range(_CONSISTENT_TRIES):
                bids, asks = _levels(db, market, "BUY", limit), _levels(db, market, "SELL", limit)
                after = db.one(_SEQ, {"s": market.symbol})
                if after == seq:
                    break
                seq = after
        return int((seq and seq[0]) or 0), bids, asks

    def book_changes(self, market: Market, after: int, upto: int) -> list[tuple[int, str, int]] | None:
        """(seq, side, price) of every level that book changes ``after`` < seq <= ``upto`` touched;
        None if the log no longer reaches back to ``after`` (pruned)."""
        with read(self.db) as db:
            oldest = db.one(_OLDEST_CHANGE, {"s": market.symbol})
            if oldest is None or oldest[0] is None or int(oldest[0]) > after + 1:
                return None if upto > after else []
            rows = db.all(_CHANGES, {"s": market.symbol, "a": after, "b": upto})
        return [(int(q), str(side), int(p)) for q, side, p in rows]

    def prune_book_changes(self) -> None:
        """Keep the last ``KEEP_CHANGES`` book changes of each market (a periodic task)."""
        with write(self.db) as db:
            for symbol, seq in db.all("SELECT symbol, book_seq FROM ex_markets"):
                db.execute(_PRUNE, {"s": symbol, "b": int(seq) - KEEP_CHANGES})

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
                rows = {r[0]: r for r in db.all(_PRICES_OF, {"s": market.symbol, "f": first_id, "l": last_id})}
                open_p, last_p, last_qty = int(rows[first_id][1]), int(rows[last_id][1]), int(rows[last_id][2])
            else:
                last = db.one(_LAST_PRICE, {"s": market.symbol})
                open_p = last_p = int(last[0]) if last else 0
                last_qty = int(last[1]) if last else 0
                high = low = last_p
            bid, ask = _top(db, market)
        return Ticker(
            market.symbol, open_p, int(high or 0), int(low or 0), last_p, last_qty, int(vol), int(qvol), int(count),
            int(first_id or -1), int(last_id or -1), since, now, bid, ask,
        )  # fmt: skip

    def trades_after(self, market: Market, after_id: int, limit: int = 1000) -> list[PublicTrade]:
        """Trades with ids above ``after_id``, oldest first. Trade ids are assigned under the
        market's lock and committed in order, so a reader never sees a later id before an earlier."""
        with read(self.db) as db:
            rows = db.all(_TRADES_AFTER, {"s": market.symbol, "after": after_id, "n": limit})
        return [PublicTrade(i, p, q, qq, ts, bool(m)) for i, p, q, qq, ts, m in rows]

    def last_trade_id(self, market: Market) -> int:
        with read(self.db) as db:
            row = db.one("SELECT trade_seq FROM ex_markets WHERE symbol = :s", {"s": market.symbol})
        return int(row[0]) if row else 0

    def candle(self, market: Market, interval: str, open_ms: int) -> Candle:
        """The kline of ``interval`` that opens at ``open_ms``, as it stands."""
        end = open_ms + INTERVALS_MS[interval] - 1
        with read(self.db) as db:
            agg = db.one(_CANDLE, {"s": market.symbol, "a": open_ms, "b": end})
            assert agg is not None
            first, last, high, low, vol, qvol, count, tbv, tbq = agg
            if count:
                prices = {r[0]: int(r[1]) for r in db.all(_PRICES_OF, {"s": market.symbol, "f": first, "l": last})}
                return Candle(
                    open_ms, end, prices[first], int(high), int(low), prices[last], int(vol), int(qvol), int(count),
                    int(tbv), int(tbq), int(first), int(last),
                )  # fmt: skip
            before = db.one(_PRICE_BEFORE, {"s": market.symbol, "a": open_ms})
        flat = int(before[0]) if before else 0
        return Candle(open_ms, end, flat, flat, flat, flat, 0, 0, 0, 0, 0, -1, -1)

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
