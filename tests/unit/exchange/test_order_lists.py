"""OCO order lists through the order service on a real database: what a list locks, a leg that
trades or fires cancelling the other, cancelling a list or one leg, refusals that write nothing,
and the list's events."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from keyplane.exchange.errors import (
    BadParameter,
    CancelRejected,
    DuplicateOrder,
    InsufficientBalance,
    OrderListNotFound,
    WouldTakeLiquidity,
    WouldTrigger,
)
from keyplane.exchange.orders import ListPlacement
from keyplane.exchange.params import parse_legacy_oco, parse_new_order, parse_oco
from kptest.exchange import funded_user

BTC = USDT = 100_000_000


pytestmark = pytest.mark.usefixtures("books")


def user(svc, **credit) -> int:
    return funded_user(svc, **credit)


def order(svc, uid, side, price, qty="0.1", otype="LIMIT"):
    p = {"symbol": "BTCUSDT", "side": side, "type": otype, "quantity": qty}
    if otype == "LIMIT":
        p.update(price=price, timeInForce="GTC")
    return svc.exchange.orders.place(uid, parse_new_order(p, svc.exchange.markets))


def trade_at(svc, price: str) -> None:
    order(svc, user(svc, BTC="1"), "SELL", price, "0.06")
    assert order(svc, user(svc, USDT="10000"), "BUY", price, "0.06").status == "FILLED"


def oco(svc, uid, side="SELL", **params):
    p = {"symbol": "BTCUSDT", "side": side, "quantity": "0.1", **params}
    return svc.exchange.orders.place_list(ListPlacement(uid, parse_oco(p, svc.exchange.markets)))


def sell_oco(svc, uid, **extra):
    """Take profit at 110 (a LIMIT_MAKER), stop the loss at 95 (a STOP_LOSS_LIMIT at 94)."""
    return oco(svc, uid, aboveType="LIMIT_MAKER", abovePrice="110", belowType="STOP_LOSS_LIMIT", belowPrice="94",
               belowStopPrice="95", belowTimeInForce="GTC", **extra)  # fmt: skip


def bal(svc, uid, asset):
    return svc.exchange.balances(uid)[asset]


def state(svc, uid, ol):
    got = svc.exchange.orders.get_list(uid, ol.id, None)
    return got.status, [o.status for o in got.orders]


def test_a_sell_oco_locks_its_quantity_once_and_its_take_profit_cancels_the_stop(svc):
    trade_at(svc, "100")
    owner = user(svc, BTC="0.1")
    ol = sell_oco(svc, owner)
    assert ol.status == "EXEC_STARTED" and [o.type for o in ol.orders] == ["STOP_LOSS_LIMIT", "LIMIT_MAKER"]
    assert all(o.list_id == ol.id for o in ol.orders)
    assert bal(svc, owner, "BTC") == (0, BTC // 10)  # both legs share the one 0.1 BTC
    assert [o.id for o in svc.exchange.orders.open_orders(owner, "BTCUSDT")] == [o.id for o in ol.orders]
    assert [x.id for x in svc.exchange.orders.open_lists(owner)] == [ol.id]
    order(svc, user(svc, USDT="100"), "BUY", "110", "0.05")  # the take-profit trades in part...
    assert state(svc, owner, ol) == ("ALL_DONE", ["CANCELED", "PARTIALLY_FILLED"])  # ...and the stop goes
    assert bal(svc, owner, "BTC") == (0, BTC * 5 // 100)
    assert svc.exchange.orders.open_lists(owner) == []


def test_the_stop_firing_cancels_the_take_profit_first_and_uses_its_funds(svc):
    trade_at(svc, "100")
    owner = user(svc, BTC="0.1")
    ol = sell_oco(svc, owner)
    order(svc, user(svc, USDT="100"), "BUY", "94.5", "0.1")
    trade_at(svc, "95")  # the stop fires: the take-profit is cancelled, the stop sells at 94.5
    assert state(svc, owner, ol) == ("ALL_DONE", ["FILLED", "CANCELED"])
    assert bal(svc, owner, "BTC") == (0, 0)
    assert bal(svc, owner, "USDT")[0] == 945 * USDT // 100 - 945 * USDT // 100 // 1000


def test_a_buy_oco_locks_what_its_costlier_leg_needs(svc):
    trade_at(svc, "100")
    owner = user(svc, USDT="20")
    # stop above at 105 (limit 106), take profit below at 90: the stop needs 10.6, the limit 9
    ol = oco(svc, owner, "BUY", aboveType="STOP_LOSS_LIMIT", abovePrice="106", aboveStopPrice="105",
             aboveTimeInForce="GTC", belowType="LIMIT_MAKER", belowPrice="90")  # fmt: skip
    assert bal(svc, owner, "USDT") == (20 * USDT - 106 * USDT // 10, 106 * USDT // 10)
    order(svc, user(svc, BTC="1"), "SELL", "106", "0.1")
    trade_at(svc, "105")  # the stop fires: the limit at 90 is cancelled and the stop buys at 106
    assert state(svc, owner, ol) == ("ALL_DONE", ["CANCELED", "FILLED"])
    assert bal(svc, owner, "USDT") == (20 * USDT - 106 * USDT // 10, 0)


def test_cancelling_a_leg_or_the_list_cancels_both(svc):
    trade_at(svc, "100")
    owner = user(svc, BTC="0.2")
    first, second = sell_oco(svc, owner), sell_oco(svc, owner)
    btcusdt = svc.exchange.markets["BTCUSDT"]
    svc.exchange.orders.cancel(owner, btcusdt, first.orders[0].id, None)  # one leg: the other goes too
    assert state(svc, owner, first) == ("ALL_DONE", ["CANCELED", "CANCELED"])
    done = svc.exchange.orders.cancel_list(owner, btcusdt, None, second.client_list_id)
    assert done.status == "ALL_DONE" and [o.status for o in done.orders] == ["CANCELED", "CANCELED"]
    assert bal(svc, owner, "BTC") == (2 * BTC // 10, 0)
    with pytest.raises(CancelRejected, match="already done"):
        svc.exchange.orders.cancel_list(owner, btcusdt, second.id, None)
    other = user(svc)
    with pytest.raises(CancelRejected, match="Unknown order list"):  # another account's list is unknown to it
        svc.exchange.orders.cancel_list(other, btcusdt, second.id, None)
    with pytest.raises(OrderListNotFound):
        svc.exchange.orders.get_list(other, second.id, None)


def test_refused_lists_write_nothing(svc):
    trade_at(svc, "100")
    owner = user(svc, BTC="0.1")
    with svc.db.read() as s:
        before = s.connection().execute(text("SELECT COUNT(*) FROM ex_order_lists")).scalar()
    with pytest.raises(WouldTrigger):  # the stop at or above the last price
        oco(svc, owner, aboveType="LIMIT_MAKER", abovePrice="110", belowType="STOP_LOSS", belowStopPrice="100")
    order(svc, user(svc, USDT="1000"), "BUY", "99", "0.1")
    with pytest.raises(WouldTakeLiquidity):  # the limit maker below the best bid
        oco(svc, owner, aboveType="LIMIT_MAKER", abovePrice="98", belowType="STOP_LOSS", belowStopPrice="90")
    with pytest.raises(InsufficientBalance):
        oco(svc, owner, aboveType="LIMIT_MAKER", abovePrice="110", belowType="STOP_LOSS", belowStopPrice="90",
            quantity="0.2")  # fmt: skip
    with pytest.raises(BadParameter, match="belowType"):  # a sell stops its loss below, not above
        oco(svc, owner, aboveType="LIMIT_MAKER", abovePrice="110", belowType="LIMIT_MAKER", belowPrice="90")
    with pytest.raises(BadParameter, match="different client order ids"):
        sell_oco(svc, owner, aboveClientOrderId="same", belowClientOrderId="same")
    with svc.db.read() as s:
        assert s.connection().execute(text("SELECT COUNT(*) FROM ex_order_lists")).scalar() == before
    assert bal(svc, owner, "BTC") == (BTC // 10, 0)
    sell_oco(svc, owner, listClientOrderId="mine")
    svc.exchange.wallet.credit(owner, "BTC", "0.1")
    with pytest.raises(DuplicateOrder):
        sell_oco(svc, owner, listClientOrderId="mine")


def test_the_legacy_endpoint_builds_the_same_list(svc):
    markets = svc.exchange.markets
    legacy = parse_legacy_oco(
        {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.1", "price": "110", "stopPrice": "95",
         "stopLimitPrice": "94", "stopLimitTimeInForce": "GTC"},
        markets,
    )  # fmt: skip
    assert (legacy.above.type, legacy.above.price) == ("LIMIT_MAKER", 110 * USDT)
    assert (legacy.below.type, legacy.below.stop_price, legacy.below.price) == ("STOP_LOSS_LIMIT", 95 * USDT, 94 * USDT)
    buy = parse_legacy_oco({"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.1", "price": "90", "stopPrice": "105"},
                           markets)  # fmt: skip
    assert (buy.below.type, buy.above.type, buy.above.stop_price) == ("LIMIT_MAKER", "STOP_LOSS", 105 * USDT)


def test_list_events_and_history(svc):
    trade_at(svc, "100")
    owner = user(svc, BTC="0.1")
    after = svc.exchange.events.last_id()
    ol = sell_oco(svc, owner)
    svc.exchange.orders.cancel_list(owner, svc.exchange.markets["BTCUSDT"], ol.id, None)
    _, events = svc.exchange.events.read_after(after, lambda u: u == owner)
    lists = [(e.status, e.order_list.id) for e in events if e.kind == "LIST_STATUS"]
    assert lists == [("EXEC_STARTED", ol.id), ("ALL_DONE", ol.id)]
    legs = [(e.kind, e.order.list_id) for e in events if e.kind != "LIST_STATUS"]
    assert legs == [("NEW", ol.id), ("NEW", ol.id), ("CANCELED", ol.id), ("CANCELED", ol.id)]
    assert [x.id for x in svc.exchange.orders.all_lists(owner)] == [ol.id]
    assert svc.exchange.orders.all_lists(owner, from_id=ol.id + 1) == []
