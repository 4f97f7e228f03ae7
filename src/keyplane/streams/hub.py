"""The fan-out hub: one per server process, between the exchange's commits and the connected clients.

The database is the source of every event; commits are only cues. After each commit that changes
a market, :class:`~keyplane.exchange.orders.OrderService` calls :meth:`Hub.poke` (on the committing
thread) with the market's symbol; with several nodes, pokes also travel over Redis pub/sub
(:func:`relay`), and every second the hub reads each subscribed market again anyway, which catches a
commit whose cue was lost (another process writing the same SQLite file, Redis down). A read takes,
for each subscribed market, the trades after the last one sent (trade ids are assigned under the
market's lock, so ids are never seen out of order), the book with its update id (``book_seq``, the
same id REST ``depth`` answers as ``lastUpdateId``), and once a second the 24-hour ticker and the
current klines. Reads run on a worker thread: the event loop never waits on the database.

Each payload is encoded once per stream and handed to every subscriber's bounded queue. A client
that falls ``max_queue`` messages behind is disconnected (close code 1008) instead of being buffered
without bound, so a slow or vanished client never delays matching or other clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from keyplane.exchange.marketdata import INTERVALS_MS, Candle, Ticker
from keyplane.exchange.markets import Market
from keyplane.exchange.rows import PublicTrade
from keyplane.exchange.service import ExchangeService
from keyplane.streams import payloads as P
from keyplane.streams.frames import text_frame
from keyplane.streams.names import Stream
from keyplane.streams.subscriber import MAX_BUFFER, MAX_QUEUE, Subscriber
from keyplane.streams.userfeed import UserFeed

__all__ = ["MAX_BUFFER", "MAX_QUEUE", "Hub", "RedisRelay", "Subscriber"]

log = logging.getLogger("keyplane.streams")

FAST_S = 0.1  # the fastest depth streams (@100ms); trades and book tickers go out at every read
BOOK_LEVELS = 5000  # as deep as REST depth answers: a book kept from diff depth matches it
TRADES_PER_READ = 1000

Levels = list[tuple[int, int]]


def _text(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


@dataclass
class _Book:
    seq: int
    bids: dict[int, int]
    asks: dict[int, int]


@dataclass
class _Market:
    """What the hub last sent for one market."""

    last_trade_id: int = 0
    books: dict[float, _Book] = field(default_factory=dict)  # diff depth, per update speed
    top: tuple[object, object] | None = None  # the last book ticker's (bid, ask)
    book_read_at: float = 0.0
    candles: dict[str, int] = field(default_factory=dict)  # interval -> open time last sent


@dataclass
class _Read:
    """What one read of one market returned (on the worker thread)."""

    trades: list[PublicTrade] = field(default_factory=list)
    book: tuple[int, Levels, Levels] | None = None
    # (seq, side, price) of the levels the book changes since the oldest state sent touched; None
    # if the log no longer reaches that far back
    changes: list[tuple[int, str, int]] | None = None
    ticker: Ticker | None = None
    candles: list[tuple[str, Candle, bool]] = field(default_factory=list)


class Hub:
    def __init__(
        self,
        exchange: ExchangeService,
        *,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        publish: Callable[[Collection[str]], Awaitable[None]] | None = None,
    ) -> None:
        self.ex = exchange
        self.poll_s = poll_s
        self.clock = clock
        self.publish = publish  # other nodes' cue (Redis), awaited on the loop
        self._subs: dict[str, set[Subscriber]] = defaultdict(set)
        self._streams: dict[str, Stream] = {}
        self._markets: dict[str, _Market] = {}
        self._dirty: set[str] = set()
        self._touched: set[Subscriber] = set()  # given something this round: flushed at its end
        self._to_publish: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self.reads = 0  # market reads done, for tests and benchmarks
        self.users = UserFeed(exchange, clock)  # the user-data streams, cued by the same commits

    # -- subscriptions (on the loop) -------------------------------------------------------------

    async def subscribe(self, sub: Subscriber, streams: Iterable[Stream]) -> None:
        """Subscribe ``sub``; returns once every market it names has been read, so that whatever
        commits after the subscription is acknowledged reaches the subscriber."""
        streams = list(streams)
        new = [sym for s in streams for sym in self._symbols_of(s) if sym not in self._markets]
        if new:
            init = await asyncio.to_thread(self._init, sorted(set(new)))
            for symbol, state in init.items():
                self._markets.setdefault(symbol, state)
        for s in streams:
            sub.streams[s.name] = s
            self._subs[s.name].add(sub)
            self._streams[s.name] = s

    def _init(self, symbols: list[str]) -> dict[str, _Market]:
        """Each market's state as of now: the last trade id and the book (worker thread)."""
        out = {}
        for symbol in symbols:
            market = self.ex.markets[symbol]
            last = self.ex.data.last_trade_id(market)
            seq, bids, asks = self.ex.data.depth(market, BOOK_LEVELS)
            book = _Book(seq, dict(bids), dict(asks))
            top = (bids[0] if bids else None, asks[0] if asks else None)
            out[symbol] = _Market(last, {FAST_S: book, 1.0: book}, top)
        return out

    def unsubscribe(self, sub: Subscriber, names: Iterable[str]) -> None:
        for name in names:
            if sub.streams.pop(name, None) is None:
                continue
            subs = self._subs.get(name)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[name]
                    del self._streams[name]
        wanted = {sym for s in self._streams.values() for sym in self._symbols_of(s)}
        for symbol in set(self._markets) - wanted:
            del self._markets[symbol]

    def drop(self, sub: Subscriber) -> None:
        self.unsubscribe(sub, list(sub.streams))
        self.users.drop(sub)

    def _symbols_of(self, s: Stream) -> list[str]:
        return list(self.ex.markets) if s.symbol is None else [s.symbol]

    # -- cues -------------------------------------------------------------------------------------

    def poke(self, symbols: Collection[str]) -> None:
        """A commit changed these markets: callable from any thread (the exchange's writer)."""
        loop = self._loop
        if loop is not None and symbols:
            with contextlib.suppress(RuntimeError):  # the loop has ended
                loop.call_soon_threadsafe(self._poked, tuple(symbols), True)

    def poked_remotely(self, symbols: Collection[str]) -> None:
        """Another node's cue (on the loop): read these markets, do not publish them again."""
        self._poked(tuple(symbols), False)

    def _poked(self, symbols: tuple[str, ...], local: bool) -> None:
        if local and self.publish is not None:
            self._to_publish.update(symbols)
        self._dirty.update(s for s in symbols if s in self._markets)
        if self.users.active:  # every commit may have written account events
            self.users.dirty = True
        if self._dirty or self._to_publish or self.users.dirty:
            self._kick()

    def account_changed(self) -> None:
        """A commit wrote account events but changed no market (a deposit, a withdrawal): any thread."""
        self.poke(("",))

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Forever (the app's lifespan task): read what changed, send it out."""
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        next_tick = time.monotonic() + self.poll_s
        timeout = self.poll_s
        while True:
            with contextlib.suppress(TimeoutError):
                # (not asyncio.wait_for, which on Python 3.11 can swallow the task's cancellation)
                async with asyncio.timeout(max(0.0, timeout)):
                    await self._wake.wait()
            self._wake.clear()
            if self._to_publish and self.publish is not None:
                symbols, self._to_publish = self._to_publish, set()
                try:
                    await self.publish(symbols)
                except Exception as e:  # other nodes fall back to their one-second read
                    log.warning("could not tell other nodes of a market change: %s", type(e).__name__)
            now = time.monotonic()
            tick = now >= next_tick
            if tick:
                next_tick = now + self.poll_s
            try:
                timeout = await self._step(now, tick)
            except Exception:
                log.exception("market stream read failed; retrying at the next tick")
                timeout = self.poll_s
            timeout = min(timeout, max(0.0, next_tick - time.monotonic()))

    async def _step(self, now: float, tick: bool) -> float:
        """One round: plan the reads, run them on a worker thread, send. Returns how long the next
        wait may last (shorter when a market's book is due again within ``FAST_S``)."""
        if self.users.active and (self.users.dirty or tick):
            try:
                await self.users.step(self._touched)
            finally:
                touched, self._touched = self._touched, set()
                for sub in touched:
                    sub.flush()
        plans: dict[str, tuple[bool, bool, bool, list[str]]] = {}
        wait = self.poll_s
        kinds = self._kinds()
        for symbol, state in self._markets.items():
            want = kinds.get(symbol, set())
            dirty = symbol in self._dirty
            if not (dirty or tick):
                continue
            book = bool(want & {"depth", "diffDepth", "bookTicker"})
            if book and not tick and now - state.book_read_at < FAST_S:
                # The book was read less than FAST_S ago: read it again once FAST_S has passed (the
                # market stays dirty), its trades now.
                wait = min(wait, FAST_S - (now - state.book_read_at))
                book = False
            else:
                self._dirty.discard(symbol)
            trades = bool(want & {"trade", "aggTrade"})
            ticker = tick and bool(want & {"ticker", "miniTicker"})
            intervals = sorted({s.interval for s in self._streams.values() if s.kind == "kline" and s.symbol == symbol})
            if not (trades or book or ticker or (tick and intervals)):
                continue
            plans[symbol] = (trades, book, ticker, intervals if tick else [])
            if book:
                state.book_read_at = now
        if not plans:
            return wait
        reads = await asyncio.to_thread(self._read, plans)
        self.reads += len(reads)
        try:
            self._send(reads, tick)
        finally:
            touched, self._touched = self._touched, set()
            for sub in touched:
                sub.flush()
        return wait

    def _kinds(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for s in self._streams.values():
            for symbol in self._symbols_of(s):
                out[symbol].add(s.kind)
        return out

    # -- reading (worker thread) ------------------------------------------------------------------

    def _read(self, plans: dict[str, tuple[bool, bool, bool, list[str]]]) -> dict[str, _Read]:
        data, out = self.ex.data, {}
        now_ms = int(self.clock() * 1000)
        for symbol, (trades, book, ticker, intervals) in plans.items():
            market, state, r = self.ex.markets[symbol], self._markets.get(symbol), _Read()
            if state is None:
                continue
            if trades:
                after = state.last_trade_id
                while True:
                    batch = data.trades_after(market, after, TRADES_PER_READ)
                    r.trades += batch
                    if len(batch) < TRADES_PER_READ:
                        break
                    after = batch[-1].id
            if book:
                r.book = data.depth(market, BOOK_LEVELS)
                since = min((b.seq for b in list(state.books.values())), default=r.book[0])
                r.changes = data.book_changes(market, since, r.book[0])
            if ticker:
                r.ticker = data.ticker(market)
            for interval in intervals:
                step = INTERVALS_MS[interval]
                open_ms = now_ms - now_ms % step
                sent = state.candles.get(interval)
                if sent is not None and sent < open_ms:  # the interval last sent has closed
                    r.candles.append((interval, data.candle(market, interval, sent), True))
                r.candles.append((interval, data.candle(market, interval, open_ms), False))
            out[symbol] = r
        return out

    # -- sending (on the loop) --------------------------------------------------------------------

    def _emit(self, name: str, doc: Any) -> None:
        """Hand ``doc`` to every subscriber of ``name``: encoded once, framed once per form (bare,
        or in a combined stream's envelope)."""
        subs = self._subs.get(name)
        if not subs:
            return
        text = _text(doc)
        forms: dict[bool, tuple[str, bytes]] = {}
        for sub in list(subs):
            form = forms.get(sub.combined)
            if form is None:
                t = f'{{"stream":{json.dumps(name)},"data":{text}}}' if sub.combined else text
                form = forms[sub.combined] = (t, text_frame(t.encode()))
            sub.put(*form)
            self._touched.add(sub)

    def _send(self, reads: dict[str, _Read], tick: bool) -> None:
        now_ms = int(self.clock() * 1000)
        tickers: dict[str, list[dict[str, Any]]] = {"ticker": [], "miniTicker": []}
        for symbol, r in reads.items():
            market, state = self.ex.markets[symbol], self._markets.get(symbol)
            if state is None:
                continue
            low = symbol.lower()
            # A read that started before a newer one finished (a subscription's) may repeat it.
            trades = [t for t in r.trades if t.id > state.last_trade_id]
            if trades:
                state.last_trade_id = trades[-1].id
                for name, build in ((f"{low}@trade", P.trade), (f"{low}@aggTrade", P.agg_trade)):
                    if name in self._subs:
                        for t in trades:
                            self._emit(name, build(market, t, now_ms))
            if r.book is not None:
                self._send_book(market, state, r.book, r.changes, tick, now_ms)
            if r.ticker is not None:
                full, mini = P.ticker(market, r.ticker, now_ms), P.mini_ticker(market, r.ticker, now_ms)
                self._emit(f"{low}@ticker", full)
                self._emit(f"{low}@miniTicker", mini)
                tickers["ticker"].append(full)
                tickers["miniTicker"].append(mini)
            for interval, candle, closed in r.candles:
                self._emit(f"{low}@kline_{interval}", P.kline(market, interval, candle, closed, now_ms))
                state.candles[interval] = candle.open_ms
        if tickers["ticker"]:
            self._emit("!ticker@arr", tickers["ticker"])
            self._emit("!miniTicker@arr", tickers["miniTicker"])

    def _send_book(
        self,
        m: Market,
        state: _Market,
        book: tuple[int, Levels, Levels],
        changes: list[tuple[int, str, int]] | None,
        tick: bool,
        now_ms: int,
    ) -> None:
        seq, bids, asks = book
        if seq < max((b.seq for b in state.books.values()), default=0):
            return  # a read older than one already sent from
        low = m.symbol.lower()
        top = (bids[0] if bids else None, asks[0] if asks else None)
        if top != state.top:
            self._emit(f"{low}@bookTicker", P.book_ticker(m, seq, *top))
            state.top = top
        for every in (FAST_S, 1.0):
            if every == 1.0 and not tick:
                continue
            suffix = "@100ms" if every == FAST_S else ""
            for n in (5, 10, 20):
                names = [f"{low}@depth{n}{suffix}"] + ([f"{low}@depth{n}@1000ms"] if every == 1.0 else [])
                for name in names:
                    if name in self._subs:
                        self._emit(name, P.partial_depth(m, seq, bids, asks, n))
            old = state.books.get(every)
            if old is not None and old.seq >= seq:
                continue
            new = _Book(seq, dict(bids), dict(asks))
            state.books[every] = new
            if old is None:
                continue
            if changes is None:  # the log was pruned past this state: every level either side had
                touched = {("BUY", p) for p in old.bids.keys() | new.bids.keys()}
                touched |= {("SELL", p) for p in old.asks.keys() | new.asks.keys()}
            else:
                touched = {(side, p) for q, side, p in changes if old.seq < q <= seq}
            bid_levels = sorted(((p, new.bids.get(p, 0)) for side, p in touched if side == "BUY"), reverse=True)
            ask_levels = sorted((p, new.asks.get(p, 0)) for side, p in touched if side == "SELL")
            doc = P.diff_depth(m, old.seq + 1, seq, bid_levels, ask_levels, now_ms)
            self._emit(f"{low}@depth{suffix}", doc)
            if every == 1.0:
                self._emit(f"{low}@depth@1000ms", doc)


class RedisRelay:
    """Market cues between nodes over Redis pub/sub: :meth:`publish` is the hub's ``publish``, and
    :meth:`run` (a lifespan task) hands other nodes' cues to the hub. Best effort: with Redis away,
    each hub's one-second read carries on."""

    def __init__(self, redis_url: str, channel: str, hub: Hub, timeout_s: float, retry_s: float = 0.5) -> None:
        self.redis_url, self.channel, self.hub = redis_url, channel, hub
        self.timeout_s, self.retry_s = timeout_s, retry_s
        self._client: Any = None
        hub.publish = self.publish

    async def publish(self, symbols: Collection[str]) -> None:
        if self._client is not None:
            await self._client.publish(self.channel, ",".join(sorted(symbols)))

    async def run(self) -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.Redis.from_url(
            self.redis_url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s
        )
        try:
            while True:
                try:
                    await self._listen(aioredis.Redis.from_url(self.redis_url))
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("market-change relay lost Redis (%s); retrying", type(e).__name__)
                await asyncio.sleep(self.retry_s)
        finally:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _listen(self, client: Any) -> None:
        try:
            pubsub = client.pubsub()
            await pubsub.subscribe(self.channel)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    data = message["data"]
                    text = data.decode() if isinstance(data, bytes) else str(data)
                    self.hub.poked_remotely([s for s in text.split(",") if s in self.hub.ex.markets])
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
