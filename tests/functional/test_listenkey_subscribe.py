"""A listenKey SUBSCRIBEd on an open market-stream connection (as binance-connector's ``user_data``
does), over a real server and database with a raw ``websockets`` client: it is a bearer token, so
any connection that holds it gets its owner's account stream and only that; one that does not
exist, has expired, was closed or whose key was revoked is refused with Binance's error frame
(code 2) and the connection stays open; ``LIST_SUBSCRIPTIONS`` lists it; ``UNSUBSCRIBE`` drops it.

Each connection sends at most five messages, under the server's limit of five a second, so nothing
here paces or sleeps; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from keyplane.streams.listenkeys import TTL_MS, ListenKeys
from kptest import streams
from kptest.exchange import ExchangeServer, check_invariants, exchange_server, signed_request

D = Decimal
WAIT_S = 5.0
UNKNOWN = "This listenKey does not exist"


@pytest.fixture(scope="module")
def xs(make_settings) -> Iterator[ExchangeServer]:
    with exchange_server(make_settings(), streams.market_suffix("L")) as srv:
        yield srv


class Holder:
    """A funded account, its read + trade HMAC key, and its REST calls."""

    def __init__(self, xs: ExchangeServer, **credit: str) -> None:
        self.xs = xs
        self.user, issued = streams.trading_account(xs.services, **{xs.a(a): n for a, n in credit.items()})
        self.key, self.secret = issued.info.api_key, issued.secret

    def listen_key(self, method: str = "POST", token: str | None = None) -> Any:
        data = None if token is None else {"listenKey": token}
        r = httpx.request(method, self.xs.url + "/api/v3/userDataStream", data=data,
                          headers={"X-MBX-APIKEY": self.key}, timeout=WAIT_S)  # fmt: skip
        assert r.status_code == 200, r.text
        return r.json()["listenKey"] if method == "POST" else r.json()

    async def order(self, side: str, qty: str, price: str) -> dict[str, Any]:
        params = {"symbol": symbol(self.xs), "side": side, "type": "LIMIT", "timeInForce": "GTC", "quantity": qty,
                  "price": price}  # fmt: skip
        r = await asyncio.to_thread(signed_request, "POST", self.xs.url, "/api/v3/order", self.key, self.secret, params)
        assert r.status_code == 200, r.text
        return r.json()

    async def deposit(self, asset: str, amount: str) -> None:
        ex = self.xs.services.exchange
        assert ex is not None
        await asyncio.to_thread(ex.wallet.credit, self.user.id, self.xs.a(asset), amount)


def symbol(xs: ExchangeServer) -> str:
    return xs.a("BTC") + xs.a("USDT")


class Conn:
    """One market-stream connection: every frame in order; at most five messages sent."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[Any] = []
        self.cond = asyncio.Condition()
        self.sent = 0
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                async with self.cond:
                    self.frames.append(json.loads(raw))
                    self.cond.notify_all()
        async with self.cond:
            self.cond.notify_all()

    async def call(self, method: str, params: list[str] | None = None) -> Any:
        self.sent += 1
        assert self.sent <= 5, "a connection here sends at most 5 messages (the server allows 5 a second)"
        rid = self.sent
        await self.ws.send(json.dumps({"method": method, **({} if params is None else {"params": params}), "id": rid}))
        return await self.wait(lambda f: f.get("id") == rid and "e" not in f, f"the reply to {method} {rid}")

    async def wait(self, pred: Callable[[Any], bool], what: str, count: int = 1) -> Any:
        """The ``count``-th frame that satisfies ``pred``."""
        deadline = time.monotonic() + WAIT_S
        async with self.cond:
            while len(found := [f for f in self.frames if pred(f)]) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"no {what} within {WAIT_S} s; last frames: {str(self.frames[-3:])[:1000]}"
                assert not self.reader.done(), f"the connection closed before {what}: {self.ws.close_reason}"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.cond.wait(), left)
            return found[count - 1]

    def events(self, pred: Callable[[Any], bool] = lambda f: True) -> list[Any]:
        return [f for f in self.frames if "id" not in f and pred(f)]

    async def closed(self) -> tuple[int | None, str]:
        await asyncio.wait_for(asyncio.shield(self.reader), WAIT_S)
        return self.ws.close_code, self.ws.close_reason or ""


async def opened(xs: ExchangeServer, path: str) -> Conn:
    return Conn(await connect(streams.ws_url(xs.url) + path, open_timeout=WAIT_S))


