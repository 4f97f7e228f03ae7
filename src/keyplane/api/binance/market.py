"""Public market data on the Binance surface: exchangeInfo, depth, trades, tickers, klines."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from keyplane.api.binance.exchange_common import exchange, reply, run
from keyplane.exchange.errors import BadParameter
from keyplane.exchange.marketdata import INTERVALS_MS, Ticker
from keyplane.exchange.markets import Market
from keyplane.exchange.params import ORDER_TYPES, int_param, market_of, symbols_param, text_param
from keyplane.exchange.service import ExchangeService

router = APIRouter(tags=["binance: market data"])


def _params(request: Request) -> dict[str, str]:
    return dict(request.query_params)


def symbol_info(m: Market) -> dict[str, Any]:
    return {
        "symbol": m.symbol,
        "status": "TRADING",
        "baseAsset": m.base.name,
        "baseAssetPrecision": m.base.decimals,
        "quoteAsset": m.quote.name,
        "quotePrecision": m.quote.decimals,
        "quoteAssetPrecision": m.quote.decimals,
        "baseCommissionPrecision": m.base.decimals,
        "quoteCommissionPrecision": m.quote.decimals,
        "orderTypes": list(ORDER_TYPES),
        "icebergAllowed": False,
        "ocoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": m.price_text(m.min_price),
             "maxPrice": m.price_text(m.max_price), "tickSize": m.price_text(m.tick)},
            {"filterType": "LOT_SIZE", "minQty": m.qty_text(m.min_qty), "maxQty": m.qty_text(m.max_qty),
             "stepSize": m.qty_text(m.step)},
            {"filterType": "MARKET_LOT_SIZE", "minQty": m.qty_text(m.min_qty), "maxQty": m.qty_text(m.max_qty),
             "stepSize": m.qty_text(m.step)},
            {"filterType": "NOTIONAL", "minNotional": m.quote.fmt(m.min_notional), "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 0},
        ],
        "permissions": ["SPOT"],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_TAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "NONE"],
        "makerCommission": str(m.maker_fee),
        "takerCommission": str(m.taker_fee),
    }  # fmt: skip


@router.get("/api/v3/exchangeInfo")
async def exchange_info(request: Request) -> JSONResponse:
    ex = exchange(request)
    wanted: list[str] | None = None
    params = _params(request)
    if params.get("symbol"):
        wanted = [market_of(params, ex.markets).symbol]
    else:
        chosen = symbols_param(params, ex.markets)
        wanted = None if chosen is None else [m.symbol for m in chosen]
    markets = [m for s, m in ex.markets.items() if wanted is None or s in wanted]
    return reply(
        {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": [symbol_info(m) for m in markets],
        }
    )


@router.get("/api/v3/depth")
async def depth(request: Request) -> JSONResponse:
    ex = exchange(request)
    params = _params(request)
    market = market_of(params, ex.markets)
    limit = int_param(params, "limit", 100, 1, 5000) or 100
    update_id, bids, asks = await run(ex, ex.data.depth, market, limit)
    return reply(
        {
            "lastUpdateId": update_id,
            "bids": [[market.price_text(p), market.qty_text(q)] for p, q in bids],
            "asks": [[market.price_text(p), market.qty_text(q)] for p, q in asks],
        }
    )


@router.get("/api/v3/trades")
async def trades(request: Request) -> JSONResponse:
    ex = exchange(request)
    params = _params(request)
    market = market_of(params, ex.markets)
    limit = int_param(params, "limit", 500, 1, 1000) or 500
    rows = await run(ex, ex.data.recent_trades, market, limit)
    return reply(
        [
            {"id": r["id"], "price": market.price_text(int(r["price"])),  # type: ignore[call-overload]
             "qty": market.qty_text(int(r["qty"])), "quoteQty": market.quote.fmt(int(r["quote_qty"])),  # type: ignore[call-overload]
             "time": r["ts"], "isBuyerMaker": bool(r["buyer_is_maker"]), "isBestMatch": True}
            for r in rows
        ]
    )  # fmt: skip


def ticker_json(t: Ticker, m: Market) -> dict[str, Any]:
    change = t.last - t.open
    pct = "0.000" if not t.open else f"{change * 100 / t.open:.3f}"
    wavg = m.base.scale * t.quote_volume // t.volume if t.volume else t.last
    bid, ask = t.bid or (0, 0), t.ask or (0, 0)
    return {
        "symbol": t.symbol,
        "priceChange": m.price_text(change) if change >= 0 else "-" + m.price_text(-change),
        "priceChangePercent": pct,
        "weightedAvgPrice": m.price_text(wavg),
        "prevClosePrice": m.price_text(t.open),
        "lastPrice": m.price_text(t.last),
        "lastQty": m.qty_text(0),
        "bidPrice": m.price_text(bid[0]),
        "bidQty": m.qty_text(bid[1]),
        "askPrice": m.price_text(ask[0]),
        "askQty": m.qty_text(ask[1]),
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


def _selected(ex: ExchangeService, params: dict[str, str]) -> tuple[list[Market], bool]:
    """The markets a ticker call asks for, and whether it asked for one (an object, not a list)."""
    if params.get("symbol"):
        return [market_of(params, ex.markets)], True
    chosen = symbols_param(params, ex.markets)
    return (list(ex.markets.values()) if chosen is None else chosen), False


@router.get("/api/v3/ticker/24hr")
async def ticker_24hr(request: Request) -> JSONResponse:
    ex = exchange(request)
    markets, single = _selected(ex, _params(request))
    docs = [ticker_json(await run(ex, ex.data.ticker, m), m) for m in markets]
    return reply(docs[0] if single else docs)


@router.get("/api/v3/ticker/price")
async def ticker_price(request: Request) -> JSONResponse:
    ex = exchange(request)
    markets, single = _selected(ex, _params(request))
    docs = [{"symbol": m.symbol, "price": m.price_text(await run(ex, ex.data.last_price, m))} for m in markets]
    return reply(docs[0] if single else docs)


@router.get("/api/v3/ticker/bookTicker")
async def book_ticker(request: Request) -> JSONResponse:
    ex = exchange(request)
    markets, single = _selected(ex, _params(request))
    docs = []
    for m in markets:
        bid, ask = await run(ex, ex.data.book_ticker, m)
        bid, ask = bid or (0, 0), ask or (0, 0)
        docs.append(
            {"symbol": m.symbol, "bidPrice": m.price_text(bid[0]), "bidQty": m.qty_text(bid[1]),
             "askPrice": m.price_text(ask[0]), "askQty": m.qty_text(ask[1])}
        )  # fmt: skip
    return reply(docs[0] if single else docs)


@router.get("/api/v3/klines")
async def klines(request: Request) -> JSONResponse:
    ex = exchange(request)
    params = _params(request)
    market = market_of(params, ex.markets)
    interval = text_param(params, "interval")
    if interval not in INTERVALS_MS:
        raise BadParameter(f"Invalid interval {interval[:8]!r}: use one of {', '.join(INTERVALS_MS)}.")
    limit = int_param(params, "limit", 500, 1, 1000) or 500
    start, end = int_param(params, "startTime"), int_param(params, "endTime")
    rows = await run(ex, ex.data.klines, market, interval, start_ms=start, end_ms=end, limit=limit)
    p, b, q = market.price_text, market.qty_text, market.quote.fmt
    return reply(
        [[k[0], p(k[1]), p(k[2]), p(k[3]), p(k[4]), b(k[5]), k[6], q(k[7]), k[8], b(k[9]), q(k[10]), "0"] for k in rows]
    )


@router.get("/api/v3/aggTrades")
async def agg_trades(request: Request) -> JSONResponse:
    """Recent trades in Binance's compressed form (ccxt's default for fetch_trades); every trade is
    its own aggregate, so ``a`` equals the trade id."""
    ex = exchange(request)
    params = _params(request)
    market = market_of(params, ex.markets)
    limit = int_param(params, "limit", 500, 1, 1000) or 500
    rows = await run(ex, ex.data.recent_trades, market, limit)
    start, end = int_param(params, "startTime"), int_param(params, "endTime")
    from_id = int_param(params, "fromId")
    out = []
    for r in rows:
        tid, ts = int(r["id"]), int(r["ts"])  # type: ignore[call-overload]
        if (
            (from_id is not None and tid < from_id)
            or (start is not None and ts < start)
            or (end is not None and ts > end)
        ):
            continue
        out.append(
            {"a": tid, "p": market.price_text(int(r["price"])), "q": market.qty_text(int(r["qty"])),  # type: ignore[call-overload]
             "f": tid, "l": tid, "T": ts, "m": bool(r["buyer_is_maker"]), "M": True}
        )  # fmt: skip
    return reply(out)
