"""ccxt's binance class, unstubbed, places conditional orders as trading bots do: freqtrade's
on-exchange stop (``stop_loss_limit`` with ``stopPrice``), ccxt's unified ``triggerPrice``,
``stopLossPrice`` and ``takeProfitPrice``, and a trailing stop (``trailingDelta``); reads them back
armed, sees trades fire them, and cancels one, with balances checked to the unit."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import ccxt
import pytest

from keyplane.client import ccxt_exchange
from kptest.exchange import D, ExchangeServer, ccxt_trader, check_invariants, clear_books, exchange_server
from kptest.streams import market_suffix

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def xs(make_settings) -> Iterator[ExchangeServer]:
    with exchange_server(make_settings(), market_suffix("S")) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _empty_books(xs: ExchangeServer) -> Iterator[None]:
    clear_books(xs.services)
    yield
    check_invariants(xs.services)
    clear_books(xs.services)


def _trader(xs: ExchangeServer, **credit: str):
    return ccxt_trader(xs, **credit)


def _bal(ex, asset: str) -> tuple[Decimal, Decimal]:
    b = ex.fetch_balance()
    return D(b[asset]["free"]), D(b[asset]["used"])


def _trade_at(xs: ExchangeServer, price: float) -> None:
    sym = xs.sym("BTC", "USDT")
    maker, taker = _trader(xs, BTC="1"), _trader(xs, USDT="1000")
    maker.create_order(sym, "limit", "sell", 0.001, price)
    assert taker.create_order(sym, "limit", "buy", 0.001, price)["status"] == "closed"


def test_freqtrades_stop_loss_limit_is_armed_then_fired_by_a_trade(xs):
    sym, btc, usdt = xs.sym("BTC", "USDT"), xs.a("BTC"), xs.a("USDT")
    assert "STOP_LOSS_LIMIT" in xs_market_info(xs)["orderTypes"]
    _trade_at(xs, 30000)
    bot = _trader(xs, BTC="0.01")
    # What freqtrade's binance exchange sends for stoploss_on_exchange (limit 1 % below the stop).
    stop = bot.create_order(sym, "stop_loss_limit", "sell", 0.01, 27720, params={"stopPrice": 28000})
    # ccxt unifies a stop-loss-limit to a limit order with a trigger price; the wire type stays
    assert stop["status"] == "open" and stop["type"] == "limit" and stop["info"]["type"] == "STOP_LOSS_LIMIT"
    assert D(stop["triggerPrice"]) == D("28000") and D(stop["price"]) == D("27720")
    assert _bal(bot, btc) == (D("0"), D("0.01"))
    armed = bot.fetch_order(stop["id"], sym)
    assert armed["status"] == "open" and D(armed["triggerPrice"]) == D("28000") and armed["info"]["isWorking"] is False
    assert armed["info"]["workingTime"] == -1
    assert [o["id"] for o in bot.fetch_open_orders(sym)] == [stop["id"]]
    assert xs_depth(xs, sym) == ([], [])  # an armed stop is not on the book

    buyer = _trader(xs, USDT="1000")
    buyer.create_order(sym, "limit", "buy", 0.01, 27800)
    _trade_at(xs, 28000)  # the stop fires: a limit sell at 27720 meets the bid at 27800
    done = bot.fetch_order(stop["id"], sym)
    assert done["status"] == "closed" and D(done["filled"]) == D("0.01") and D(done["average"]) == D("27800")
    assert done["info"]["isWorking"] is False and done["info"]["workingTime"] > 0
    assert _bal(bot, usdt) == (D("278") - D("0.278"), D("0"))  # less the 0.1 % taker fee
    assert bot.fetch_open_orders(sym) == []


def test_unified_trigger_prices_and_a_trailing_stop(xs):
    sym, usdt = xs.sym("BTC", "USDT"), xs.a("USDT")
    _trade_at(xs, 30000)
    bot = _trader(xs, BTC="0.03", USDT="1000")
    sl = bot.create_order(sym, "limit", "sell", 0.01, 28900, params={"stopLossPrice": 29000})
    assert sl["info"]["type"] == "STOP_LOSS_LIMIT" and D(sl["triggerPrice"]) == D("29000")
    tp = bot.create_order(sym, "limit", "sell", 0.01, 33000, params={"takeProfitPrice": 32000})
    assert tp["info"]["type"] == "TAKE_PROFIT_LIMIT" and D(tp["triggerPrice"]) == D("32000")
    buy_stop = bot.create_order(sym, "market", "buy", 0.01, None, params={"triggerPrice": 31000})
    assert buy_stop["info"]["type"] == "STOP_LOSS" and D(buy_stop["triggerPrice"]) == D("31000")
    assert _bal(bot, usdt) == (D("1000") - D("310"), D("310"))  # a market buy stop holds its cost at the stop
    # ccxt's unified trailing stop: a percentage, sent as trailingDelta in basis points (2 % = 200)
    trail = bot.create_order(
        sym, "market", "sell", 0.01, None, params={"trailingPercent": 2, "stopLossOrTakeProfit": "stopLoss"}
    )
    assert trail["info"]["type"] == "STOP_LOSS" and trail["info"]["trailingDelta"] == 200
    with pytest.raises(ccxt.OrderImmediatelyFillable, match="Stop price would trigger immediately"):
        bot.create_order(sym, "limit", "sell", 0.001, 30500, params={"stopLossPrice": 31000})
    assert sorted(o["id"] for o in bot.fetch_open_orders(sym)) == sorted(o["id"] for o in (sl, tp, buy_stop, trail))
    canceled = bot.cancel_order(buy_stop["id"], sym)
    assert canceled["status"] == "canceled"
    assert _bal(bot, usdt) == (D("1000"), D("0"))

    bids = _trader(xs, USDT="1000")
    bids.create_order(sym, "limit", "buy", 0.02, 29000)
    _trade_at(xs, 29400)  # 2 % below 30000: the trailing stop fires and sells into the bid at 29000...
    assert bot.fetch_order(trail["id"], sym)["status"] == "closed"
    # ... a trade at 29000, which fires the stop-loss in the same transaction: it sells at 29000 too
    fired = bot.fetch_order(sl["id"], sym)
    assert fired["status"] == "closed" and D(fired["average"]) == D("29000")
    assert bot.fetch_order(tp["id"], sym)["status"] == "open"
    assert _bal(bot, usdt) == (D("1000") + 2 * (D("290") - D("0.29")), D("0"))


def xs_market_info(xs: ExchangeServer) -> dict:
    ex = ccxt_exchange(xs.url)
    ex.load_markets()
    return ex.market(xs.sym("BTC", "USDT"))["info"]


def xs_depth(xs: ExchangeServer, sym: str) -> tuple[list, list]:
    book = ccxt_exchange(xs.url).fetch_order_book(sym)
    return book["bids"], book["asks"]


def test_oco_lists_through_ccxts_binance_api(xs):
    """An OCO placed, read and cancelled through ccxt's own signed calls for Binance's order-list
    endpoints (ccxt has no unified OCO for spot), and the earlier ``order/oco`` endpoint."""
    sym, btc = xs.sym("BTC", "USDT"), xs.a("BTC")
    market_id = sym.replace("/", "")
    _trade_at(xs, 30000)
    bot = _trader(xs, BTC="0.02")
    placed = bot.private_post_orderlist_oco(
        {"symbol": market_id, "side": "SELL", "quantity": "0.01", "aboveType": "LIMIT_MAKER", "abovePrice": "33000",
         "belowType": "STOP_LOSS_LIMIT", "belowStopPrice": "28000", "belowPrice": "27900", "belowTimeInForce": "GTC",
         "listClientOrderId": "bot-exit-1"}
    )  # fmt: skip
    assert placed["contingencyType"] == "OCO" and placed["listStatusType"] == "EXEC_STARTED"
    assert placed["listOrderStatus"] == "EXECUTING" and placed["listClientOrderId"] == "bot-exit-1"
    assert [r["type"] for r in placed["orderReports"]] == ["STOP_LOSS_LIMIT", "LIMIT_MAKER"]
    assert {r["orderListId"] for r in placed["orderReports"]} == {placed["orderListId"]}
    assert _bal(bot, btc) == (D("0.01"), D("0.01"))  # the two legs lock the 0.01 once
    legacy = bot.private_post_order_oco(
        {"symbol": market_id, "side": "SELL", "quantity": "0.01", "price": "34000", "stopPrice": "27000",
         "stopLimitPrice": "26900", "stopLimitTimeInForce": "GTC"}
    )  # fmt: skip
    assert [r["type"] for r in legacy["orderReports"]] == ["STOP_LOSS_LIMIT", "LIMIT_MAKER"]
    assert _bal(bot, btc) == (D("0"), D("0.02"))

    listed = bot.private_get_openorderlist()
    assert [x["orderListId"] for x in listed] == [placed["orderListId"], legacy["orderListId"]]
    got = bot.private_get_orderlist({"origClientOrderId": "bot-exit-1"})
    assert got["orderListId"] == placed["orderListId"] and len(got["orders"]) == 2
    # a fetched leg names its list, as ccxt reads it
    leg = bot.fetch_order(str(placed["orders"][1]["orderId"]), sym)
    assert leg["info"]["orderListId"] == placed["orderListId"] and leg["status"] == "open"

    _trader(xs, USDT="1000").create_order(sym, "limit", "buy", 0.01, 33000)  # the take-profit fills...
    done = bot.private_get_orderlist({"orderListId": placed["orderListId"]})
    assert done["listStatusType"] == "ALL_DONE" and done["listOrderStatus"] == "ALL_DONE"
    assert bot.fetch_order(str(placed["orders"][0]["orderId"]), sym)["status"] == "canceled"  # ...the stop went
    canceled = bot.private_delete_orderlist({"symbol": market_id, "orderListId": legacy["orderListId"]})
    assert [r["status"] for r in canceled["orderReports"]] == ["CANCELED", "CANCELED"]
    with pytest.raises(ccxt.OrderNotFound):
        bot.private_delete_orderlist({"symbol": market_id, "orderListId": legacy["orderListId"]})
    assert [x["orderListId"] for x in bot.private_get_allorderlist()][-2:] == [
        placed["orderListId"], legacy["orderListId"]
    ]  # fmt: skip
    assert bot.private_get_openorderlist() == []
    assert _bal(bot, btc) == (D("0.01"), D("0"))
    with pytest.raises(ccxt.OrderNotFound):  # another account's list is not found
        _trader(xs).private_get_orderlist({"orderListId": placed["orderListId"]})