def ok(reply: Any) -> bool:
    return set(reply) == {"result", "id"} and reply["result"] is None


def refused(reply: Any, says: str) -> bool:
    error = reply.get("error") or {}
    return set(reply) == {"error", "id"} and error.get("code") == 2 and says in error.get("msg", "")


def under(stream: str, kind: str, status: str | None) -> Callable[[Any], bool]:
    """A combined connection's frame of ``stream``: an event ``kind`` (an order at ``status``)."""

    def pred(f: Any) -> bool:
        data = f.get("data") or {}
        return f.get("stream") == stream and data.get("e") == kind and (status is None or data.get("X") == status)

    return pred


def test_a_listen_key_streams_its_owners_account_and_nothing_else(xs: ExchangeServer) -> None:
    """One combined connection holds a market stream and the listenKeys of two accounts that trade
    with each other: each event is under its owner's listenKey only; a third account's never
    appears; a raw connection with one account's listenKey gets that account's events alone."""
    maker, taker, bystander = Holder(xs, BTC="1"), Holder(xs, USDT="100000"), Holder(xs, USDT="1000")
    maker_key, taker_key = maker.listen_key(), taker.listen_key()
    trade_stream = symbol(xs).lower() + "@trade"

    async def body() -> None:
        both = await opened(xs, "/stream")
        only_taker = await opened(xs, "/ws")
        assert ok(await both.call("SUBSCRIBE", [trade_stream, maker_key, taker_key]))
        assert ok(await only_taker.call("SUBSCRIBE", [taker_key]))
        assert await both.call("LIST_SUBSCRIPTIONS") == {"result": [trade_stream, maker_key, taker_key], "id": 2}

        await bystander.deposit("ETH", "3")
        await bystander.order("BUY", "0.01000", "1000.00")
        await maker.deposit("ETH", "1.25")
        sold = await maker.order("SELL", "0.20000", "25000.00")
        bought = await taker.order("BUY", "0.20000", "25000.00")
        assert bought["status"] == "FILLED"
        await taker.deposit("ETH", "2.5")
        # Every event either account has had, each under its owner's listenKey, then the trade.
        for key, kind, status in ((maker_key, "balanceUpdate", None), (maker_key, "executionReport", "NEW"),
                                  (maker_key, "executionReport", "FILLED"), (taker_key, "executionReport", "FILLED"),
                                  (taker_key, "balanceUpdate", None)):  # fmt: skip
            await both.wait(under(key, kind, status), f"{kind} {status or ''}")
        trade = await both.wait(lambda f: f.get("stream") == trade_stream, "the trade")
        assert trade["data"]["e"] == "trade" and D(trade["data"]["p"]) == D("25000")

        by_stream: dict[str, list[dict[str, Any]]] = {}
        for f in both.events():
            by_stream.setdefault(f["stream"], []).append(f["data"])
        assert set(by_stream) == {trade_stream, maker_key, taker_key}
        assert {e["e"] for e in by_stream[trade_stream]} == {"trade"}
        for key, order, deposit in ((maker_key, sold, "1.25"), (taker_key, bought, "2.5")):
            reports = [e for e in by_stream[key] if e["e"] == "executionReport"]
            assert reports and {e["i"] for e in reports} == {order["orderId"]}, (key == maker_key, reports)
            assert [D(e["d"]) for e in by_stream[key] if e["e"] == "balanceUpdate"] == [D(deposit)]
            assert {e["e"] for e in by_stream[key]} <= {"executionReport", "outboundAccountPosition", "balanceUpdate"}

        await only_taker.wait(lambda f: f.get("X") == "FILLED", "the taker's fill")
        await only_taker.wait(lambda f: f.get("e") == "balanceUpdate", "the taker's deposit")
        events = only_taker.events()
        assert {e["i"] for e in events if e["e"] == "executionReport"} == {bought["orderId"]}
        assert [D(e["d"]) for e in events if e["e"] == "balanceUpdate"] == [D("2.5")]
        assert all("stream" not in e for e in events)  # a raw connection: payloads bare
        for conn in (both, only_taker):
            await conn.ws.close()

    streams.run(body())
    check_invariants(xs.services)


def _expired(xs: ExchangeServer, holder: Holder) -> str:
    """A listenKey of ``holder``'s key, created (and last kept alive) longer than its TTL ago."""
    created_s = time.time() - TTL_MS / 1000 - 1
    return ListenKeys(xs.services.db, clock=lambda: created_s).create(holder.user.id, holder.key)


