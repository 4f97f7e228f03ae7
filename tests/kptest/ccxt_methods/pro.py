"""Probes of ccxt.pro's methods: the market streams (``watch*``, ``unWatch*``), the account's
events (``watchOrders``, ``watchMyTrades``, ``watchBalance``) and the WebSocket API (``*Ws``, whose
probes are the REST ones: see rest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from kptest.ccxt_methods.probing import (
    ASK,
    BID,
    LOW,
    PRICES,
    WAIT_S,
    Ctx,
    Probe,
    World,
    is_order,
    registry,
    shaped_ticker,
    shaped_trades,
    shapes,
)
from kptest.exchange import D

PROBES: dict[str, Probe] = {}
probe = registry(PROBES)


# -- ccxt.pro: market streams -------------------------------------------------------------------


async def until_update(c: Ctx, watch: Awaitable[Any], poke: Callable[[], None] | None = None) -> Any:
    """Awaits a watch call, poking the market (``poke``) every 0.3 s until it returns."""
    task = asyncio.ensure_future(watch)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.3)
        if done:
            return task.result()
        if loop.time() > deadline:
            task.cancel()
            raise AssertionError(f"{c.name}: no update within {WAIT_S} s")
        if poke is not None:
            poke()


@probe("watchTicker")
async def _watch_ticker(c: Ctx) -> None:
    t = await until_update(c, c.call(c.w.sym))
    shaped_ticker(c, t)
    assert t["symbol"] == c.w.sym and t["last"] in PRICES and t["high"] <= ASK, t


@probe("watchTickers")
async def _watch_tickers(c: Ctx) -> None:
    tickers = await until_update(c, c.call([c.w.sym, c.w.sym2]))
    assert tickers and set(tickers) <= {c.w.sym, c.w.sym2}, tickers
    for symbol, t in tickers.items():
        shaped_ticker(c, t, symbol)
    assert all(t["symbol"] == s for s, t in tickers.items()), tickers


@probe("watchBidsAsks")
async def _watch_bids_asks(c: Ctx) -> None:
    tickers = await until_update(c, c.call([c.w.sym]), c.w.poke_book)
    t = tickers[c.w.sym]
    shaped_ticker(c, t)
    assert t["symbol"] == c.w.sym and t["bid"] in (BID, BID + 5) and t["ask"] == ASK, t


@probe("watchOrderBook", "watchOrderBookForSymbols")
async def _watch_book(c: Ctx) -> None:
    book = await until_update(c, c.call(c.w.sym if c.name == "watchOrderBook" else [c.w.sym]), c.w.poke_book)
    # ccxt returns the book once it has the REST snapshot, which carries no time.
    shapes.test_order_book(c.ex, {"timestamp": True, "datetime": True}, c.name, book, c.w.sym)
    assert book["symbol"] == c.w.sym and book["asks"][0][0] == ASK and book["bids"][0][0] in (BID, BID + 5), book


@probe("watchTrades", "watchTradesForSymbols")
async def _watch_trades(c: Ctx) -> None:
    trades = await until_update(c, c.call(c.w.sym if c.name == "watchTrades" else [c.w.sym]), c.w.poke_trade)
    shaped_trades(c, trades, public=True)
    assert trades and all(t["symbol"] == c.w.sym and t["price"] == ASK for t in trades), trades


@probe("watchOHLCV", "watchOHLCVForSymbols")
async def _watch_ohlcv(c: Ctx) -> None:
    if c.name == "watchOHLCV":
        candles = await until_update(c, c.call(c.w.sym, "1m"))
    else:
        by_symbol = await until_update(c, c.call([[c.w.sym, "1m"]]))
        assert list(by_symbol) == [c.w.sym] and list(by_symbol[c.w.sym]) == ["1m"], by_symbol
        candles = by_symbol[c.w.sym]["1m"]
    for k in candles:
        shapes.test_ohlcv(c.ex, {}, c.name, k, c.w.sym, c.ex.milliseconds())
    assert candles and all(len(k) == 6 and k[0] % 60000 == 0 and BID <= k[3] <= k[2] <= ASK for k in candles), candles


# unWatch*: the matching watch first (its first update), then the unsubscribe, which ccxt
# resolves when keyplane acknowledges it.
_UNWATCH: dict[str, tuple[str, Callable[[World], tuple[Any, ...]], Callable[[World], None] | None]] = {
    "unWatchTicker": ("watch_ticker", lambda w: (w.sym,), None),
    "unWatchTickers": ("watch_tickers", lambda w: ([w.sym],), None),
    "unWatchBidsAsks": ("watch_bids_asks", lambda w: ([w.sym],), World.poke_book),
    "unWatchOrderBook": ("watch_order_book", lambda w: (w.sym,), World.poke_book),
    "unWatchOrderBookForSymbols": ("watch_order_book_for_symbols", lambda w: ([w.sym],), World.poke_book),
    "unWatchTrades": ("watch_trades", lambda w: (w.sym,), World.poke_trade),
    "unWatchTradesForSymbols": ("watch_trades_for_symbols", lambda w: ([w.sym],), World.poke_trade),
    "unWatchOHLCV": ("watch_ohlcv", lambda w: (w.sym, "1m"), None),
    "unWatchOHLCVForSymbols": ("watch_ohlcv_for_symbols", lambda w: ([[w.sym, "1m"]],), None),
}


@probe(*_UNWATCH)
async def _unwatch(c: Ctx) -> None:
    watch, args, poke = _UNWATCH[c.name]
    await until_update(c, c.do(watch, *args(c.w)), (lambda: poke(c.w)) if poke else None)
    streams_before = _streams(c)
    assert streams_before, "the watch left no subscription"
    await asyncio.wait_for(c.call(*args(c.w)), WAIT_S)
    assert _streams(c) < streams_before, (streams_before, _streams(c))


def _streams(c: Ctx) -> set[str]:
    """The message hashes ccxt.pro holds subscriptions for."""
    return {h for client in c.ex.clients.values() for h in client.subscriptions}


# -- ccxt.pro: the account's events -------------------------------------------------------------


async def until_subscribed(c: Ctx) -> None:
    """The user-data stream's subscription is acknowledged once ccxt has it in its client's
    subscriptions and no subscribe call is pending."""
    url = c.ex.urls["api"]["ws"]["ws-api"]["spot"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while loop.time() < deadline:
        client = c.ex.clients.get(url)
        if (
            client is not None
            and client.subscriptions.get("spot")
            and not any(k.startswith("authenticate:signature") for k in client.futures)
        ):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{c.name}: the user-data stream subscription was not acknowledged")


async def watch_account(c: Ctx, *args: Any, act: Callable[[], Awaitable[Any]]) -> tuple[Any, Any]:
    """(what the watch call returned, what ``act`` returned): subscribes, waits for the
    subscription, then acts once."""
    task = asyncio.ensure_future(c.call(*args))
    await asyncio.sleep(0)
    done, _ = await asyncio.wait({task}, timeout=0)
    if done:
        task.result()  # the watch failed at once
    await until_subscribed(c)
    acted = await act()
    try:
        return await asyncio.wait_for(task, WAIT_S), acted
    except TimeoutError:
        raise AssertionError(f"{c.name}: no event within {WAIT_S} s") from None


@probe("watchOrders", "watchOrdersForSymbols")
async def _watch_orders(c: Ctx) -> None:
    arg = c.w.sym if c.name == "watchOrders" else [c.w.sym]
    orders, placed = await watch_account(c, arg, act=c.resting)
    is_order(orders[-1], c, side="buy", type_="limit", status="open", amount="0.001", price=LOW)
    assert orders[-1]["id"] == placed["id"], orders


@probe("watchMyTrades")
async def _watch_my_trades(c: Ctx) -> None:
    trades, order = await watch_account(c, c.w.sym, act=c.filled)
    shaped_trades(c, trades, public=False)
    t = trades[-1]
    assert (t["symbol"], t["order"], t["side"], t["price"], D(t["amount"])) == (
        c.w.sym, order["id"], "buy", ASK, D("0.001")
    ), t  # fmt: skip


@probe("watchBalance")
async def _watch_balance(c: Ctx) -> None:
    balance, _ = await watch_account(c, act=c.resting)
    shapes.test_balance(c.ex, {}, c.name, balance)
    free, used = c.w.ledger(c.w.quote)
    assert (D(balance[c.w.quote]["free"]), D(balance[c.w.quote]["used"])) == (free, used), balance[c.w.quote]
    assert used == D("10")
