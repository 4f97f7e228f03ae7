"""What the method-table probes share: the world they run in (a server, a funded account with a
read, trade and withdraw key, a counterparty that keeps a bid and an ask on the book), the context a
probe gets (the method under test, the ccxt instance, what ccxt saw on the wire), ccxt's own checks
of its unified structures, and how a probe's outcome becomes a row of the table."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import ccxt
from ccxt.test.exchange import base as shapes  # ccxt's checks of its unified structures
from sqlalchemy import text

from keyplane.client.ccxt_errors import server_message
from kptest.exchange import D, ExchangeServer

Flavour = Literal["sync", "async", "pro"]

WAIT_S = 10.0  # the deadline of every wait for a stream update or an event
PROBE_S = 30.0  # the deadline of one probe


@dataclass
class Seen:
    """One HTTP answer ccxt handled, or one WebSocket frame it received."""

    what: str
    status: int | None = None
    path: str = ""

    def __str__(self) -> str:
        return self.what


def _request_line(method: str, url: str, body: Any) -> str:
    parts = urlsplit(url)
    hidden = {"signature", "timestamp", "recvWindow"}
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in hidden])
    form = urlencode([(k, v) for k, v in parse_qsl(body or "") if k not in hidden]) if isinstance(body, str) else ""
    return f"{method} {parts.path}" + (f"?{query}" if query else "") + (f" body {form}" if form else "")


def record(ex: Any, seen: list[Seen]) -> Any:
    """Keeps in ``seen`` every HTTP answer (and, on ccxt.pro, every WebSocket frame) ``ex`` handles."""
    handle_errors = ex.handle_errors

    def recording(code, reason, url, method, headers, body, response, request_headers, request_body):
        line = f"{_request_line(method, url, request_body)} -> {code} {str(body)[:400]}"
        seen.append(Seen(line, int(code), f"{method} {urlsplit(url).path}"))
        return handle_errors(code, reason, url, method, headers, body, response, request_headers, request_body)

    ex.handle_errors = recording
    if hasattr(ex, "handle_message"):
        handle_message = ex.handle_message

        def recording_ws(client, message):
            # A WebSocket API answer carries an HTTP-like status; a stream's frames do not.
            status = message.get("status") if isinstance(message, dict) else None
            path = urlsplit(client.url).path
            seen.append(Seen(f"ws {path} <- {str(message)[:400]}", status if isinstance(status, int) else None, path))
            return handle_message(client, message)

        ex.handle_message = recording_ws
    ex.enableRateLimit = False  # a loopback server: ccxt's own throttle would only slow the run
    return ex


class Refused(Exception):
    """The method under test raised one of ccxt's exceptions; ``answers`` are what ccxt got from
    keyplane during that call (none: ccxt refused before it sent anything)."""

    def __init__(self, error: BaseException, answers: list[Seen]) -> None:
        super().__init__(repr(error))
        self.error = error
        self.answers = answers


class Crash(Exception):
    """The method crashed or answered wrongly: a defect, never a table row."""


class CcxtDefect(Exception):
    """ccxt mishandles keyplane's answer, which is Binance's: the probe checked that answer itself,
    and the row says what ccxt gets wrong."""


@dataclass
class World:
    """The server, its markets, the account under test ("me") and a counterparty ("maker")."""

    xs: ExchangeServer
    me: int  # the account's user id
    key: str
    secret: str
    maker: Any  # a sync ccxt client of the counterparty, which keeps a bid and an ask on the book
    me_sync: Any  # a sync ccxt client of the account, for pokes and set-up outside the probes

    @property
    def sym(self) -> str:
        return self.xs.sym("BTC", "USDT")

    @property
    def sym2(self) -> str:
        return self.xs.sym("ETH", "USDT")

    @property
    def base(self) -> str:
        return self.xs.a("BTC")

    @property
    def quote(self) -> str:
        return self.xs.a("USDT")

    def ledger(self, asset: str) -> tuple[Decimal, Decimal]:
        """The account's (available, locked) ``asset`` in the server's own books."""
        assert self.xs.services.exchange is not None
        available, locked = self.xs.services.exchange.balances(self.me).get(asset, (0, 0))
        unit = Decimal(10) ** 8
        return Decimal(available) / unit, Decimal(locked) / unit

    def poke_book(self) -> None:
        """Changes the best bid twice (a bid above it, placed and cancelled)."""
        order = self.maker.create_order(self.sym, "limit", "buy", 0.001, BID + 5)
        self.maker.cancel_order(order["id"], self.sym)

    def poke_trade(self) -> None:
        """One small trade: the account buys from the maker's ask."""
        self.me_sync.create_order(self.sym, "market", "buy", 0.001)

    def cancel_mine(self) -> None:
        """Cancels every order the account has left on a book."""
        ex = self.xs.services.exchange
        assert ex is not None
        with self.xs.services.db.read() as s:
            rows = (
                s.connection()
                .execute(text("SELECT order_id, symbol FROM ex_book WHERE user_id = :u"), {"u": self.me})
                .all()
            )
        for order_id, symbol in rows:
            if symbol in ex.markets:
                ex.orders.cancel(self.me, ex.markets[symbol], order_id, None)


