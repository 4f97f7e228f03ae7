"""Binance-compatible WebSocket market streams, driven with a raw ``websockets`` client: the URL forms,
the SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS protocol and every one of its errors, the limits
(1024 streams, 5 messages a second, text frames only), each stream's payload checked field by field
against the REST endpoint that shows the same data, and a client that never reads stalling no one.

The server has markets of its own (the defaults, renamed with a suffix, and filler markets ``Fnn``),
and every test that trades takes a filler market nobody else has touched: its tickers, klines and
book start empty. Every wait has a deadline; the only sleeps are the pacing that keeps a connection
under Binance's 5 incoming messages a second.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from keyplane.exchange.markets import DEFAULT_CONFIG
from kptest.clients import hmac_sign, now_ms
from kptest.exchange import ExchangeServer, exchange_server, unique_markets_file
from kptest.streams import market_suffix, run, trading_account, ws_url

D = Decimal
WAIT_S = 5.0  # the deadline of every wait for a frame
FILLERS = 48  # filler markets: 51 markets x 25 kinds is more than the 1024 streams one connection may hold
INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
INTERVAL_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000,
               "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000, "12h": 43_200_000,
               "1d": 86_400_000}  # fmt: skip
# Every per-symbol stream kind of the contract.
KINDS = (
    "trade", "aggTrade", *(f"kline_{i}" for i in INTERVALS),
    "depth5", "depth10", "depth20", "depth5@100ms", "depth10@100ms", "depth20@100ms",
    "depth", "depth@100ms", "ticker", "miniTicker", "bookTicker",
)  # fmt: skip
ALL_MARKET = ("!ticker@arr", "!miniTicker@arr")

# Binance's payload fields, exactly.
TRADE_KEYS = {"e", "E", "s", "t", "p", "q", "T", "m", "M"}
AGG_TRADE_KEYS = {"e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"}
KLINE_KEYS = {"e", "E", "s", "k"}
KLINE_K_KEYS = {"t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"}
DEPTH_UPDATE_KEYS = {"e", "E", "s", "U", "u", "b", "a"}
PARTIAL_DEPTH_KEYS = {"lastUpdateId", "bids", "asks"}
TICKER_KEYS = {"e", "E", "s", "p", "P", "w", "x", "c", "Q", "b", "B", "a", "A", "o", "h", "l", "v", "q",
               "O", "C", "F", "L", "n"}  # fmt: skip
MINI_TICKER_KEYS = {"e", "E", "s", "c", "o", "h", "l", "v", "q"}
BOOK_TICKER_KEYS = {"u", "s", "b", "B", "a", "A"}


# -- the server --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mkt:
    symbol: str  # BINANCE form, e.g. F07EXYUSDTEXY
    base: str
    quote: str

    @property
    def s(self) -> str:
        """The lower-case symbol that stream names start with."""
        return self.symbol.lower()

    def stream(self, kind: str) -> str:
        return f"{self.s}@{kind}"


def _markets_file(path: Path, suffix: str) -> tuple[Path, list[Mkt]]:
    """The default markets with every asset renamed ``<asset><suffix>`` (kptest.exchange), and
    FILLERS markets ``F<nn><suffix>/USDT<suffix>`` with BTC/USDT's filters."""
    doc = json.loads(unique_markets_file(path, suffix).read_text())
    assets, markets = doc["assets"], doc["markets"]
    quote = "USDT" + suffix
    template = DEFAULT_CONFIG["markets"]["BTCUSDT"]
    fillers = []
    for i in range(FILLERS):
        base = f"F{i:02d}{suffix}"
        assets[base] = DEFAULT_CONFIG["assets"]["BTC"]
        markets[base + quote] = {**template, "base": base, "quote": quote}
        fillers.append(Mkt(base + quote, base, quote))
    path.write_text(json.dumps({"assets": assets, "markets": markets}))
    return path, fillers


@dataclass
class Streams:
    xs: ExchangeServer
    fillers: list[Mkt]
    free: Iterator[Mkt]
    all_markets: list[str]  # every market's BINANCE symbol

    @property
    def ws(self) -> str:
        return ws_url(self.xs.url)

    def market(self) -> Mkt:
        """A filler market no other test has traded on."""
        return next(self.free)


@pytest.fixture(scope="module")
def st(make_settings, tmp_path_factory) -> Iterator[Streams]:
    suffix = market_suffix("S")
    path, fillers = _markets_file(tmp_path_factory.mktemp("streams") / "markets.json", suffix)
    with exchange_server(make_settings(markets_file=path)) as srv:
        srv.suffix = suffix
        ex = srv.services.exchange
        assert ex is not None
        yield Streams(srv, fillers, iter(fillers), sorted(ex.markets))


# -- trading over REST -------------------------------------------------------------------------------


