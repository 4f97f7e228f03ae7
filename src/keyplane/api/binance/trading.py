"""Orders and fills on the Binance surface. Signed parameters come from ``AuthContext.params``, which
the middleware already parsed from the query string or form body: nothing parses them twice."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from keyplane.api.binance.exchange_common import order_json, place, run, write
from keyplane.api.deps import exchange, signed_context
from keyplane.auth.routes import signed
from keyplane.exchange.errors import BadParameter
from keyplane.exchange.markets import Market
from keyplane.exchange.orders import Placement
from keyplane.exchange.params import int_param, market_of, parse_new_order, text_param
from keyplane.keys.scopes import Scope

router = APIRouter(tags=["binance: trading"])


def _order_ref(params: dict[str, str], markets: dict[str, Market]) -> tuple[Market, int | None, str | None]:
    """The market, and the order in it that ``orderId`` or ``origClientOrderId`` names."""
    market = market_of(params, markets)
    order_id = int_param(params, "orderId")
    client_id = text_param(params, "origClientOrderId", max_len=36) or None
    if order_id is None and client_id is None:
        raise BadParameter("Param 'orderId' or 'origClientOrderId' must be sent, but both were empty/null!")
    return market, order_id, client_id


@router.post("/api/v3/order")
@signed(Scope.TRADE, symbol_restricted=True)
async def new_order(request: Request) -> JSONResponse:
    ctx = signed_context(request)
    ex = exchange(request)
    order = parse_new_order(ctx.params, ex.markets)
    key = ctx.key
    view = await place(ex, Placement(key.user_id, order, key.public_id, key.restrictions.max_notional, ctx.not_after_s))
    if order.resp_type == "ACK":
        return JSONResponse(
            {"symbol": view.symbol, "orderId": view.id, "orderListId": -1, "clientOrderId": view.client_order_id,
             "transactTime": view.created_ms}
        )  # fmt: skip
    return JSONResponse(order_json(view, order.market, full=True))


@router.post("/api/v3/order/test")
@signed(Scope.TRADE, symbol_restricted=True)
async def test_order(request: Request) -> JSONResponse:
    """Validates an order as /order would (filters, symbol, parameters) and places nothing."""
    ctx = signed_context(request)
    parse_new_order(ctx.params, exchange(request).markets)
    return JSONResponse({})


@router.get("/api/v3/order")
@signed(Scope.READ)
async def get_order(request: Request) -> JSONResponse:
    ctx = signed_context(request)
    ex = exchange(request)
    market, order_id, client_id = _order_ref(ctx.params, ex.markets)
    view = await run(ex, ex.orders.get, ctx.key.user_id, market, order_id, client_id)
    return JSONResponse(order_json(view, market))


@router.delete("/api/v3/order")
@signed(Scope.TRADE, symbol_restricted=True)
async def cancel_order(request: Request) -> JSONResponse:
    ctx = signed_context(request)
    ex = exchange(request)
    market, order_id, client_id = _order_ref(ctx.params, ex.markets)
    view = await write(ex, ex.orders.cancel, ctx.key.user_id, market, order_id, client_id, not_after_s=ctx.not_after_s)
    return JSONResponse({**order_json(view, market), "origClientOrderId": view.client_order_id})


@router.get("/api/v3/openOrders")
@signed(Scope.READ)
async def open_orders(request: Request) -> JSONResponse:
    ctx = signed_context(request)
    ex = exchange(request)
    symbol = market_of(ctx.params, ex.markets).symbol if ctx.params.get("symbol") else None
    views = await run(ex, ex.orders.open_orders, ctx.key.user_id, symbol)
    return JSONResponse([order_json(v, ex.markets[v.symbol]) for v in views])


@router.get("/api/v3/allOrders")
@signed(Scope.READ)
async def all_orders(request: Request) -> JSONResponse:
    ctx = signed_context(request)
    ex = exchange(request)
    # Imported here, not at the top: this function's edits stay inside it (the module's imports
    # are another change's); move it up with the next edit of that block.
    from keyplane.exchange.params import time_window

    p = ctx.params
    market = market_of(p, ex.markets)
    start, end = time_window(p, max_hours=24)
    views = await run(
        ex, ex.orders.all_orders, ctx.key.user_id, market.symbol,
        order_id=int_param(p, "orderId"), start_ms=start, end_ms=end, limit=int_param(p, "limit", 500, 1, 1000) or 500,
    )  # fmt: skip
    return JSONResponse([order_json(v, market) for v in views])


@router.get("/api/v3/myTrades")
@signed(Scope.READ)
async def my_trades(request: Request) -> JSONResponse:
    ctx = signed_context(request)
    ex = exchange(request)
    p = ctx.params
    market = market_of(p, ex.markets)
    start, end = int_param(p, "startTime"), int_param(p, "endTime")
    if start is not None and end is not None and end - start > 86_400_000:
        raise BadParameter("The time between startTime and endTime can't be longer than 24 hours.")
    rows = await run(
        ex, ex.orders.my_trades, ctx.key.user_id, market.symbol,
        start_ms=start, end_ms=end, from_id=int_param(p, "fromId"), order_id=int_param(p, "orderId"),
        limit=int_param(p, "limit", 500, 1, 1000) or 500,
    )  # fmt: skip
    return JSONResponse(
        [
            {"symbol": market.symbol, "id": r.trade_id, "orderId": r.order_id, "orderListId": -1,
             "price": market.price_text(r.price), "qty": market.qty_text(r.qty),
             "quoteQty": market.quote.fmt(r.quote_qty), "commission": ex.assets[r.commission_asset].fmt(r.commission),
             "commissionAsset": r.commission_asset, "time": r.ts, "isBuyer": r.is_buyer, "isMaker": r.is_maker,
             "isBestMatch": True}
            for r in rows
        ]
    )  # fmt: skip
