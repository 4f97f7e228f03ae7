"""Matching through the order service on a real database: price-time priority, fees in the asset
received, time in force, LIMIT_MAKER, market orders by quantity and by quote, self-trade prevention."""

from __future__ import annotations

import pytest

from keyplane.exchange.errors import InsufficientBalance, WouldTakeLiquidity
from keyplane.exchange.params import parse_new_order
from kptest.exchange import funded_user

pytestmark = pytest.mark.usefixtures("books")


def user(svc, **credit) -> int:
    return funded_user(svc, **credit)


def place(svc, uid, side, otype="LIMIT", price=None, qty=None, **extra):
    p = {"symbol": "BTCUSDT", "side": side, "type": otype, **extra}
    if otype == "LIMIT":
        p.setdefault("timeInForce", "GTC")
    if price is not None:
        p["price"] = price
    if qty is not None:
        p["quantity"] = qty
    return svc.exchange.orders.place(uid, parse_new_order(p, svc.exchange.markets))


def bal(svc, uid, asset):
    return svc.exchange.balances(uid)[asset]


def test_price_time_priority_and_fees(svc):
    s1, s2, s3 = user(svc, BTC="1"), user(svc, BTC="1"), user(svc, BTC="1")
    first = place(svc, s1, "SELL", price="101", qty="0.1")
    second = place(svc, s2, "SELL", price="100", qty="0.1")  # better price: matched first
    third = place(svc, s3, "SELL", price="101", qty="0.1")  # same price as first, later: matched last
    buyer = user(svc, USDT="100")
    taker = place(svc, buyer, "BUY", price="101", qty="0.15")
    assert taker.status == "FILLED"
    assert [(f["price"], f["qty"]) for f in taker.fills] == [(10_000_000_000, 10_000_000), (10_100_000_000, 5_000_000)]
    assert svc.exchange.orders.get(s2, svc.exchange.markets["BTCUSDT"], second.id, None).status == "FILLED"
    assert svc.exchange.orders.get(s1, svc.exchange.markets["BTCUSDT"], first.id, None).status == "PARTIALLY_FILLED"
    assert svc.exchange.orders.get(s3, svc.exchange.markets["BTCUSDT"], third.id, None).status == "NEW"
    # cost 10 + 5.05 = 15.05 USDT; the price improvement on the first 0.1 (101 -> 100) is refunded
    assert bal(svc, buyer, "USDT") == (8_495_000_000, 0)
    assert bal(svc, buyer, "BTC") == (15_000_000 - 15_000, 0)  # 0.1% taker fee, in BTC
    assert bal(svc, s2, "USDT") == (1_000_000_000 - 1_000_000, 0)  # 0.1% maker fee, in USDT
    assert bal(svc, s1, "BTC") == (90_000_000, 5_000_000)


def test_time_in_force_and_limit_maker(svc):
    seller, buyer = user(svc, BTC="1"), user(svc, USDT="1000")
    place(svc, seller, "SELL", price="100", qty="0.1")
    fok = place(svc, buyer, "BUY", price="100", qty="0.2", timeInForce="FOK")
    assert fok.status == "EXPIRED" and fok.executed_qty == 0 and bal(svc, buyer, "USDT") == (100_000_000_000, 0)
    ioc = place(svc, buyer, "BUY", price="100", qty="0.2", timeInForce="IOC")
    assert ioc.status == "EXPIRED" and ioc.executed_qty == 10_000_000
    assert bal(svc, buyer, "USDT") == (99_000_000_000, 0)
    place(svc, seller, "SELL", price="105", qty="0.1")
    with pytest.raises(WouldTakeLiquidity):
        place(svc, buyer, "BUY", "LIMIT_MAKER", price="105", qty="0.1")
    maker = place(svc, buyer, "BUY", "LIMIT_MAKER", price="104", qty="0.1")
    assert maker.status == "NEW" and bal(svc, buyer, "USDT") == (99_000_000_000 - 1_040_000_000, 1_040_000_000)


def test_market_orders_by_quantity_and_quote(svc):
    seller, buyer = user(svc, BTC="2"), user(svc, USDT="1000")
    place(svc, seller, "SELL", price="100", qty="0.5")
    place(svc, seller, "SELL", price="200", qty="0.5")
    by_qty = place(svc, buyer, "BUY", "MARKET", qty="0.6")
    assert by_qty.status == "FILLED" and by_qty.cum_quote == 7_000_000_000
    by_quote = place(svc, buyer, "BUY", "MARKET", quoteOrderQty="50.005")
    # 50.005 USDT at 200 buys 0.25002 BTC: whole steps of 0.00001 only, the rest stays available
    assert by_quote.status == "FILLED" and by_quote.executed_qty == 25_002_000 and by_quote.cum_quote == 5_000_400_000
    assert bal(svc, buyer, "USDT") == (100_000_000_000 - 7_000_000_000 - 5_000_400_000, 0)
    place(svc, seller, "SELL", price="5000", qty="0.3")
    with pytest.raises(InsufficientBalance):  # 0.14998 at 200 plus 0.25002 at 5000 is over 880 USDT
        place(svc, buyer, "BUY", "MARKET", qty="0.4")


def test_self_trade_prevention_expires_the_taker(svc):
    trader = user(svc, BTC="1", USDT="1000")
    resting = place(svc, trader, "SELL", price="100", qty="0.1")
    taker = place(svc, trader, "BUY", price="100", qty="0.1")
    assert taker.status == "EXPIRED_IN_MATCH" and taker.executed_qty == 0
    assert svc.exchange.orders.get(trader, svc.exchange.markets["BTCUSDT"], resting.id, None).status == "NEW"
    allowed = place(svc, trader, "BUY", price="100", qty="0.1", selfTradePreventionMode="NONE")
    assert allowed.status == "FILLED"


def test_cancel_releases_the_reservation(svc):
    buyer = user(svc, USDT="100")
    order = place(svc, buyer, "BUY", price="50", qty="0.5")
    assert bal(svc, buyer, "USDT") == (7_500_000_000, 2_500_000_000)
    cancelled = svc.exchange.orders.cancel(buyer, svc.exchange.markets["BTCUSDT"], None, order.client_order_id)
    assert cancelled.status == "CANCELED" and bal(svc, buyer, "USDT") == (10_000_000_000, 0)
