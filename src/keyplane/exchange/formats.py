"""Binance's JSON shapes of market data, one definition for the REST routes and the streams."""

from __future__ import annotations

from typing import Any

from keyplane.exchange.marketdata import Ticker
from keyplane.exchange.markets import Market


def book_json(m: Market, bid: tuple[int, int] | None, ask: tuple[int, int] | None) -> dict[str, str]:
    """The best bid and ask levels as Binance shows them; an empty side shows zeros."""
    (bid_price, bid_qty), (ask_price, ask_qty) = bid or (0, 0), ask or (0, 0)
    return {
        "bidPrice": m.price_text(bid_price),
        "bidQty": m.qty_text(bid_qty),
        "askPrice": m.price_text(ask_price),
        "askQty": m.qty_text(ask_qty),
    }


def ticker_json(t: Ticker, m: Market) -> dict[str, Any]:
    change = t.last - t.open
    pct = "0.000" if not t.open else f"{change * 100 / t.open:.3f}"
    wavg = m.base.scale * t.quote_volume // t.volume if t.volume else t.last
    return {
        "symbol": t.symbol,
        "priceChange": m.price_text(change) if change >= 0 else "-" + m.price_text(-change),
        "priceChangePercent": pct,
        "weightedAvgPrice": m.price_text(wavg),
        "prevClosePrice": m.price_text(t.open),
        "lastPrice": m.price_text(t.last),
        "lastQty": m.qty_text(t.last_qty),
        **book_json(m, t.bid, t.ask),
        "openPrice": m.price_text(t.open),
        "highPrice": m.price_text(t.high),
        "lowPrice": m.price_text(t.low),
        "volume": m.qty_text(t.volume),
        "quoteVolume": m.quote.fmt(t.quote_volume),
        "openTime": t.open_ms,
        "closeTime": t.close_ms,
        "firstId": t.first_id,
        "lastId": t.last_id,
        "count": t.count,
    }
