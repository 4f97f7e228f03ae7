"""Group commit: several orders in one transaction, one SAVEPOINT each.

A business error inside a batch undoes only its own order; a database failure (in an order or at
the commit) fails every order of the batch and applies none; orders match in arrival order."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from sqlalchemy import event, exc, text

from keyplane.errors import ServiceUnavailable
from keyplane.exchange import ledger as L
from keyplane.exchange.batching import GroupCommit
from keyplane.exchange.errors import DuplicateOrder, InsufficientBalance
from keyplane.exchange.orders import OrderService, OrderView, Placement
from keyplane.exchange.params import parse_new_order
from kptest.exchange import funded_user

pytestmark = pytest.mark.usefixtures("books")


def user(svc, **credit) -> int:
    return funded_user(svc, **credit)


def order(svc, uid, side, price, qty, **extra) -> Placement:
    p = {"symbol": "BTCUSDT", "side": side, "type": "LIMIT", "timeInForce": "GTC", "price": price, "quantity": qty}
    return Placement(uid, parse_new_order({**p, **extra}, svc.exchange.markets))


def state(svc, *uids: int) -> tuple[object, ...]:
    """Everything the batch could have written for these users."""
    args = {f"u{i}": u for i, u in enumerate(uids)}
    inn = ", ".join(f":u{i}" for i in range(len(uids)))
    with svc.db.read() as s:
        c = s.connection()
        return (
            c.execute(text(f"SELECT * FROM ex_orders WHERE user_id IN ({inn}) ORDER BY id"), args).all(),
            c.execute(text(f"SELECT * FROM ex_balances WHERE user_id IN ({inn}) ORDER BY 1, 2"), args).all(),
            c.execute(text(f"SELECT * FROM ex_book WHERE user_id IN ({inn}) ORDER BY 1"), args).all(),
            c.execute(text("SELECT COUNT(*) FROM ex_ledger")).scalar_one(),
            c.execute(text("SELECT COUNT(*) FROM ex_trades")).scalar_one(),
        )


def test_a_business_error_undoes_only_its_own_order(svc):
    rich, poor = user(svc, USDT="1000"), user(svc, USDT="1")
    batch = [
        order(svc, rich, "BUY", "100", "0.1", newClientOrderId="dup-1"),
        order(svc, poor, "BUY", "100", "0.1"),  # 10 USDT: more than the account has
        order(svc, rich, "BUY", "99", "0.1", newClientOrderId="dup-1"),  # same client id as the first
        order(svc, rich, "BUY", "98", "0.1"),
    ]
    out = svc.exchange.orders.place_batch(batch)
    assert isinstance(out[0], OrderView) and out[0].status == "NEW"
    assert isinstance(out[1], InsufficientBalance)
    assert isinstance(out[2], DuplicateOrder)
    assert isinstance(out[3], OrderView) and out[3].status == "NEW"
    assert svc.exchange.balances(rich)["USDT"] == (1000_00_000_000 - 19_80_000_000, 19_80_000_000)
    assert svc.exchange.balances(poor)["USDT"] == (1_00_000_000, 0)
    with svc.db.read() as s:
        c = s.connection()
        assert c.execute(text("SELECT COUNT(*) FROM ex_orders WHERE user_id = :u"), {"u": poor}).scalar_one() == 0
        prices = c.execute(text("SELECT price FROM ex_book WHERE user_id = :u ORDER BY price"), {"u": rich}).scalars()
        assert list(prices) == [9_800_000_000, 10_000_000_000]


def test_an_error_after_some_writes_rolls_back_to_the_savepoint(svc, monkeypatch):
    """The second order fails after its order and book rows are written: they vanish, the others stand."""
    buyer = user(svc, USDT="1000")
    real_apply, calls = L.Journal.apply, []

    def apply(self, db):
        calls.append(1)
        if len(calls) == 2:
            raise InsufficientBalance()
        real_apply(self, db)

    monkeypatch.setattr(L.Journal, "apply", apply)
    out = svc.exchange.orders.place_batch([order(svc, buyer, "BUY", p, "0.1") for p in ("100", "99", "98")])
    monkeypatch.undo()
    assert [type(r).__name__ for r in out] == ["OrderView", "InsufficientBalance", "OrderView"]
    with svc.db.read() as s:
        c = s.connection()
        prices = c.execute(text("SELECT price FROM ex_orders WHERE user_id = :u ORDER BY id"), {"u": buyer}).scalars()
        assert list(prices) == [10_000_000_000, 9_800_000_000]
        assert c.execute(text("SELECT COUNT(*) FROM ex_book WHERE user_id = :u"), {"u": buyer}).scalar_one() == 2


def _database_error() -> exc.OperationalError:
    return exc.OperationalError("COMMIT", None, sqlite3.OperationalError("disk I/O error"))


def test_a_failed_commit_fails_every_order_and_applies_none(svc):
    seller, buyer = user(svc, BTC="1"), user(svc, USDT="1000")
    svc.exchange.orders.place(seller, parse_new_order(
        {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "price": "100", "quantity": "0.1"},
        svc.exchange.markets))  # fmt: skip
    before = state(svc, seller, buyer)
    gc = GroupCommit(svc.exchange.orders)

    def fail(conn):
        raise _database_error()

    async def submit_all() -> list[object]:
        batch = [order(svc, buyer, "BUY", "100", "0.05"), order(svc, buyer, "BUY", "90", "0.1")]
        return await asyncio.gather(*(gc.place(p) for p in batch), return_exceptions=True)

    event.listen(svc.db.engine, "commit", fail)
    try:
        results = asyncio.run(submit_all())
    finally:
        event.remove(svc.db.engine, "commit", fail)
    assert [type(r) for r in results] == [ServiceUnavailable, ServiceUnavailable]
    assert results[0] is not results[1]  # each waiter gets its own exception object
    assert state(svc, seller, buyer) == before
    assert gc.batches == 0


def test_a_database_error_inside_an_order_fails_the_whole_batch(svc, monkeypatch):
    buyer = user(svc, USDT="1000")
    before = state(svc, buyer)
    real_place, calls = OrderService._place, []

    def _place(self, db, req, *rest):
        calls.append(1)
        if len(calls) == 2:
            raise _database_error()
        return real_place(self, db, req, *rest)

    monkeypatch.setattr(OrderService, "_place", _place)
    with pytest.raises(ServiceUnavailable):
        svc.exchange.orders.place_batch([order(svc, buyer, "BUY", p, "0.1") for p in ("100", "99", "98")])
    monkeypatch.undo()
    assert state(svc, buyer) == before


def test_orders_submitted_together_share_one_transaction_and_match_in_arrival_order(svc):
    s1, s2, s3 = user(svc, BTC="1"), user(svc, BTC="1"), user(svc, BTC="1")
    b1, b2 = user(svc, USDT="1000"), user(svc, USDT="1000")
    gc = GroupCommit(svc.exchange.orders)

    async def submit_all() -> list[object]:
        batch = [
            order(svc, s1, "SELL", "100", "0.1"),
            order(svc, s2, "SELL", "100", "0.1"),
            order(svc, s3, "SELL", "100", "0.1"),
            order(svc, b1, "BUY", "100", "0.15"),  # takes s1's 0.1, then 0.05 of s2's
            order(svc, b2, "BUY", "100", "0.15", timeInForce="IOC"),  # the rest: 0.05 of s2, all of s3
            order(svc, b2, "BUY", "100", "1000"),  # far over b2's balance: refused alone
        ]
        return await asyncio.gather(*(gc.place(p) for p in batch), return_exceptions=True)

    out = asyncio.run(submit_all())
    assert gc.batches == 1 and gc.orders == 6
    views = out[:5]
    assert all(isinstance(v, OrderView) for v in views), out
    ids = [v.id for v in views]  # type: ignore[union-attr]
    assert ids == sorted(ids)
    assert isinstance(out[5], InsufficientBalance)
    first, second = out[3], out[4]
    assert isinstance(first, OrderView) and isinstance(second, OrderView)
    assert first.status == "FILLED" and second.status == "FILLED"
    assert [f["qty"] for f in first.fills] == [10_000_000, 5_000_000]
    assert [f["qty"] for f in second.fills] == [5_000_000, 10_000_000]
    trade_ids = [f["tradeId"] for f in first.fills + second.fills]
    assert trade_ids == sorted(trade_ids) and len(set(trade_ids)) == 4
    with svc.db.read() as s:
        c = s.connection()
        rows = c.execute(
            text("SELECT id, seller_order_id FROM ex_trades WHERE symbol = 'BTCUSDT' AND id >= :lo ORDER BY id"),
            {"lo": min(trade_ids)},
        ).all()
        makers = [seller for tid, seller in rows if tid in trade_ids]
        assert list(makers) == [ids[0], ids[1], ids[1], ids[2]]


def test_many_submissions_are_split_into_bounded_batches(svc):
    buyer = user(svc, USDT="1000")
    gc = GroupCommit(svc.exchange.orders, max_batch=4)

    async def submit_all() -> list[OrderView]:
        return await asyncio.gather(*(gc.place(order(svc, buyer, "BUY", "10", "1")) for _ in range(10)))

    out = asyncio.run(submit_all())
    assert gc.batches == 3 and gc.orders == 10
    assert [v.id for v in out] == sorted(v.id for v in out)
