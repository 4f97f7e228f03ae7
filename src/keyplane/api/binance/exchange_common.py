"""What the exchange routes share: running the service, and Binance's JSON shapes.

On SQLite a read runs inline on the event loop (in WAL mode a read never waits for a lock, and a
thread hop would cost more than the call), and a write goes to the one writer thread
(``keyplane.exchange.batching``): order placements share its group commit, and the loop never waits
on a database lock. On PostgreSQL a call runs in a worker thread, and each order keeps a
transaction of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from keyplane.exchange.markets import Market
from keyplane.exchange.orders import OrderView, Placement
from keyplane.exchange.service import ExchangeService

T = TypeVar("T")


async def run(ex: ExchangeService, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    if ex.db.is_sqlite:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


async def write(ex: ExchangeService, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A state-changing call (a cancel...): on SQLite on the writer thread, in arrival order."""
    if ex.db.is_sqlite:
        return await ex.group_commit.run(fn, *args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


async def place(ex: ExchangeService, req: Placement) -> OrderView:
    """Place one order; returns after the transaction that holds it has committed."""
    if ex.db.is_sqlite:
        return await ex.group_commit.place(req)
    return await asyncio.to_thread(
        ex.orders.place,
        req.user_id,
        req.order,
        key_id=req.key_id,
        max_notional=req.max_notional,
        not_after_s=req.not_after_s,
    )


def order_json(v: OrderView, market: Market, *, full: bool = False) -> dict[str, Any]:
    q = market.quote
    doc: dict[str, Any] = {
        "symbol": v.symbol,
        "orderId": v.id,
        "orderListId": -1 if v.list_id is None else v.list_id,
        "clientOrderId": v.client_order_id,
        "price": market.price_text(v.price),
        "origQty": market.qty_text(v.orig_qty),
        "executedQty": market.qty_text(v.executed_qty),
        "cummulativeQuoteQty": q.fmt(v.cum_quote),
        "status": v.status,
        "timeInForce": v.tif,
        "type": v.type,
        "side": v.side,
        "selfTradePreventionMode": v.stp,
    }
    if v.stop_price:
        doc["stopPrice"] = market.price_text(v.stop_price)
    if v.trailing_delta:
        doc["trailingDelta"] = v.trailing_delta
    working_time = -1 if v.working_ms is None else v.working_ms
    if full:
        doc["transactTime"] = v.created_ms
        doc["workingTime"] = working_time
        doc["fills"] = [
            {
                "price": market.price_text(int(f["price"])),
                "qty": market.qty_text(int(f["qty"])),
                "commission": (market.base if f["commissionAsset"] == market.base.name else q).fmt(
                    int(f["commission"])
                ),
                "commissionAsset": f["commissionAsset"],
                "tradeId": f["tradeId"],
            }
            for f in v.fills
        ]
    else:
        doc.update(
            {
                "stopPrice": market.price_text(v.stop_price),
                "icebergQty": "0.00000000",
                "time": v.created_ms,
                "updateTime": v.updated_ms,
                "isWorking": v.is_working,
                "workingTime": working_time,
                "origQuoteOrderQty": q.fmt(v.orig_quote_qty),
            }
        )
    return doc
