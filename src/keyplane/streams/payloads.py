"""Stream payloads in Binance's exact shapes, from the exchange's rows (pure functions)."""

from __future__ import annotations

from typing import Any

from keyplane.exchange.events import AccountEvent
from keyplane.exchange.formats import ticker_json
from keyplane.exchange.marketdata import Candle, Ticker
from keyplane.exchange.markets import Asset, Market
from keyplane.exchange.rows import PublicTrade

Levels = list[tuple[int, int]]


def trade(m: Market, t: PublicTrade, now_ms: int) -> dict[str, Any]:
    return {
        "e": "trade", "E": now_ms, "s": m.symbol, "t": t.id, "p": m.price_text(t.price), "q": m.qty_text(t.qty),
        "T": t.ts, "m": t.buyer_is_maker, "M": True,
    }  # fmt: skip


def agg_trade(m: Market, t: PublicTrade, now_ms: int) -> dict[str, Any]:
    """Every trade is its own aggregate, as on the REST ``aggTrades`` route: ``a`` is its id."""
    return {
        "e": "aggTrade", "E": now_ms, "s": m.symbol, "a": t.id, "p": m.price_text(t.price),
        "q": m.qty_text(t.qty), "f": t.id, "l": t.id, "T": t.ts, "m": t.buyer_is_maker, "M": True,
    }  # fmt: skip


def kline(m: Market, interval: str, c: Candle, closed: bool, now_ms: int) -> dict[str, Any]:
    p, b, q = m.price_text, m.qty_text, m.quote.fmt
    return {
        "e": "kline", "E": now_ms, "s": m.symbol,
        "k": {
            "t": c.open_ms, "T": c.close_ms, "s": m.symbol, "i": interval, "f": c.first_id, "L": c.last_id,
            "o": p(c.open), "c": p(c.close), "h": p(c.high), "l": p(c.low), "v": b(c.volume), "n": c.count,
            "x": closed, "q": q(c.quote_volume), "V": b(c.taker_buy_volume), "Q": q(c.taker_buy_quote), "B": "0",
        },
    }  # fmt: skip


def _levels(m: Market, levels: Levels) -> list[list[str]]:
    return [[m.price_text(p), m.qty_text(qty)] for p, qty in levels]


def partial_depth(m: Market, update_id: int, bids: Levels, asks: Levels, n: int) -> dict[str, Any]:
    return {"lastUpdateId": update_id, "bids": _levels(m, bids[:n]), "asks": _levels(m, asks[:n])}


def diff_depth(m: Market, first: int, last: int, bids: Levels, asks: Levels, now_ms: int) -> dict[str, Any]:
    """The levels that changed in update ids ``first``..``last``, each at its new quantity (0: gone)."""
    return {
        "e": "depthUpdate", "E": now_ms, "s": m.symbol, "U": first, "u": last,
        "b": _levels(m, bids), "a": _levels(m, asks),
    }  # fmt: skip


def book_ticker(m: Market, update_id: int, bid: tuple[int, int] | None, ask: tuple[int, int] | None) -> dict[str, Any]:
    (bp, bq), (ap, aq) = bid or (0, 0), ask or (0, 0)
    return {
        "u": update_id, "s": m.symbol, "b": m.price_text(bp), "B": m.qty_text(bq), "a": m.price_text(ap),
        "A": m.qty_text(aq),
    }  # fmt: skip


def ticker(m: Market, t: Ticker, now_ms: int) -> dict[str, Any]:
    """The 24-hour rolling ticker, field for field what REST ``ticker/24hr`` answers."""
    r = ticker_json(t, m)
    return {
        "e": "24hrTicker", "E": now_ms, "s": m.symbol, "p": r["priceChange"], "P": r["priceChangePercent"],
        "w": r["weightedAvgPrice"], "x": r["prevClosePrice"], "c": r["lastPrice"], "Q": r["lastQty"],
        "b": r["bidPrice"], "B": r["bidQty"], "a": r["askPrice"], "A": r["askQty"], "o": r["openPrice"],
        "h": r["highPrice"], "l": r["lowPrice"], "v": r["volume"], "q": r["quoteVolume"], "O": r["openTime"],
        "C": r["closeTime"], "F": r["firstId"], "L": r["lastId"], "n": r["count"],
    }  # fmt: skip


