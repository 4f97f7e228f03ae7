"""python-binance, unchanged, against the reference exchange with only its base URLs changed (its
REST ``API_URL``, WebSocket API ``WS_API_URL`` and streams ``STREAM_URL``): the kline, trade,
ticker and depth (diff and partial) sockets of ``BinanceSocketManager``, its user socket (which
python-binance 1.0.37 opens on the WebSocket API with ``userDataStream.subscribe.signature``), and
``ThreadedWebsocketManager``'s kline and user sockets, each message checked against what the same
library's REST client answers for the same data.

python-binance and binance-connector both install into the ``binance`` package, and whichever is
installed last owns ``binance/__init__.py``: this module imports python-binance's submodules only.
A socket subscribes when it connects, and an update committed before the subscription is live is
not sent, so each test first "pokes" the market (one small change) until the socket shows one, or
waits for a stream that sends once a second by itself. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
from binance.async_client import AsyncClient
from binance.base_client import BaseClient
from binance.client import Client
from binance.ws.streams import BinanceSocketManager, ThreadedWebsocketManager

from keyplane.accounts.stepup import StepUp
from kptest import streams
from kptest.clients import ed25519_keypair
from kptest.exchange import ExchangeServer, check_invariants, clear_books, exchange_server
from kptest.streams import levels

pytestmark = pytest.mark.e2e

D = Decimal
WAIT_S = 10.0  # the deadline of every wait for a message
POKE_S = 0.5  # how long a poke waits for its message before poking again


@pytest.fixture(scope="module")
def xs(make_settings) -> Iterator[ExchangeServer]:
    with exchange_server(make_settings(), streams.market_suffix("P")) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _empty_books(xs: ExchangeServer) -> Iterator[None]:
    clear_books(xs.services)
    yield
    clear_books(xs.services)


@pytest.fixture(autouse=True)
def _base_urls(xs: ExchangeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """python-binance's base URLs, pointed at keyplane: the only change to the library. Its clients
    format them with the TLD and endpoint number, so they are set on the classes (as a user points
    it at a testnet of their own), which ``ThreadedWebsocketManager`` builds its own client and
    socket manager from."""
    ws = streams.ws_url(xs.url)
    monkeypatch.setattr(BaseClient, "API_URL", xs.url + "/api")
    monkeypatch.setattr(BaseClient, "WS_API_URL", ws + "/ws-api/v3")
    monkeypatch.setattr(BinanceSocketManager, "STREAM_URL", ws + "/")


def _account(xs: ExchangeServer, *, ed25519: bool = False, **credit: str) -> dict[str, Any]:
    """A funded account (``BTC=...`` credits this server's BTC) and the python-binance client
    arguments of its read + trade key."""
    svc = xs.services
    assert svc.exchange is not None
    user = svc.accounts.create_user(f"pb{secrets.token_hex(6)}@example.com", "correct horse battery staple")
    for asset, amount in credit.items():
        svc.exchange.wallet.credit(user.id, xs.a(asset), amount)
    private, public = ed25519_keypair() if ed25519 else (None, None)
    issued = svc.keys.create(
        user.id, scopes=("read", "trade"), restrictions=svc.keys.build_restrictions(),
        key_type="ed25519" if ed25519 else "hmac", public_key=public, step_up=StepUp.operator(),
    )  # fmt: skip
    if ed25519:
        return {"api_key": issued.info.api_key, "private_key": private}
    return {"api_key": issued.info.api_key, "api_secret": issued.secret}


@asynccontextmanager
async def clients(*accounts: dict[str, Any]) -> AsyncIterator[list[AsyncClient]]:
    """An ``AsyncClient`` per account, all closed at the end, together: a client that has used the
    WebSocket API takes up to python-binance's 10 s receive timeout to close (its reader stops at
    its next message)."""
    made: list[AsyncClient] = []
    try:
        for acct in accounts:
            made.append(await AsyncClient.create(**acct))
        yield made
    finally:
        await asyncio.gather(*(c.close_connection() for c in made))


@asynccontextmanager
async def connected(sock: Any, wake: Callable[[], Coroutine[Any, Any, Any]]) -> AsyncIterator[Any]:
    """A python-binance socket, connected, and closed on the way out. Its reader stops at its next
    message, or at its 10 s receive timeout: ``wake`` (one more change to the market) sends one, so
    a socket that has gone quiet closes at once."""
    await sock.connect()
    try:
        yield sock
    finally:
        closing = asyncio.ensure_future(sock.close())
        await wake()
        await closing


class NoMessage(AssertionError):
    """No message that was waited for came in time."""


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return streams.run(coro, timeout=40.0)


async def message(sock: Any, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = WAIT_S) -> Any:
    """The next message on ``sock`` that satisfies ``pred`` (others are skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise NoMessage(f"no {what} within {timeout} s")
        try:
            msg = await asyncio.wait_for(sock.recv(), left)
        except TimeoutError:
            continue
        assert not (isinstance(msg, dict) and msg.get("e") == "error"), f"the socket failed waiting for {what}: {msg}"
        if pred(msg):
            return msg


async def poked(sock: Any, poke: Callable[[], Coroutine[Any, Any, Any]], pred: Callable[[Any], bool], what: str) -> Any:
    """Pokes until ``sock`` shows a message that satisfies ``pred``: the subscription is live."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while loop.time() < deadline:
        await poke()
        with contextlib.suppress(NoMessage):
            return await message(sock, pred, what, timeout=POKE_S)
    raise AssertionError(f"no {what} within {WAIT_S} s of pokes")


async def cross(maker: AsyncClient, taker: AsyncClient, symbol: str, qty: str, price: str) -> dict[str, Any]:
    """One trade: ``maker`` rests a sell, ``taker`` buys it with a limit order."""
    await maker.create_order(symbol=symbol, side="SELL", type="LIMIT", timeInForce="GTC", quantity=qty, price=price)
    order = await taker.create_order(
        symbol=symbol, side="BUY", type="LIMIT", timeInForce="GTC", quantity=qty, price=price
    )
    assert order["status"] == "FILLED", order
    return order


def test_trade_kline_and_ticker_sockets_match_rest(xs: ExchangeServer) -> None:
    symbol = xs.a("BTC") + xs.a("USDT")

    async def body() -> None:
        async with clients(_account(xs, BTC="1"), _account(xs, USDT="100000")) as (maker, taker):
            bsm = BinanceSocketManager(maker)
            async with (
                connected(
                    bsm.trade_socket(symbol), lambda: cross(maker, taker, symbol, "0.00100", "19000.00")
                ) as trades,
                bsm.kline_socket(symbol, interval=AsyncClient.KLINE_INTERVAL_1MINUTE) as klines,
                bsm.symbol_ticker_socket(symbol) as tickers,
            ):
                # Klines and tickers come every second by themselves.
                first = await message(klines, lambda m: m.get("e") == "kline", "a first kline")
                assert first["s"] == first["k"]["s"] == symbol and first["k"]["i"] == "1m"
                assert (await message(tickers, lambda m: m.get("e") == "24hrTicker", "a first ticker"))["s"] == symbol
                await poked(
                    trades,
                    lambda: cross(maker, taker, symbol, "0.00100", "20000.00"),
                    lambda m: m.get("e") == "trade",
                    "a first trade",
                )
                order = await cross(maker, taker, symbol, "0.00250", "20123.45")
                trade = await message(trades, lambda m: D(m["p"]) == D("20123.45"), "the checked trade")
                mine = (await taker.get_my_trades(symbol=symbol))[-1]
                assert mine["orderId"] == order["orderId"] and mine["isBuyer"] and not mine["isMaker"]
                assert trade["s"] == symbol and trade["t"] == mine["id"] and trade["T"] == mine["time"]
                assert D(trade["q"]) == D(mine["qty"]) == D("0.0025") and D(trade["p"]) == D(mine["price"])
                assert trade["m"] is False  # the buyer took

                kline = await message(klines, lambda m: D(m["k"]["c"]) == D("20123.45"), "a kline with the trade")
                k = kline["k"]
                rest = await maker.get_klines(symbol=symbol, interval="1m", startTime=k["t"], limit=1)
                assert rest and rest[0][0] == k["t"] and rest[0][6] == k["T"], (rest, k)
                assert [D(x) for x in rest[0][1:6]] == [D(k[f]) for f in "ohlcv"] and rest[0][8] == k["n"]
                assert k["L"] == trade["t"]

                ticker = await message(tickers, lambda m: m["L"] == trade["t"], "a ticker with the trade")
                rest_ticker = await maker.get_ticker(symbol=symbol)
                assert ticker["s"] == rest_ticker["symbol"] == symbol
                for field, name in (("c", "lastPrice"), ("Q", "lastQty"), ("v", "volume"), ("q", "quoteVolume"),
                                    ("h", "highPrice"), ("l", "lowPrice"), ("o", "openPrice")):  # fmt: skip
                    assert D(ticker[field]) == D(rest_ticker[name]), (field, ticker, rest_ticker)
                assert ticker["n"] == rest_ticker["count"] and D(ticker["c"]) == D("20123.45")

    run(body())
    check_invariants(xs.services)


def test_depth_sockets_keep_the_book_rest_shows(xs: ExchangeServer) -> None:
    """The diff depth socket keeps a local book as Binance documents it (a REST snapshot, then every
    update after its lastUpdateId, each continuing the last); the partial one shows the top levels."""
    symbol = xs.a("ETH") + xs.a("USDT")

    async def body() -> None:
        async with clients(_account(xs, ETH="10", USDT="100000")) as (trader,):
            bsm = BinanceSocketManager(trader)
            placed: list[int] = []

            async def rest(side: str, qty: str, price: str) -> None:
                order = await trader.create_order(
                    symbol=symbol, side=side, type="LIMIT", timeInForce="GTC", quantity=qty, price=price
                )
                placed.append(order["orderId"])

            async with (
                connected(bsm.depth_socket(symbol, interval=100), lambda: rest("BUY", "0.0100", "900.00")) as diff,
                bsm.depth_socket(symbol, depth=BinanceSocketManager.WEBSOCKET_DEPTH_5) as partial,
            ):
                assert "lastUpdateId" in await message(partial, lambda m: "lastUpdateId" in m, "a first partial book")
                await poked(
                    diff,
                    lambda: rest("BUY", "0.0100", f"{1000 + len(placed)}.00"),
                    lambda m: m.get("e") == "depthUpdate",
                    "a first depth update",
                )
                snapshot = await trader.get_order_book(symbol=symbol, limit=1000)
                book = {"bids": dict(levels(snapshot["bids"])), "asks": dict(levels(snapshot["asks"]))}
                await rest("SELL", "0.5000", "2100.00")
                await rest("SELL", "0.2500", "2100.00")
                await rest("SELL", "1.0000", "2200.50")
                await rest("BUY", "0.7500", "1990.00")
                await trader.cancel_order(symbol=symbol, orderId=placed[0])
                final = await trader.get_order_book(symbol=symbol, limit=1000)
                last = snapshot["lastUpdateId"]
                while last < final["lastUpdateId"]:
                    update = await message(diff, lambda m: m.get("e") == "depthUpdate", "the book's next update")
                    assert update["s"] == symbol
                    last = streams.apply_depth_update(book, last, update)
                assert last == final["lastUpdateId"]
                assert sorted(book["bids"].items(), reverse=True) == levels(final["bids"])
                assert sorted(book["asks"].items()) == levels(final["asks"])
                assert book["asks"][D("2100.00")] == D("0.75") and D("1000.00") not in book["bids"]

                top = await message(
                    partial, lambda m: m["lastUpdateId"] >= final["lastUpdateId"], "a partial book with the changes"
                )
                assert top["lastUpdateId"] == final["lastUpdateId"]
                assert levels(top["bids"]) == levels(final["bids"])[:5]
                assert (
                    levels(top["asks"]) == levels(final["asks"])[:5] == [(D("2100"), D("0.75")), (D("2200.5"), D("1"))]
                )

    run(body())


def test_user_socket_gets_the_accounts_orders_and_balances(xs: ExchangeServer) -> None:
    """With an HMAC key and with an Ed25519 key: python-binance signs its WebSocket API
    subscription with either."""
    symbol = xs.a("BTC") + xs.a("USDT")
    base, quote = xs.a("BTC"), xs.a("USDT")

    async def body() -> None:
        makers = (_account(xs, BTC="1"), _account(xs, ed25519=True, BTC="1"))
        async with clients(*makers, _account(xs, USDT="100000")) as (hmac_maker, ed25519_maker, taker):
            for maker in (hmac_maker, ed25519_maker):
                await trade_and_watch(maker, taker)

    async def trade_and_watch(maker: AsyncClient, taker: AsyncClient) -> None:
        async with BinanceSocketManager(maker).user_socket() as user:
            placed = await maker.create_order(
                symbol=symbol, side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.01000", price="25000.00"
            )
            new = await message(user, lambda m: m.get("e") == "executionReport", "the order's executionReport")
            assert new["i"] == placed["orderId"] and new["c"] == placed["clientOrderId"] and new["s"] == symbol
            assert (new["x"], new["X"], new["S"], new["o"], new["f"]) == ("NEW", "NEW", "SELL", "LIMIT", "GTC")
            assert (D(new["p"]), D(new["q"]), D(new["z"])) == (D("25000"), D("0.01"), 0)
            position = await message(user, lambda m: m.get("e") == "outboundAccountPosition", "the balances")
            held = {b["a"]: (D(b["f"]), D(b["l"])) for b in position["B"]}
            assert held[base] == (D("0.99"), D("0.01")), held

            await taker.create_order(
                symbol=symbol, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01000", price="25000.00"
            )
            fill = await message(user, lambda m: m.get("e") == "executionReport", "the fill's executionReport")
            trade = (await maker.get_my_trades(symbol=symbol))[-1]
            assert fill["i"] == placed["orderId"] and fill["t"] == trade["id"] and fill["m"] is True
            assert (fill["x"], fill["X"]) == ("TRADE", "FILLED")
            assert (D(fill["l"]), D(fill["L"]), D(fill["z"])) == (D("0.01"), D("25000"), D("0.01"))
            position = await message(user, lambda m: m.get("e") == "outboundAccountPosition", "the new balances")
            held = {b["a"]: (D(b["f"]), D(b["l"])) for b in position["B"]}
            account = {b["asset"]: (D(b["free"]), D(b["locked"])) for b in (await maker.get_account())["balances"]}
            assert held[base] == account[base] == (D("0.99"), 0)
            assert held[quote] == account[quote] and held[quote][0] > 0

    run(body())
    check_invariants(xs.services)


def _taken(q: queue.Queue[Any], pred: Callable[[Any], bool], what: str, timeout: float = WAIT_S) -> Any:
    """The next item of ``q`` that satisfies ``pred`` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise NoMessage(f"no {what} within {timeout} s")
        try:
            msg = q.get(timeout=left)
        except queue.Empty:
            continue
        assert not (isinstance(msg, dict) and msg.get("e") == "error"), f"the socket failed waiting for {what}: {msg}"
        if pred(msg):
            return msg


def test_threaded_websocket_manager_kline_and_user_sockets(xs: ExchangeServer) -> None:
    """The threaded manager (callbacks on its own thread and loop) with the synchronous REST client."""
    symbol = xs.a("BTC") + xs.a("USDT")
    base = xs.a("BTC")
    maker_acct, taker_acct = _account(xs, BTC="1"), _account(xs, USDT="100000")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # the manager's loop, and the one its clients find
    twm = ThreadedWebsocketManager(**maker_acct, loop=loop)
    maker, taker = Client(**maker_acct), Client(**taker_acct)
    twm.start()
    try:
        klines: queue.Queue[Any] = queue.Queue()
        events: queue.Queue[Any] = queue.Queue()
        twm.start_kline_socket(callback=klines.put, symbol=symbol, interval=Client.KLINE_INTERVAL_1MINUTE)
        twm.start_user_socket(callback=events.put)
        first = _taken(klines, lambda m: m.get("e") == "kline", "a first kline")
        assert first["s"] == symbol and first["k"]["i"] == "1m"

        # The user socket subscribes on the manager's loop: rest orders until one shows.
        resting: list[int] = []
        deadline = time.monotonic() + WAIT_S
        while True:
            assert time.monotonic() < deadline, "the user socket showed none of the orders placed"
            price = f"{90000 + len(resting)}.00"
            resting.append(maker.order_limit_sell(symbol=symbol, quantity="0.00100", price=price)["orderId"])
            with contextlib.suppress(NoMessage):
                seen = _taken(events, lambda m: m.get("e") == "executionReport", "a first report", POKE_S)
                break
        assert seen["i"] in resting and seen["X"] == "NEW" and seen["s"] == symbol

        placed = maker.order_limit_sell(symbol=symbol, quantity="0.00300", price="24000.00")
        taker.order_limit_buy(symbol=symbol, quantity="0.00300", price="24000.00")
        fill = _taken(
            events, lambda m: m.get("e") == "executionReport" and m["X"] == "FILLED", "the fill's executionReport"
        )
        trade = maker.get_my_trades(symbol=symbol)[-1]
        assert fill["i"] == placed["orderId"] and fill["t"] == trade["id"] and D(fill["L"]) == D("24000")
        account = {b["asset"]: (D(b["free"]), D(b["locked"])) for b in maker.get_account()["balances"]}

        def settled(m: Any) -> bool:
            return m.get("e") == "outboundAccountPosition" and any(
                b["a"] == base and (D(b["f"]), D(b["l"])) == account[base] for b in m["B"]
            )

        _taken(events, settled, "the balances after the fill, as REST shows them")
        kline = _taken(klines, lambda m: D(m["k"]["c"]) == D("24000"), "a kline with the trade")
        assert kline["k"]["L"] == trade["id"] and kline["s"] == symbol
    finally:
        twm.stop()
        twm.join(timeout=WAIT_S + 5)
        maker.close_connection()
        taker.close_connection()
        asyncio.set_event_loop(None)
        _close(loop)
    assert not twm.is_alive()
    check_invariants(xs.services)


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """Ends what the manager left on its loop once its thread has stopped (its stop does not wait
    for every reader), as ``asyncio.run`` ends a loop."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
