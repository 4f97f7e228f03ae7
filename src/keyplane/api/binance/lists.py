"""Order lists (OCO) on the Binance surface: placing one (``POST /api/v3/orderList/oco``, and the
earlier ``POST /api/v3/order/oco``), cancelling one, and reading them back. The rules live in
:meth:`keyplane.exchange.orders.OrderService.place_list` and ``cancel_list``; here are only
parameters in and Binance's JSON out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from keyplane.api.binance.exchange_common import order_json, run, write
from keyplane.api.deps import exchange, signed_context
from keyplane.auth.routes import signed
from keyplane.exchange.errors import BadParameter
from keyplane.exchange.markets import Market
from keyplane.exchange.orders import ListPlacement, OrderListView
from keyplane.exchange.params import (
    NewOrderList,
    int_param,
    market_of,
    parse_legacy_oco,
    parse_oco,
    text_param,
    time_window,
)
from keyplane.keys.scopes import Scope

router = APIRouter(tags=["binance: order lists"])


def list_json(ol: OrderListView, market: Market | None = None, *, reports: bool = False) -> dict[str, Any]:
    """An order list as Binance answers it; with ``reports`` (a placement or a cancel), each
    order in full as well."""
    doc: dict[str, Any] = {
        "orderListId": ol.id,
        "contingencyType": ol.contingency,
        "listStatusType": ol.status,
        "listOrderStatus": "EXECUTING" if ol.status == "EXEC_STARTED" else "ALL_DONE",
        "listClientOrderId": ol.client_list_id,
        "transactionTime": ol.updated_ms,
        "symbol": ol.symbol,
        "orders": [{"symbol": o.symbol, "orderId": o.id, "clientOrderId": o.client_order_id} for o in ol.orders],
    }
    if reports and market is not None:
        doc["orderReports"] = [order_json(o, market) for o in ol.orders]
    return doc


async def _place(request: Request, parse: Callable[[dict[str, str], dict[str, Market]], NewOrderList]) -> JSONResponse:
    ctx = signed_context(request)
    ex = exchange(request)
    order_list = parse(ctx.params, ex.markets)
    key = ctx.key
    req = ListPlacement(key.user_id, order_list, key.public_id, key.restrictions.max_notional, ctx.not_after_s)
    placed = await write(ex, ex.orders.place_list, req)
    if order_list.resp_type == "ACK":
        return JSONResponse(list_json(placed))
    return JSONResponse(list_json(placed, order_list.market, reports=True))


@router.post("/api/v3/orderList/oco")
@signed(Scope.TRADE, symbol_restricted=True)
async def new_oco(request: Request) -> JSONResponse:
    return await _place(request, parse_oco)


@router.post("/api/v3/order/oco")
@signed(Scope.TRADE, symbol_restricted=True)
async def new_oco_legacy(request: Request) -> JSONResponse:
    """Binance's earlier OCO endpoint (a LIMIT_MAKER and a stop), which older clients still call."""
    return await _place(request, parse_legacy_oco)


def _list_ref(params: dict[str, str], client_name: str) -> tuple[int | None, str | None]:
    list_id = int_param(params, "orderListId")
    client_id = text_param(params, client_name, max_len=36) or None
    if list_id is None and client_id is None:
        raise BadParameter(f"Param 'orderListId' or '{client_name}' must be sent, but both were empty/null!")
    return list_id, client_id


@router.delete("/api/v3/orderList")
@signed(Scope.TRADE, symbol_restricted=True)
async def cancel_oco(request: Request) -> JSONResponse:
    ctx = signed_context(request)
    ex = exchange(request)
    market = market_of(ctx.params, ex.markets)
    list_id, client_id = _list_ref(ctx.params, "listClientOrderId")
    done = await write(
        ex, ex.orders.cancel_list, ctx.key.user_id, market, list_id, client_id, not_after_s=ctx.not_after_s
    )
    return JSONResponse(list_json(done, market, reports=True))


@router.get("/api/v3/orderList")
@signed(Scope.READ, weight=4)
async def get_oco(request: Request) -> JSONResponse:
    ctx = signed_context(request)
    ex = exchange(request)
    list_id, client_id = _list_ref(ctx.params, "origClientOrderId")
    found = await run(ex, ex.orders.get_list, ctx.key.user_id, list_id, client_id)
    return JSONResponse(list_json(found))


@router.get("/api/v3/allOrderList")
@signed(Scope.READ, weight=20)
async def all_oco(request: Request) -> JSONResponse:
    ctx = signed_context(request)
    ex = exchange(request)
    start, end = time_window(ctx.params, max_hours=24)
    from_id = int_param(ctx.params, "fromId")
    limit = int_param(ctx.params, "limit", 500, lo=1, hi=1000) or 500
    found = await run(
        ex, ex.orders.all_lists, ctx.key.user_id, from_id=from_id, start_ms=start, end_ms=end, limit=limit
    )
    return JSONResponse([list_json(ol) for ol in found])


@router.get("/api/v3/openOrderList")
@signed(Scope.READ, weight=6)
async def open_oco(request: Request) -> JSONResponse:
    ctx = signed_context(request)
    ex = exchange(request)
    found = await run(ex, ex.orders.open_lists, ctx.key.user_id)
    return JSONResponse([list_json(ol) for ol in found])
