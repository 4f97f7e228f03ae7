"""Klines built from the trade tape: Binance's intervals, where each one opens, which candles a
request selects, and one rule for what a candle is (REST ``klines`` and the kline streams share it).

Intervals open in UTC: one of fixed width (``1s`` to ``1d``, and ``3d``) at whole multiples of that
width since the epoch; a week (``1w``) on Monday 00:00 (the epoch was a Thursday); a month (``1M``)
on the first day of the calendar month, 00:00. A candle runs from its open time to one millisecond
before the next one opens, so a month's close time follows the calendar (28 to 31 days).

A candle with trades has the first trade's price as its open and the last one's as its close
(trade order is id order); a candle without trades is flat at the previous candle's close, with
volume 0, 0 trades and first/last trade ids -1, as on Binance.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from keyplane.exchange.sql import Raw

SECOND_MS = 1_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
_MONDAY_MS = 4 * DAY_MS  # 1970-01-05, the first Monday after the epoch

FIXED_MS = {
    "1s": SECOND_MS, "1m": MINUTE_MS, "3m": 3 * MINUTE_MS, "5m": 5 * MINUTE_MS, "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS, "1h": HOUR_MS, "2h": 2 * HOUR_MS, "4h": 4 * HOUR_MS, "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS, "12h": 12 * HOUR_MS, "1d": DAY_MS, "3d": 3 * DAY_MS,
}  # fmt: skip
# Binance's list, in its order (the names are case-sensitive: 1m is a minute, 1M a month).
KLINE_INTERVALS = (*FIXED_MS, "1w", "1M")
MAX_LIMIT = 1000

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS = dt.timedelta(milliseconds=1)


def _month_index(ts_ms: int) -> int:
    """Months since year 0 of the UTC calendar month that holds ``ts_ms``."""
    day = _EPOCH + dt.timedelta(milliseconds=ts_ms)
    return day.year * 12 + day.month - 1


def _month_open(index: int) -> int:
    year, month0 = divmod(index, 12)
    return (dt.datetime(year, month0 + 1, 1, tzinfo=dt.UTC) - _EPOCH) // _ONE_MS


def open_of(interval: str, ts_ms: int) -> int:
    """The open time of the ``interval`` candle that holds the instant ``ts_ms``."""
    if interval == "1M":
        return _month_open(_month_index(ts_ms))
    if interval == "1w":
        return ts_ms - (ts_ms - _MONDAY_MS) % WEEK_MS
    return ts_ms - ts_ms % FIXED_MS[interval]


def shift(interval: str, open_ms: int, n: int) -> int:
    """The open time ``n`` candles after (``n`` < 0: before) the one that opens at ``open_ms``."""
    if interval == "1M":
        return _month_open(_month_index(open_ms) + n)
    return open_ms + n * (WEEK_MS if interval == "1w" else FIXED_MS[interval])


def close_of(interval: str, open_ms: int) -> int:
    """The close time of the candle that opens at ``open_ms``: 1 ms before the next one opens."""
    return shift(interval, open_ms, 1) - 1


def select_opens(
    interval: str, *, first_ts: int, now_ms: int, start_ms: int | None, end_ms: int | None, limit: int
) -> list[int]:
    """The open times a klines request answers, oldest first, on a market whose first trade was at
    ``first_ts``: candles that open within [``start_ms``, ``end_ms``], none before the first trade's
    candle and none after the one open now; with ``start_ms``, the first ``limit`` of them, without
    it the last ``limit`` (the most recent, or those ending at ``end_ms``)."""
    if start_ms is not None and start_ms > now_ms:
        return []
    lowest = open_of(interval, first_ts)
    highest = open_of(interval, now_ms if end_ms is None else min(end_ms, now_ms))
    if start_ms is not None:
        first = open_of(interval, start_ms)
        lowest = max(lowest, first if first == start_ms else shift(interval, first, 1))
        opens: list[int] = []
        t = lowest
        while t <= highest and len(opens) < limit:
            opens.append(t)
            t = shift(interval, t, 1)
        return opens
    if highest < lowest:
        return []
    opens = []
    t = highest
    while t >= lowest and len(opens) < limit:
        opens.append(t)
        t = shift(interval, t, -1)
    return opens[::-1]


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


# Trades grouped into buckets of width :w from :o (a candle, or a day of a month's candle), with
# the prices of each bucket's first and last trade. The bucket number is computed in a subquery so
# that GROUP BY names a column: the same statement on SQLite and PostgreSQL (integer division on
# both, as every operand is an integer).
_BUCKETS = (
    "SELECT g.b, g.f, g.l, fo.price, lc.price, g.hi, g.lo, g.v, g.qv, g.n, g.tbv, g.tbq FROM ("
    "SELECT t.b AS b, MIN(t.id) AS f, MAX(t.id) AS l, MAX(t.price) AS hi, MIN(t.price) AS lo, SUM(t.qty) AS v, "
    "SUM(t.quote_qty) AS qv, COUNT(*) AS n, SUM(CASE WHEN t.buyer_is_maker THEN 0 ELSE t.qty END) AS tbv, "
    "SUM(CASE WHEN t.buyer_is_maker THEN 0 ELSE t.quote_qty END) AS tbq FROM ("
    "SELECT (ts - :o) / :w AS b, id, price, qty, quote_qty, buyer_is_maker FROM ex_trades "
    "WHERE symbol = :s AND ts >= :a AND ts <= :z) t GROUP BY t.b) g "
    "JOIN ex_trades fo ON fo.symbol = :s AND fo.id = g.f JOIN ex_trades lc ON lc.symbol = :s AND lc.id = g.l "
    "ORDER BY g.b"
)
_PRICE_BEFORE = "SELECT price FROM ex_trades WHERE symbol = :s AND ts < :a ORDER BY id DESC LIMIT 1"
FIRST_TRADE_TS = "SELECT MIN(ts) FROM ex_trades WHERE symbol = :s"


def _merge(a: Candle, b: Candle) -> Candle:
    """``a`` then ``b`` (later trades) as one candle, with ``a``'s open and close times."""
    return Candle(
        a.open_ms, a.close_ms, a.open, max(a.high, b.high), min(a.low, b.low), b.close, a.volume + b.volume,
        a.quote_volume + b.quote_volume, a.count + b.count, a.taker_buy_volume + b.taker_buy_volume,
        a.taker_buy_quote + b.taker_buy_quote, a.first_id, b.last_id,
    )  # fmt: skip


