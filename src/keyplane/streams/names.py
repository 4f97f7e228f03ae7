"""Binance's stream names, parsed once at the edge into a :class:`Stream`.

``<symbol>@trade``, ``@aggTrade``, ``@kline_<interval>``, ``@depth<5|10|20>[@100ms|@1000ms]``
(partial book), ``@depth[@100ms|@1000ms]`` (diff depth), ``@ticker``, ``@miniTicker``,
``@bookTicker``, and the all-market ``!ticker@arr`` and ``!miniTicker@arr``. Symbols are matched
in lower case only, as Binance spells them; an upper-case name is refused with the name to use
(Binance accepts it and then sends nothing).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from keyplane.exchange.marketdata import INTERVALS_MS

ALL_MARKETS = {"!ticker@arr": "ticker", "!miniTicker@arr": "miniTicker"}
_SIMPLE = {"trade", "aggTrade", "ticker", "miniTicker", "bookTicker"}
_PARTIAL = {"depth5": 5, "depth10": 10, "depth20": 20}
_SPEEDS = {"100ms": 0.1, "1000ms": 1.0}
MAX_NAME = 64


class BadStream(ValueError):
    """A stream name that is not one of Binance's, or names a market this exchange does not list."""


@dataclass(frozen=True, slots=True)
class Stream:
    name: str  # as subscribed (and as LIST_SUBSCRIPTIONS shows it)
    kind: str  # trade, aggTrade, kline, depth (partial), diffDepth, ticker, miniTicker, bookTicker
    symbol: str | None  # upper case, as the REST API spells it; None for the all-market streams
    interval: str = ""  # klines
    levels: int = 0  # partial depth
    every_s: float = 0.0  # depth streams: how often at most (Binance's update speed)


def parse(name: object, symbols: Collection[str]) -> Stream:
    """The stream ``name`` names, on one of ``symbols`` (upper case); BadStream otherwise."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise BadStream(f"invalid stream name {str(name)[:MAX_NAME]!r}")
    if name in ALL_MARKETS:
        return Stream(name, ALL_MARKETS[name], None)
    symbol, sep, rest = name.partition("@")
    if not sep or not symbol or not rest:
        raise BadStream(f"invalid stream name {name!r}: expected <symbol>@<stream>, e.g. btcusdt@trade")
    if symbol.upper() not in symbols:
        raise BadStream(f"invalid stream name {name!r}: no market {symbol.upper()!r} on this exchange")
    if symbol != symbol.lower():
        raise BadStream(f"invalid stream name {name!r}: symbols are lower case in stream names ({symbol.lower()}@...)")
    canonical, upper = name, symbol.upper()
    kind, _, speed = rest.partition("@")
    if kind in _SIMPLE and not speed:
        return Stream(canonical, kind, upper)
    if kind.startswith("kline_") and not speed:
        interval = kind[len("kline_") :]
        if interval not in INTERVALS_MS:
            raise BadStream(f"invalid stream name {name!r}: kline intervals are {', '.join(INTERVALS_MS)}")
        return Stream(canonical, "kline", upper, interval=interval)
    if kind == "depth" or kind in _PARTIAL:
        if speed and speed not in _SPEEDS:
            raise BadStream(f"invalid stream name {name!r}: a depth stream's speed is @100ms or @1000ms")
        every = _SPEEDS.get(speed, 1.0)
        if kind == "depth":
            return Stream(canonical, "diffDepth", upper, every_s=every)
        return Stream(canonical, "depth", upper, levels=_PARTIAL[kind], every_s=every)
    raise BadStream(f"invalid stream name {name!r}: unknown stream {rest!r}")
