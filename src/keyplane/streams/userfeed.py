"""User-data streams: each account's order and balance events, to the connections its keys opened.

The source is the account event log (keyplane.exchange.events), written in the transaction of each
change; the hub's cues (every commit, here or on another node, and a read every second) only say
when to read it. One :class:`EventCursor` reads the log for every account at once, so a late
PostgreSQL commit is delivered, not skipped, and each connection gets only events committed after
it subscribed, in log order: per order, in the order they happened.

A stream belongs to its key. :meth:`UserFeed.guard` asks the verification pipeline again, for every
key with a stream open, whether the key may still read its account from the connection's address
(status, expiry, IP allowlist, scope: ``Authenticator.check_stream``, the one rule). It runs as soon
as the key cache drops a key (a revoke, disable or narrowing here, on another node through the
broadcast, or from the CLI through the poller) and every ``GUARD_S`` for expiry; a stream whose key
no longer may is ended with Binance's termination event and a close frame that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from keyplane.exchange.events import BALANCE, LIST_STATUS, AccountEvent, EventCursor
from keyplane.exchange.service import ExchangeService
from keyplane.streams import payloads as P
from keyplane.streams.listenkeys import ListenKeys
from keyplane.streams.subscriber import Subscriber

log = logging.getLogger("keyplane.streams")

GUARD_S = 0.25
READ_LIMIT = 2000
KEY_CLOSED = 1008  # the close code of a stream whose key stopped working (policy violation)

LISTEN_KEY_ENDED = "listenKey expired or closed: create one with POST /api/v3/userDataStream"
# (key id, client IP) -> why that key may no longer stream to that address, or None
Guard = Callable[[str, str | None], Awaitable[str | None]]


def _text(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


@dataclass(eq=False)
class UserStream:
    """One account's event stream on one connection (a connection may hold several)."""

    sub: Subscriber
    user_id: int
    key_id: str
    ip: str | None
    # The event's JSON -> the message sent (bare, or in the envelope of a combined stream or of a
    # WebSocket API subscription)
    wrap: Callable[[str], str]
    # What ends it: Binance's termination event, wrapped like the others (None: the close frame alone)
    terminated: Callable[[int], dict[str, Any]] | None
    after_id: int = 0  # events up to this id had committed before it subscribed
    tag: int | None = None  # the connection's name for it (a WebSocket API subscription id)
    listen_digest: str | None = None  # opened with a listenKey: that key's digest (it must stay open)
    # False: no events, only the key's guard (a WebSocket API session logged on with the key)
    events: bool = True
    ident: int = field(default_factory=itertools.count(1).__next__)

    def send(self, doc: Any) -> None:
        self.sub.put(self.wrap(_text(doc)))


