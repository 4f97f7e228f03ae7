"""Public market data, read from the book and the trade tape: depth, trades, tickers, average
price, klines.

Klines are built from trades on request (``keyplane.exchange.klines``: one statement over the
window's trades); an interval without trades is a flat candle at the previous close, from the
market's first trade on. A ticker covers a window of trades (:class:`Window`): the rolling 24 hours
of ``ticker/24hr`` and the streams, the rolling ``windowSize`` of ``ticker``, or the UTC day of
``ticker/tradingDay``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from keyplane.db import Database
from keyplane.exchange.klines import DAY_MS, FIRST_TRADE_TS, FIXED_MS, MINUTE_MS, Candle, candles, select_opens
from keyplane.exchange.markets import Market
from keyplane.exchange.orders import _READ_SEQ
from keyplane.exchange.rows import PublicTrade
from keyplane.exchange.sql import Raw, read, write

# The intervals of the kline streams (REST klines take every one of klines.KLINE_INTERVALS).
INTERVALS_MS = {i: FIXED_MS[i] for i in ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")}
AVG_PRICE_MINS = 5  # GET /api/v3/avgPrice: the volume-weighted average over this many minutes
__all__ = ["DAY_MS", "INTERVALS_MS", "Candle", "MarketData", "Ticker", "Window"]

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
_TRADE_COLS = "id, price, qty, quote_qty, ts, buyer_is_maker"
_RECENT = f"SELECT {_TRADE_COLS} FROM ex_trades WHERE symbol = :s ORDER BY id DESC LIMIT :n"
_TRADES_AFTER = f"SELECT {_TRADE_COLS} FROM ex_trades WHERE symbol = :s AND id > :after ORDER BY id LIMIT :n"
# By time: from :a forward (oldest first), or back from :b (newest first, then reversed).
_TRADES_FROM = (
    f"SELECT {_TRADE_COLS} FROM ex_trades WHERE symbol = :s AND ts >= :a AND ts <= :b ORDER BY ts, id LIMIT :n"
)
_TRADES_UNTIL = f"SELECT {_TRADE_COLS} FROM ex_trades WHERE symbol = :s AND ts <= :b ORDER BY ts DESC, id DESC LIMIT :n"
_WINDOW_AGG = (
    "SELECT MIN(id), MAX(id), MAX(price), MIN(price), COALESCE(SUM(qty), 0), COALESCE(SUM(quote_qty), 0), COUNT(*) "
    "FROM ex_trades WHERE symbol = :s AND ts >= :a"
)
_PRICES_OF = "SELECT id, price, qty FROM ex_trades WHERE symbol = :s AND id IN (:f, :l)"
_LAST_TRADE = "SELECT price, qty, ts FROM ex_trades WHERE symbol = :s ORDER BY id DESC LIMIT 1"
_VOLUME_SINCE = (
    "SELECT COALESCE(SUM(qty), 0), COALESCE(SUM(quote_qty), 0), MAX(ts) FROM ex_trades WHERE symbol = :s AND ts >= :a"
)
_NO_END = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Window:
    """The trades a ticker covers, given the time of the request (``bounds``)."""

    size_ms: int = DAY_MS
    # GET /api/v3/ticker: the window opens on a whole minute, so it is up to 59,999 ms wider.
    on_minute: bool = False
    # GET /api/v3/ticker/tradingDay: the UTC day so far (closing at the day's last millisecond).
    trading_day: bool = False

    def bounds(self, now_ms: int) -> tuple[int, int]:
        """(open time, close time) of the window for a request at ``now_ms``."""
        if self.trading_day:
            day = now_ms - now_ms % DAY_MS
            return day, day + DAY_MS - 1
        start = now_ms - self.size_ms
        return (start - start % MINUTE_MS if self.on_minute else start), now_ms


ROLLING_24H = Window()


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


def _trades(rows: Iterable[Sequence[Any]]) -> list[PublicTrade]:
    return [PublicTrade(int(i), int(p), int(q), int(qq), int(ts), bool(m)) for i, p, q, qq, ts, m in rows]


class MarketData:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

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
        return _trades(rows[::-1])

    def trades_after(self, market: Market, after_id: int, limit: int = 1000) -> list[PublicTrade]:
        """Trades with ids above ``after_id``, oldest first. Trade ids are assigned under the
        market's lock and committed in order, so a reader never sees a later id before an earlier."""
        with read(self.db) as db:
            rows = db.all(_TRADES_AFTER, {"s": market.symbol, "after": after_id, "n": limit})
        return _trades(rows)

    def trades(
        self,
        market: Market,
        *,
        from_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[PublicTrade]:
        """A page of the tape, oldest first (``aggTrades``, ``historicalTrades``): with ``from_id``,
        the first ``limit`` trades with id >= it; with ``start_ms``, the first ``limit`` at or after
        it (and at or before ``end_ms``); with only ``end_ms``, the last ``limit`` at or before it;
        with none, the latest ``limit``. The route refuses ``from_id`` with a time."""
        if from_id is not None:
            return self.trades_after(market, from_id - 1, limit)
        if start_ms is None and end_ms is None:
            return self.recent_trades(market, limit)
        end = _NO_END if end_ms is None else end_ms
        with read(self.db) as db:
            if start_ms is not None:
                return _trades(db.all(_TRADES_FROM, {"s": market.symbol, "a": start_ms, "b": end, "n": limit}))
            return _trades(db.all(_TRADES_UNTIL, {"s": market.symbol, "b": end, "n": limit})[::-1])

    def ticker(self, market: Market, window: Window = ROLLING_24H) -> Ticker:
        """The market over ``window`` (the rolling 24 hours by default). Without trades in it, the
        prices are the last trade's (0 on a market that never traded) and the trade ids -1."""
        open_ms, close_ms = window.bounds(self._now_ms())
        with read(self.db) as db:
            agg = db.one(_WINDOW_AGG, {"s": market.symbol, "a": open_ms})
            assert agg is not None
            first_id, last_id, high, low, vol, qvol, count = agg
            if count:
                rows = {r[0]: r for r in db.all(_PRICES_OF, {"s": market.symbol, "f": first_id, "l": last_id})}
                open_p, last_p, last_qty = int(rows[first_id][1]), int(rows[last_id][1]), int(rows[last_id][2])
            else:
                last = db.one(_LAST_TRADE, {"s": market.symbol})
                open_p = last_p = int(last[0]) if last else 0
                last_qty = int(last[1]) if last else 0
                high = low = last_p
            bid, ask = _top(db, market)
        return Ticker(
            market.symbol, open_p, int(high or 0), int(low or 0), last_p, last_qty, int(vol), int(qvol), int(count),
            int(first_id or -1), int(last_id or -1), open_ms, close_ms, bid, ask,
        )  # fmt: skip

    def avg_price(self, market: Market) -> tuple[int, int]:
        """(price, last trade time) for ``avgPrice``: the volume-weighted average price of the last
        ``AVG_PRICE_MINS`` minutes' trades, rounded down to a price unit; without trades in them,
        the last trade's price (0 and time 0 on a market that never traded)."""
        since = self._now_ms() - AVG_PRICE_MINS * MINUTE_MS
        with read(self.db) as db:
            row = db.one(_VOLUME_SINCE, {"s": market.symbol, "a": since})
            assert row is not None
            vol, qvol, last_ts = int(row[0]), int(row[1]), row[2]
            if vol:
                return market.base.scale * qvol // vol, int(last_ts)
            last = db.one(_LAST_TRADE, {"s": market.symbol})
        return (int(last[0]), int(last[2])) if last else (0, 0)

    def last_trade_id(self, market: Market) -> int:
        with read(self.db) as db:
            row = db.one(_READ_SEQ, {"s": market.symbol})
        return int(row[0]) if row else 0

    def candle(self, market: Market, interval: str, open_ms: int) -> Candle:
        """The kline of ``interval`` that opens at ``open_ms``, as it stands: the same rule as
        :meth:`klines` (a quiet interval is flat at the previous close)."""
        with read(self.db) as db:
            return candles(db, market.symbol, interval, [open_ms])[0]

    def book_ticker(self, market: Market) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        with read(self.db) as db:
            return _top(db, market)

    def last_price(self, market: Market) -> int:
        with read(self.db) as db:
            last = db.one(_LAST_TRADE, {"s": market.symbol})
        return int(last[0]) if last else 0

    def klines(
        self, market: Market, interval: str, *, start_ms: int | None = None, end_ms: int | None = None, limit: int = 500
    ) -> list[Candle]:
        """The candles of ``interval`` a klines request selects (``klines.select_opens``), oldest
        first: every interval from the market's first trade to now, traded or not; none on a market
        that never traded."""
        now = self._now_ms()
        with read(self.db) as db:
            first = db.one(FIRST_TRADE_TS, {"s": market.symbol})
            if first is None or first[0] is None:
                return []
            opens = select_opens(
                interval, first_ts=int(first[0]), now_ms=now, start_ms=start_ms, end_ms=end_ms, limit=limit
            )
            return candles(db, market.symbol, interval, opens)