# The maker's levels, which stay the best bid and ask all along (a spread of 0.05 %: ccxt's ticker
# check wants the last price within 1 % of the middle).
BID, ASK = 19990, 20000
LOW, HIGH = 10000, 30000  # where the account's resting orders go: far from the maker's levels
PRICES = {float(BID), float(ASK)}  # every trade is at one of them


@dataclass
class Ctx:
    name: str  # the method under test, as ccxt's ``has`` spells it
    ex: Any  # the ccxt instance it is called on
    flavour: Flavour
    w: World
    seen: list[Seen]
    cleanups: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    async def call(self, *args: Any) -> Any:
        """Calls the method under test; a ccxt exception comes out as ``Refused``."""
        start = len(self.seen)
        try:
            return await self._run(self.name, args)
        except ccxt.BaseError as e:
            raise Refused(e, [s for s in self.seen[start:] if s.status is not None]) from e

    async def do(self, method: str, *args: Any) -> Any:
        """Calls another method, to set the scene: any exception fails the probe."""
        return await self._run(method, args)

    async def _run(self, method: str, args: tuple[Any, ...]) -> Any:
        result = getattr(self.ex, method)(*args)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def resting(self, side: str = "buy", amount: float = 0.001) -> dict[str, Any]:
        """An order of the account that rests on the book, far from the maker's levels."""
        return await self.do("create_order", self.w.sym, "limit", side, amount, LOW if side == "buy" else HIGH)

    async def filled(self, side: str = "buy") -> dict[str, Any]:
        """A market order of the account, filled at the maker's level."""
        order = await self.do("create_order", self.w.sym, "market", side, 0.001)
        assert order["status"] == "closed", order
        return order


Probe = Callable[[Ctx], Awaitable[str | None]]  # returns a note for the row, if any


def registry(probes: dict[str, Probe]) -> Callable[..., Callable[[Probe], Probe]]:
    """A decorator that enters a probe in ``probes`` under each method name it is given."""

    def probe(*names: str) -> Callable[[Probe], Probe]:
        def register(fn: Probe) -> Probe:
            for n in names:
                assert n not in probes, n
                probes[n] = fn
            return fn

        return register

    return probe


# ccxt's own checks of its unified structures (ccxt.test.exchange.base, the ones ccxt's CI runs
# against every exchange): types, timestamps, sides and statuses, fee shapes, last == close...


def shaped_order(c: Ctx, o: Any) -> None:
    shapes.test_order(c.ex, {}, c.name, o, c.w.sym, c.ex.milliseconds())


