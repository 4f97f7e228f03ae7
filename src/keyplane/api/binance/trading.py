"""Orders and fills on the Binance surface. Signed parameters come from ``AuthContext.params``, which
the middleware already parsed from the query string or form body: nothing parses them twice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from keyplane.api.binance.exchange_common import order_json, place, run, write
from keyplane.api.deps import exchange, signed_context
from keyplane.auth.routes import signed
from keyplane.exchange.errors import (
    BadParameter,
    CancelReplaceFailed,
    CancelReplacePartiallyFailed,
    ExchangeError,
    InvalidCancelRestrictions,
)
from keyplane.exchange.markets import Market
from keyplane.exchange.orders import CANCEL_RESTRICTIONS, OrderView, Placement, Replaced
from keyplane.exchange.params import (
    _CLIENT_ID_RE,
    NewOrder,
    int_param,
    mandatory,
    market_of,
    parse_new_order,
    text_param,
    time_window,
)
from keyplane.keys.scopes import Scope

router = APIRouter(tags=["binance: trading"])

REPLACE_MODES = ("STOP_ON_FAILURE", "ALLOW_FAILURE")


def _order_ref(
    params: dict[str, str], markets: dict[str, Market], id_name: str = "orderId", client_name: str = "origClientOrderId"
) -> tuple[Market, int | None, str | None]:
    """The market, and the order in it that ``orderId`` or ``origClientOrderId`` names (in a
    cancel-replace: ``cancelOrderId`` or ``cancelOrigClientOrderId``)."""
    market = market_of(params, markets)
    order_id = int_param(params, id_name)
    client_id = text_param(params, client_name, max_len=36) or None
    if order_id is None and client_id is None:
        raise BadParameter(f"Param '{id_name}' or '{client_name}' must be sent, but both were empty/null!")
    return market, order_id, client_id


def _cancel_json(view: OrderView, market: Market, cancel_id: str | None = None) -> dict[str, Any]:
    """A cancelled order as Binance answers a cancel. ``clientOrderId`` names the cancel when the
    request named it (``cancelNewClientOrderId``), else the order, like ``origClientOrderId``."""
    return {
        **order_json(view, market),
        "origClientOrderId": view.client_order_id,
        "clientOrderId": cancel_id or view.client_order_id,
        "transactTime": view.updated_ms,
    }


def _placed_json(view: OrderView, order: NewOrder) -> dict[str, Any]:
    """A new order as Binance answers its placement, in the ``newOrderRespType`` asked for."""
    if order.resp_type == "ACK":
        return {"symbol": view.symbol, "orderId": view.id, "orderListId": -1, "clientOrderId": view.client_order_id,
                "transactTime": view.created_ms}  # fmt: skip
    return order_json(view, order.market, full=True)


def _error_json(e: ExchangeError) -> dict[str, Any]:
    return {"code": e.binance_code, "msg": e.message}


@router.post("/api/v3/order")
@signed(Scope.TRADE, symbol_restricted=True)
async def new_order(request: Request) -> JSONResponse:
    ctx = signed_context(request)
    ex = exchange(request)
    order = parse_new_order(ctx.params, ex.markets)
    key = ctx.key
    view = await place(ex, Placement(key.user_id, order, key.public_id, key.restrictions.max_notional, ctx.not_after_s))
    return JSONResponse(_placed_json(view, order))


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
    return JSONResponse(_cancel_json(view, market))


@router.delete("/api/v3/openOrders")
@signed(Scope.TRADE, symbol_restricted=True)
async def cancel_open_orders(request: Request) -> JSONResponse:
    """Cancel every open order of the caller in ``symbol``, in one transaction; -2011 if none."""
    ctx = signed_context(request)
    ex = exchange(request)
    market = market_of(ctx.params, ex.markets)
    views = await write(ex, ex.orders.cancel_all, ctx.key.user_id, market, not_after_s=ctx.not_after_s)
    return JSONResponse([_cancel_json(v, market) for v in views])


@dataclass(frozen=True, slots=True)
class _Replace:
    """A cancel-replace request, checked: the order to cancel, how, and the new order."""

    market: Market
    order_id: int | None
    client_id: str | None
    cancel_id: str | None  # cancelNewClientOrderId: names the cancel in the answer
    restriction: str | None  # cancelRestrictions
    allow_failure: bool  # cancelReplaceMode=ALLOW_FAILURE
    order: NewOrder


def _parse_replace(params: dict[str, str], markets: dict[str, Market]) -> _Replace:
    """Every parameter of a cancel-replace, the new order's filters included: checked before either
    half is attempted, as on Binance."""
    mode = mandatory(params, "cancelReplaceMode").upper()
    if mode not in REPLACE_MODES:
        raise BadParameter(f"Invalid cancelReplaceMode {mode[:20]!r}: use {' or '.join(REPLACE_MODES)}.")
    market, order_id, client_id = _order_ref(params, markets, "cancelOrderId", "cancelOrigClientOrderId")
    cancel_id = text_param(params, "cancelNewClientOrderId", max_len=36) or None
    if cancel_id is not None and not _CLIENT_ID_RE.fullmatch(cancel_id):
        raise BadParameter(
            "Parameter 'cancelNewClientOrderId' must be 1-36 characters of letters, digits and . : / _ -"
        )
    restriction = text_param(params, "cancelRestrictions").upper() or None
    if restriction is not None and restriction not in CANCEL_RESTRICTIONS:
        raise InvalidCancelRestrictions()
    # No unfilled-order count is kept here, so both modes of it act as within the limits.
    if text_param(params, "orderRateLimitExceededMode", "DO_NOTHING").upper() not in ("DO_NOTHING", "CANCEL_ONLY"):
        raise BadParameter("Invalid orderRateLimitExceededMode: use DO_NOTHING or CANCEL_ONLY.")
    order = parse_new_order(params, markets)
    return _Replace(market, order_id, client_id, cancel_id, restriction, mode == "ALLOW_FAILURE", order)


def _replace_answer(req: _Replace, done: Replaced) -> JSONResponse:
    """Binance's answer: 200 when both halves succeeded; else -2021 (409) when one did, -2022 (400)
    when neither did, with what each half did in ``data``."""
    canceled, placed = done.canceled, done.placed
    doc: dict[str, Any] = {"cancelResult": "FAILURE", "newOrderResult": "FAILURE"}
    if isinstance(canceled, OrderView):
        doc["cancelResult"], doc["cancelResponse"] = "SUCCESS", _cancel_json(canceled, req.market, req.cancel_id)
    else:
        doc["cancelResponse"] = _error_json(canceled)
    if placed is None:
        doc["newOrderResult"], doc["newOrderResponse"] = "NOT_ATTEMPTED", None
    elif isinstance(placed, OrderView):
        doc["newOrderResult"], doc["newOrderResponse"] = "SUCCESS", _placed_json(placed, req.order)
    else:
        doc["newOrderResponse"] = _error_json(placed)
    succeeded = (doc["cancelResult"], doc["newOrderResult"]).count("SUCCESS")
    if succeeded == 2:
        return JSONResponse(doc)
    err = CancelReplacePartiallyFailed(doc) if succeeded == 1 else CancelReplaceFailed(doc)
    # Rendered here: the shared renderer (keyplane.api.errors.render) has no place for ``data``.
    return JSONResponse(
        {"code": err.binance_code, "msg": err.message, "reason": err.code, "data": err.data},
        status_code=err.status,
        headers={"X-Keyplane-Error": err.code},
    )


@router.post("/api/v3/order/cancelReplace")
@signed(Scope.TRADE, symbol_restricted=True)
async def cancel_replace(request: Request) -> JSONResponse:
    """Cancel an order and place a new one in the same market, in one transaction."""
    ctx = signed_context(request)
    ex = exchange(request)
    req = _parse_replace(ctx.params, ex.markets)
    key = ctx.key
    new = Placement(key.user_id, req.order, key.public_id, key.restrictions.max_notional)
    done = await write(
        ex, ex.orders.cancel_replace, req.market, req.order_id, req.client_id, new,
        allow_failure=req.allow_failure, restriction=req.restriction, not_after_s=ctx.not_after_s,
    )  # fmt: skip
    return _replace_answer(req, done)


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
    start, end = time_window(p, max_hours=24)  # -1127 beyond, as Binance answers
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
