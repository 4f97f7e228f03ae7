"""Probes of ccxt's REST methods (run on ccxt's sync and async classes): market data, the account,
fees and the wallet, orders."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from kptest.ccxt_methods.probing import (
    ASK,
    BID,
    HIGH,
    LOW,
    PRICES,
    WAIT_S,
    CcxtDefect,
    Ctx,
    Probe,
    ids,
    is_order,
    registry,
    shaped_conditional,
    shaped_order,
    shaped_ticker,
    shaped_trades,
    shapes,
)
from kptest.exchange import D

ETH_ADDR = "0x" + "ab" * 20

PROBES: dict[str, Probe] = {}
probe = registry(PROBES)


# -- market data --------------------------------------------------------------------------------


@probe("fetchMarkets")
async def _markets(c: Ctx) -> None:
    markets = {m["symbol"]: m for m in await c.call()}
    for m in markets.values():
        shapes.test_market(c.ex, {}, c.name, m)
    assert {c.w.sym, c.w.sym2, c.w.xs.sym("ETH", "BTC")} <= set(markets)
    m = markets[c.w.sym]
    assert m["spot"] and m["active"] and (m["base"], m["quote"]) == (c.w.base, c.w.quote), m
    assert (m["precision"]["amount"], m["precision"]["price"]) == (0.00001, 0.01), m
    assert m["limits"]["cost"]["min"] == 5 and m["limits"]["amount"]["max"] == 9000, m


@probe("fetchCurrencies")
async def _currencies(c: Ctx) -> None:
    # ccxt_exchange turns ccxt's currencies call off (it is signed); a user turns it back on.
    c.ex.options["fetchCurrencies"] = True
    try:
        currencies = await c.call()
    finally:
        c.ex.options["fetchCurrencies"] = False
    for currency in currencies.values():
        shapes.test_currency(c.ex, {}, c.name, currency)
    usdt = currencies[c.w.quote]
    assert usdt["code"] == c.w.quote and usdt["precision"] == 1e-08, usdt
    (network,) = usdt["networks"].values()
    assert network["fee"] == 1 and network["limits"]["withdraw"]["min"] == 10, network


@probe("fetchTime")
async def _time(c: Ctx) -> None:
    t = await c.call()
    assert isinstance(t, int) and abs(t - c.ex.milliseconds()) < 5000, t


@probe("fetchStatus")
async def _status(c: Ctx) -> None:
    status = await c.call()
    shapes.test_status(c.ex, {}, c.name, status, c.ex.milliseconds())
    assert status["status"] == "ok", status


@probe("fetchTicker", "fetchTickerWs")
async def _ticker(c: Ctx) -> None:
    t = await c.call(c.w.sym)
    shaped_ticker(c, t)
    assert t["symbol"] == c.w.sym and t["last"] in PRICES, t
    assert t["high"] <= ASK and t["low"] >= BID and t["baseVolume"] > 0, t
    if c.name == "fetchTicker":  # the WebSocket API's ticker.24hr carries no book
        assert (t["bid"], t["ask"]) == (BID, ASK), t


@probe("fetchTickers")
async def _tickers(c: Ctx) -> None:
    tickers = await c.call()
    for symbol, t in tickers.items():
        shaped_ticker(c, t, symbol)
    assert {c.w.sym, c.w.sym2} <= set(tickers)
    assert all(t["symbol"] == s for s, t in tickers.items())
    assert tickers[c.w.sym]["last"] in PRICES


@probe("fetchBidsAsks")
async def _bids_asks(c: Ctx) -> None:
    t = (await c.call([c.w.sym]))[c.w.sym]
    shaped_ticker(c, t)
    assert (t["symbol"], t["bid"], t["ask"]) == (c.w.sym, BID, ASK), t


@probe("fetchLastPrices")
async def _last_prices(c: Ctx) -> None:
    p = (await c.call([c.w.sym]))[c.w.sym]
    shapes.test_last_price(c.ex, {}, c.name, p, c.w.sym)
    assert p["symbol"] == c.w.sym and p["price"] in PRICES, p


@probe("fetchOrderBook", "fetchL2OrderBook", "fetchOrderBookWs")
async def _order_book(c: Ctx) -> None:
    book = await c.call(c.w.sym)
    # Binance's depth answer carries no time, so ccxt's book has none either.
    shapes.test_order_book(c.ex, {"timestamp": True, "datetime": True}, c.name, book, c.w.sym)
    assert book["symbol"] == c.w.sym and isinstance(book["nonce"], int), book
    assert book["bids"][0][0] == BID and book["asks"][0][0] == ASK, book


@probe("fetchTrades", "fetchTradesWs")
async def _trades(c: Ctx) -> str | None:
    trades = await c.call(c.w.sym)
    assert trades and all(t["price"] in PRICES and t["amount"] > 0 for t in trades), trades
    assert [t["timestamp"] for t in trades] == sorted(t["timestamp"] for t in trades)
    rest = await c.do("fetch_trades", c.w.sym)
    assert [(t["id"], t["price"], t["amount"], t["side"]) for t in trades] == [
        (t["id"], t["price"], t["amount"], t["side"]) for t in rest
    ]
    if c.name == "fetchTradesWs" and {t["symbol"] for t in trades} == {None}:
        # ccxt parses trades.recent without the market it asked for (Binance's answer names none).
        shaped_trades(c, trades, public=True, skip={"symbol": True})
        return "ccxt leaves each trade's symbol empty"
    shaped_trades(c, trades, public=True)
    assert all(t["symbol"] == c.w.sym for t in trades), trades
    return None


@probe("fetchOHLCV", "fetchOHLCVWs")
async def _ohlcv(c: Ctx) -> None:
    candles = await c.call(c.w.sym, "1m")
    for k in candles:
        shapes.test_ohlcv(c.ex, {}, c.name, k, c.w.sym, c.ex.milliseconds())
    assert candles and all(len(k) == 6 and k[0] % 60000 == 0 for k in candles), candles
    assert all(BID <= k[3] <= min(k[1], k[4]) <= max(k[1], k[4]) <= k[2] <= ASK for k in candles), candles
    assert sum(k[5] for k in candles) > 0


@probe("fetchTradingLimits")
async def _trading_limits(c: Ctx) -> None:
    limits = await c.call([c.w.sym])
    assert limits == {c.w.sym: {"min": 0.00001, "max": 9000.0}}, limits


# -- account, fees and wallet -------------------------------------------------------------------


@probe("fetchBalance", "fetchBalanceWs")
async def _balance(c: Ctx) -> None:
    await c.resting()  # some USDT locked
    b = await c.call()
    if c.name == "fetchBalanceWs" and c.w.base not in b:
        # ccxt parses the WebSocket API's account.status without a market type, so it reads a
        # futures account's fields and finds none; the balances keyplane sent are checked instead.
        sent = {e["asset"]: (D(e["free"]), D(e["locked"])) for e in b["info"]["balances"]}
        assert sent[c.w.base] == c.w.ledger(c.w.base) and sent[c.w.quote] == c.w.ledger(c.w.quote), sent
        raise CcxtDefect("it reads no spot balance from account.status")
    shapes.test_balance(c.ex, {}, c.name, b)
    for asset in (c.w.base, c.w.quote):
        free, used = c.w.ledger(asset)
        assert (D(b[asset]["free"]), D(b[asset]["used"]), D(b[asset]["total"])) == (free, used, free + used), b[asset]
    assert D(b[c.w.quote]["used"]) == D("10"), b[c.w.quote]


@probe("fetchTradingFee")
async def _trading_fee(c: Ctx) -> None:
    fee = await c.call(c.w.sym)
    shapes.test_trading_fee(c.ex, {}, c.name, c.w.sym, fee)
    assert (fee["symbol"], fee["maker"], fee["taker"]) == (c.w.sym, 0.001, 0.001), fee


@probe("fetchTradingFees")
async def _trading_fees(c: Ctx) -> None:
    fees = await c.call()
    for symbol, fee in fees.items():
        shapes.test_trading_fee(c.ex, {}, c.name, symbol, fee)
    assert {c.w.sym, c.w.sym2} <= set(fees)
    assert (fees[c.w.sym]["maker"], fees[c.w.sym]["taker"]) == (0.001, 0.001), fees[c.w.sym]


@probe("fetchDepositAddress")
async def _deposit_address(c: Ctx) -> None:
    a = await c.call(c.w.quote)
    assert a["currency"] == c.w.quote and re.fullmatch(r"0x[0-9a-fA-F]{40}", a["address"]), a
    assert (await c.call(c.w.quote))["address"] == a["address"]  # one address per account and network


@probe("fetchDepositWithdrawFees")
async def _deposit_withdraw_fees(c: Ctx) -> None:
    fees = await c.call([c.w.quote, c.w.base])
    assert fees[c.w.quote]["withdraw"]["fee"] == 1 and fees[c.w.base]["withdraw"]["fee"] == 0.0002, fees


@probe("fetchDepositWithdrawFee")
async def _deposit_withdraw_fee(c: Ctx) -> None:
    fee = await c.call(c.w.quote)
    assert fee["withdraw"]["fee"] == 1, fee


@probe("fetchTransactionFees", "fetchTransactionFee")
async def _transaction_fees(c: Ctx) -> None:
    fees = await c.call([c.w.quote] if c.name == "fetchTransactionFees" else c.w.quote)
    assert fees["withdraw"][c.w.quote] == {"ERC20": 1} and fees["withdraw"][c.w.base] == {"BTC": 0.0002}, fees


@probe("fetchDeposits")
async def _deposits(c: Ctx) -> None:
    deposits = await c.call(c.w.quote)
    for d in deposits:
        # ccxt reads a deposit's update time from successTime or updateTime, and Binance's
        # deposit history (keyplane's too) has completeTime; it carries no fee.
        skip = {"updated": True, "fee": True}
        shapes.test_deposit_withdrawal(c.ex, skip, c.name, d, c.w.quote, c.ex.milliseconds())
    assert [(d["currency"], d["amount"], d["status"], d["type"]) for d in deposits] == [
        (c.w.quote, 100000.0, "ok", "deposit")
    ], deposits


@probe("withdraw")
async def _withdraw(c: Ctx) -> None:
    before, _ = c.w.ledger(c.w.quote)
    result = await c.call(c.w.quote, 10, ETH_ADDR)
    assert result["id"] and result["currency"] == c.w.quote, result
    assert c.w.ledger(c.w.quote)[0] == before - 11  # 10 and the network fee of 1


@probe("fetchWithdrawals")
async def _withdrawals(c: Ctx) -> None:
    made = await c.do("withdraw", c.w.quote, 10, ETH_ADDR)
    # Until every withdrawal has completed (a few steps of KEYPLANE_WITHDRAW_STEP_S): only then
    # does it carry its transaction id, which ccxt's checks want.
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        withdrawals = await c.call(c.w.quote)
        found = [w for w in withdrawals if w["id"] == made["id"]]
        assert len(found) == 1, found
        if all(w["status"] == "ok" for w in withdrawals):
            break
        assert asyncio.get_running_loop().time() < deadline, f"withdrawals still pending: {withdrawals}"
        await asyncio.sleep(0.1)
    for w in withdrawals:
        # ccxt reads the update time from successTime or updateTime; Binance's (and keyplane's)
        # withdrawal history has completeTime.
        shapes.test_deposit_withdrawal(c.ex, {"updated": True}, c.name, w, c.w.quote, c.ex.milliseconds())
    w = found[0]
    assert w["txid"].startswith("0x") and w["info"]["completeTime"], w
    assert (w["type"], w["currency"], w["amount"], w["address"]) == ("withdrawal", c.w.quote, 10, ETH_ADDR), w
    assert w["fee"] == {"currency": c.w.quote, "cost": 1}, w


@probe("transfer")
async def _transfer(c: Ctx) -> None:
    t = await c.call(c.w.quote, 10, "spot", "funding")
    assert t["currency"] == c.w.quote and t["amount"] == 10, t


@probe("fetchTransfers")
async def _transfers(c: Ctx) -> None:
    assert isinstance(await c.call(c.w.quote), list)


@probe("fetchConvertCurrencies")
async def _convert_currencies(c: Ctx) -> None:
    assert c.w.quote in await c.call()


@probe("fetchConvertQuote")
async def _convert_quote(c: Ctx) -> None:
    q = await c.call(c.w.quote, c.w.base, 10)
    assert q["fromCurrency"] == c.w.quote and q["toCurrency"] == c.w.base, q


@probe("createConvertTrade")
async def _convert_trade(c: Ctx) -> None:
    t = await c.call("1", c.w.quote, c.w.base, 10)
    assert t["fromCurrency"] == c.w.quote, t


@probe("fetchConvertTrade")
async def _fetch_convert_trade(c: Ctx) -> None:
    t = await c.call("1", c.w.quote)
    assert t["id"] == "1", t


@probe("fetchConvertTradeHistory")
async def _convert_history(c: Ctx) -> None:
    assert isinstance(await c.call(c.w.quote), list)


# -- orders -------------------------------------------------------------------------------------


@probe(
    "createOrder", "createOrderWs", "createLimitOrder", "createLimitOrderWs",
    "createLimitBuyOrder", "createLimitSellOrder", "createPostOnlyOrder",
)  # fmt: skip
async def _create_limit(c: Ctx) -> None:
    side = "sell" if c.name == "createLimitSellOrder" else "buy"
    price = HIGH if side == "sell" else LOW
    args: dict[str, tuple[Any, ...]] = {
        "createOrder": ("limit", side, 0.001, price),
        "createOrderWs": ("limit", side, 0.001, price),
        "createLimitOrder": (side, 0.001, price),
        "createLimitOrderWs": (side, 0.001, price),
        "createLimitBuyOrder": (0.001, price),
        "createLimitSellOrder": (0.001, price),
        "createPostOnlyOrder": ("limit", side, 0.001, price),
    }
    o = await c.call(c.w.sym, *args[c.name])
    is_order(o, c, side=side, type_="limit", status="open", amount="0.001", price=price)
    if c.name == "createPostOnlyOrder":
        assert o["postOnly"] is True, o
    fetched = await c.do("fetch_order", o["id"], c.w.sym)
    assert fetched["status"] == "open" and fetched["clientOrderId"] == o["clientOrderId"], fetched


@probe(
    "createMarketOrder", "createMarketOrderWs", "createMarketBuyOrder", "createMarketSellOrder",
    "createMarketOrderWithCost", "createMarketBuyOrderWithCost", "createMarketSellOrderWithCost",
)  # fmt: skip
async def _create_market(c: Ctx) -> None:
    side = "sell" if "Sell" in c.name else "buy"
    price = ASK if side == "buy" else BID
    cost = float(D(price) * D("0.001"))
    args: dict[str, tuple[Any, ...]] = {
        "createMarketOrder": (side, 0.001),
        "createMarketOrderWs": (side, 0.001),
        "createMarketBuyOrder": (0.001,),
        "createMarketSellOrder": (0.001,),
        "createMarketOrderWithCost": (side, cost),
        "createMarketBuyOrderWithCost": (cost,),
        "createMarketSellOrderWithCost": (cost,),
    }
    base_before, _ = c.w.ledger(c.w.base)
    o = await c.call(c.w.sym, *args[c.name])
    is_order(o, c, side=side, type_="market", status="closed", amount="0.001")
    assert D(o["cost"]) == D(price) * D("0.001") and o["average"] == price, o
    moved = c.w.ledger(c.w.base)[0] - base_before
    assert moved == (D("0.000999") if side == "buy" else D("-0.001")), moved  # the taker fee in BTC on a buy


@probe("createStopLimitOrder", "createStopOrder", "createStopLossOrder", "createTriggerOrder", "createTakeProfitOrder")
async def _create_stop(c: Ctx) -> str | None:
    # A sell that triggers below the market (a stop-loss), or above it (a take-profit).
    trigger, price = (HIGH - 500, HIGH) if c.name == "createTakeProfitOrder" else (BID - 3500, BID - 4000)
    if c.name == "createStopLimitOrder":
        o = await c.call(c.w.sym, "sell", 0.001, price, trigger)
    else:
        o = await c.call(c.w.sym, "limit", "sell", 0.001, price, trigger)
    c.cleanups.append(lambda: c.do("cancel_order", o["id"], c.w.sym))
    note = shaped_conditional(c, o)
    assert o["symbol"] == c.w.sym and o["id"] and o["side"] == "sell" and D(o["amount"]) == D("0.001"), o
    assert o["status"] == "open" and o["triggerPrice"] in (None, trigger), o
    return note


@probe("createTrailingPercentOrder")
async def _create_trailing(c: Ctx) -> str | None:
    # A trailing stop-loss: it trails the market by 1 %.
    o = await c.call(c.w.sym, "limit", "sell", 0.001, BID - 4000, 1, None, {"stopLossOrTakeProfit": "stopLoss"})
    c.cleanups.append(lambda: c.do("cancel_order", o["id"], c.w.sym))
    note = shaped_conditional(c, o)
    assert o["symbol"] == c.w.sym and o["id"] and o["side"] == "sell" and D(o["amount"]) == D("0.001"), o
    assert o["status"] == "open", o
    return note


@probe("createOrders")
async def _create_orders(c: Ctx) -> None:
    orders = await c.call([
        {"symbol": c.w.sym, "type": "limit", "side": "buy", "amount": 0.001, "price": LOW},
        {"symbol": c.w.sym, "type": "limit", "side": "sell", "amount": 0.001, "price": HIGH},
    ])  # fmt: skip
    is_order(orders[0], c, side="buy", type_="limit", status="open", amount="0.001", price=LOW)
    is_order(orders[1], c, side="sell", type_="limit", status="open", amount="0.001", price=HIGH)


@probe("cancelOrders")
async def _cancel_orders(c: Ctx) -> None:
    placed = [(await c.resting("buy"))["id"], (await c.resting("sell"))["id"]]
    cancelled = await c.call(placed, c.w.sym)
    assert ids(cancelled) == dict.fromkeys(placed, "canceled"), cancelled


@probe("editOrders")
async def _edit_orders(c: Ctx) -> None:
    placed = await c.resting()
    edit = {"id": placed["id"], "symbol": c.w.sym, "type": "limit", "side": "buy", "amount": 0.002, "price": LOW}
    (o,) = await c.call([edit])
    is_order(o, c, side="buy", type_="limit", status="open", amount="0.002", price=LOW)


@probe("fetchOpenOrder")
async def _fetch_open_order(c: Ctx) -> None:
    placed = await c.resting()
    o = await c.call(placed["id"], c.w.sym)
    is_order(o, c, side="buy", type_="limit", status="open", amount="0.001", price=LOW)
    assert o["id"] == placed["id"], o


@probe("fetchLedger")
async def _ledger(c: Ctx) -> None:
    entries = await c.call(c.w.quote)
    assert entries and all(e["currency"] == c.w.quote for e in entries), entries


@probe("cancelOrder", "cancelOrderWs")
async def _cancel(c: Ctx) -> None:
    placed = await c.resting()
    o = await c.call(placed["id"], c.w.sym)
    is_order(o, c, side="buy", type_="limit", status="canceled", amount="0.001", price=LOW)
    assert o["id"] == placed["id"], o
    assert c.w.ledger(c.w.quote)[1] == 0


@probe("cancelAllOrders", "cancelAllOrdersWs")
async def _cancel_all(c: Ctx) -> None:
    placed = {(await c.resting("buy"))["id"], (await c.resting("sell"))["id"]}
    cancelled = await c.call(c.w.sym)
    for o in cancelled:
        shaped_order(c, o)
    assert ids(cancelled) == dict.fromkeys(placed, "canceled"), cancelled
    assert all(o["symbol"] == c.w.sym for o in cancelled), cancelled
    assert (await c.do("fetch_open_orders", c.w.sym)) == []


@probe("editOrder", "editOrderWs")
async def _edit(c: Ctx) -> None:
    placed = await c.resting()
    o = await c.call(placed["id"], c.w.sym, "limit", "buy", 0.002, LOW + 500)
    is_order(o, c, side="buy", type_="limit", status="open", amount="0.002", price=LOW + 500)
    assert o["id"] != placed["id"], o
    assert (await c.do("fetch_order", placed["id"], c.w.sym))["status"] == "canceled"
    assert c.w.ledger(c.w.quote)[1] == D("21")  # 0.002 x 10500


@probe("fetchOrder", "fetchOrderWs")
async def _fetch_order(c: Ctx) -> None:
    placed = await c.resting()
    o = await c.call(placed["id"], c.w.sym)
    is_order(o, c, side="buy", type_="limit", status="open", amount="0.001", price=LOW)
    assert (o["id"], o["clientOrderId"], o["timestamp"]) == (placed["id"], placed["clientOrderId"], placed["timestamp"])
    done = await c.filled()
    assert (await c.call(done["id"], c.w.sym))["status"] == "closed"


@probe("fetchOpenOrders", "fetchOpenOrdersWs")
async def _open_orders(c: Ctx) -> None:
    placed = await c.resting()
    await c.filled()
    orders = await c.call(c.w.sym)
    assert ids(orders) == {placed["id"]: "open"}, orders
    is_order(orders[0], c, side="buy", type_="limit", status="open", amount="0.001", price=LOW)


async def _history(c: Ctx) -> tuple[str, str]:
    """(a cancelled order's id, a filled order's id) of the account."""
    placed = await c.resting()
    await c.do("cancel_order", placed["id"], c.w.sym)
    return placed["id"], (await c.filled())["id"]


@probe("fetchOrders", "fetchOrdersWs")
async def _orders(c: Ctx) -> None:
    cancelled, filled = await _history(c)
    open_ = (await c.resting())["id"]
    orders = await c.call(c.w.sym)
    for o in orders:
        shaped_order(c, o)
    seen = ids(orders)
    assert (seen[cancelled], seen[filled], seen[open_]) == ("canceled", "closed", "open"), seen


@probe("fetchClosedOrders", "fetchCanceledOrders", "fetchCanceledAndClosedOrders")
async def _done_orders(c: Ctx) -> None:
    cancelled, filled = await _history(c)
    open_ = (await c.resting())["id"]
    orders = await c.call(c.w.sym)
    for o in orders:
        shaped_order(c, o)
    seen = ids(orders)
    wanted = {
        "fetchClosedOrders": {"closed"},
        "fetchCanceledOrders": {"canceled"},
        "fetchCanceledAndClosedOrders": {"closed", "canceled"},
    }[c.name]
    assert set(seen.values()) <= wanted and open_ not in seen, seen
    assert (cancelled in seen, filled in seen) == ("canceled" in wanted, "closed" in wanted), seen


@probe("fetchMyTrades", "fetchMyTradesWs", "fetchOrderTrades")
async def _my_trades(c: Ctx) -> None:
    order = await c.filled("sell")
    if c.name == "fetchOrderTrades":
        trades = await c.call(order["id"], c.w.sym)
    else:
        trades = [t for t in await c.call(c.w.sym) if t["order"] == order["id"]]
    shaped_trades(c, trades, public=False)
    assert len(trades) == 1, trades
    t = trades[0]
    assert (t["symbol"], t["order"], t["side"], t["takerOrMaker"]) == (c.w.sym, order["id"], "sell", "taker"), t
    cost = D(BID) * D("0.001")
    assert (t["price"], D(t["amount"]), D(t["cost"])) == (BID, D("0.001"), cost), t
    assert D(t["fee"]["cost"]) == cost * D("0.001") and t["fee"]["currency"] == c.w.quote, t  # 0.1 % of it