def shaped_conditional(c: Ctx, o: Any) -> str | None:
    """ccxt's order checks for a stop or take-profit order. Binance answers ``workingTime: -1``
    for one that has not triggered yet, and ccxt takes it for the order's time."""
    if o["info"].get("workingTime") == -1 and o["timestamp"] == -1:
        shapes.test_order(c.ex, {"timestamp": True, "datetime": True}, c.name, o, c.w.sym, c.ex.milliseconds())
        return "ccxt reads Binance's workingTime -1 of an untriggered order as its timestamp"
    shaped_order(c, o)
    return None


def shaped_trades(c: Ctx, trades: list[Any], *, public: bool, skip: dict[str, bool] | None = None) -> None:
    for t in trades:
        shapes.test_trade(c.ex, skip or {}, c.name, t, c.w.sym, c.ex.milliseconds(), public)


def shaped_ticker(c: Ctx, t: Any, symbol: str | None = None) -> None:
    shapes.test_ticker(c.ex, {}, c.name, t, symbol or c.w.sym)


def is_order(o: Any, c: Ctx, *, side: str, type_: str, status: str, amount: str, price: float | None = None) -> None:
    assert isinstance(o, dict), o
    shaped_order(c, o)
    assert o["symbol"] == c.w.sym and isinstance(o["id"], str) and o["id"].isdigit(), o
    assert (o["side"], o["type"], o["status"]) == (side, type_, status), o
    assert D(o["amount"]) == D(amount), o
    if price is not None:
        assert o["price"] == price, o
    if status == "closed":
        assert D(o["filled"]) == D(amount) and o["remaining"] == 0, o


def ids(orders: list[dict[str, Any]]) -> dict[str, str]:
    return {o["id"]: o["status"] for o in orders}


# -- a probe's outcome ---------------------------------------------------------------------------


def _short(error: BaseException, w: World) -> str:
    """The exception class and what the server (or ccxt) said, on one line, without this run's
    asset suffix."""
    message = server_message(error).removeprefix("binance ").replace(w.xs.suffix, "")
    if len(message) > 110:
        message = message[:107] + "..."
    return f"{type(error).__name__}: {message}"


def classify(refused: Refused, w: World) -> str:
    """The table's "not supported..." for a clear refusal; raises Crash for anything else."""
    error, last = refused.error, (refused.answers[-1] if refused.answers else None)
    if last is None:  # ccxt refused the call before it sent anything
        if isinstance(error, ccxt.ExchangeError):
            return f"not supported by ccxt: {_short(error, w)}"
    elif last.status is not None and 400 <= last.status < 500:
        if isinstance(error, ccxt.ExchangeError):
            return f"not supported: {_short(error, w)}"
        if type(error) is ccxt.OperationFailed and last.status == 404:
            # keyplane's 404 carries Binance's -1000, which ccxt raises as OperationFailed.
            return f"not supported: {_short(error, w)} ({last.path})"
    # A 5xx, a network error, or ccxt raising after keyplane answered 2xx.
    raise Crash(f"{type(error).__name__}: {error} (keyplane's last answer: {last.status if last else 'none'})")


async def run_probe(name: str, probe: Probe, flavour: Flavour, w: World, ex: Any, seen: list[Seen]) -> str:
    """The table's result for ``probe`` of method ``name`` on ``ex``: "works", "works (note)" or
    "not supported...". Raises Crash for anything else. Cancels what the probe left open."""
    seen.clear()
    c = Ctx(name, ex, flavour, w, seen)
    try:
        try:
            note = await asyncio.wait_for(probe(c), PROBE_S)
        except Refused as r:
            return classify(r, w)
        except CcxtDefect as d:
            return f"not supported by ccxt: {d}"
        except Crash:
            raise
        except Exception as e:
            raise Crash(f"{type(e).__name__}: {e}") from e
        return f"works ({note})" if note else "works"
    finally:
        for cleanup in c.cleanups:
            with contextlib.suppress(ccxt.BaseError):  # an order that cannot be cancelled (yet)
                await cleanup()
        w.cancel_mine()
