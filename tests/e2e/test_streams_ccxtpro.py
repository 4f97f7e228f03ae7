"""ccxt.pro's binance class, unchanged, built by ``keyplane.client.ccxt_pro_exchange``, watches the
reference exchange's WebSocket market streams: trades, tickers, the order book, candles and the best
bid and ask, each checked against what ccxt's REST calls return for the same data.

Orders go through ccxt's async REST client with two funded accounts. A watch_* call subscribes
when it is first awaited, and an update that arrives before the subscription is live is lost, so
each test first "pokes" the market (one small change) until the first watch call returns. Every
wait has a deadline; nothing sleeps waiting for state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from typing import Any

import ccxt
import pytest

from keyplane.client import ccxt_async_exchange, ccxt_pro_exchange
from kptest import streams
from kptest.exchange import D, ExchangeServer, check_invariants, clear_books, exchange_server

pytestmark = pytest.mark.e2e

WAIT_S = 10.0  # the deadline of every wait for a stream update


@pytest.fixture(scope="module")
def xs(make_settings) -> Iterator[ExchangeServer]:
    with exchange_server(make_settings(), streams.market_suffix("W")) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _empty_books(xs: ExchangeServer) -> Iterator[None]:
    clear_books(xs.services)
    yield
    clear_books(xs.services)


run = functools.partial(streams.run, timeout=40.0)


def _user(xs: ExchangeServer, **credit: str) -> Any:
    """A funded account (``BTC=...`` credits this server's BTC) and its read + trade HMAC key."""
    _, issued = streams.trading_account(xs.services, **{xs.a(asset): amount for asset, amount in credit.items()})
    return issued


def _trader(xs: ExchangeServer, issued: Any) -> Any:
    return ccxt_async_exchange(xs.url, issued.info.api_key, issued.secret, timeout=10000)


@asynccontextmanager
async def clients(xs: ExchangeServer, *users: Any, watchers: int = 1) -> AsyncIterator[tuple[Any, ...]]:
    """``watchers`` ccxt.pro exchanges (public streams, no key), then a ccxt async REST exchange
    per user; all closed at the end."""
    pros = [ccxt_pro_exchange(xs.url) for _ in range(watchers)]
    traders = [_trader(xs, u) for u in users]
    try:
        for ex in (*pros, *traders):
            await ex.load_markets()
        for pro in pros:
            assert pro.urls["api"]["ws"]["spot"] == streams.ws_url(xs.url) + "/ws"
        yield (*pros, *traders)
    finally:
        for ex in (*pros, *traders):
            await ex.close()


async def first_update(task: asyncio.Future[Any], poke: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Pokes the market until the first watch call (``task``) returns: the subscription is live."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        await poke()
        done, _ = await asyncio.wait({task}, timeout=0.5)
        if done:
            return task.result()
        if loop.time() > deadline:
            task.cancel()
            raise AssertionError(f"the first watch call got no update within {WAIT_S} s of pokes")


async def until(watch: Callable[[], Coroutine[Any, Any, Any]], ready: Callable[[], bool], what: str) -> None:
    """Watches until ``ready()`` (checked on ccxt's caches before every wait, so an update that came
    in while nobody was watching counts)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not ready():
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"{what}: not reached within {WAIT_S} s")
        try:
            await asyncio.wait_for(watch(), left)
        except TimeoutError:
            raise AssertionError(f"{what}: not reached within {WAIT_S} s") from None


async def cross(maker: Any, taker: Any, sym: str, side: str, amount: float, price: float) -> dict[str, Any]:
    """One trade: ``maker`` rests the other side, ``taker`` takes it with a limit order."""
    await maker.create_order(sym, "limit", "sell" if side == "buy" else "buy", amount, price)
    order = await taker.create_order(sym, "limit", side, amount, price)
    assert order["status"] == "closed", order
    return order


def test_watch_trades_sees_every_trade_in_order(xs):
    sym = xs.sym("BTC", "USDT")

    async def body():
        alice, bob = _user(xs, USDT="100000", BTC="1"), _user(xs, BTC="2", USDT="100000")
        async with clients(xs, alice, bob) as (pro, a, b):
            await first_update(
                asyncio.ensure_future(pro.watch_trades(sym)), lambda: cross(b, a, sym, "buy", 0.001, 20000)
            )
            warm = {t["id"] for t in pro.trades[sym]}
            for price, amount in [(20000, 0.01), (20000.5, 0.02), (20001, 0.03)]:
                await b.create_order(sym, "limit", "sell", amount, price)
            sweep = await a.create_order(sym, "market", "buy", 0.06)
            await b.create_order(sym, "limit", "buy", 0.005, 19990)
            hit = await a.create_order(sym, "limit", "sell", 0.005, 19990)
            ids = [t["id"] for t in sweep["trades"] + hit["trades"]]
            assert len(ids) == 4 and not warm & set(ids)

            await until(
                lambda: pro.watch_trades(sym),
                lambda: set(ids) <= {t["id"] for t in pro.trades[sym]},
                "watch_trades: the four trades",
            )
            seen = [t for t in pro.trades[sym] if t["id"] not in warm]
            assert [t["id"] for t in seen] == ids, "trades missing, repeated or out of order"
            assert [(t["price"], t["amount"], t["side"]) for t in seen] == [
                (20000.0, 0.01, "buy"),
                (20000.5, 0.02, "buy"),
                (20001.0, 0.03, "buy"),
                (19990.0, 0.005, "sell"),
            ]
            public = {t["id"]: t for t in await a.fetch_trades(sym)}
            for t in seen:
                r = public[t["id"]]
                assert t["symbol"] == sym and (t["timestamp"], t["price"], t["amount"], t["side"]) == (
                    r["timestamp"],
                    r["price"],
                    r["amount"],
                    r["side"],
                ), (t, r)
                assert D(t["cost"]) == D(t["price"]) * D(t["amount"]), t
        check_invariants(xs.services)

    run(body())


def test_watch_ticker_and_tickers_match_fetch_ticker(xs):
    eth_usdt, eth_btc = xs.sym("ETH", "USDT"), xs.sym("ETH", "BTC")

    async def body():
        alice = _user(xs, USDT="100000", BTC="10", ETH="10")
        bob = _user(xs, USDT="100000", BTC="10", ETH="10")
        # One ccxt.pro instance per watch: each keeps its own ticker cache.
        async with clients(xs, alice, bob, watchers=3) as (one, some, every, a, b):
            await first_update(
                asyncio.ensure_future(one.watch_ticker(eth_usdt)), lambda: cross(b, a, eth_usdt, "buy", 0.01, 1500)
            )
            await first_update(
                asyncio.ensure_future(some.watch_tickers([eth_usdt, eth_btc])),
                lambda: cross(b, a, eth_btc, "buy", 0.01, 0.05),
            )
            await first_update(
                asyncio.ensure_future(every.watch_tickers()), lambda: cross(b, a, eth_usdt, "sell", 0.01, 1490)
            )
            await cross(b, a, eth_usdt, "buy", 0.02, 1510.5)
            await cross(b, a, eth_usdt, "sell", 0.03, 1480)
            await cross(b, a, eth_btc, "sell", 0.05, 0.04998)
            await cross(b, a, eth_btc, "buy", 0.02, 0.05012)
            rest = {s: await a.fetch_ticker(s) for s in (eth_usdt, eth_btc)}
            assert rest[eth_usdt]["last"] == 1480 and rest[eth_btc]["last"] == 0.05012

            def caught_up(pro: Any, symbols: list[str]) -> Callable[[], bool]:
                return lambda: all(
                    s in pro.tickers
                    and pro.tickers[s]["last"] == rest[s]["last"]
                    and pro.tickers[s]["baseVolume"] == rest[s]["baseVolume"]
                    for s in symbols
                )

            await until(lambda: one.watch_ticker(eth_usdt), caught_up(one, [eth_usdt]), "watch_ticker")
            await until(
                lambda: some.watch_tickers([eth_usdt, eth_btc]), caught_up(some, [eth_usdt, eth_btc]), "watch_tickers"
            )
            await until(every.watch_tickers, caught_up(every, [eth_usdt, eth_btc]), "watch_tickers()")
            for pro, symbols in [(one, [eth_usdt]), (some, [eth_usdt, eth_btc]), (every, [eth_usdt, eth_btc])]:
                for s in symbols:
                    t, r = pro.tickers[s], rest[s]
                    assert t["symbol"] == s
                    for field in ("last", "close", "open", "high", "low", "baseVolume"):
                        assert t[field] == r[field], f"{s} {field}: stream {t[field]}, REST {r[field]}"
                    assert t["quoteVolume"] == pytest.approx(r["quoteVolume"], rel=1e-9), (s, t, r)
                    assert t["change"] == pytest.approx(r["change"], rel=1e-9, abs=1e-12), (s, t, r)
                    assert t["percentage"] == pytest.approx(r["percentage"], rel=1e-3, abs=1e-3), (s, t, r)
            assert rest[eth_usdt]["high"] == 1510.5 and rest[eth_btc]["low"] == 0.04998
        check_invariants(xs.services)

    run(body())


def test_watch_order_book_after_a_burst_equals_fetch_order_book(xs):
    sym = xs.sym("BTC", "USDT")
    seed = secrets.randbits(32)

    async def body():
        rng = random.Random(seed)
        alice = _user(xs, USDT="200000", BTC="3")
        bob = _user(xs, USDT="200000", BTC="3")
        async with clients(xs, alice, bob) as (pro, a, b):
            for ex, i in [(a, 0), (b, 1), (a, 2), (b, 3)]:  # a book to start from
                await ex.create_order(sym, "limit", "buy", 0.01, 19950 - i * 5)
                await ex.create_order(sym, "limit", "sell", 0.01, 20050 + i * 5)
            book = await asyncio.wait_for(pro.watch_order_book(sym), WAIT_S)
            assert book["bids"][0] == [19950.0, 0.01] and book["asks"][0] == [20050.0, 0.01], book
            # ccxt has the subscription's reply and its REST snapshot: the stream is live.

            async def burst(ex: Any, n: int) -> None:
                mine: list[str] = []
                for _ in range(n):
                    if mine and rng.random() < 0.2:
                        with contextlib.suppress(ccxt.OrderNotFound):  # filled meanwhile
                            await ex.cancel_order(mine.pop(rng.randrange(len(mine))), sym)
                        continue
                    side = rng.choice(["buy", "sell"])
                    price = 20000 + rng.randint(-80, 80) * 0.5  # some rest, some cross the spread
                    amount = rng.randint(1, 40) / 1000
                    order = await ex.create_order(sym, "limit", side, amount, price)
                    if order["status"] == "open":
                        mine.append(order["id"])

            await asyncio.gather(burst(a, 15), burst(b, 15))
            rest = await a.fetch_order_book(sym, 1000)
            assert rest["bids"] and rest["asks"] and rest["bids"][0][0] < rest["asks"][0][0]

            def caught_up() -> bool:
                ob = pro.orderbooks[sym]
                return ob["nonce"] >= rest["nonce"] or (list(ob["bids"]), list(ob["asks"])) == (
                    rest["bids"],
                    rest["asks"],
                )

            await until(lambda: pro.watch_order_book(sym), caught_up, f"watch_order_book (seed {seed})")
            ob = pro.orderbooks[sym]
            assert [list(x) for x in ob["bids"]] == rest["bids"], f"bids differ from REST (seed {seed})"
            assert [list(x) for x in ob["asks"]] == rest["asks"], f"asks differ from REST (seed {seed})"
            assert ob["nonce"] == rest["nonce"], f"stream u {ob['nonce']}, REST lastUpdateId {rest['nonce']}"
            assert ob["symbol"] == sym and ob["timestamp"] is not None  # set from the last event's E
        check_invariants(xs.services)

    run(body())


def test_watch_ohlcv_matches_fetch_ohlcv(xs):
    sym = xs.sym("ETH", "USDT")

    async def body():
        alice = _user(xs, USDT="100000", ETH="10")
        bob = _user(xs, USDT="100000", ETH="10")
        async with clients(xs, alice, bob) as (pro, a, b):
            await first_update(
                asyncio.ensure_future(pro.watch_ohlcv(sym, "1m")), lambda: cross(b, a, sym, "buy", 0.01, 1500)
            )
            for side, amount, price in [("buy", 0.02, 1530), ("sell", 0.05, 1470.25), ("buy", 0.01, 1501)]:
                await cross(b, a, sym, side, amount, price)
            last = (await a.fetch_ohlcv(sym, "1m", limit=3))[-1]
            assert last[4] == 1501 and last[0] % 60_000 == 0

            def caught_up() -> bool:
                return any(c == last for c in pro.ohlcvs.get(sym, {}).get("1m", []))

            await until(lambda: pro.watch_ohlcv(sym, "1m"), caught_up, "watch_ohlcv: the REST candle")
            candles = {c[0]: c for c in pro.ohlcvs[sym]["1m"]}
            assert candles[last[0]] == last
            assert all(t % 60_000 == 0 for t in candles)
        check_invariants(xs.services)

    run(body())


def test_watch_bids_asks_follows_the_best_levels(xs):
    sym = xs.sym("ETH", "BTC")

    async def body():
        alice = _user(xs, BTC="10", ETH="10")
        bob = _user(xs, BTC="10", ETH="10")
        async with clients(xs, alice, bob) as (pro, a, b):
            pokes = iter(range(1, 1000))

            async def poke() -> None:  # each poke a better bid: the best bid changes every time
                await b.create_order(sym, "limit", "buy", 0.01, round(0.03 + next(pokes) * 0.00001, 5))

            await first_update(asyncio.ensure_future(pro.watch_bids_asks([sym])), poke)
            await a.create_order(sym, "limit", "buy", 0.5, 0.049)
            best_bid = await a.create_order(sym, "limit", "buy", 0.2, 0.0495)
            await b.create_order(sym, "limit", "sell", 0.3, 0.0505)
            await b.create_order(sym, "limit", "sell", 0.4, 0.051)

            async def shows(bid: float, bid_volume: float, ask: float, ask_volume: float) -> None:
                rest = await a.fetch_bids_asks([sym])
                book = (rest[sym]["bid"], rest[sym]["bidVolume"], rest[sym]["ask"], rest[sym]["askVolume"])
                assert book == (bid, bid_volume, ask, ask_volume), rest[sym]

                def caught_up() -> bool:
                    t = pro.bidsasks.get(sym)
                    return t is not None and (t["bid"], t["bidVolume"], t["ask"], t["askVolume"]) == book

                await until(lambda: pro.watch_bids_asks([sym]), caught_up, f"watch_bids_asks showing {book}")
                assert pro.bidsasks[sym]["symbol"] == sym

            await shows(0.0495, 0.2, 0.0505, 0.3)
            await a.cancel_order(best_bid["id"], sym)
            await shows(0.049, 0.5, 0.0505, 0.3)
            taken = await a.create_order(sym, "market", "buy", 0.1)  # part of the best ask
            assert taken["status"] == "closed" and taken["filled"] == 0.1
            await shows(0.049, 0.5, 0.0505, 0.2)
        check_invariants(xs.services)

    run(body())
