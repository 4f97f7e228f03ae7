"""Writing a taker's fills: the trades, both sides' fills, the makers' orders and book rows, and the
journal movements of every fill, all on the caller's transaction (:meth:`OrderService.place`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from keyplane.exchange import events as EV
from keyplane.exchange import ledger as L
from keyplane.exchange.history import OrderView
from keyplane.exchange.markets import Market
from keyplane.exchange.matching import Fill
from keyplane.exchange.sql import Raw

_MAKER_ORDER = (
    "UPDATE ex_orders SET executed_qty = executed_qty + :q, cum_quote = cum_quote + :c, status = :st, "
    "updated_ms = :t WHERE id = :id"
)
_BOOK_REDUCE = "UPDATE ex_book SET remaining = remaining - :q WHERE order_id = :id"
BOOK_DELETE = "DELETE FROM ex_book WHERE order_id = :id"
_INSERT_TRADE = (
    "INSERT INTO ex_trades (symbol, id, price, qty, quote_qty, buyer_order_id, seller_order_id, buyer_is_maker, ts) "
    "VALUES (:symbol, :id, :price, :qty, :quote_qty, :buyer_order_id, :seller_order_id, :buyer_is_maker, :ts)"
)
_INSERT_FILL = (
    "INSERT INTO ex_fills (user_id, symbol, trade_id, order_id, is_buyer, is_maker, price, qty, quote_qty, commission, "
    "commission_asset, ts) VALUES (:user_id, :symbol, :trade_id, :order_id, :is_buyer, :is_maker, :price, :qty, "
    ":quote_qty, :commission, :commission_asset, :ts)"
)


def fee(amount: int, rate: Decimal) -> int:
    return int(amount * rate)  # rounded down, in the asset received


def apply_fills(
    db: Raw,
    j: L.Journal,
    market: Market,
    taker: OrderView,
    fills: list[Fill],
    seq: int,
    now: int,
    events: list[dict[str, Any]],
) -> None:
    """Write ``fills`` of ``taker`` (trade ids from ``seq + 1``), and append both sides' TRADE
    events to ``events`` (the taker's marked PARTIALLY_FILLED: the caller knows its final status)."""
    base, quote = market.base.name, market.quote.name
    trade_rows: list[dict[str, object]] = []
    fill_rows: list[dict[str, object]] = []
    maker_rows: list[dict[str, object]] = []
    book_reduce: list[dict[str, object]] = []
    book_delete: list[dict[str, object]] = []
    taker_buys = taker.side == "BUY"
    for i, f in enumerate(fills, start=1):
        tid = seq + i
        mk = f.maker
        buyer, seller = (taker.user_id, mk.user_id) if taker_buys else (mk.user_id, taker.user_id)
        buyer_rate, seller_rate = (
            (market.taker_fee, market.maker_fee) if taker_buys else (market.maker_fee, market.taker_fee)
        )
        fee_b, fee_s = fee(f.qty, buyer_rate), fee(f.quote, seller_rate)
        ref = f"trade:{market.symbol}:{tid}"
        j.move(ref, quote, L.locked(buyer), L.available(seller), f.quote - fee_s)
        j.move(ref, quote, L.locked(buyer), L.FEES, fee_s)
        j.move(ref, base, L.locked(seller), L.available(buyer), f.qty - fee_b)
        j.move(ref, base, L.locked(seller), L.FEES, fee_b)
        buyer_order, seller_order = (taker.id, mk.order_id) if taker_buys else (mk.order_id, taker.id)
        trade_rows.append(
            {
                "symbol": market.symbol, "id": tid, "price": mk.price, "qty": f.qty, "quote_qty": f.quote,
                "buyer_order_id": buyer_order, "seller_order_id": seller_order,
                "buyer_is_maker": not taker_buys, "ts": now,
            }
        )  # fmt: skip
        common = {"symbol": market.symbol, "trade_id": tid, "price": mk.price, "qty": f.qty, "quote_qty": f.quote}
        t_fee, m_fee = (fee_b, fee_s) if taker_buys else (fee_s, fee_b)
        t_asset, m_asset = (base, quote) if taker_buys else (quote, base)
        fill_rows.append(
            {**common, "user_id": taker.user_id, "order_id": taker.id, "is_buyer": taker_buys, "is_maker": False,
             "commission": t_fee, "commission_asset": t_asset, "ts": now}
        )  # fmt: skip
        fill_rows.append(
            {**common, "user_id": mk.user_id, "order_id": mk.order_id, "is_buyer": not taker_buys,
             "is_maker": True, "commission": m_fee, "commission_asset": m_asset, "ts": now}
        )  # fmt: skip
        left = mk.remaining - f.qty
        maker_rows.append(
            {"q": f.qty, "c": f.quote, "st": "FILLED" if left == 0 else "PARTIALLY_FILLED", "t": now,
             "id": mk.order_id}
        )  # fmt: skip
        (book_delete if left == 0 else book_reduce).append({"q": f.qty, "id": mk.order_id})
        events.append(EV.order_event(taker.user_id, "TRADE", "PARTIALLY_FILLED", taker.id, now, tid))
        events.append(EV.order_event(mk.user_id, "TRADE", maker_rows[-1]["st"], mk.order_id, now, tid))  # type: ignore[arg-type]
        taker.fills.append(
            {"price": mk.price, "qty": f.qty, "commission": t_fee, "commissionAsset": t_asset, "tradeId": tid}
        )
    db.many(_INSERT_TRADE, trade_rows)
    db.many(_INSERT_FILL, fill_rows)
    db.many(_MAKER_ORDER, maker_rows)
    db.many(_BOOK_REDUCE, book_reduce)
    db.many(BOOK_DELETE, book_delete)  # DELETE binds only each row's :id
