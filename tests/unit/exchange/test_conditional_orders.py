"""Conditional orders through the order service on a real database: stop-loss and take-profit,
market and limit, plain and trailing; what they lock while armed, when trades fire them, cascades,
cancels, refusals, and an armed trigger that outlives a restart."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from keyplane.exchange.errors import BadParameter, FilterFailure, InsufficientBalance, NotRequired, WouldTrigger
from keyplane.exchange.params import parse_new_order
from keyplane.services import build_services
from kptest.exchange import check_invariants, clear_books, funded_user

BTC = 100_000_000  # base units of one BTC
USDT = 100_000_000  # and of one USDT (both have 8 decimals in the test markets)


pytestmark = pytest.mark.usefixtures("books")


def user(svc, **credit) -> int:
    return funded_user(svc, **credit)


def place(svc, uid, side, otype="LIMIT", price=None, qty="0.1", **extra):
    p = {"symbol": "BTCUSDT", "side": side, "type": otype, "quantity": qty, **extra}
    if otype in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"):
        p.setdefault("timeInForce", "GTC")
    if price is not None:
        p["price"] = price
    return svc.exchange.orders.place(uid, parse_new_order(p, svc.exchange.markets))


def trade_at(svc, price: str, qty: str = "0.06") -> None:
    """One trade at ``price`` between two accounts of its own."""
    maker, taker = user(svc, BTC="1"), user(svc, USDT="100000")
    place(svc, maker, "SELL", price=price, qty=qty)
    assert place(svc, taker, "BUY", price=price, qty=qty).status == "FILLED"


def get(svc, uid, order_id):
    return svc.exchange.orders.get(uid, svc.exchange.markets["BTCUSDT"], order_id, None)


def bal(svc, uid, asset):
    return svc.exchange.balances(uid)[asset]


def test_a_stop_loss_limit_sell_waits_locked_then_fires_on_a_trade_at_its_stop(svc):
    trade_at(svc, "100")
    owner = user(svc, BTC="1")
    stop = place(svc, owner, "SELL", "STOP_LOSS_LIMIT", price="94", stopPrice="95")
    assert (stop.status, stop.working_ms, stop.stop_price) == ("NEW", None, 95 * USDT)
    assert bal(svc, owner, "BTC") == (BTC - BTC // 10, BTC // 10)  # locked while armed
    assert [o.id for o in svc.exchange.orders.open_orders(owner, "BTCUSDT")] == [stop.id]
    assert not get(svc, owner, stop.id).is_working
    bidder = user(svc, USDT="1000")
    bid = place(svc, bidder, "BUY", price="94", qty="0.1")
    trade_at(svc, "96")  # above the stop: nothing happens
    assert get(svc, owner, stop.id).working_ms is None
    trade_at(svc, "95")  # at the stop: it fires, as a limit sell at 94, against the bid at 94
    fired = get(svc, owner, stop.id)
    assert (fired.status, fired.type, fired.executed_qty) == ("FILLED", "STOP_LOSS_LIMIT", BTC // 10)
    assert fired.working_ms is not None and get(svc, bidder, bid.id).status == "FILLED"
    assert bal(svc, owner, "BTC") == (BTC - BTC // 10, 0)
    assert bal(svc, owner, "USDT") == (94 * USDT // 10 - 94 * USDT // 10 // 1000, 0)  # 9.4 less the taker fee
    assert svc.exchange.orders.open_orders(owner, "BTCUSDT") == []


def test_a_fired_limit_order_that_cannot_fill_rests_on_the_book(svc):
    trade_at(svc, "100")
    owner = user(svc, BTC="1")
    stop = place(svc, owner, "SELL", "STOP_LOSS_LIMIT", price="94", stopPrice="95")
    trade_at(svc, "95")
    fired = get(svc, owner, stop.id)
    assert (fired.status, fired.is_working) == ("NEW", True)
    _, _, asks = svc.exchange.data.depth(svc.exchange.markets["BTCUSDT"], 10)
    assert (94 * USDT, BTC // 10) in asks
    assert bal(svc, owner, "BTC") == (BTC - BTC // 10, BTC // 10)  # now held by the book order


def test_stop_loss_market_buy_and_take_profit_directions(svc):
    trade_at(svc, "100")
    buyer = user(svc, USDT="1000")
    stop_buy = place(svc, buyer, "BUY", "STOP_LOSS", stopPrice="105")  # fires as the price rises
    assert bal(svc, buyer, "USDT") == (1000 * USDT - 105 * USDT // 10, 105 * USDT // 10)
    seller = user(svc, BTC="1")
    take_sell = place(svc, seller, "SELL", "TAKE_PROFIT_LIMIT", price="104", stopPrice="104")  # on a rise too
    with pytest.raises(WouldTrigger):
        place(svc, buyer, "BUY", "STOP_LOSS", stopPrice="99")  # 100 >= 99: would fire at once
    with pytest.raises(WouldTrigger):
        place(svc, seller, "SELL", "STOP_LOSS", stopPrice="100")
    with pytest.raises(WouldTrigger):
        place(svc, buyer, "BUY", "TAKE_PROFIT", stopPrice="101")  # a take-profit buy fires on a fall
    asks = user(svc, BTC="1")
    place(svc, asks, "SELL", price="106", qty="0.2")
    trade_at(svc, "104")  # take_sell fires (rests at 104 as an ask); stop_buy does not (104 < 105)
    assert get(svc, seller, take_sell.id).is_working
    assert get(svc, buyer, stop_buy.id).working_ms is None
    place(svc, user(svc, USDT="100"), "BUY", price="104", qty="0.1")
    assert get(svc, seller, take_sell.id).status == "FILLED"
    trade_at(svc, "105")  # stop_buy fires: a market buy of 0.1 takes the ask at 106
    done = get(svc, buyer, stop_buy.id)
    assert (done.status, done.executed_qty, done.cum_quote) == ("FILLED", BTC // 10, 106 * USDT // 10)
    assert bal(svc, buyer, "USDT") == (1000 * USDT - 106 * USDT // 10, 0)  # what it held at 105 came back


def test_a_trailing_stop_follows_the_peak_and_fires_on_the_retrace(svc):
    trade_at(svc, "100")
    owner = user(svc, BTC="1")
    trail = place(svc, owner, "SELL", "STOP_LOSS", trailingDelta="500")  # 5 %, active at once from 100
    assert trail.trailing_delta == 500
    bids = user(svc, USDT="10000")
    place(svc, bids, "BUY", price="90", qty="1")
    trade_at(svc, "110")  # the peak
    trade_at(svc, "105")  # 4.5 % below it: not yet
    assert get(svc, owner, trail.id).working_ms is None
    trade_at(svc, "104.5")  # 5 % below 110: it fires and sells at market into the bid at 90
    fired = get(svc, owner, trail.id)
    assert (fired.status, fired.cum_quote) == ("FILLED", 9 * USDT)


def test_a_trailing_order_with_an_activation_price_trails_only_once_that_price_trades(svc):
    trade_at(svc, "100")
    owner = user(svc, USDT="1000")
    # A trailing stop-loss buy, activated when the price rises to 102, then fires 1 % above the low.
    trail = place(svc, owner, "BUY", "STOP_LOSS_LIMIT", price="120", stopPrice="102", trailingDelta="100")
    asks = user(svc, BTC="1")
    trade_at(svc, "98")
    trade_at(svc, "99")  # 1 % above 98, but not active yet: nothing
    assert get(svc, owner, trail.id).working_ms is None
    trade_at(svc, "102")  # active, trailing from 102
    trade_at(svc, "101")  # the new low
    place(svc, asks, "SELL", price="103", qty="0.1")
    trade_at(svc, "102.01")  # 1 % above 101 (102.01): fires, buys the ask at 103 within its limit of 120
    fired = get(svc, owner, trail.id)
    assert (fired.status, fired.cum_quote) == ("FILLED", 103 * USDT // 10)


def test_stops_fire_in_cascade_within_one_transaction(svc):
    trade_at(svc, "100")
    a, b = user(svc, BTC="1"), user(svc, BTC="1")
    first = place(svc, a, "SELL", "STOP_LOSS", stopPrice="99")
    second = place(svc, b, "SELL", "STOP_LOSS", stopPrice="97")
    bids = user(svc, USDT="10000")
    place(svc, bids, "BUY", price="97", qty="0.1")
    place(svc, bids, "BUY", price="96", qty="0.1")
    trade_at(svc, "99")  # first fires and sells into the bid at 97, which fires second, which sells at 96
    assert get(svc, a, first.id).cum_quote == 97 * USDT // 10
    assert get(svc, b, second.id).cum_quote == 96 * USDT // 10


def test_a_fired_market_buy_that_its_held_funds_no_longer_cover_expires(svc):
    trade_at(svc, "100")
    buyer = user(svc, USDT="10.5")  # exactly 0.1 at the stop price 105
    stop = place(svc, buyer, "BUY", "STOP_LOSS", stopPrice="105")
    assert bal(svc, buyer, "USDT") == (0, 105 * USDT // 10)
    place(svc, user(svc, BTC="1"), "SELL", price="200", qty="0.1")
    trade_at(svc, "105")  # fires: 0.1 at 200 costs 20, and the 10.5 it held is all there is
    done = get(svc, buyer, stop.id)
    assert (done.status, done.executed_qty) == ("EXPIRED", 0)
    assert bal(svc, buyer, "USDT") == (105 * USDT // 10, 0)


def test_cancelling_an_armed_order_frees_its_funds(svc):
    trade_at(svc, "100")
    owner = user(svc, USDT="100")
    stop = place(svc, owner, "BUY", "TAKE_PROFIT_LIMIT", price="90", stopPrice="90")
    assert bal(svc, owner, "USDT") == (91 * USDT, 9 * USDT)
    canceled = svc.exchange.orders.cancel(owner, svc.exchange.markets["BTCUSDT"], stop.id, None)
    assert canceled.status == "CANCELED"
    assert bal(svc, owner, "USDT") == (100 * USDT, 0)
    trade_at(svc, "90")
    assert get(svc, owner, stop.id).status == "CANCELED"
    with svc.db.read() as s:
        assert (
            s.connection()
            .execute(text("SELECT COUNT(*) FROM ex_triggers WHERE order_id = :o"), {"o": stop.id})
            .scalar()
            == 0
        )


def test_cancel_all_takes_armed_and_resting_orders(svc):
    trade_at(svc, "100")
    owner = user(svc, BTC="1", USDT="100")
    place(svc, owner, "SELL", price="120")
    place(svc, owner, "SELL", "STOP_LOSS", stopPrice="90")
    gone = svc.exchange.orders.cancel_all(owner, svc.exchange.markets["BTCUSDT"])
    assert sorted(v.type for v in gone) == ["LIMIT", "STOP_LOSS"]
    assert bal(svc, owner, "BTC") == (BTC, 0)


def test_refusals(svc):
    owner = user(svc, BTC="0.05")
    with pytest.raises(BadParameter, match="stopPrice"):
        place(svc, owner, "SELL", "STOP_LOSS")
    with pytest.raises(NotRequired, match="stopPrice"):
        place(svc, owner, "SELL", price="100", stopPrice="90")
    with pytest.raises(NotRequired, match="trailingDelta"):
        place(svc, owner, "SELL", "MARKET", trailingDelta="100")
    with pytest.raises(FilterFailure, match="TRAILING_DELTA"):
        place(svc, owner, "SELL", "STOP_LOSS", trailingDelta="5")
    with pytest.raises(FilterFailure, match="PRICE_FILTER"):
        place(svc, owner, "SELL", "STOP_LOSS", stopPrice="90.001")
    with pytest.raises(BadParameter, match="timeInForce"):
        svc.exchange.orders.place(
            owner,
            parse_new_order(
                {"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_LOSS_LIMIT", "quantity": "0.01", "price": "90",
                 "stopPrice": "90"},
                svc.exchange.markets,
            ),
        )  # fmt: skip
    with pytest.raises(InsufficientBalance):
        place(svc, owner, "SELL", "STOP_LOSS", stopPrice="90", qty="0.1")


def test_an_armed_trigger_outlives_a_restart(make_settings):
    settings = make_settings()
    first = build_services(settings)
    trade_at(first, "100")
    owner = user(first, BTC="1")
    stop = place(first, owner, "SELL", "STOP_LOSS", stopPrice="95")
    bids = user(first, USDT="1000")
    place(first, bids, "BUY", price="94", qty="0.1")
    first.close()
    again = build_services(settings)
    try:
        trade_at(again, "95")
        assert get(again, owner, stop.id).status == "FILLED"
        check_invariants(again)
    finally:
        clear_books(again)
        again.close()


def test_a_market_sell_by_quote_amount_sells_what_brings_it_in(svc):
    bids = user(svc, USDT="1000")
    svc.exchange.orders.place(
        bids, parse_new_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                               "quantity": "0.1", "price": "100"}, svc.exchange.markets)
    )  # fmt: skip
    owner = user(svc, BTC="1")
    sold = svc.exchange.orders.place(
        owner, parse_new_order({"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quoteOrderQty": "6"},
                               svc.exchange.markets)
    )  # fmt: skip
    assert (sold.status, sold.executed_qty, sold.cum_quote) == ("FILLED", 6 * BTC // 100, 6 * USDT)
    assert bal(svc, owner, "BTC") == (BTC - 6 * BTC // 100, 0)
    assert bal(svc, owner, "USDT") == (6 * USDT - 6 * USDT // 1000, 0)
