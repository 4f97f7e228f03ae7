"""Public market data on the Binance surface: exchangeInfo, depth, trades (recent, historical,
aggregate), klines, average price and tickers (24 h, rolling window, trading day)."""

from __future__ import annotations

import time
import weakref
from typing import Any

import limits
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from keyplane.api.binance.exchange_common import run
from keyplane.api.deps import exchange
from keyplane.api.state import app_state
from keyplane.auth.admission import Policy
from keyplane.exchange.errors import BadParameter
from keyplane.exchange.formats import book_json, ticker_json
from keyplane.exchange.klines import KLINE_INTERVALS, Candle
from keyplane.exchange.marketdata import AVG_PRICE_MINS, Ticker, Window
from keyplane.exchange.markets import Market
from keyplane.exchange.params import (
    ORDER_TYPES,
    STP_MODES,
    TRAILING_DELTA,
    BadCombination,
    choice_param,
    int_param,
    interval_param,
    market_of,
    symbols_param,
    time_window,
    utc_time_zone,
    window_size_param,
)
from keyplane.exchange.rows import PublicTrade
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


def _named(request: Request) -> tuple[ExchangeService, list[Market], bool]:
    """As :func:`_selected`, for the routes where ``symbol`` or ``symbols`` is mandatory."""
    params = request.query_params
    if not params.get("symbol") and not params.get("symbols"):
        raise BadParameter("Param 'symbol' or 'symbols' must be sent, but both were empty/null!")
    return _selected(request)


# Binance's rate limiter intervals, longest first: a limit is shown in the longest unit its window
# is a whole number of.
_INTERVALS = (("DAY", 86_400), ("MINUTE", 60), ("SECOND", 1))
_RATE_LIMITS: weakref.WeakKeyDictionary[Policy, list[dict[str, Any]]] = weakref.WeakKeyDictionary()


