"""The WebSocket API (``/ws-api/v3``) and the user-data stream on it, over a real server and database
with a raw ``websockets`` client: requests answered as REST answers them, signed requests through the
one verification pipeline (bad, replayed and re-encoded signatures, scopes), the account's events
(executionReport, outboundAccountPosition, balanceUpdate) to its own streams only, and a stream that
ends, saying why, within a second of its key being revoked, disabled or narrowed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Coroutine, Iterator
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from keyplane.accounts.stepup import StepUp
from kptest.clients import ed25519_keypair, now_ms
from kptest.exchange import ExchangeServer, check_invariants, exchange_server, signed_request

WAIT_S = 5.0
D = Decimal


@pytest.fixture(scope="module")
def xs(make_settings) -> Iterator[ExchangeServer]:
    suffix = "U" + "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(2))
    with exchange_server(make_settings(), suffix) as srv:
        yield srv


def run(coro: Coroutine[Any, Any, Any], timeout: float = 40.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Account:
    """A funded user and one key (HMAC, or Ed25519 with ``ed25519=True``)."""

    def __init__(self, xs: ExchangeServer, *, scopes: tuple[str, ...] = ("read", "trade"), ed25519: bool = False,
                 ips: tuple[str, ...] = (), **credit: str) -> None:  # fmt: skip
        svc = xs.services
        assert svc.exchange is not None
        self.xs = xs
        self.user = svc.accounts.create_user(f"u{secrets.token_hex(6)}@example.com", "correct horse battery staple")
        for asset, amount in credit.items():
            svc.exchange.wallet.credit(self.user.id, xs.a(asset), amount)
        private, public = ed25519_keypair() if ed25519 else (None, None)
        issued = svc.keys.create(
            self.user.id, scopes=scopes, restrictions=svc.keys.build_restrictions(ips=list(ips)),
            key_type="ed25519" if ed25519 else "hmac", public_key=public, step_up=StepUp.operator(),
        )  # fmt: skip
        self.key = issued.info.api_key
        self.secret = issued.secret
        self.private = private

    def sign(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with apiKey, timestamp and signature, signed as Binance's WebSocket API signs."""
        full = {**params, "apiKey": self.key, "timestamp": now_ms()}
        payload = "&".join(f"{k}={_text(v)}" for k, v in sorted(full.items()))
        if self.private is None:
            signature = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        else:
            key = serialization.load_pem_private_key(self.private.encode(), None)
            assert isinstance(key, Ed25519PrivateKey)
            signature = base64.b64encode(key.sign(payload.encode())).decode()
        return {**full, "signature": signature}

    def rest(self, method: str, path: str, **params: Any) -> Any:
        r = signed_request(method, self.xs.url, path, self.key, self.secret, params)
        assert r.status_code == 200, r.text
        return r.json()