@pytest.mark.parametrize(
    ("how", "says"),
    [("unknown", UNKNOWN), ("closed", UNKNOWN), ("expired", UNKNOWN), ("revoked", "revoked")],
    ids=["unknown", "closed", "expired", "key-revoked"],
)
def test_a_listen_key_that_cannot_stream_is_refused_and_the_connection_stays(
    xs: ExchangeServer, how: str, says: str
) -> None:
    holder = Holder(xs)
    token = holder.listen_key()
    if how == "unknown":
        token = "Z" * 60
    elif how == "closed":
        assert holder.listen_key("DELETE", token) == {}
    elif how == "expired":
        token = _expired(xs, holder)
    else:
        xs.services.keys.revoke(holder.key)
    market = symbol(xs).lower() + "@bookTicker"

    async def body() -> None:
        c = await opened(xs, "/ws")
        reply = await c.call("SUBSCRIBE", [token])
        assert refused(reply, says) and reply["id"] == 1, reply
        assert token not in json.dumps(reply)  # the answer does not repeat the token
        # A request subscribes all its streams or none.
        assert refused(await c.call("SUBSCRIBE", [market, token]), says)
        assert await c.call("LIST_SUBSCRIPTIONS") == {"result": [], "id": 3}
        assert ok(await c.call("SUBSCRIBE", [market]))
        assert await c.call("LIST_SUBSCRIPTIONS") == {"result": [market], "id": 5}
        await c.ws.close()

    streams.run(body())


def test_list_and_unsubscribe_and_a_listen_key_closed_while_subscribed(xs: ExchangeServer) -> None:
    """LIST_SUBSCRIPTIONS lists a listenKey once however often it is subscribed, in the URL as in
    SUBSCRIBE; UNSUBSCRIBE drops it (and ignores one not subscribed); a listenKey closed while
    subscribed ends the connections that hold it with listenKeyExpired, not those that dropped it."""
    holder = Holder(xs, USDT="100")
    token, other = holder.listen_key(), holder.listen_key()

    async def body() -> None:
        in_url = await opened(xs, f"/ws/{token}")
        kept = await opened(xs, "/ws")
        dropped = await opened(xs, "/stream")
        assert await in_url.call("LIST_SUBSCRIPTIONS") == {"result": [token], "id": 1}
        assert ok(await kept.call("SUBSCRIBE", [token]))
        assert ok(await kept.call("SUBSCRIBE", [token, other]))
        assert await kept.call("LIST_SUBSCRIPTIONS") == {"result": [token, other], "id": 3}
        assert ok(await dropped.call("SUBSCRIBE", [token]))
        await holder.deposit("ETH", "0.5")
        for conn, times in ((in_url, 1), (kept, 2), (dropped, 1)):  # once per listenKey held
            await conn.wait(lambda f: f.get("data", f).get("e") == "balanceUpdate", "a deposit", times)
        assert len(kept.events(lambda f: f["e"] == "balanceUpdate")) == 2
        wrapped = dropped.events()[0]
        assert wrapped["stream"] == token and wrapped["data"]["e"] == "balanceUpdate"

        assert ok(await dropped.call("UNSUBSCRIBE", [token, "Q" * 60]))
        assert await dropped.call("LIST_SUBSCRIPTIONS") == {"result": [], "id": 3}
        assert ok(await kept.call("UNSUBSCRIBE", [other]))
        assert await kept.call("LIST_SUBSCRIPTIONS") == {"result": [token], "id": 5}

        # Closing the listenKey ends the connections that hold it, saying so.
        assert holder.listen_key("DELETE", token) == {}
        for conn in (in_url, kept):
            code, reason = await conn.closed()
            assert code == 1008 and "listenKey" in reason, (code, reason)
            end = conn.events()[-1]
            assert end["e"] == "listenKeyExpired" and end["listenKey"] == token
        # The connection that had dropped it is open, and has had nothing since.
        before = len(dropped.frames)
        assert await dropped.call("LIST_SUBSCRIPTIONS") == {"result": [], "id": 4}
        assert dropped.frames[before:] == [{"result": [], "id": 4}]
        assert dropped.events(lambda f: f.get("data", {}).get("e") == "listenKeyExpired") == []
        await dropped.ws.close()

    streams.run(body())