def _rate_limit(item: limits.RateLimitItem) -> dict[str, Any]:
    window_s = int(item.get_expiry())
    name, unit = next((n, u) for n, u in _INTERVALS if window_s % u == 0)
    return {"rateLimitType": "REQUEST_WEIGHT", "interval": name, "intervalNum": window_s // unit, "limit": item.amount}


def rate_limits(policy: Policy) -> list[dict[str, Any]]:
    """The limits the request gate enforces (``Policy``, parsed once from the settings), in
    Binance's shape, built once per policy: request weight per API key, per client IP on signed
    routes, and per client IP on public routes, in that order (identical entries once)."""
    shown = _RATE_LIMITS.get(policy)
    if shown is None:
        shown = []
        for doc in map(_rate_limit, (policy.per_key, policy.per_ip, policy.public_ip)):
            if doc not in shown:
                shown.append(doc)
        _RATE_LIMITS[policy] = shown
    return shown


def symbol_info(m: Market) -> dict[str, Any]:
    lo_delta, hi_delta = TRAILING_DELTA
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
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": m.price_text(m.min_price),
             "maxPrice": m.price_text(m.max_price), "tickSize": m.price_text(m.tick)},
            {"filterType": "LOT_SIZE", **lot},
            {"filterType": "MARKET_LOT_SIZE", **lot},  # market orders have the same quantity limits
            {"filterType": "NOTIONAL", "minNotional": m.quote.fmt(m.min_notional), "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 0},
            {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": lo_delta, "maxTrailingAboveDelta": hi_delta,
             "minTrailingBelowDelta": lo_delta, "maxTrailingBelowDelta": hi_delta},
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
            "rateLimits": rate_limits(app_state(request).gate.policy),
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


def _trade_json(market: Market, r: PublicTrade) -> dict[str, Any]:
    return {
        "id": r.id, "price": market.price_text(r.price), "qty": market.qty_text(r.qty),
        "quoteQty": market.quote.fmt(r.quote_qty), "time": r.ts, "isBuyerMaker": r.buyer_is_maker, "isBestMatch": True,
    }  # fmt: skip


def _limit(params: dict[str, str], default: int = 500, most: int = 1000) -> int:
    return int_param(params, "limit", default, 1, most) or default


@router.get("/api/v3/trades")
async def trades(request: Request) -> JSONResponse:
    ex, params, market = _market(request)
    rows = await run(ex, ex.data.recent_trades, market, _limit(params))
    return JSONResponse([_trade_json(market, r) for r in rows])


@router.get("/api/v3/historicalTrades")
async def historical_trades(request: Request) -> JSONResponse:
    """Older trades, from ``fromId`` on (the latest without it). Public, as on Binance since its
    security type became NONE: an ``X-MBX-APIKEY`` header (ccxt sends one) is ignored."""
    ex, params, market = _market(request)
    from_id = int_param(params, "fromId")
    rows = await run(ex, ex.data.trades, market, from_id=from_id, limit=_limit(params))
    return JSONResponse([_trade_json(market, r) for r in rows])


@router.get("/api/v3/aggTrades")
async def agg_trades(request: Request) -> JSONResponse:
    """Trades in Binance's compressed form (ccxt's default for fetch_trades). Every trade is its own
    aggregate, so ``a``, ``f`` and ``l`` are the trade id. ``fromId`` pages forward by id;
    ``startTime``/``endTime`` select by time (no longest window: Binance dropped its hour); not both."""
    ex, params, market = _market(request)
    from_id = int_param(params, "fromId")
    start, end = time_window(params)
    if from_id is not None and (start is not None or end is not None):
        raise BadCombination(
            "Combination of optional parameters invalid: send fromId, or startTime and/or endTime, not both."
        )
    rows = await run(ex, ex.data.trades, market, from_id=from_id, start_ms=start, end_ms=end, limit=_limit(params))
    return JSONResponse(
        [
            {"a": r.id, "p": market.price_text(r.price), "q": market.qty_text(r.qty), "f": r.id, "l": r.id,
             "T": r.ts, "m": r.buyer_is_maker, "M": True}
            for r in rows
        ]
    )  # fmt: skip


def _kline_json(market: Market, c: Candle) -> list[Any]:
    p, b, q = market.price_text, market.qty_text, market.quote.fmt
    return [
        c.open_ms, p(c.open), p(c.high), p(c.low), p(c.close), b(c.volume), c.close_ms, q(c.quote_volume), c.count,
        b(c.taker_buy_volume), q(c.taker_buy_quote), "0",
    ]  # fmt: skip


async def _klines(request: Request) -> JSONResponse:
    ex, params, market = _market(request)
    interval = interval_param(params, KLINE_INTERVALS)
    utc_time_zone(params)
    start, end = time_window(params)
    limit = _limit(params)
    rows = await run(ex, ex.data.klines, market, interval, start_ms=start, end_ms=end, limit=limit)
    return JSONResponse([_kline_json(market, c) for c in rows])


@router.get("/api/v3/klines")
async def klines(request: Request) -> JSONResponse:
    return await _klines(request)


@router.get("/api/v3/uiKlines")
async def ui_klines(request: Request) -> JSONResponse:
    """The same candles as ``klines``: there is nothing here for a chart to smooth."""
    return await _klines(request)


@router.get("/api/v3/avgPrice")
async def avg_price(request: Request) -> JSONResponse:
    ex, _, market = _market(request)
    price, close_ms = await run(ex, ex.data.avg_price, market)
    return JSONResponse({"mins": AVG_PRICE_MINS, "price": market.price_text(price), "closeTime": close_ms})


# The fields of Binance's ticker forms, in its order: the rolling-window and trading-day tickers
# (FULL) have no previous close, last quantity or book; MINI is the same for every ticker.
_WINDOW_FULL = (
    "symbol", "priceChange", "priceChangePercent", "weightedAvgPrice", "openPrice", "highPrice", "lowPrice",
    "lastPrice", "volume", "quoteVolume", "openTime", "closeTime", "firstId", "lastId", "count",
)  # fmt: skip
_MINI = (
    "symbol", "openPrice", "highPrice", "lowPrice", "lastPrice", "volume", "quoteVolume", "openTime", "closeTime",
    "firstId", "lastId", "count",
)  # fmt: skip


async def _tickers(
    request: Request, selected: tuple[ExchangeService, list[Market], bool], window: Window, full: tuple[str, ...] | None
) -> JSONResponse:
    """The tickers of the selected markets over ``window``, in the form ``type`` asks for: FULL
    (``full``'s fields; None: all of ``ticker/24hr``) or MINI."""
    ex, markets, single = selected
    fields = _MINI if choice_param(dict(request.query_params), "type", ("FULL", "MINI"), "FULL") == "MINI" else full
    docs = []
    for m in markets:
        t: Ticker = await run(ex, ex.data.ticker, m, window)
        doc = ticker_json(t, m)
        docs.append(doc if fields is None else {k: doc[k] for k in fields})
    return JSONResponse(docs[0] if single else docs)


@router.get("/api/v3/ticker/24hr")
async def ticker_24hr(request: Request) -> JSONResponse:
    return await _tickers(request, _selected(request), Window(), None)


@router.get("/api/v3/ticker")
async def ticker_rolling(request: Request) -> JSONResponse:
    """The rolling window ticker: ``windowSize`` (1m..59m, 1h..23h, 1d..7d; 1d by default) back
    from now, opening on a whole minute as on Binance."""
    selected = _named(request)
    size = window_size_param(dict(request.query_params))
    return await _tickers(request, selected, Window(size, on_minute=True), _WINDOW_FULL)


@router.get("/api/v3/ticker/tradingDay")
async def ticker_trading_day(request: Request) -> JSONResponse:
    """The ticker of the current trading day (UTC: ``timeZone`` may only name UTC)."""
    selected = _named(request)
    utc_time_zone(dict(request.query_params))
    return await _tickers(request, selected, Window(trading_day=True), _WINDOW_FULL)


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
