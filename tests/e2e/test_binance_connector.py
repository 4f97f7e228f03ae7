"""binance-connector (Binance's own Python connector), unchanged, against the reference exchange with
only its base URLs changed: ``SpotWebsocketStreamClient(stream_url=...)`` subscribes to trades,
klines, tickers and the book (diff and partial) on a raw and a combined connection, and to a
listenKey from ``Spot(base_url=...).new_listen_key()`` (a SUBSCRIBE of the listenKey on an open
``/ws`` connection), each message checked against what the same library's REST client answers.

binance-connector and python-binance both install into the ``binance`` package, and whichever is
installed last owns ``binance/__init__.py``: this module imports the connector's submodules only.
The connector's client reads on a thread of its own and hands each text frame to ``on_message``;
a subscription is live once its SUBSCRIBE is answered, so nothing here waits for a first update.
Every wait has a deadline.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from binance.spot import Spot
from binance.websocket.spot.websocket_stream import SpotWebsocketStreamClient

from kptest import streams
from kptest.exchange import ExchangeServer, check_invariants, clear_books, exchange_server
from kptest.streams import levels

pytestmark = pytest.mark.e2e

D = Decimal
WAIT_S = 10.0  # the deadline of every wait for a frame


@pytest.fixture(scope="module")
def xs(make_settings) -> Iterator[ExchangeServer]:
    with exchange_server(make_settings(), streams.market_suffix("C")) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _empty_books(xs: ExchangeServer) -> Iterator[None]:
    clear_books(xs.services)
    yield
    clear_books(xs.services)


def _spot(xs: ExchangeServer, **credit: str) -> Spot:
    """The connector's REST client for a new funded account (``BTC=...`` credits this server's BTC)
    with a read + trade HMAC key."""
    _, issued = streams.trading_account(xs.services, **{xs.a(asset): amount for asset, amount in credit.items()})
    return Spot(issued.info.api_key, issued.secret, base_url=xs.url, timeout=WAIT_S)


class Inbox:
    """Every frame a ``SpotWebsocketStreamClient`` receives, in order (its ``on_message`` runs on the
    client's reading thread), and whether the connection has closed."""

    def __init__(self) -> None:
        self.frames: list[Any] = []
        self.closed = False
        self.cond = threading.Condition()

    def on_message(self, _manager: Any, text: str) -> None:
        with self.cond:
            self.frames.append(json.loads(text))
            self.cond.notify_all()

    def on_close(self, _manager: Any) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def on_error(self, _manager: Any, error: Exception) -> None:
        self.on_close(_manager)

    def connect(self, xs: ExchangeServer, *, combined: bool = False) -> SpotWebsocketStreamClient:
        return SpotWebsocketStreamClient(
            stream_url=streams.ws_url(xs.url), on_message=self.on_message, on_close=self.on_close,
            on_error=self.on_error, is_combined=combined,
        )  # fmt: skip

    def mark(self) -> int:
        with self.cond:
            return len(self.frames)

    def wait(self, pred: Callable[[Any], bool], what: str, start: int = 0) -> Any:
        """The first frame from index ``start`` on that satisfies ``pred``."""
        deadline = time.monotonic() + WAIT_S
        with self.cond:
            seen = start
            while True:
                for frame in self.frames[seen:]:
                    if pred(frame):
                        return frame
                seen = len(self.frames)
                left = deadline - time.monotonic()
                assert not self.closed, f"the connection closed before {what}; last frames: {self.frames[-3:]}"
                assert left > 0, f"no {what} within {WAIT_S} s; last frames: {str(self.frames[-3:])[:1500]}"
                self.cond.wait(left)

    def reply(self, rid: int) -> Any:
        return self.wait(lambda f: isinstance(f, dict) and f.get("id") == rid and "e" not in f, f"the reply {rid}")

    def payloads(self, pred: Callable[[Any], bool], start: int = 0) -> list[Any]:
        with self.cond:
            return [f for f in self.frames[start:] if pred(f)]


def _stop(*clients: SpotWebsocketStreamClient) -> None:
    for c in clients:
        c.stop()  # a close frame, then the reading thread ends on the server's


def limit(spot: Spot, symbol: str, side: str, qty: str, price: str) -> dict[str, Any]:
    return spot.new_order(symbol=symbol, side=side, type="LIMIT", timeInForce="GTC", quantity=qty, price=price)


def test_trade_kline_and_ticker_streams_match_rest(xs: ExchangeServer) -> None:
    symbol = xs.a("BTC") + xs.a("USDT")
    low = symbol.lower()
    maker, taker = _spot(xs, BTC="1"), _spot(xs, USDT="100000")
    inbox = Inbox()
    client = inbox.connect(xs)
    try:
        client.trade(symbol=symbol, id=1)
        client.kline(symbol=symbol, interval="1m", id=2)
        client.ticker(symbol=symbol, id=3)
        for rid in (1, 2, 3):
            assert inbox.reply(rid) == {"result": None, "id": rid}
        client.list_subscribe(id=4)
        assert inbox.reply(4)["result"] == [f"{low}@trade", f"{low}@kline_1m", f"{low}@ticker"]

        limit(maker, symbol, "SELL", "0.00200", "21000.50")
        order = limit(taker, symbol, "BUY", "0.00200", "21000.50")
        assert order["status"] == "FILLED", order
        trade = inbox.wait(lambda f: f.get("e") == "trade", "the trade")
        mine = taker.my_trades(symbol=symbol)[-1]
        assert mine["orderId"] == order["orderId"]
        assert trade["s"] == symbol and trade["t"] == mine["id"] and trade["T"] == mine["time"] and trade["m"] is False
        assert (D(trade["p"]), D(trade["q"])) == (D(mine["price"]), D(mine["qty"])) == (D("21000.5"), D("0.002"))

        kline = inbox.wait(lambda f: f.get("e") == "kline" and f["k"]["L"] == trade["t"], "a kline with the trade")
        k = kline["k"]
        rest = maker.klines(symbol, "1m", startTime=k["t"], limit=1)
        assert k["s"] == symbol and k["i"] == "1m" and rest[0][0] == k["t"] and rest[0][6] == k["T"]
        assert [D(x) for x in rest[0][1:6]] == [D(k[f]) for f in "ohlcv"] and rest[0][8] == k["n"]

        ticker = inbox.wait(lambda f: f.get("e") == "24hrTicker" and f["L"] == trade["t"], "a ticker with the trade")
        rest_ticker = maker.ticker_24hr(symbol=symbol)
        for field, name in (("c", "lastPrice"), ("Q", "lastQty"), ("v", "volume"), ("q", "quoteVolume"),
                            ("h", "highPrice"), ("l", "lowPrice"), ("o", "openPrice")):  # fmt: skip
            assert D(ticker[field]) == D(rest_ticker[name]), (field, ticker, rest_ticker)
        assert ticker["s"] == symbol and ticker["n"] == rest_ticker["count"]
    finally:
        _stop(client)
    check_invariants(xs.services)


def test_depth_streams_on_a_combined_connection_keep_the_rest_book(xs: ExchangeServer) -> None:
    """Diff and partial depth at 100 ms, on ``/stream`` (each payload in its stream's envelope): a
    local book kept as Binance documents it (a REST snapshot, then every update after its
    lastUpdateId) ends as REST shows it, and so does the partial book; then UNSUBSCRIBE."""
    symbol = xs.a("ETH") + xs.a("USDT")
    low = symbol.lower()
    trader = _spot(xs, ETH="10", USDT="100000")
    limit(trader, symbol, "BUY", "0.0100", "1500.00")
    inbox = Inbox()
    client = inbox.connect(xs, combined=True)
    try:
        client.diff_book_depth(symbol=symbol, speed=100, id=1)
        client.partial_book_depth(symbol=symbol, level=10, speed=100, id=2)
        assert [inbox.reply(1)["result"], inbox.reply(2)["result"]] == [None, None]
        diff_name, partial_name = f"{low}@depth@100ms", f"{low}@depth10@100ms"

        snapshot = trader.depth(symbol, limit=1000)
        book = {"bids": dict(levels(snapshot["bids"])), "asks": dict(levels(snapshot["asks"]))}
        placed = [limit(trader, symbol, *o)["orderId"] for o in (("SELL", "0.4000", "2050.00"),
                  ("SELL", "0.1000", "2050.00"), ("BUY", "0.3000", "1999.99"), ("SELL", "2.0000", "2300.00"))]  # fmt: skip
        trader.cancel_order(symbol=symbol, orderId=placed[-1])
        final = trader.depth(symbol, limit=1000)

        def diff(f: Any) -> bool:
            return f.get("stream") == diff_name and f["data"]["u"] >= final["lastUpdateId"]

        inbox.wait(diff, "the diff update with the last change")
        last = snapshot["lastUpdateId"]
        for f in inbox.payloads(lambda f: f.get("stream") == diff_name):
            update = f["data"]
            assert update["e"] == "depthUpdate" and update["s"] == symbol
            last = streams.apply_depth_update(book, last, update)
        assert last == final["lastUpdateId"]
        assert sorted(book["bids"].items(), reverse=True) == levels(final["bids"])
        assert sorted(book["asks"].items()) == levels(final["asks"]) == [(D("2050"), D("0.5"))]

        top = inbox.wait(
            lambda f: f.get("stream") == partial_name and f["data"]["lastUpdateId"] == final["lastUpdateId"],
            "a partial book with the changes",
        )["data"]
        assert levels(top["bids"]) == levels(final["bids"])[:10] == [(D("1999.99"), D("0.3")), (D("1500"), D("0.01"))]
        assert levels(top["asks"]) == levels(final["asks"])[:10]

        client.diff_book_depth(symbol=symbol, speed=100, id=3, action=client.ACTION_UNSUBSCRIBE)
        assert inbox.reply(3) == {"result": None, "id": 3}
        client.list_subscribe(id=4)
        assert inbox.reply(4)["result"] == [partial_name]
    finally:
        _stop(client)


def test_listen_key_subscribed_on_an_open_connection_streams_the_account(xs: ExchangeServer) -> None:
    """``user_data(listen_key)``: the connector SUBSCRIBEs the listenKey from ``new_listen_key()`` on
    its ``/ws`` connection, beside a market stream; the account's executionReport and
    outboundAccountPosition arrive, as REST shows them, until it UNSUBSCRIBEs."""
    symbol = xs.a("BTC") + xs.a("USDT")
    base, quote = xs.a("BTC"), xs.a("USDT")
    maker, taker = _spot(xs, BTC="1"), _spot(xs, USDT="100000")
    token = maker.new_listen_key()["listenKey"]
    inbox = Inbox()
    client = inbox.connect(xs)
    try:
        client.user_data(listen_key=token, id=1)
        client.book_ticker(symbol=symbol, id=2)
        assert [inbox.reply(1), inbox.reply(2)] == [{"result": None, "id": 1}, {"result": None, "id": 2}]
        client.list_subscribe(id=3)
        assert sorted(inbox.reply(3)["result"]) == sorted([f"{symbol.lower()}@bookTicker", token])

        placed = limit(maker, symbol, "SELL", "0.05000", "30000.00")
        new = inbox.wait(lambda f: f.get("e") == "executionReport", "the order's executionReport")
        assert new["i"] == placed["orderId"] and new["c"] == placed["clientOrderId"] and new["s"] == symbol
        assert (new["x"], new["X"], new["S"], D(new["p"]), D(new["q"])) == ("NEW", "NEW", "SELL", D("30000"), D("0.05"))
        position = inbox.wait(lambda f: f.get("e") == "outboundAccountPosition", "the balances")
        assert {b["a"]: (D(b["f"]), D(b["l"])) for b in position["B"]}[base] == (D("0.95"), D("0.05"))

        start = inbox.mark()
        filled = limit(taker, symbol, "BUY", "0.05000", "30000.00")
        fill = inbox.wait(lambda f: f.get("e") == "executionReport", "the fill's executionReport", start)
        trade = maker.my_trades(symbol=symbol)[-1]
        assert fill["i"] == placed["orderId"] and fill["X"] == "FILLED" and fill["t"] == trade["id"]
        assert (D(fill["L"]), D(fill["l"]), fill["m"]) == (D("30000"), D("0.05"), True)
        position = inbox.wait(lambda f: f.get("e") == "outboundAccountPosition", "the new balances", start)
        held = {b["a"]: (D(b["f"]), D(b["l"])) for b in position["B"]}
        account = {b["asset"]: (D(b["free"]), D(b["locked"])) for b in maker.account()["balances"]}
        assert held[base] == account[base] == (D("0.95"), 0) and held[quote] == account[quote]
        # The taker's order is the taker's: never on the maker's listenKey.
        reports = inbox.payloads(lambda f: f.get("e") == "executionReport")
        assert {r["i"] for r in reports} == {placed["orderId"]} != {filled["orderId"]}

        client.user_data(listen_key=token, id=4, action=client.ACTION_UNSUBSCRIBE)
        assert inbox.reply(4) == {"result": None, "id": 4}
        start = inbox.mark()
        resting = limit(maker, symbol, "SELL", "0.01000", "29000.00")
        # The hub sends the account's events before the market's in each round: once the book
        # ticker shows the new order, an executionReport for it would have come.
        inbox.wait(lambda f: f.get("s") == symbol and D(f.get("a", 0)) == D("29000"), "the new best ask", start)
        assert inbox.payloads(lambda f: f.get("e") in ("executionReport", "outboundAccountPosition"), start) == []
        client.list_subscribe(id=5)
        assert inbox.reply(5)["result"] == [f"{symbol.lower()}@bookTicker"]
        maker.cancel_order(symbol=symbol, orderId=resting["orderId"])
    finally:
        _stop(client)
        maker.close_listen_key(token)
    check_invariants(xs.services)