def _text(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


class Api:
    """One /ws-api/v3 connection: requests by id, and every event frame in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.replies: dict[Any, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.cond = asyncio.Condition()
        self.ids = 0
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                doc = json.loads(raw)
                async with self.cond:
                    if "subscriptionId" in doc and "event" in doc:
                        self.events.append(doc)
                    else:
                        self.replies[doc.get("id")] = doc
                    self.cond.notify_all()
        except ConnectionClosed:
            pass
        async with self.cond:
            self.cond.notify_all()

    async def call(self, method: str, params: dict[str, Any] | None = None, *, raw: str | None = None) -> dict:
        self.ids += 1
        ident = f"r{self.ids}"
        await self.ws.send(
            raw if raw is not None else json.dumps({"id": ident, "method": method, "params": params or {}})
        )
        if raw is not None:
            ident = json.loads(raw).get("id") if raw.startswith("{") and "id" in raw else None
        return await self._wait(lambda: self.replies.get(ident))

    async def event(self, pred: Any) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((e["event"] for e in self.events if pred(e["event"])), None)

        return await self._wait(find)

    async def _wait(self, find: Any) -> Any:
        deadline = time.monotonic() + WAIT_S
        async with self.cond:
            while (found := find()) is None:
                left = deadline - time.monotonic()
                assert left > 0 and not self.reader.done(), "no such frame in time"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.cond.wait(), left)
            return found

    async def closed(self, within_s: float = WAIT_S) -> tuple[int | None, str]:
        await asyncio.wait_for(asyncio.shield(self.reader), within_s)
        return self.ws.close_code, self.ws.close_reason or ""


async def api(xs: ExchangeServer) -> Api:
    return Api(await connect("ws" + xs.url[len("http") :] + "/ws-api/v3", open_timeout=WAIT_S))


def sym(xs: ExchangeServer) -> str:
    return xs.a("BTC") + xs.a("USDT")


# -- requests ---------------------------------------------------------------------------------------


def test_public_methods_answer_as_rest_does(xs: ExchangeServer) -> None:
    async def body() -> None:
        c = await api(xs)
        pong = await c.call("ping")
        assert pong["status"] == 200 and pong["result"] == {}, pong
        t = await c.call("time")
        assert abs(t["result"]["serverTime"] - now_ms()) < 5000
        depth = await c.call("depth", {"symbol": sym(xs), "limit": 5})
        assert set(depth["result"]) == {"lastUpdateId", "bids", "asks"}
        bad = await c.call("depth", {"symbol": "NOPE"})
        assert bad["status"] == 400 and bad["error"]["code"] == -1121, bad
        await c.ws.close()

    run(body())


def test_malformed_requests_get_binance_errors_and_the_connection_stays(xs: ExchangeServer) -> None:
    async def body() -> None:
        c = await api(xs)
        await c.ws.send("not json")
        await c._wait(lambda: c.replies.get(None))
        assert c.replies[None]["error"]["code"] == -1100
        unknown = await c.call("order.explode")
        assert unknown["status"] == 400 and "Unknown method" in unknown["error"]["msg"]
        listy = await c.call("depth", {"symbol": ["a"]})  # type: ignore[dict-item]
        assert listy["error"]["code"] == -1100
        missing = await c.call("order.place", {"symbol": sym(xs)})
        assert missing["status"] in (400, 401) and missing["error"]["code"] in (-2014, -2015, -1102), missing
        assert (await c.call("ping"))["status"] == 200  # still serving
        await c.ws.close()

    run(body())


def test_order_place_status_cancel_through_the_pipeline(xs: ExchangeServer) -> None:
    acct = Account(xs, USDT="10000")

    async def body() -> None:
        c = await api(xs)
        params = {"symbol": sym(xs), "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
                  "price": "20000"}  # fmt: skip
        signed = acct.sign(params)
        placed = await c.call("order.place", signed)
        assert placed["status"] == 200, placed
        order = placed["result"]
        assert order["status"] == "NEW" and order["symbol"] == sym(xs) and order["origQty"] == "0.01000000"
        assert placed["rateLimits"][0]["rateLimitType"] == "REQUEST_WEIGHT"
        # The same signed request again is a replay, whatever the connection.
        again = await c.call("order.place", signed)
        assert again["status"] == 401 or again["error"]["code"] == -1022 or "replay" in again["error"]["msg"].lower(), (
            again
        )
        # Re-encoded: the same signature in upper-case hex is the same request.
        respelled = {**signed, "signature": signed["signature"].upper()}
        assert (await c.call("order.place", respelled))["status"] != 200
        # A bad signature.
        forged = {**acct.sign(params), "signature": "0" * 64}
        bad = await c.call("order.place", forged)
        assert bad["error"]["code"] == -1022, bad
        assert "sorted by name" in bad["error"]["msg"], bad  # the WebSocket API's signing rule, not REST's
        status = await c.call("order.status", acct.sign({"symbol": sym(xs), "orderId": order["orderId"]}))
        assert status["result"]["orderId"] == order["orderId"] and status["result"]["status"] == "NEW"
        rest = acct.rest("GET", "/api/v3/order", symbol=sym(xs), orderId=order["orderId"])
        assert status["result"] == rest
        opened = await c.call("openOrders.status", acct.sign({"symbol": sym(xs)}))
        assert [o["orderId"] for o in opened["result"]] == [order["orderId"]]
        cancelled = await c.call("order.cancel", acct.sign({"symbol": sym(xs), "orderId": order["orderId"]}))
        assert cancelled["result"]["status"] == "CANCELED"
        account = await c.call("account.status", acct.sign({}))
        usdt = next(b for b in account["result"]["balances"] if b["asset"] == xs.a("USDT"))
        assert D(usdt["free"]) == 10000 and D(usdt["locked"]) == 0
        await c.ws.close()

    run(body())
    check_invariants(xs.services)


def test_scopes_and_keys_are_the_pipelines(xs: ExchangeServer) -> None:
    reader = Account(xs, scopes=("read",), USDT="100")
    stranger = Account(xs, USDT="100")  # enough for 0.01 at 1000

    async def body() -> None:
        c = await api(xs)
        params = {"symbol": sym(xs), "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
                  "price": "1000"}  # fmt: skip
        refused = await c.call("order.place", reader.sign(params))
        assert refused["status"] == 401 and "no operation privilege" in refused["error"]["msg"], refused
        # Another account's order is not found by id.
        mine = await c.call("order.place", stranger.sign(params))
        assert mine["status"] == 200, mine
        theirs = await c.call("order.status", reader.sign({"symbol": sym(xs), "orderId": mine["result"]["orderId"]}))
        assert theirs["status"] == 400 and theirs["error"]["code"] == -2013, theirs
        unknown = {**reader.sign({}), "apiKey": "kp_live_" + "A" * 28}
        assert (await c.call("account.status", unknown))["status"] == 401
        await c.call("order.cancel", stranger.sign({"symbol": sym(xs), "orderId": mine["result"]["orderId"]}))
        await c.ws.close()

    run(body())


def test_ed25519_key_signs_the_websocket_api(xs: ExchangeServer) -> None:
    acct = Account(xs, ed25519=True, USDT="100")

    async def body() -> None:
        c = await api(xs)
        answer = await c.call("account.status", acct.sign({}))
        assert answer["status"] == 200, answer
        assert any(b["asset"] == xs.a("USDT") and D(b["free"]) == 100 for b in answer["result"]["balances"])
        await c.ws.close()

    run(body())


# -- the user-data stream ---------------------------------------------------------------------------


def test_fills_reach_both_accounts_streams_and_no_one_elses(xs: ExchangeServer) -> None:
    maker = Account(xs, BTC="1")
    taker = Account(xs, USDT="100000")
    bystander = Account(xs, USDT="10")

    async def body() -> None:
        m, t, b = await api(xs), await api(xs), await api(xs)
        for conn, acct in ((m, maker), (t, taker), (b, bystander)):
            sub = await conn.call("userDataStream.subscribe.signature", acct.sign({}))
            assert sub["status"] == 200 and sub["result"] == {"subscriptionId": 0}, sub
        resting = maker.rest("POST", "/api/v3/order", symbol=sym(xs), side="SELL", type="LIMIT", timeInForce="GTC",
                             quantity="0.5", price="30000")  # fmt: skip
        new = await m.event(lambda e: e["e"] == "executionReport" and e["x"] == "NEW")
        assert new["i"] == resting["orderId"] and new["X"] == "NEW" and new["S"] == "SELL" and new["q"] == "0.50000000"
        crossing = taker.rest("POST", "/api/v3/order", symbol=sym(xs), side="BUY", type="LIMIT", timeInForce="IOC",
                              quantity="0.8", price="30000")  # fmt: skip
        fill = resting_fill = await m.event(lambda e: e["e"] == "executionReport" and e["x"] == "TRADE")
        assert fill["X"] == "FILLED" and fill["l"] == "0.50000000" and fill["z"] == "0.50000000" and fill["m"] is True
        assert fill["L"] == "30000.00000000" and fill["Z"] == "15000.00000000" and fill["N"] == xs.a("USDT")
        trade = crossing["fills"][0]
        assert resting_fill["t"] == trade["tradeId"]
        t_new = await t.event(lambda e: e["e"] == "executionReport" and e["x"] == "NEW")
        t_fill = await t.event(lambda e: e["e"] == "executionReport" and e["x"] == "TRADE")
        t_end = await t.event(lambda e: e["e"] == "executionReport" and e["x"] == "EXPIRED")
        assert t_new["i"] == t_fill["i"] == t_end["i"] == crossing["orderId"]
        assert t_fill["X"] == "PARTIALLY_FILLED" and t_fill["m"] is False and t_end["X"] == "EXPIRED"
        assert t_end["z"] == "0.50000000"
        position = await t.event(lambda e: e["e"] == "outboundAccountPosition")
        balances = {x["a"]: x for x in position["B"]}
        rest_account = taker.rest("GET", "/api/v3/account")
        for entry in rest_account["balances"]:
            if entry["asset"] in balances:
                assert balances[entry["asset"]]["f"] == entry["free"], (balances, entry)
        # Order of the taker's events: NEW, then TRADE, then EXPIRED.
        kinds = [e["event"]["x"] for e in t.events if e["event"]["e"] == "executionReport"]
        assert kinds == ["NEW", "TRADE", "EXPIRED"], kinds
        # A deposit is a balanceUpdate.
        svc = xs.services.exchange
        assert svc is not None
        await asyncio.to_thread(svc.wallet.credit, taker.user.id, xs.a("ETH"), "2.5")
        update = await t.event(lambda e: e["e"] == "balanceUpdate")
        assert update["a"] == xs.a("ETH") and D(update["d"]) == D("2.5")
        await asyncio.sleep(0)  # nothing for the bystander, who traded nothing
        assert b.events == []
        for conn in (m, t, b):
            await conn.ws.close()

    run(body())
    check_invariants(xs.services)


def _revoked(xs: ExchangeServer, acct: Account) -> None:
    xs.services.keys.revoke(acct.key)


def _disabled(xs: ExchangeServer, acct: Account) -> None:
    xs.services.keys.disable(acct.key)


def _narrowed(xs: ExchangeServer, acct: Account) -> None:
    xs.services.keys.update(acct.key, ips=["203.0.113.7"], step_up=StepUp.operator())


def _no_read(xs: ExchangeServer, acct: Account) -> None:
    xs.services.keys.update(acct.key, scopes=["withdraw"], ips=["127.0.0.1", "::1"], step_up=StepUp.operator())


@pytest.mark.parametrize(
    ("change", "says"),
    [(_revoked, "revoked"), (_disabled, "disabled"), (_narrowed, "does not accept requests from"),
     (_no_read, "user data streams")],
    ids=["revoked", "disabled", "ip-narrowed", "scope-narrowed"],
)  # fmt: skip
def test_a_stream_ends_within_a_second_when_its_key_may_no_longer_read(
    xs: ExchangeServer, change: Any, says: str
) -> None:
    acct = Account(xs, USDT="10")
    other = Account(xs, USDT="10")

    async def body() -> None:
        c, o = await api(xs), await api(xs)
        assert (await c.call("userDataStream.subscribe.signature", acct.sign({})))["status"] == 200
        assert (await o.call("userDataStream.subscribe.signature", other.sign({})))["status"] == 200
        started = time.monotonic()
        await asyncio.to_thread(change, xs, acct)
        code, reason = await c.closed(within_s=2.0)
        took = time.monotonic() - started
        assert code == 1008 and says in reason, (code, reason)
        assert took < 1.0, f"the stream ended {took:.2f} s after the change"
        assert c.events and c.events[-1]["event"]["e"] == "eventStreamTerminated"
        # The other key's stream is untouched.
        assert (await o.call("ping"))["status"] == 200
        await o.ws.close()

    run(body())


def test_a_key_that_cannot_stream_cannot_subscribe(xs: ExchangeServer) -> None:
    withdraw_only = Account(xs, scopes=("withdraw",), ips=("127.0.0.1", "::1"))
    acct = Account(xs)

    async def body() -> None:
        c = await api(xs)
        refused = await c.call("userDataStream.subscribe.signature", withdraw_only.sign({}))
        assert refused["status"] == 401 and "user data streams" in refused["error"]["msg"], refused
        first = await c.call("userDataStream.subscribe.signature", acct.sign({}))
        assert first["status"] == 200
        twice = await c.call("userDataStream.subscribe.signature", acct.sign({}))
        assert twice["status"] == 400
        gone = await c.call("userDataStream.unsubscribe", {"subscriptionId": first["result"]["subscriptionId"]})
        assert gone["status"] == 200
        await c.ws.close()

    run(body())


# -- REST listenKeys and /ws/<listenKey> -------------------------------------------------------------


def _listen(xs: ExchangeServer, acct: Account, method: str, token: str | None = None) -> Any:
    import httpx

    headers = {"X-MBX-APIKEY": acct.key}
    data = None if token is None else {"listenKey": token}
    return httpx.request(method, xs.url + "/api/v3/userDataStream", data=data, headers=headers, timeout=10)


def test_listen_key_lifecycle_over_rest(xs: ExchangeServer) -> None:
    acct, other = Account(xs), Account(xs)
    created = _listen(xs, acct, "POST")
    assert created.status_code == 200, created.text
    token = created.json()["listenKey"]
    assert len(token) == 60 and token.isalnum()
    assert _listen(xs, acct, "PUT", token).json() == {}
    # Another key cannot keep it alive or close it.
    refused = _listen(xs, other, "PUT", token)
    assert refused.status_code == 400 and refused.json()["code"] == -1125, refused.text
    assert _listen(xs, other, "DELETE", token).json()["code"] == -1125
    missing = _listen(xs, acct, "PUT")
    assert missing.status_code == 400 and "listenKey" in missing.json()["msg"]
    assert _listen(xs, acct, "DELETE", token).json() == {}
    assert _listen(xs, acct, "PUT", token).json()["code"] == -1125  # closed
    import httpx

    no_key = httpx.post(xs.url + "/api/v3/userDataStream", timeout=10)
    assert no_key.status_code in (400, 401) and "API key" in no_key.json()["msg"], no_key.text
    bad_key = httpx.post(xs.url + "/api/v3/userDataStream", headers={"X-MBX-APIKEY": "kp_live_" + "A" * 28})
    assert bad_key.status_code == 401
    # The listenKey is never stored as itself.
    with xs.services.db.read() as s:
        from sqlalchemy import text

        stored = [r[0] for r in s.connection().execute(text("SELECT digest FROM ex_listen_keys")).all()]
    assert token not in stored


def test_listen_key_stream_gets_the_accounts_events_and_ends_with_its_key(xs: ExchangeServer) -> None:
    acct = Account(xs, USDT="1000")
    token = _listen(xs, acct, "POST").json()["listenKey"]
    base = "ws" + xs.url[len("http") :]

    async def body() -> None:
        bare = await connect(f"{base}/ws/{token}", open_timeout=WAIT_S)
        combined = await connect(f"{base}/stream?streams={token}", open_timeout=WAIT_S)
        svc = xs.services.exchange
        assert svc is not None
        await asyncio.to_thread(svc.wallet.credit, acct.user.id, xs.a("ETH"), "1.25")
        first = json.loads(await asyncio.wait_for(bare.recv(), WAIT_S))
        assert first["e"] == "balanceUpdate" and D(first["d"]) == D("1.25")
        wrapped = json.loads(await asyncio.wait_for(combined.recv(), WAIT_S))
        assert wrapped["stream"] == token and wrapped["data"]["e"] == "balanceUpdate"
        position = json.loads(await asyncio.wait_for(bare.recv(), WAIT_S))
        assert position["e"] == "outboundAccountPosition"
        # Closing the listenKey ends its streams with listenKeyExpired.
        assert _listen(xs, acct, "DELETE", token).json() == {}
        frames = [json.loads(f) async for f in _until_closed(bare)]
        assert frames and frames[-1]["e"] == "listenKeyExpired" and frames[-1]["listenKey"] == token
        assert bare.close_code == 1008 and "listenKey" in (bare.close_reason or "")
        await combined.close()

    run(body())


def test_an_unknown_or_foreign_listen_key_opens_nothing(xs: ExchangeServer) -> None:
    acct = Account(xs)
    token = _listen(xs, acct, "POST").json()["listenKey"]
    xs.services.keys.revoke(acct.key)
    base = "ws" + xs.url[len("http") :]

    async def body() -> None:
        for path in (f"/ws/{'Z' * 60}", f"/ws/{token}"):
            ws = await connect(base + path, open_timeout=WAIT_S)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), WAIT_S)
            assert ws.close_code == 1008, path
        assert "revoked" in (ws.close_reason or "")

    run(body())


async def _until_closed(ws: ClientConnection) -> Any:
    try:
        while True:
            yield await asyncio.wait_for(ws.recv(), WAIT_S)
    except ConnectionClosed:
        return


# -- fuzzing with valid signatures -----------------------------------------------------------------

_NASTY = ["", "0", "-1", "1e309", "NaN", "9" * 40, "0.000000001", "BTC", "\u00e9\u00e9", "a" * 300, "true",
          "LIMIT", "MARKET", "GTC", "IOC", "BUY", "SELL", " 1", "1 ", "%00", "null", "[]", "{}"]  # fmt: skip
_FIELDS = ["symbol", "side", "type", "timeInForce", "quantity", "price", "quoteOrderQty", "orderId",
           "origClientOrderId", "newClientOrderId", "limit", "startTime", "endTime", "fromId", "recvWindow",
           "newOrderRespType", "selfTradePreventionMode", "interval", "symbols", "cancelReplaceMode",
           "cancelOrderId", "subscriptionId"]  # fmt: skip


def test_signed_fuzz_reaches_every_method_and_never_breaks_the_connection(xs: ExchangeServer) -> None:
    """Valid signatures over random parameters, so every request passes verification and reaches
    the method itself: each answer is a 200 or a Binance error with a code, never a 500, and the
    connection keeps serving."""
    import random

    acct = Account(xs, USDT="1000", BTC="1")
    rnd = random.Random(20261204)
    methods = ["order.place", "order.test", "order.status", "order.cancel", "order.cancelReplace",
               "openOrders.status", "openOrders.cancelAll", "allOrders", "myTrades", "account.status",
               "account.commission", "depth", "klines", "trades.aggregate", "ticker.24hr", "avgPrice",
               "userDataStream.subscribe.signature", "userDataStream.unsubscribe"]  # fmt: skip

    async def body() -> None:
        c = await api(xs)
        codes: dict[int, int] = {}
        for i in range(300):
            method = rnd.choice(methods)
            params = {f: rnd.choice([*_NASTY, sym(xs)]) for f in rnd.sample(_FIELDS, rnd.randint(0, 6))}
            params.pop("recvWindow", None) if rnd.random() < 0.5 else None
            signed = (
                acct.sign(params) if not method.startswith(("depth", "klines", "trades", "ticker", "avg")) else params
            )
            try:
                answer = await c.call(method, signed)
            except AssertionError:
                raise AssertionError(f"{method} {params}: closed {c.ws.close_code} {c.ws.close_reason}") from None
            assert answer["status"] != 500 and answer["status"] in (200, 400, 401, 403, 404, 409, 429), (
                method,
                params,
                answer,
            )
            if answer["status"] != 200:
                assert isinstance(answer["error"]["code"], int) and answer["error"]["msg"], answer
            codes[answer["status"]] = codes.get(answer["status"], 0) + 1
            if i % 50 == 0:
                assert (await c.call("ping"))["status"] == 200
        assert codes.get(200, 0) > 0 and codes.get(400, 0) > 0, codes
        await c.ws.close()

    run(body(), timeout=120)
    check_invariants(xs.services)


# -- session.logon ----------------------------------------------------------------------------------


def test_session_logon_then_unsigned_requests_and_revocation_ends_the_session(xs: ExchangeServer) -> None:
    acct = Account(xs, ed25519=True, USDT="1000")
    hmac_acct = Account(xs, USDT="10")

    async def body() -> None:
        c = await api(xs)
        before = await c.call("account.status", {"timestamp": now_ms()})
        assert before["status"] in (400, 401), before  # no session yet, no signature
        refused = await c.call("session.logon", hmac_acct.sign({}))
        assert refused["status"] == 400 and "Ed25519" in refused["error"]["msg"], refused
        logon = await c.call("session.logon", acct.sign({}))
        assert logon["status"] == 200 and logon["result"]["apiKey"] == acct.key, logon
        # Unsigned requests now run as the session's key, with every other check.
        account = await c.call("account.status", {"timestamp": now_ms()})
        assert account["status"] == 200 and any(D(b["free"]) == 1000 for b in account["result"]["balances"])
        placed = await c.call(
            "order.place",
            {"symbol": sym(xs), "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
             "price": "1000", "timestamp": now_ms()},
        )  # fmt: skip
        assert placed["status"] == 200, placed
        sub = await c.call("userDataStream.subscribe", {})
        assert sub["status"] == 200 and "subscriptionId" in sub["result"], sub
        status = await c.call("session.status", {})
        assert status["result"]["userDataStream"] is True
        await asyncio.to_thread(xs.services.keys.revoke, acct.key)
        code, reason = await c.closed(within_s=2.0)
        assert code == 1008 and "revoked" in reason, (code, reason)

    run(body())


def test_session_logout_returns_to_signed_requests(xs: ExchangeServer) -> None:
    acct = Account(xs, ed25519=True)

    async def body() -> None:
        c = await api(xs)
        assert (await c.call("session.logon", acct.sign({})))["status"] == 200
        out = await c.call("session.logout", {})
        assert out["status"] == 200 and out["result"]["apiKey"] is None
        after = await c.call("account.status", {"timestamp": now_ms()})
        assert after["status"] in (400, 401), after
        assert (await c.call("userDataStream.subscribe", {}))["status"] == 400
        await c.ws.close()

    run(body())


def test_conditional_orders_and_order_lists_stream_their_lifecycle(xs: ExchangeServer) -> None:
    """A stop is NEW and not working while armed, NEW again and working once a trade fires it, then
    trades; an OCO streams a listStatus when it starts and when it is all done, and its legs'
    executionReports name the list. All placed through the WebSocket API."""
    owner = Account(xs, BTC="1")
    market, other = Account(xs, BTC="1", USDT="100000"), Account(xs, BTC="1", USDT="100000")
    s = sym(xs)

    async def body() -> None:
        conn = await api(xs)
        assert (await conn.call("userDataStream.subscribe.signature", owner.sign({})))["status"] == 200
        market.rest("POST", "/api/v3/order", symbol=s, side="SELL", type="LIMIT", timeInForce="GTC",
                    quantity="0.01", price="30000")  # fmt: skip
        other.rest("POST", "/api/v3/order", symbol=s, side="BUY", type="MARKET", quantity="0.01")  # last: 30000
        placed = await conn.call("order.place", owner.sign(
            {"symbol": s, "side": "SELL", "type": "STOP_LOSS_LIMIT", "timeInForce": "GTC", "quantity": "0.1",
             "price": "28900", "stopPrice": "29000"}))  # fmt: skip
        assert placed["status"] == 200, placed
        stop_id = placed["result"]["orderId"]
        armed = await conn.event(lambda e: e["e"] == "executionReport" and e["i"] == stop_id)
        assert (armed["x"], armed["o"], armed["P"], armed["w"]) == ("NEW", "STOP_LOSS_LIMIT", "29000.00000000", False)
        assert "W" not in armed
        market.rest("POST", "/api/v3/order", symbol=s, side="BUY", type="LIMIT", timeInForce="GTC",
                    quantity="0.11", price="29000")  # fmt: skip
        other.rest("POST", "/api/v3/order", symbol=s, side="SELL", type="MARKET", quantity="0.01")  # trades at 29000
        fill = await conn.event(lambda e: e["e"] == "executionReport" and e["i"] == stop_id and e["x"] == "TRADE")
        assert fill["X"] == "FILLED" and fill["L"] == "29000.00000000" and fill["m"] is False
        kinds = [(e["event"]["x"], e["event"]["w"]) for e in conn.events
                 if e["event"]["e"] == "executionReport" and e["event"]["i"] == stop_id]  # fmt: skip
        assert kinds == [("NEW", False), ("NEW", True), ("TRADE", False)], kinds

        listed = await conn.call("orderList.place.oco", owner.sign(
            {"symbol": s, "side": "SELL", "quantity": "0.1", "aboveType": "LIMIT_MAKER", "abovePrice": "35000",
             "belowType": "STOP_LOSS", "belowStopPrice": "25000"}))  # fmt: skip
        assert listed["status"] == 200, listed
        list_id = listed["result"]["orderListId"]
        started = await conn.event(lambda e: e["e"] == "listStatus" and e["l"] == "EXEC_STARTED")
        assert started["g"] == list_id and started["L"] == "EXECUTING" and started["c"] == "OCO"
        assert [o["i"] for o in started["O"]] == [o["orderId"] for o in listed["result"]["orders"]]
        status = await conn.call("orderList.status", owner.sign({"orderListId": list_id}))
        assert status["result"]["listStatusType"] == "EXEC_STARTED"
        await conn.call("orderList.cancel", owner.sign({"symbol": s, "orderListId": list_id}))
        done = await conn.event(lambda e: e["e"] == "listStatus" and e["l"] == "ALL_DONE")
        assert done["g"] == list_id and done["L"] == "ALL_DONE"
        legs = [e["event"] for e in conn.events if e["event"]["e"] == "executionReport" and e["event"]["g"] == list_id]
        assert sorted(e["x"] for e in legs) == ["CANCELED", "CANCELED", "NEW", "NEW"]
        await conn.ws.close()

    run(body())
    check_invariants(xs.services)
