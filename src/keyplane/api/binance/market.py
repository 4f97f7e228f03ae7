"""Public market data on the Binance surface: exchangeInfo, depth, trades, tickers, klines."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from keyplane.api.binance.exchange_common import run
from keyplane.api.deps import exchange
from keyplane.exchange.errors import BadParameter
from keyplane.exchange.formats import book_json, ticker_json
from keyplane.exchange.marketdata import INTERVALS_MS
from keyplane.exchange.markets import Market
from keyplane.exchange.params import ORDER_TYPES, STP_MODES, int_param, market_of, symbols_param, text_param
from keyplane.exchange.service import ExchangeService

router = APIRouter(tags=["binance: market data"])


def _market(request: Request) -> tuple[ExchangeService, dict[str, str], Market]:
    """The exchange, the query's parameters, and the market its ``symbol`` names."""
    ex, params = exchange(request), dict(request.query_params)
    return ex, params, market_of(params, ex.markets)


def _selected(request: Request) -> tuple[ExchangeService, list[Market], bool]:
    """The exchange, the markets a ticker or exchangeInfo call asks for (``symbol``, ``symbols``,
    else every one), and whether it asked for one (a ticker is then an object, not a list)."""
    ex, params = exchange(request), dict(request.query_params)
    if params.get("symbol"):
        return ex, [market_of(params, ex.markets)], True
    chosen = symbols_param(params, ex.markets)
    return ex, (list(ex.markets.values()) if chosen is None else chosen), False


def symbol_info(m: Market) -> dict[str, Any]:
    lot = {"minQty": m.qty_text(m.min_qty), "maxQty": m.qty_text(m.max_qty), "stepSize": m.qty_text(m.step)}
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
            {"filterType": "LOT_SIZE", **lot},
            {"filterType": "MARKET_LOT_SIZE", **lot},  # market orders have the same quantity limits
            {"filterType": "NOTIONAL", "minNotional": m.quote.fmt(m.min_notional), "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 0},
        ],
        "permissions": ["SPOT"],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_TAKER",
        "allowedSelfTradePreventionModes": list(STP_MODES),
        "makerCommission": str(m.maker_fee),
        "takerCommission": str(m.taker_fee),
    }  # fmt: skip


@router.get("/api/v3/exchangeInfo")
async def exchange_info(request: Request) -> JSONResponse:
    ex, chosen, _ = _selected(request)
    wanted = {m.symbol for m in chosen}
    return JSONResponse(
        {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": [symbol_info(m) for s, m in ex.markets.items() if s in wanted],
        }
    )


@router.get("/api/v3/depth")
async def depth(request: Request) -> JSONResponse:
    ex, params, market = _market(request)
    limit = int_param(params, "limit", 100, 1, 5000) or 100
    update_id, bids, asks = await run(ex, ex.data.depth, market, limit)
    return JSONResponse(
        {
            "lastUpdateId": update_id,
            "bids": [[market.price_text(p), market.qty_text(q)] for p, q in bids],
            "asks": [[market.price_text(p), market.qty_text(q)] for p, q in asks],
        }
    )


@router.get("/api/v3/trades")
async def trades(request: Request) -> JSONResponse:
    ex, params, market = _market(request)
    limit = int_param(params, "limit", 500, 1, 1000) or 500
    rows = await run(ex, ex.data.recent_trades, market, limit)
    return JSONResponse(
        [
            {"id": r.id, "price": market.price_text(r.price), "qty": market.qty_text(r.qty),
             "quoteQty": market.quote.fmt(r.quote_qty), "time": r.ts, "isBuyerMaker": r.buyer_is_maker,
             "isBestMatch": True}
            for r in rows
        ]
    )  # fmt: skip


@router.get("/api/v3/ticker/24hr")
async def ticker_24hr(request: Request) -> JSONResponse:
    ex, markets, single = _selected(request)
    docs = [ticker_json(await run(ex, ex.data.ticker, m), m) for m in markets]
    return JSONResponse(docs[0] if single else docs)


@router.get("/api/v3/ticker/price")
async def ticker_price(request: Request) -> JSONResponse:
    ex, markets, single = _selected(request)
    docs = [{"symbol": m.symbol, "price": m.price_text(await run(ex, ex.data.last_price, m))} for m in markets]
    return JSONResponse(docs[0] if single else docs)


@router.get("/api/v3/ticker/bookTicker")
async def book_ticker(request: Request) -> JSONResponse:
    ex, markets, single = _selected(request)
    docs = [{"symbol": m.symbol, **book_json(m, *await run(ex, ex.data.book_ticker, m))} for m in markets]
    return JSONResponse(docs[0] if single else docs)


@router.get("/api/v3/klines")
async def klines(request: Request) -> JSONResponse:
    ex, params, market = _market(request)
    interval = text_param(params, "interval")
    if interval not in INTERVALS_MS:
        raise BadParameter(f"Invalid interval {interval[:8]!r}: use one of {', '.join(INTERVALS_MS)}.")
    limit = int_param(params, "limit", 500, 1, 1000) or 500
    start, end = int_param(params, "startTime"), int_param(params, "endTime")
    rows = await run(ex, ex.data.klines, market, interval, start_ms=start, end_ms=end, limit=limit)
    p, b, q = market.price_text, market.qty_text, market.quote.fmt
    return JSONResponse(
        [[k[0], p(k[1]), p(k[2]), p(k[3]), p(k[4]), b(k[5]), k[6], q(k[7]), k[8], b(k[9]), q(k[10]), "0"] for k in rows]
    )


@router.get("/api/v3/aggTrades")
async def agg_trades(request: Request) -> JSONResponse:
    """Recent trades in Binance's compressed form (ccxt's default for fetch_trades); every trade is
    its own aggregate, so ``a`` equals the trade id."""
    ex, params, market = _market(request)
    limit = int_param(params, "limit", 500, 1, 1000) or 500
    rows = await run(ex, ex.data.recent_trades, market, limit)
    start, end = int_param(params, "startTime"), int_param(params, "endTime")
    from_id = int_param(params, "fromId")
    out = []
    for r in rows:
        if (
            (from_id is not None and r.id < from_id)
            or (start is not None and r.ts < start)
            or (end is not None and r.ts > end)
        ):
            continue
        out.append(
            {"a": r.id, "p": market.price_text(r.price), "q": market.qty_text(r.qty), "f": r.id, "l": r.id,
             "T": r.ts, "m": r.buyer_is_maker, "M": True}
        )  # fmt: skip
    return JSONResponse(out)