def candles(db: Raw, symbol: str, interval: str, opens: Sequence[int]) -> list[Candle]:
    """The candles of ``interval`` that open at ``opens`` (consecutive open times, oldest first), as
    they stand, in one pass over their trades (two statements at most)."""
    if not opens:
        return []
    # A month is not of fixed width: its trades are grouped by day, and the days merged.
    width = DAY_MS if interval == "1M" else WEEK_MS if interval == "1w" else FIXED_MS[interval]
    origin, last_close = opens[0], close_of(interval, opens[-1])
    traded: dict[int, Candle] = {}
    for row in db.all(_BUCKETS, {"s": symbol, "o": origin, "w": width, "a": origin, "z": last_close}):
        b, first, last, open_p, close_p, high, low, vol, qvol, n, tbv, tbq = (int(x) for x in row)
        t0 = open_of(interval, origin + b * width)
        part = Candle(
            t0, close_of(interval, t0), open_p, high, low, close_p, vol, qvol, n, tbv, tbq, first, last
        )  # fmt: skip
        traded[t0] = _merge(traded[t0], part) if t0 in traded else part
    out: list[Candle] = []
    prev: int | None = None
    for t0 in opens:
        c = traded.get(t0)
        if c is None:
            if prev is None:
                before = db.one(_PRICE_BEFORE, {"s": symbol, "a": t0})
                prev = int(before[0]) if before else 0
            c = Candle(t0, close_of(interval, t0), prev, prev, prev, prev, 0, 0, 0, 0, 0, -1, -1)
        out.append(c)
        prev = c.close
    return out