def mini_ticker(m: Market, t: Ticker, now_ms: int) -> dict[str, Any]:
    return {
        "e": "24hrMiniTicker", "E": now_ms, "s": m.symbol, "c": m.price_text(t.last), "o": m.price_text(t.open),
        "h": m.price_text(t.high), "l": m.price_text(t.low), "v": m.qty_text(t.volume),
        "q": m.quote.fmt(t.quote_volume),
    }  # fmt: skip


# -- user data -------------------------------------------------------------------------------------


def execution_report(m: Market, ev: AccountEvent, now_ms: int) -> dict[str, Any]:
    """Binance's ``executionReport`` for one order event (keyplane.exchange.events)."""
    o, f = ev.order, ev.fill
    assert o is not None
    z, cum = ev.cumulative
    trade = f is not None
    fee_asset = None if f is None else f.commission_asset
    fee_units = m.base if fee_asset == m.base.name else m.quote
    # On the book: an open order that works (a conditional order, from its trigger on).
    working = ev.status in ("NEW", "PARTIALLY_FILLED") and o.working_ms is not None and ev.ts >= o.working_ms
    doc = {
        "e": "executionReport", "E": now_ms, "s": o.symbol, "c": o.client_order_id, "S": o.side, "o": o.type,
        "f": o.tif, "q": m.qty_text(o.orig_qty), "p": m.price_text(o.price), "P": m.price_text(o.stop_price),
        "F": m.qty_text(0), "g": -1 if o.list_id is None else o.list_id,
        "C": o.client_order_id if ev.kind == "CANCELED" else "", "x": ev.kind,
        "X": ev.status, "r": "NONE", "i": ev.order_id, "l": m.qty_text(f.qty if f else 0), "z": m.qty_text(z),
        "L": m.price_text(f.price if f else 0), "n": fee_units.fmt(f.commission) if f else "0", "N": fee_asset,
        "T": ev.ts, "t": ev.trade_id if trade else -1, "I": ev.id, "w": working,
        "m": bool(f and f.is_maker), "M": trade, "O": o.created_ms, "Z": m.quote.fmt(cum),
        "Y": m.quote.fmt(f.quote_qty if f else 0), "Q": m.quote.fmt(o.orig_quote_qty), "V": o.stp,
    }  # fmt: skip
    if working:
        doc["W"] = o.working_ms
    if o.trailing_delta:
        doc["d"] = o.trailing_delta
    return doc


def list_status(ev: AccountEvent, now_ms: int) -> dict[str, Any]:
    """Binance's ``listStatus`` for an order list's event: started, or all done."""
    ol = ev.order_list
    assert ol is not None
    started = ev.status == "EXEC_STARTED"
    return {
        "e": "listStatus", "E": now_ms, "s": ol.symbol, "g": ol.id, "c": ol.contingency, "l": ev.status,
        "L": "EXECUTING" if started else "ALL_DONE", "r": "NONE", "C": ol.client_list_id, "T": ev.ts,
        "O": [{"s": o.symbol, "i": o.id, "c": o.client_order_id} for o in ol.orders],
    }  # fmt: skip


def account_position(
    assets: dict[str, Asset], balances: dict[str, tuple[int, int]], ts: int, now_ms: int
) -> dict[str, Any]:
    """Binance's ``outboundAccountPosition``: the balances of the assets an update changed."""
    return {
        "e": "outboundAccountPosition", "E": now_ms, "u": ts,
        "B": [{"a": a, "f": assets[a].fmt(free), "l": assets[a].fmt(locked)} for a, (free, locked) in balances.items()],
    }  # fmt: skip


def balance_update(asset: Asset, ev: AccountEvent, now_ms: int) -> dict[str, Any]:
    """Binance's ``balanceUpdate``: a deposit (positive) or a withdrawal (negative)."""
    delta = ev.delta or 0
    text = asset.fmt(abs(delta))
    return {"e": "balanceUpdate", "E": now_ms, "a": asset.name, "d": text if delta >= 0 else "-" + text, "T": ev.ts}