class UserFeed:
    def __init__(self, exchange: ExchangeService, clock: Callable[[], float]) -> None:
        self.ex = exchange
        self.clock = clock
        self.guard_check: Guard | None = None
        self.listen_keys = ListenKeys(exchange.db, clock)
        self._streams: dict[int, set[UserStream]] = defaultdict(set)  # user id -> its streams
        self._cursor: EventCursor | None = None
        self._guard_wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dirty = False

    @property
    def active(self) -> bool:
        return bool(self._streams)

    # -- subscriptions (on the loop) -------------------------------------------------------------

    async def subscribe(self, stream: UserStream) -> None:
        """Start ``stream``: every event that commits after this returns reaches it."""
        last = await asyncio.to_thread(self.ex.events.last_id)
        stream.after_id = last
        if self._cursor is None or not self._streams:
            self._cursor = EventCursor(last)
        self._streams[stream.user_id].add(stream)

    def remove(self, stream: UserStream) -> None:
        streams = self._streams.get(stream.user_id)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self._streams[stream.user_id]

    def drop(self, sub: Subscriber) -> None:
        """The connection ended: every stream it held."""
        for stream in [s for streams in self._streams.values() for s in streams if s.sub is sub]:
            self.remove(stream)

    def of(self, sub: Subscriber) -> list[UserStream]:
        return [s for streams in self._streams.values() for s in streams if s.sub is sub]

    # -- delivery ---------------------------------------------------------------------------------

    async def step(self, touched: set[Subscriber]) -> None:
        """Read the log past the cursor and hand each account's new events to its streams."""
        self.dirty = False
        if not self._streams or self._cursor is None:
            return
        batches = await asyncio.to_thread(self._read, set(self._streams))
        now_ms = int(self.clock() * 1000)
        for user_id, events, balances in batches:
            streams = self._streams.get(user_id)
            if not streams:
                continue
            docs = [(ev.id, self._event_doc(ev, now_ms)) for ev in events]
            position = P.account_position(self.ex.assets, balances, events[-1].ts, now_ms) if balances else None
            for stream in list(streams):
                if not stream.events:
                    continue
                sent = False
                for ev_id, doc in docs:
                    if doc is not None and ev_id > stream.after_id:
                        stream.send(doc)
                        sent = True
                if sent and position is not None:
                    stream.send(position)
                if sent:
                    touched.add(stream.sub)

    def _event_doc(self, ev: AccountEvent, now_ms: int) -> dict[str, Any] | None:
        if ev.kind == BALANCE:
            asset = self.ex.assets.get(ev.asset or "")
            return None if asset is None else P.balance_update(asset, ev, now_ms)
        if ev.kind == LIST_STATUS:
            return None if ev.order_list is None else P.list_status(ev, now_ms)
        market = self.ex.markets.get(ev.order.symbol) if ev.order else None
        return None if market is None else P.execution_report(market, ev, now_ms)

    def _read(self, users: set[int]) -> list[tuple[int, list[AccountEvent], dict[str, tuple[int, int]]]]:
        """(account, its new events, the balances they changed) per account (worker thread)."""
        cursor = self._cursor
        assert cursor is not None
        by_user: dict[int, list[AccountEvent]] = defaultdict(list)
        while True:
            ids, events = self.ex.events.read_after(cursor.floor, users.__contains__, READ_LIMIT)
            new = cursor.take(ids)
            for ev in events:
                if ev.id in new:
                    by_user[ev.user_id].append(ev)
            if len(ids) < READ_LIMIT or not new:
                break
        out = []
        for user_id, events in by_user.items():
            assets: set[str] = set()
            for ev in events:
                if ev.kind == BALANCE and ev.asset:
                    assets.add(ev.asset)
                elif ev.order is not None and (m := self.ex.markets.get(ev.order.symbol)) is not None:
                    assets.update((m.base.name, m.quote.name))
            held = self.ex.events.balances(user_id)
            balances = {a: held.get(a, (0, 0)) for a in sorted(assets) if a in self.ex.assets}
            out.append((user_id, events, balances))
        return out

    # -- a stream belongs to its key -------------------------------------------------------------

    def keys_changed(self) -> None:
        """The key cache dropped keys: check the open streams now (callable from any thread)."""
        loop = self._loop
        if loop is not None and self._streams:
            with contextlib.suppress(RuntimeError):  # the loop has ended
                loop.call_soon_threadsafe(self._guard_wake.set)

    async def guard(self) -> None:
        """Forever: end the streams whose key may no longer read its account from there."""
        self._loop = asyncio.get_running_loop()
        while True:
            with_timeout = asyncio.timeout(GUARD_S)
            try:
                async with with_timeout:
                    await self._guard_wake.wait()
            except TimeoutError:
                pass
            self._guard_wake.clear()
            if self.guard_check is None or not self._streams:
                continue
            try:
                await self._check_all(self.guard_check)
            except Exception:
                log.exception("checking the keys of open user-data streams failed; retrying")

    async def _check_all(self, check: Guard) -> None:
        by_key: dict[tuple[str, str | None], list[UserStream]] = defaultdict(list)
        for streams in self._streams.values():
            for s in streams:
                by_key[(s.key_id, s.ip)].append(s)
        for (key_id, ip), held in by_key.items():
            reason = await check(key_id, ip)
            if reason is None:
                continue
            for stream in held:
                self.end(stream, reason)
        listened = {s.listen_digest for streams in self._streams.values() for s in streams if s.listen_digest}
        if listened:
            still = await asyncio.to_thread(self.listen_keys.valid, listened)
            # Only the listenKeys just checked: a stream subscribed while the check ran is checked next time.
            gone = listened - still
            for streams in list(self._streams.values()):
                for stream in list(streams):
                    if stream.listen_digest in gone:
                        self.end(stream, LISTEN_KEY_ENDED)

    def end(self, stream: UserStream, reason: str) -> None:
        """Send the stream's termination event, then close its connection with ``reason``."""
        self.remove(stream)
        if stream.terminated is None:
            stream.sub.close(KEY_CLOSED, reason)
            return
        stream.sub.finish(stream.wrap(_text(stream.terminated(int(self.clock() * 1000)))), KEY_CLOSED, reason)