class Trader:
    """A funded user with an HMAC trade key, placing orders through the Binance REST surface."""

    def __init__(self, st: Streams, http: httpx.AsyncClient, **credit: str) -> None:
        _, issued = trading_account(st.xs.services, **credit)
        self.key, self.secret, self.http = issued.info.api_key, issued.secret, http

    def _signed(self, params: dict[str, Any]) -> str:
        payload = urlencode({**params, "timestamp": now_ms()})
        return f"{payload}&signature={hmac_sign(self.secret, payload)}"

    async def order(self, m: Mkt, side: str, qty: str, price: str | None = None) -> dict[str, Any]:
        """A LIMIT GTC order at ``price``, or a MARKET order without one; the FULL response."""
        params: dict[str, Any] = {"symbol": m.symbol, "side": side, "quantity": qty}
        params.update({"type": "LIMIT", "timeInForce": "GTC", "price": price} if price else {"type": "MARKET"})
        r = await self.http.post(
            "/api/v3/order",
            content=self._signed(params),
            headers={"X-MBX-APIKEY": self.key, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 200, f"{side} {qty} @ {price}: {r.status_code} {r.text}"
        return r.json()

    async def cancel(self, m: Mkt, order_id: int) -> dict[str, Any]:
        q = self._signed({"symbol": m.symbol, "orderId": order_id})
        r = await self.http.delete(f"/api/v3/order?{q}", headers={"X-MBX-APIKEY": self.key})
        assert r.status_code == 200, r.text
        return r.json()


def funded(st: Streams, http: httpx.AsyncClient, m: Mkt) -> tuple[Trader, Trader]:
    """A maker and a taker, each with plenty of both of ``m``'s assets."""
    return (
        Trader(st, http, **{m.base: "50", m.quote: "2000000"}),
        Trader(st, http, **{m.base: "50", m.quote: "2000000"}),
    )


async def rest(http: httpx.AsyncClient, path: str, **params: Any) -> Any:
    r = await http.get(path, params=params)
    assert r.status_code == 200, f"GET {path} {params}: {r.status_code} {r.text}"
    return r.json()


@asynccontextmanager
async def rest_client(st: Streams) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=st.xs.url, timeout=10) as http:
        yield http


# -- a raw WebSocket client ----------------------------------------------------------------------------


def is_reply(f: Any) -> bool:
    return isinstance(f, dict) and "id" in f and ("result" in f or "error" in f) and "e" not in f


class Conn:
    """One WebSocket connection: every frame the server sends, in arrival order (with its arrival
    time), and sends paced at 4 a rolling second (the server closes a connection that sends more
    than 5), unless a test sends unpaced on purpose."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[Any] = []
        self.arrived: list[float] = []
        self.cond = asyncio.Condition()
        self.sent: deque[float] = deque(maxlen=8)
        self.ids = 0
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    frame = {"<not JSON>": raw}
                async with self.cond:
                    self.frames.append(frame)
                    self.arrived.append(time.monotonic())
                    self.cond.notify_all()
        except ConnectionClosed:
            pass
        finally:
            async with self.cond:
                self.cond.notify_all()

    @property
    def close_info(self) -> tuple[int | None, str | None]:
        return self.ws.close_code, self.ws.close_reason

    async def send(self, text: str | bytes, *, paced: bool = True) -> None:
        if paced:
            loop = asyncio.get_running_loop()
            if len(self.sent) >= 4 and (delay := self.sent[-4] + 1.05 - loop.time()) > 0:
                await asyncio.sleep(delay)  # pacing under the message-rate limit, not a wait for state
            self.sent.append(loop.time())
        await self.ws.send(text)

    async def wait(
        self, pred: Callable[[Any], bool], what: str, start: int = 0, timeout: float = WAIT_S
    ) -> tuple[int, Any]:
        """The first frame from index ``start`` on that satisfies ``pred`` (index, frame)."""

        async def scan() -> tuple[int, Any]:
            i = start
            async with self.cond:
                while True:
                    while i < len(self.frames):
                        if pred(self.frames[i]):
                            return i, self.frames[i]
                        i += 1
                    if self.reader.done():
                        raise AssertionError(f"connection closed {self.close_info} before {what}")
                    await self.cond.wait()

        try:
            return await asyncio.wait_for(scan(), timeout)
        except TimeoutError:
            tail = self.frames[start:][-4:]
            raise AssertionError(f"no {what} within {timeout} s; last frames: {str(tail)[:1500]}") from None

    async def request(self, text: str, what: str) -> Any:
        """Sends ``text`` and returns the first reply that follows it."""
        start = len(self.frames)
        await self.send(text)
        return (await self.wait(is_reply, f"the reply to {what}", start))[1]

    async def call(self, method: str, params: Any = None, *, rid: Any = None) -> Any:
        if rid is None:
            self.ids += 1
            rid = self.ids
        msg: dict[str, Any] = {"method": method, "id": rid}
        if params is not None:
            msg["params"] = params
        start = len(self.frames)
        await self.send(json.dumps(msg))
        return (await self.wait(lambda f: is_reply(f) and f["id"] == rid, f"the reply to {msg}"[:300], start))[1]

    async def listed(self) -> list[str]:
        reply = await self.call("LIST_SUBSCRIPTIONS")
        assert set(reply) == {"result", "id"} and isinstance(reply["result"], list), reply
        return reply["result"]

    async def closed(self, timeout: float = WAIT_S) -> tuple[int | None, str | None]:
        """Waits for the server to end the connection; its close code and reason."""
        try:
            await asyncio.wait_for(asyncio.shield(self.reader), timeout)
        except TimeoutError:
            raise AssertionError(f"the connection is still open after {timeout} s") from None
        return self.close_info

    def payloads(self, start: int = 0) -> list[Any]:
        return [f for f in self.frames[start:] if not is_reply(f)]


@asynccontextmanager
async def opened(st: Streams, path: str) -> AsyncIterator[Conn]:
    try:
        ws = await connect(st.ws + path, ping_interval=None, open_timeout=5, close_timeout=2, max_size=None)
    except InvalidStatus as e:
        raise AssertionError(f"GET {path[:200]}: the WebSocket handshake was refused ({e})") from None
    conn = Conn(ws)
    try:
        yield conn
    finally:
        await ws.close()
        await asyncio.wait({conn.reader}, timeout=3)


def combined(*streams: str) -> str:
    return "/stream?streams=" + "/".join(streams)


def of_stream(name: str) -> Callable[[Any], bool]:
    """A combined-stream frame of stream ``name``."""
    return lambda f: isinstance(f, dict) and f.get("stream") == name


def ok_reply(rid: Any) -> dict[str, Any]:
    return {"result": None, "id": rid}


def levels(rows: list[list[str]]) -> list[tuple[Decimal, Decimal]]:
    return [(D(p), D(q)) for p, q in rows]


def decimal_str(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        D(v)
    except ArithmeticError:
        return False
    return True


def recent_ms(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and abs(v - now_ms()) < 60_000


# -- URL forms -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws", "/ws/0", "/ws/7", "/ws/49", "/ws/12345"])
def test_raw_connection_starts_with_no_subscription(st, path):
    async def body():
        async with opened(st, path) as c:
            assert await c.call("LIST_SUBSCRIPTIONS", rid=3) == {"result": [], "id": 3}
            assert c.payloads() == []

    run(body())


def test_numbered_raw_connection_subscribes_like_ccxt_and_gets_bare_payloads(st):
    """ccxt.pro opens /ws/<n> and sends SUBSCRIBE; payloads then come bare, not wrapped."""
    m = st.market()

    async def body():
        async with rest_client(st) as http, opened(st, "/ws/0") as c:
            maker, taker = funded(st, http, m)
            assert await c.call("SUBSCRIBE", [m.stream("trade")], rid=1) == ok_reply(1)
            await maker.order(m, "SELL", "0.01000", "20000.00")
            fill = (await taker.order(m, "BUY", "0.01000", "20000.00"))["fills"][0]
            _, ev = await c.wait(lambda f: isinstance(f, dict) and f.get("e") == "trade", "a trade payload")
            assert set(ev) == TRADE_KEYS, ev
            assert ev["t"] == fill["tradeId"] and D(ev["p"]) == D("20000") and D(ev["q"]) == D("0.01")
            assert await c.listed() == [m.stream("trade")]

    run(body())


def test_stream_in_path_is_subscribed_and_sent_bare(st):
    m = st.market()

    async def body():
        async with rest_client(st) as http, opened(st, "/ws/" + m.stream("trade")) as c:
            assert await c.listed() == [m.stream("trade")]
            maker, taker = funded(st, http, m)
            await maker.order(m, "SELL", "0.02000", "20100.00")
            fill = (await taker.order(m, "BUY", "0.02000", "20100.00"))["fills"][0]
            _, ev = await c.wait(lambda f: isinstance(f, dict) and "e" in f, "a trade payload")
            assert "stream" not in ev and "data" not in ev, ev
            assert ev["e"] == "trade" and ev["s"] == m.symbol and ev["t"] == fill["tradeId"], ev

    run(body())


def test_combined_stream_wraps_every_payload(st):
    m = st.market()
    names = [m.stream("trade"), m.stream("aggTrade"), m.stream("bookTicker")]

    async def body():
        async with rest_client(st) as http, opened(st, combined(*names)) as c:
            assert sorted(await c.listed()) == sorted(names)
            maker, taker = funded(st, http, m)
            await maker.order(m, "BUY", "0.01000", "19000.00")
            await maker.order(m, "SELL", "0.01000", "20000.00")
            await taker.order(m, "BUY", "0.00400", "20000.00")
            for name, event in [(names[0], "trade"), (names[1], "aggTrade")]:
                _, f = await c.wait(of_stream(name), f"a {name} frame")
                assert set(f) == {"stream", "data"} and f["data"]["e"] == event and f["data"]["s"] == m.symbol, f
            _, f = await c.wait(of_stream(names[2]), f"a {names[2]} frame")
            assert set(f) == {"stream", "data"} and set(f["data"]) == BOOK_TICKER_KEYS, f
            # A stream subscribed later on a combined connection is wrapped too; the reply is not.
            depth = m.stream("depth@100ms")
            start = len(c.frames)
            assert await c.call("SUBSCRIBE", [depth], rid=9) == ok_reply(9)
            await maker.order(m, "BUY", "0.01000", "19000.00")
            _, f = await c.wait(of_stream(depth), f"a {depth} frame", start)
            assert set(f) == {"stream", "data"} and f["data"]["e"] == "depthUpdate", f
            assert sorted(await c.listed()) == sorted([*names, depth])
            for f in c.payloads():
                assert set(f) == {"stream", "data"} and f["stream"] in [*names, depth], f

    run(body())


def test_every_documented_stream_name_is_accepted(st):
    m = st.fillers[0]
    names = [m.stream(k) for k in KINDS] + list(ALL_MARKET)

    async def body():
        async with opened(st, combined(*names)) as c:
            assert sorted(await c.listed()) == sorted(names)
        async with opened(st, "/ws") as c:
            assert await c.call("SUBSCRIBE", names, rid=1) == ok_reply(1)
            assert sorted(await c.listed()) == sorted(names)
        for name in (m.stream("kline_4h"), m.stream("depth10@100ms"), "!miniTicker@arr"):
            async with opened(st, "/ws/" + name) as c:
                assert await c.listed() == [name]

    run(body())


def _bad_names(st: Streams) -> list[str]:
    m = st.fillers[0]
    return [
        m.stream("trades"),  # unknown kind
        m.s,  # no kind
        m.stream(""),  # empty kind
        "@trade",  # no symbol
        m.stream("kline_7m"),  # unknown interval
        m.stream("kline_"),
        m.stream("depth7"),  # unknown depth level
        m.stream("depth5@250ms"),  # unknown update speed
        m.stream("depth@250ms"),
        m.stream("trade@extra"),
        m.symbol + "@trade",  # stream names are lower case
        "!ticker",
        "!trade@arr",
    ]


BAD_NAME_IDS = ["kind", "no-kind", "empty-kind", "no-symbol", "interval", "empty-interval", "depth-levels",
                "depth5-speed", "depth-speed", "trailing", "upper-case", "arr-missing", "arr-unknown"]  # fmt: skip


@pytest.mark.parametrize("which", range(len(BAD_NAME_IDS)), ids=BAD_NAME_IDS)
def test_bad_stream_name_in_url_closes_1008_naming_it(st, which):
    bad = _bad_names(st)[which]
    m = st.fillers[1]

    async def body():
        for path in ("/ws/" + bad, combined(m.stream("trade"), bad)):
            async with opened(st, path) as c:
                code, reason = await c.closed()
                assert code == 1008, f"GET {path}: close code {code} ({reason!r}), expected 1008"
                assert bad and bad in (reason or ""), f"GET {path}: close reason {reason!r} does not name {bad!r}"

    run(body())


@pytest.mark.parametrize("name", ["btcusdt@trade", "dogeusdt@kline_1m", "zzzzzz@depth"])
def test_unknown_symbol_in_url_closes_1008_naming_it(st, name):
    """The unsuffixed default markets (btcusdt) are not markets of this server."""

    async def body():
        for path in ("/ws/" + name, combined(st.fillers[0].stream("trade"), name)):
            async with opened(st, path) as c:
                code, reason = await c.closed()
                assert code == 1008, f"GET {path}: close code {code} ({reason!r}), expected 1008"
                assert name in (reason or ""), f"GET {path}: close reason {reason!r} does not name {name!r}"

    run(body())


# -- SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS ----------------------------------------------------


def test_subscribe_unsubscribe_and_list(st):
    a, b = st.fillers[2], st.fillers[3]

    async def body():
        async with opened(st, "/ws") as c:
            assert await c.call("SUBSCRIBE", [a.stream("trade"), a.stream("depth")], rid=1) == ok_reply(1)
            assert sorted(await c.listed()) == sorted([a.stream("trade"), a.stream("depth")])
            # A stream already held is not held twice.
            assert await c.call("SUBSCRIBE", [a.stream("trade"), b.stream("kline_1m")], rid=2) == ok_reply(2)
            listed = await c.listed()
            assert sorted(listed) == sorted([a.stream("trade"), a.stream("depth"), b.stream("kline_1m")]), listed
            assert await c.call("UNSUBSCRIBE", [a.stream("trade")], rid=3) == ok_reply(3)
            assert sorted(await c.listed()) == sorted([a.stream("depth"), b.stream("kline_1m")])
            # Unsubscribing a stream not held is not an error.
            assert await c.call("UNSUBSCRIBE", [b.stream("ticker")], rid=4) == ok_reply(4)
            assert await c.call("UNSUBSCRIBE", [a.stream("depth"), b.stream("kline_1m")], rid=5) == ok_reply(5)
            assert await c.listed() == []
            # A string id comes back as sent.
            assert await c.call("SUBSCRIBE", ["!ticker@arr"], rid="sub-1") == ok_reply("sub-1")
            assert await c.call("LIST_SUBSCRIPTIONS", rid="list-1") == {"result": ["!ticker@arr"], "id": "list-1"}
        async with opened(st, combined(a.stream("trade"), a.stream("bookTicker"))) as c:
            assert await c.call("UNSUBSCRIBE", [a.stream("trade")], rid=6) == ok_reply(6)
            assert await c.listed() == [a.stream("bookTicker")]

    run(body())


def test_unsubscribed_stream_sends_nothing_more(st):
    m = st.market()

    async def body():
        async with (
            rest_client(st) as http,
            opened(st, "/ws") as c,
            opened(st, "/ws/" + m.stream("trade")) as witness,
        ):
            maker, taker = funded(st, http, m)
            assert await c.call("SUBSCRIBE", [m.stream("trade")], rid=1) == ok_reply(1)
            await maker.order(m, "SELL", "0.01000", "20000.00")
            first = (await taker.order(m, "BUY", "0.00500", "20000.00"))["fills"][0]["tradeId"]
            await c.wait(lambda f: isinstance(f, dict) and f.get("t") == first, "the first trade")
            assert await c.call("UNSUBSCRIBE", [m.stream("trade")], rid=2) == ok_reply(2)
            held = len(c.frames)
            second = (await taker.order(m, "BUY", "0.00500", "20000.00"))["fills"][0]["tradeId"]
            # The witness, still subscribed, gets the second trade; then nothing of it reached c.
            await witness.wait(lambda f: isinstance(f, dict) and f.get("t") == second, "the second trade")
            assert await c.listed() == []
            assert c.payloads(held) == [], c.payloads(held)

    run(body())


def test_raw_connection_without_subscription_gets_no_payloads(st):
    m = st.market()

    async def body():
        async with (
            rest_client(st) as http,
            opened(st, "/ws") as idle,
            opened(st, "/ws/0") as idle0,
            opened(st, "/ws/" + m.stream("trade")) as witness,
        ):
            assert await witness.listed() == [m.stream("trade")]
            maker, taker = funded(st, http, m)
            await maker.order(m, "SELL", "0.01000", "20000.00")
            tid = (await taker.order(m, "BUY", "0.01000", "20000.00"))["fills"][0]["tradeId"]
            await witness.wait(lambda f: isinstance(f, dict) and f.get("t") == tid, "the trade")
            for c in (idle, idle0):
                assert await c.listed() == []
                assert c.payloads() == []

    run(body())


# -- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["{not json", '{"method": "SUBSCRIBE", "params": [', "", "SUBSCRIBE", "{'id': 1}"])
def test_invalid_json_is_error_3_with_null_id(st, text):
    async def body():
        async with opened(st, "/ws") as c:
            reply = await c.request(text, f"the frame {text!r}")
            assert set(reply) == {"error", "id"} and reply["id"] is None, reply
            assert set(reply["error"]) == {"code", "msg"} and reply["error"]["code"] == 3, reply
            assert isinstance(reply["error"]["msg"], str) and reply["error"]["msg"], reply
            assert await c.listed() == []  # still open, and still usable

    run(body())


def _error_cases(st: Streams) -> list[tuple[str, Any, int, Any]]:
    """(case id, the message, the expected error code, the expected id in the reply; ``...``: the
    id is null or echoed)."""
    m = st.fillers[4]
    good = m.stream("trade")
    cases: list[tuple[str, Any, int, Any]] = [
        ("unknown-method", {"method": "SUBSCRIBEX", "params": [good], "id": 5}, 2, 5),
        ("lower-case-method", {"method": "subscribe", "params": [good], "id": 6}, 2, 6),
        ("no-method", {"params": [good], "id": 7}, 2, 7),
        ("unknown-symbol", {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 8}, 2, 8),
        ("unknown-symbol-2", {"method": "SUBSCRIBE", "params": ["dogeusdt@kline_1m"], "id": 9}, 2, 9),
        ("good-and-bad", {"method": "SUBSCRIBE", "params": [good, m.stream("nope")], "id": 10}, 2, 10),
        ("params-a-string", {"method": "SUBSCRIBE", "params": good, "id": 11}, 1, 11),
        ("params-numbers", {"method": "SUBSCRIBE", "params": [1, 2], "id": 12}, 1, 12),
        ("params-nested", {"method": "SUBSCRIBE", "params": [[good]], "id": 13}, 1, 13),
        ("params-object", {"method": "SUBSCRIBE", "params": {"stream": good}, "id": 14}, 1, 14),
        ("params-null-item", {"method": "SUBSCRIBE", "params": [None], "id": 15}, 1, 15),
        ("unsubscribe-params-a-string", {"method": "UNSUBSCRIBE", "params": good, "id": 16}, 1, 16),
        ("id-float", {"method": "SUBSCRIBE", "params": [good], "id": 1.5}, 1, ...),
        ("id-list", {"method": "SUBSCRIBE", "params": [good], "id": [1]}, 1, ...),
        ("id-object", {"method": "LIST_SUBSCRIPTIONS", "id": {"n": 1}}, 1, ...),
        ("id-bool", {"method": "SUBSCRIBE", "params": [good], "id": True}, 1, ...),
    ]
    for case, name in zip(BAD_NAME_IDS, _bad_names(st), strict=True):
        cases.append((f"bad-name-{case}", {"method": "SUBSCRIBE", "params": [name], "id": 20}, 2, 20))
    cases.append(("bad-name-unsubscribe", {"method": "UNSUBSCRIBE", "params": [m.stream("trades")], "id": 21}, 2, 21))
    return cases


ERROR_CASE_IDS = [
    "unknown-method", "lower-case-method", "no-method", "unknown-symbol", "unknown-symbol-2", "good-and-bad",
    "params-a-string", "params-numbers", "params-nested", "params-object", "params-null-item",
    "unsubscribe-params-a-string", "id-float", "id-list", "id-object", "id-bool",
    *(f"bad-name-{c}" for c in BAD_NAME_IDS), "bad-name-unsubscribe",
]  # fmt: skip


@pytest.mark.parametrize("case", ERROR_CASE_IDS)
def test_request_errors(st, case):
    """Each rejected request gets Binance's error reply, subscribes nothing, and leaves the
    connection open."""
    (msg, code, rid) = next((m, c, i) for n, m, c, i in _error_cases(st) if n == case)

    async def body():
        async with opened(st, "/ws") as c:
            reply = await c.request(json.dumps(msg), json.dumps(msg))
            assert isinstance(reply, dict) and set(reply) == {"error", "id"}, f"{msg} -> {reply}"
            assert set(reply["error"]) == {"code", "msg"}, f"{msg} -> {reply}"
            assert reply["error"]["code"] == code, f"{msg} -> {reply}: expected code {code}"
            assert isinstance(reply["error"]["msg"], str) and reply["error"]["msg"], reply
            if rid is ...:
                assert reply["id"] is None or reply["id"] == msg["id"], f"{msg} -> {reply}"
            else:
                assert reply["id"] == rid, f"{msg} -> {reply}"
            assert await c.listed() == [], f"{msg} subscribed something"

    run(body())


@pytest.mark.parametrize("text", ["[]", "5", '"LIST_SUBSCRIPTIONS"', "null", '[{"method": "LIST_SUBSCRIPTIONS"}]'])
def test_json_that_is_not_a_request_object_is_an_error(st, text):
    async def body():
        async with opened(st, "/ws") as c:
            reply = await c.request(text, f"the frame {text!r}")
            assert set(reply) == {"error", "id"} and reply["id"] is None, reply
            assert reply["error"]["code"] in (1, 2), f"{text!r} (valid JSON, not a request) -> {reply}"
            assert await c.listed() == []

    run(body())


def test_more_than_1024_streams_on_one_connection_is_error_2(st):
    names = [f"{s.lower()}@{k}" for s in st.all_markets for k in KINDS]
    assert len(names) > 1025

    async def body():
        async with opened(st, "/ws") as c:
            reply = await c.call("SUBSCRIBE", names[:1025], rid=1)
            assert set(reply) == {"error", "id"} and reply["id"] == 1 and reply["error"]["code"] == 2, reply
            assert await c.listed() == []
            assert await c.call("SUBSCRIBE", names[:1000], rid=2) == ok_reply(2)
            assert await c.call("SUBSCRIBE", names[1000:1024], rid=3) == ok_reply(3)
            assert len(held := await c.listed()) == 1024 and set(held) == set(names[:1024])
            reply = await c.call("SUBSCRIBE", [names[1024]], rid=4)
            assert set(reply) == {"error", "id"} and reply["id"] == 4 and reply["error"]["code"] == 2, reply
            reply = await c.call("SUBSCRIBE", ["!ticker@arr"], rid=5)
            assert reply["error"]["code"] == 2 and reply["id"] == 5, reply
            assert len(await c.listed()) == 1024
            # Room again after an UNSUBSCRIBE.
            assert await c.call("UNSUBSCRIBE", [names[0]], rid=6) == ok_reply(6)
            assert await c.call("SUBSCRIBE", [names[1024]], rid=7) == ok_reply(7)
            assert set(await c.listed()) == set(names[1:1025])

    run(body())


def test_binary_frame_closes_1003(st):
    async def body():
        async with opened(st, "/ws") as c:
            await c.send(b'{"method": "LIST_SUBSCRIPTIONS", "id": 1}')
            code, reason = await c.closed()
            assert code == 1003, f"binary frame: close code {code} ({reason!r}), expected 1003"

    run(body())


def test_more_than_five_messages_a_second_closes_1008(st):
    async def body():
        async with opened(st, "/ws") as c:
            try:
                for i in range(1, 11):
                    await c.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}), paced=False)
            except ConnectionClosed:
                pass
            code, reason = await c.closed()
            assert code == 1008, f"10 messages at once: close code {code} ({reason!r}), expected 1008"
            answered = [f for f in c.frames if is_reply(f)]
            assert len(answered) <= 5, f"{len(answered)} of 10 messages in one second were answered"

    run(body())


def test_five_messages_a_second_are_served(st):
    async def body():
        async with opened(st, "/ws") as c:
            loop = asyncio.get_running_loop()
            began = loop.time()
            for i in range(1, 6):
                await c.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}), paced=False)
            for i in range(1, 6):
                await c.wait(lambda f, i=i: is_reply(f) and f["id"] == i, f"the reply to message {i} of 5")
            assert [f for f in c.frames if is_reply(f)] == [{"result": [], "id": i} for i in range(1, 6)]
            await asyncio.sleep(max(0.0, began + 1.1 - loop.time()))  # pacing: into the next second
            assert await c.call("LIST_SUBSCRIPTIONS", rid=6) == {"result": [], "id": 6}
            assert not c.reader.done(), c.close_info

    run(body())


# -- payloads ----------------------------------------------------------------------------------------


def test_trade_stream_payloads_match_rest_and_arrive_promptly(st):
    m = st.market()

    async def body():
        loop = asyncio.get_running_loop()
        async with rest_client(st) as http, opened(st, "/ws/" + m.stream("trade")) as c:
            assert await c.listed() == [m.stream("trade")]
            maker, taker = funded(st, http, m)
            for price, qty in [("20000.00", "0.01000"), ("20000.50", "0.02000"), ("20001.00", "0.03000")]:
                await maker.order(m, "SELL", qty, price)
            sweep = await taker.order(m, "BUY", "0.06000")  # a market buy through three levels
            swept_at = loop.time()
            await maker.order(m, "BUY", "0.00700", "19990.00")
            hit = await taker.order(m, "SELL", "0.00700", "19990.00")  # a taker sell: the buyer is the maker
            hit_at = loop.time()
            fills = sweep["fills"] + hit["fills"]
            assert len(fills) == 4
            ids = [f["tradeId"] for f in fills]
            i, _ = await c.wait(lambda f: isinstance(f, dict) and f.get("t") == ids[-1], "the last trade")
            events = [f for f in c.payloads() if f.get("e") == "trade"]
            assert [e["t"] for e in events] == ids, "trades out of order, missing or repeated"
            by_id = {t["id"]: t for t in await rest(http, "/api/v3/trades", symbol=m.symbol)}
            for ev, fill, taker_bought in zip(events, fills, [True, True, True, False], strict=True):
                assert set(ev) == TRADE_KEYS, ev
                r = by_id[ev["t"]]
                assert ev["e"] == "trade" and ev["s"] == m.symbol, ev
                assert decimal_str(ev["p"]) and decimal_str(ev["q"]), ev
                assert D(ev["p"]) == D(fill["price"]) == D(r["price"]), (ev, r)
                assert D(ev["q"]) == D(fill["qty"]) == D(r["qty"]), (ev, r)
                assert ev["T"] == r["time"] and ev["m"] is r["isBuyerMaker"] is (not taker_bought), (ev, r)
                assert ev["M"] is True and recent_ms(ev["E"]) and ev["E"] >= ev["T"], ev
            assert [D(e["p"]) for e in events] == [D("20000"), D("20000.5"), D("20001"), D("19990")]
            # Pushed after the order's commit, well under a second after its response.
            first_of_sweep = next(k for k, f in enumerate(c.frames) if isinstance(f, dict) and f.get("t") == ids[0])
            assert c.arrived[first_of_sweep] - swept_at < 1.0
            assert c.arrived[i] - hit_at < 1.0

    run(body())


def test_agg_trade_stream_matches_rest_agg_trades(st):
    m = st.market()

    async def body():
        async with rest_client(st) as http, opened(st, "/ws/" + m.stream("aggTrade")) as c:
            assert await c.listed() == [m.stream("aggTrade")]
            maker, taker = funded(st, http, m)
            ids = []
            for side, price, qty in [("BUY", "20000.00", "0.01000"), ("SELL", "20010.00", "0.00300")]:
                # One maker order per taker order: each taker order fills once (one aggregate).
                await maker.order(m, "SELL" if side == "BUY" else "BUY", qty, price)
                ids.append((await taker.order(m, side, qty, price))["fills"][0]["tradeId"])
            await c.wait(lambda f: isinstance(f, dict) and f.get("l") == ids[-1], "the last aggTrade")
            events = [f for f in c.payloads() if f.get("e") == "aggTrade"]
            agg = {a["a"]: a for a in await rest(http, "/api/v3/aggTrades", symbol=m.symbol)}
            assert [(e["f"], e["l"]) for e in events] == [(t, t) for t in ids], events
            for ev, buyer_is_maker in zip(events, [False, True], strict=True):
                assert set(ev) == AGG_TRADE_KEYS, ev
                r = agg[ev["a"]]
                assert ev["s"] == m.symbol and D(ev["p"]) == D(r["p"]) and D(ev["q"]) == D(r["q"]), (ev, r)
                assert (ev["f"], ev["l"], ev["T"], ev["m"]) == (r["f"], r["l"], r["T"], r["m"]), (ev, r)
                assert ev["m"] is buyer_is_maker and ev["M"] is True and recent_ms(ev["E"]), ev
            assert [(D(e["p"]), D(e["q"])) for e in events] == [(D("20000"), D("0.01")), (D("20010"), D("0.003"))]

    run(body())


def test_kline_streams_match_rest_klines(st):
    m = st.market()
    shown = ("1m", "5m", "1h", "1d")
    names = [m.stream(f"kline_{i}") for i in shown]

    async def body():
        async with rest_client(st) as http, opened(st, combined(*names)) as c:
            assert sorted(await c.listed()) == sorted(names)
            maker, taker = funded(st, http, m)
            for side, price, qty in [("BUY", "20000.00", "0.01000"), ("BUY", "20050.00", "0.02000"),
                                     ("SELL", "19950.00", "0.00500"), ("BUY", "20010.00", "0.00100")]:  # fmt: skip
                await maker.order(m, "SELL" if side == "BUY" else "BUY", qty, price)
                await taker.order(m, side, qty, price)
            trades = await rest(http, "/api/v3/trades", symbol=m.symbol)
            assert len(trades) == 4
            for interval, name in zip(shown, names, strict=True):
                row = (await rest(http, "/api/v3/klines", symbol=m.symbol, interval=interval))[-1]
                t, o, h, low, close, v, end, q, n, vb, qb, _ = row

                def final(f: Any, t: int = t, n: int = n, name: str = name) -> bool:
                    return of_stream(name)(f) and f["data"]["k"]["t"] == t and f["data"]["k"]["n"] == n

                _, f = await c.wait(final, f"a {name} kline with the candle's {n} trades")
                ev, k = f["data"], f["data"]["k"]
                assert set(ev) == KLINE_KEYS and set(k) == KLINE_K_KEYS, ev
                assert ev["e"] == "kline" and ev["s"] == k["s"] == m.symbol and recent_ms(ev["E"]), ev
                assert k["i"] == interval and k["T"] == end == t + INTERVAL_MS[interval] - 1, k
                assert [D(k[x]) for x in "ohlcvqVQ"] == [D(x) for x in (o, h, low, close, v, q, vb, qb)], (k, row)
                in_candle = [r["id"] for r in trades if t <= r["time"] <= end]
                assert (k["f"], k["L"]) == (min(in_candle), max(in_candle)), k
                assert k["B"] == "0" and isinstance(k["x"], bool), k
                if ev["E"] <= end:
                    assert k["x"] is False, f"a kline pushed before its close time says it is closed: {ev}"
            day = next(f["data"]["k"] for f in reversed(c.frames) if of_stream(names[-1])(f))
            assert day["n"] == 4 and D(day["h"]) == D("20050") and D(day["l"]) == D("19950")
            assert D(day["v"]) == D("0.036") and D(day["V"]) == D("0.031"), day  # taker-bought volume

    run(body())


def test_partial_depth_streams_match_rest_depth(st):
    m = st.market()
    names = {m.stream("depth5"): 5, m.stream("depth10@100ms"): 10, m.stream("depth20"): 20,
             m.stream("depth5@100ms"): 5}  # fmt: skip

    async def body():
        async with rest_client(st) as http, opened(st, combined(*names)) as c:
            assert sorted(await c.listed()) == sorted(names)
            maker, _ = funded(st, http, m)
            # Worst levels first, so that every order changes every stream's top levels.
            for i in range(12):
                await maker.order(m, "BUY", f"0.0{i + 1:02d}00", f"{19000 + i * 10}.00")
                await maker.order(m, "SELL", f"0.0{i + 1:02d}00", f"{21000 - i * 10}.00")
            await maker.order(m, "BUY", "0.00500", "19110.00")  # a second order at the best bid
            book = await rest(http, "/api/v3/depth", symbol=m.symbol, limit=100)
            assert len(book["bids"]) == len(book["asks"]) == 12
            for name, n in names.items():
                want = (levels(book["bids"][:n]), levels(book["asks"][:n]))

                def final(f: Any, name: str = name, want: Any = want) -> bool:
                    return of_stream(name)(f) and (levels(f["data"]["bids"]), levels(f["data"]["asks"])) == want

                _, f = await c.wait(final, f"a {name} snapshot equal to REST depth")
                assert set(f["data"]) == PARTIAL_DEPTH_KEYS, f
                assert f["data"]["lastUpdateId"] == book["lastUpdateId"], (
                    f"{name}: lastUpdateId {f['data']['lastUpdateId']}, REST depth says {book['lastUpdateId']}"
                )
                assert all(decimal_str(x) for row in f["data"]["bids"] + f["data"]["asks"] for x in row), f
            best = levels(book["bids"][:1])[0]
            assert best == (D("19110"), D("0.017")), best

    run(body())


class LocalBook:
    """A local order book kept from a diff-depth stream as Binance's guide says."""

    def __init__(self, name: str, snapshot: dict[str, Any]) -> None:
        self.name = name
        self.u: int = snapshot["lastUpdateId"]
        self.sides = {"b": {D(p): D(q) for p, q in snapshot["bids"]}, "a": {D(p): D(q) for p, q in snapshot["asks"]}}
        self.applied = 0
        self.seen = 0

    def apply(self, ev: dict[str, Any]) -> None:
        self.seen += 1
        assert set(ev) == DEPTH_UPDATE_KEYS and ev["e"] == "depthUpdate", ev
        assert isinstance(ev["U"], int) and isinstance(ev["u"], int) and ev["U"] <= ev["u"], ev
        if not self.applied:
            if ev["u"] <= self.u:
                return  # older than the snapshot: dropped
            assert ev["U"] <= self.u + 1 <= ev["u"], (
                f"{self.name}: the first event after the snapshot (lastUpdateId {self.u}) has U={ev['U']} u={ev['u']}"
            )
        else:
            assert ev["U"] == self.u + 1, f"{self.name}: U={ev['U']} after u={self.u}: a gap or a repeat"
        for side in ("b", "a"):
            for p, q in ev[side]:
                assert decimal_str(p) and decimal_str(q), ev
                if D(q) == 0:
                    self.sides[side].pop(D(p), None)
                else:
                    self.sides[side][D(p)] = D(q)
        self.u = ev["u"]
        self.applied += 1

    def equals(self, book: dict[str, Any]) -> bool:
        return self.sides == {"b": dict(levels(book["bids"])), "a": dict(levels(book["asks"]))}


def test_diff_depth_streams_keep_a_local_book_equal_to_rest(st):
    """Binance's "how to manage a local order book": buffer the stream, note the first event, take
    a REST snapshot (its lastUpdateId must not be below that event's U), drop the events it already
    holds, then apply the rest, each U following the previous u."""
    m = st.market()
    names = [m.stream("depth"), m.stream("depth@100ms")]
    seed = secrets.randbits(32)

    async def body():
        import random

        rng = random.Random(seed)
        async with rest_client(st) as http, opened(st, combined(*names)) as c:
            assert sorted(await c.listed()) == sorted(names)
            maker, taker = funded(st, http, m)
            resting: list[tuple[Trader, int]] = []
            for i in range(4):  # changes before the snapshot: buffered, then dropped or applied
                o = await maker.order(m, "BUY", "0.01000", f"{19900 + i}.00")
                resting.append((maker, o["orderId"]))
                o = await maker.order(m, "SELL", "0.01000", f"{20100 - i}.00")
                resting.append((maker, o["orderId"]))
            first = {}
            for name in names:
                _, f = await c.wait(of_stream(name), f"the first {name} event")
                first[name] = f["data"]
            snapshot = await rest(http, "/api/v3/depth", symbol=m.symbol, limit=5000)
            for name, ev in first.items():
                # Taken after the event arrived, the snapshot holds at least that event's changes.
                assert snapshot["lastUpdateId"] >= ev["u"] >= ev["U"], (
                    f"{name}: first event U={ev['U']} u={ev['u']}, later REST lastUpdateId {snapshot['lastUpdateId']}"
                )
            for _ in range(30):
                who = rng.choice([maker, taker])
                if rng.random() < 0.2 and resting:
                    owner, oid = resting.pop(rng.randrange(len(resting)))
                    if await _is_open(http, owner, m, oid):
                        await owner.cancel(m, oid)
                    continue
                side = rng.choice(["BUY", "SELL"])
                price = 20000 + rng.randint(-120, 120)  # some rest, some cross the spread
                qty = f"0.{rng.randint(100, 3000):05d}"
                o = await who.order(m, side, qty, f"{price}.00")
                if o["status"] in ("NEW", "PARTIALLY_FILLED"):
                    resting.append((who, o["orderId"]))
            final = await rest(http, "/api/v3/depth", symbol=m.symbol, limit=5000)
            assert final["lastUpdateId"] > snapshot["lastUpdateId"]
            for name in names:
                local = LocalBook(name, snapshot)

                def synced(f: Any, name: str = name, local: LocalBook = local) -> bool:
                    if not of_stream(name)(f):
                        return False
                    local.apply(f["data"])
                    return local.u >= final["lastUpdateId"] or local.equals(final)

                # Every event in arrival order, until the local book reaches the final REST state.
                await c.wait(synced, f"{name} events up to lastUpdateId {final['lastUpdateId']} (seed {seed})")
                assert local.applied, f"{name}: no event applied (seed {seed})"
                assert local.equals(final), f"{name}: local book differs from REST depth (seed {seed})"
                assert local.u == final["lastUpdateId"], (
                    f"{name}: last event u={local.u}, REST depth lastUpdateId={final['lastUpdateId']} (seed {seed})"
                )

    run(body())


@pytest.mark.parametrize("kind", ["depth@100ms", "depth"])
def test_diff_depth_is_pushed_promptly_after_each_order(st, kind):
    """Diff depth is pushed at its update speed after each order commit: within 0.5 s for
    ``@depth@100ms``, and within Binance's 1000 ms (plus a margin) for ``@depth``."""
    m = st.market()
    name = m.stream(kind)

    async def body():
        loop = asyncio.get_running_loop()
        async with rest_client(st) as http, opened(st, "/ws/" + name) as c:
            assert await c.listed() == [name]
            maker, _ = funded(st, http, m)
            lags = []
            for i in range(8):
                price = D(19000 + i * 10)
                await maker.order(m, "BUY", "0.00100", f"{price}.00")
                done = loop.time()
                k, _ = await c.wait(
                    lambda f, p=price: isinstance(f, dict)
                    and f.get("e") == "depthUpdate"
                    and any(D(x) == p for x, _ in f["b"]),
                    f"the {name} event with the bid at {price}",
                )  # fmt: skip
                lags.append(round(c.arrived[k] - done, 3))
            bound = 0.5 if kind.endswith("100ms") else 1.5
            assert max(lags) < bound, f"{name}: each order's depth change arrived this long after its response: {lags}"

    run(body())


async def _is_open(http: httpx.AsyncClient, owner: Trader, m: Mkt, oid: int) -> bool:
    q = owner._signed({"symbol": m.symbol, "orderId": oid})
    r = await http.get(f"/api/v3/order?{q}", headers={"X-MBX-APIKEY": owner.key})
    assert r.status_code == 200, r.text
    return r.json()["status"] in ("NEW", "PARTIALLY_FILLED")


def _shows_the_change(kind: str, f: Any) -> bool:
    """Whether payload ``f`` of a ``kind`` stream shows a resting ask of 0.001 at 20000 (book
    streams) or a trade of 0.001 at 20000 (the others)."""
    if not isinstance(f, dict):
        return False
    at = (D("20000"), D("0.001"))
    if kind.startswith("depth") and kind[5:6].isdigit():
        return at in levels(f.get("asks", []))
    if kind.startswith("depth"):
        return f.get("e") == "depthUpdate" and at in levels(f.get("a", []))
    if kind == "bookTicker":
        return "a" in f and (D(f["a"]), D(f["A"])) == at
    if kind in ("ticker", "miniTicker"):
        return "c" in f and D(f["c"]) == at[0] and D(f["v"]) == at[1]
    if kind.startswith("kline"):
        return "k" in f and D(f["k"]["c"]) == at[0] and D(f["k"]["v"]) == at[1]
    return "p" in f and (D(f["p"]), D(f["q"])) == at  # trade, aggTrade


FIRST_CHANGE_KINDS = ["depth", "depth@100ms", "depth5", "depth10@100ms", "depth20", "bookTicker", "ticker",
                      "miniTicker", "kline_1m", "trade", "aggTrade"]  # fmt: skip


@pytest.mark.parametrize("kind", FIRST_CHANGE_KINDS)
def test_a_change_right_after_subscribing_is_sent(st, kind):
    """ccxt's pattern: subscribe, and act as soon as the subscription is confirmed. A change committed
    then must reach the subscriber (within a second for the once-a-second streams), subscribed in
    the URL (confirmed by LIST_SUBSCRIPTIONS) or by SUBSCRIBE."""
    trades = kind in ("ticker", "miniTicker", "kline_1m", "trade", "aggTrade")

    async def body():
        async with rest_client(st) as http:
            for via in ("url", "SUBSCRIBE"):
                m = st.market()
                maker, taker = funded(st, http, m)
                name = m.stream(kind)
                async with opened(st, "/ws/" + name if via == "url" else "/ws") as c:
                    if via == "url":
                        assert await c.listed() == [name]
                    else:
                        assert await c.call("SUBSCRIBE", [name], rid=1) == ok_reply(1)
                    await maker.order(m, "SELL", "0.00100", "20000.00")
                    if trades:
                        await taker.order(m, "BUY", "0.00100", "20000.00")
                    await c.wait(
                        lambda f: _shows_the_change(kind, f),
                        f"a {name} payload showing the first change after subscribing ({via})",
                        timeout=3.0,
                    )

    run(body())


def test_ticker_streams_match_rest_ticker(st):
    m = st.market()
    names = [m.stream("ticker"), m.stream("miniTicker"), *ALL_MARKET]

    async def body():
        async with rest_client(st) as http, opened(st, combined(*names)) as c:
            assert sorted(await c.listed()) == sorted(names)
            maker, taker = funded(st, http, m)
            for side, price, qty in [("BUY", "20000.00", "0.01000"), ("BUY", "20300.00", "0.02000"),
                                     ("SELL", "19800.00", "0.00500"), ("BUY", "20100.00", "0.00250")]:  # fmt: skip
                await maker.order(m, "SELL" if side == "BUY" else "BUY", qty, price)
                await taker.order(m, side, qty, price)
            await maker.order(m, "BUY", "0.04000", "19500.00")  # a bid and an ask stay on the book
            await maker.order(m, "SELL", "0.03000", "20500.00")
            r = await rest(http, "/api/v3/ticker/24hr", symbol=m.symbol)
            assert r["count"] == 4 and D(r["lastPrice"]) == D("20100")

            def full(ev: Any) -> bool:
                return (
                    isinstance(ev, dict)
                    and ev.get("s") == m.symbol
                    and ev.get("n") == 4
                    and (D(ev.get("b", "0")) == D("19500") and D(ev.get("a", "0")) == D("20500"))
                )

            _, f = await c.wait(lambda f: of_stream(names[0])(f) and full(f["data"]), "the final 24hrTicker")
            tickers = [f["data"]]
            _, f = await c.wait(
                lambda f: of_stream("!ticker@arr")(f) and any(full(t) for t in f["data"]), "the final !ticker@arr"
            )
            assert isinstance(f["data"], list) and all(set(t) == TICKER_KEYS for t in f["data"]), f
            tickers.append(next(t for t in f["data"] if full(t)))
            for ev in tickers:
                assert set(ev) == TICKER_KEYS and ev["e"] == "24hrTicker" and recent_ms(ev["E"]), ev
                pairs = {"p": "priceChange", "w": "weightedAvgPrice", "x": "prevClosePrice", "c": "lastPrice",
                         "b": "bidPrice", "B": "bidQty", "a": "askPrice", "A": "askQty", "o": "openPrice",
                         "h": "highPrice", "l": "lowPrice", "v": "volume", "q": "quoteVolume"}  # fmt: skip
                for k, rk in pairs.items():
                    assert decimal_str(ev[k]) and D(ev[k]) == D(r[rk]), f"{k}={ev[k]!r}, REST {rk}={r[rk]!r}"
                assert D(ev["P"]) == D(r["priceChangePercent"]), (ev["P"], r["priceChangePercent"])
                assert (ev["F"], ev["L"], ev["n"]) == (r["firstId"], r["lastId"], r["count"]), ev
                assert D(ev["Q"]) == D("0.0025"), f"Q (last quantity) is {ev['Q']!r}, the last trade was 0.0025"
                assert abs(ev["C"] - ev["O"] - 86_400_000) <= 1000 and recent_ms(ev["C"]), ev

            def mini(ev: Any) -> bool:
                return isinstance(ev, dict) and ev.get("s") == m.symbol and D(ev.get("v", "0")) == D(r["volume"])

            _, f = await c.wait(lambda f: of_stream(names[1])(f) and mini(f["data"]), "the final 24hrMiniTicker")
            minis = [f["data"]]
            _, f = await c.wait(
                lambda f: of_stream("!miniTicker@arr")(f) and any(mini(t) for t in f["data"]),
                "the final !miniTicker@arr",
            )
            assert isinstance(f["data"], list) and all(set(t) == MINI_TICKER_KEYS for t in f["data"]), f
            minis.append(next(t for t in f["data"] if mini(t)))
            for ev in minis:
                assert set(ev) == MINI_TICKER_KEYS and ev["e"] == "24hrMiniTicker" and recent_ms(ev["E"]), ev
                for k, rk in {"c": "lastPrice", "o": "openPrice", "h": "highPrice", "l": "lowPrice",
                              "v": "volume", "q": "quoteVolume"}.items():  # fmt: skip
                    assert decimal_str(ev[k]) and D(ev[k]) == D(r[rk]), f"{k}={ev[k]!r}, REST {rk}={r[rk]!r}"

    run(body())


def test_book_ticker_stream_follows_the_best_levels(st):
    m = st.market()

    async def body():
        async with rest_client(st) as http, opened(st, "/ws/" + m.stream("bookTicker")) as c:
            assert await c.listed() == [m.stream("bookTicker")]
            maker, taker = funded(st, http, m)
            await maker.order(m, "BUY", "0.05000", "19800.00")
            best_bid = await maker.order(m, "BUY", "0.02000", "19900.00")
            await maker.order(m, "SELL", "0.03000", "20200.00")
            await maker.order(m, "SELL", "0.04000", "20100.00")

            async def shows(bid: tuple[str, str], ask: tuple[str, str]) -> dict[str, Any]:
                want = (D(bid[0]), D(bid[1]), D(ask[0]), D(ask[1]))
                r = await rest(http, "/api/v3/ticker/bookTicker", symbol=m.symbol)
                assert (D(r["bidPrice"]), D(r["bidQty"]), D(r["askPrice"]), D(r["askQty"])) == want, r
                _, ev = await c.wait(
                    lambda f: isinstance(f, dict) and f.get("s") == m.symbol
                    and (D(f["b"]), D(f["B"]), D(f["a"]), D(f["A"])) == want,
                    f"a bookTicker showing {bid} / {ask}",
                )  # fmt: skip
                assert set(ev) == BOOK_TICKER_KEYS and isinstance(ev["u"], int), ev
                return ev

            first = await shows(("19900", "0.02"), ("20100", "0.04"))
            await maker.cancel(m, best_bid["orderId"])
            second = await shows(("19800", "0.05"), ("20100", "0.04"))
            await taker.order(m, "BUY", "0.01500")  # takes part of the best ask
            third = await shows(("19800", "0.05"), ("20100", "0.025"))
            assert first["u"] < second["u"] < third["u"], (first, second, third)
            us = [f["u"] for f in c.payloads()]
            assert us == sorted(us), f"bookTicker update ids went backwards: {us}"
            depth = await rest(http, "/api/v3/depth", symbol=m.symbol, limit=5)
            assert third["u"] <= depth["lastUpdateId"], (third, depth["lastUpdateId"])

    run(body())


# -- a client that never reads ---------------------------------------------------------------------------


def _stalled_client(st: Streams, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads a byte, with a receive
    buffer as small as the kernel allows, so the server's sends to it back up at once."""
    u = urlsplit(st.xs.url)
    assert u.hostname and u.port
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    s.settimeout(5)
    s.connect((u.hostname, u.port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, f"the server closed the stalled client's handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def test_a_client_that_never_reads_does_not_stall_others(st):
    m = st.market()
    everything = [m.stream(k) for k in KINDS] + list(ALL_MARKET)

    async def body():
        loop = asyncio.get_running_loop()
        stalled = [_stalled_client(st, combined(*everything)) for _ in range(3)]
        try:
            async with rest_client(st) as http, opened(st, "/ws/" + m.stream("trade")) as c:
                assert await c.listed() == [m.stream("trade")]
                maker, taker = funded(st, http, m)
                # A deep book on both sides: every partial-depth push to the stalled clients is large.
                for i in range(20):
                    await maker.order(m, "BUY", "0.01000", f"{15000 + i}.00")
                    await maker.order(m, "SELL", "0.01000", f"{25000 - i}.00")
                late = []
                ids = []
                for i in range(25):
                    price = f"{20000 + i}.00"
                    await maker.order(m, "SELL", "0.00500", price)
                    fill = (await taker.order(m, "BUY", "0.00500", price))["fills"][0]
                    done_at = loop.time()
                    ids.append(fill["tradeId"])
                    k, _ = await c.wait(
                        lambda f, t=fill["tradeId"]: isinstance(f, dict) and f.get("t") == t,
                        f"trade {i + 1} of 25 while three clients read nothing",
                    )
                    if c.arrived[k] - done_at >= 1.0:
                        late.append((i, round(c.arrived[k] - done_at, 3)))
                assert late == [], f"trades that reached the reading client 1 s or more after their order: {late}"
                assert [f["t"] for f in c.payloads() if f.get("e") == "trade"] == ids
        finally:
            for s in stalled:
                s.close()

    run(body(), timeout=90)
