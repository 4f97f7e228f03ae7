"""One market-stream connection, as Binance runs it: the control messages, the limits, the close codes.

Control messages (JSON text frames) are ``SUBSCRIBE``, ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``,
``SET_PROPERTY`` and ``GET_PROPERTY`` (``combined``), each answered ``{"result": ..., "id": ...}``
or with Binance's error frame ``{"error": {"code", "msg"}, "id"}``: 0 unknown property, 1 a value
of the wrong type, 2 an invalid request (unknown method, a stream name that is not one, too many
streams), 3 a frame that is not JSON. Limits, as Binance's: at most ``MAX_STREAMS`` streams on a
connection, at most ``MAX_MESSAGES_PER_S`` incoming messages a second (more closes the connection,
1008), a connection lives at most 24 hours (then 1000), a binary frame closes it (1003), a text
frame over ``MAX_FRAME`` bytes closes it (1009). Pings are uvicorn's (``--ws-ping-interval``).

A listenKey (keyplane.streams.listenkeys) is a stream name too, as on Binance: in the URL
(``/ws/<listenKey>``) or in ``SUBSCRIBE``, it adds its account's events to the connection,
``LIST_SUBSCRIPTIONS`` lists it and ``UNSUBSCRIBE`` drops it. It is a bearer token: whoever holds
it gets that account's stream, checked by ``open_listen_key`` (keyplane.api.streams, the same check
as for the URL) when it is subscribed. One that does not exist, has expired or whose key may not
stream from the connection's address is refused with error 2, saying why; one that ends while
subscribed ends the connection, with Binance's ``listenKeyExpired`` (keyplane.streams.userfeed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from keyplane.streams.hub import Hub, Subscriber
from keyplane.streams.listenkeys import looks_like
from keyplane.streams.names import BadStream, Stream, parse
from keyplane.streams.userfeed import UserStream

MAX_STREAMS = 1024
MAX_MESSAGES_PER_S = 5
MAX_FRAME = 64 * 1024
MAX_LIFETIME_S = 24 * 3600.0
_CLOSE_TIMEOUT_S = 1.0

# A listenKey -> its account's stream on the connection, or why it may not be opened there.
OpenListenKey = Callable[[Subscriber, str], Awaitable[UserStream | str]]


class Refused(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def _reason(text: str) -> str:
    """A close reason fits in 123 bytes."""
    data = text.encode()
    return text if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."


def streams_of(names: Sequence[str], symbols: Sequence[str]) -> list[Stream]:
    """Parse every name or none (BadStream names the first bad one)."""
    return [parse(n, symbols) for n in names]


class Session:
    max_messages_per_s = MAX_MESSAGES_PER_S

    def __init__(
        self,
        ws: WebSocket,
        hub: Hub,
        combined: bool,
        *,
        transport: Any = None,
        lifetime_s: float = MAX_LIFETIME_S,
        open_listen_key: OpenListenKey | None = None,
    ) -> None:
        self.ws, self.hub = ws, hub
        self.sub = Subscriber(combined=combined, transport=transport)
        self.lifetime_s = lifetime_s
        # None: listenKeys are not stream names here (they parse as bad names)
        self.open_listen_key = open_listen_key
        self.listened: dict[str, UserStream] = {}  # listenKey -> its account's stream, as subscribed
        self._recent: deque[float] = deque()
        self.client_left = False

    async def run(self, initial: Sequence[str], users: Mapping[str, UserStream] | None = None) -> None:
        """Accept, subscribe to ``initial`` (the URL's streams) and ``users`` (its listenKeys'
        account streams, already checked), and serve until either side ends. The account streams
        start before the handshake completes: an event that commits once the client is connected
        reaches it."""
        await self._listen(users or {})
        try:
            await self.ws.accept()
        except BaseException:
            self.hub.drop(self.sub)
            raise
        try:
            streams = streams_of(initial, list(self.hub.ex.markets))
        except BadStream as e:
            self.hub.drop(self.sub)
            await self._close(1008, str(e))
            return
        if len(streams) > MAX_STREAMS:
            self.hub.drop(self.sub)
            await self._close(1008, f"too many streams: at most {MAX_STREAMS} on one connection")
            return
        await self.hub.subscribe(self.sub, streams)
        tasks = [
            asyncio.create_task(self._send_loop()),
            asyncio.create_task(self._receive_loop()),
            asyncio.create_task(self.sub.closed.wait()),
        ]
        try:
            await asyncio.wait(tasks, timeout=self.lifetime_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.hub.drop(self.sub)
        code, reason = self.sub.closing or (1000, "connection open for 24 hours: reconnect")
        if not self.client_left:
            if self.sub.final is not None:  # the last message, on the ASGI path
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.ws.send_text(self.sub.final), _CLOSE_TIMEOUT_S)
            await self._close(code, reason)

    async def _listen(self, users: Mapping[str, UserStream]) -> None:
        for token, user in users.items():
            await self.hub.users.subscribe(user)
            self.listened[token] = user

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code, _reason(reason)), _CLOSE_TIMEOUT_S)

    async def _send_loop(self) -> None:
        while True:
            for text in await self.sub.take():
                await self.ws.send_text(text)

    async def _receive_loop(self) -> None:
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    self._gone()  # nothing more to send
                    return
                if message.get("bytes") is not None:
                    self.sub.close(1003, "binary frames are not accepted: send JSON text")
                    return
                now = time.monotonic()
                self._recent.append(now)
                while self._recent and now - self._recent[0] >= 1.0:
                    self._recent.popleft()
                if len(self._recent) > self.max_messages_per_s:
                    self.sub.close(1008, f"too many messages: at most {self.max_messages_per_s} a second")
                    return
                text = message.get("text") or ""
                if len(text) > MAX_FRAME:
                    self.sub.close(1009, f"message too big: at most {MAX_FRAME} bytes")
                    return
                self.sub.put(json.dumps(await self.answer(text), separators=(",", ":")))
                if self.sub.transport is not None:
                    self.sub.flush()
        except WebSocketDisconnect:
            self._gone()

    def _gone(self) -> None:
        self.client_left = True
        self.sub.close(1000, "")

    # -- control messages -------------------------------------------------------------------------

    async def answer(self, text: str) -> dict[str, Any]:
        try:
            doc = json.loads(text)
        except ValueError as e:
            return {"error": {"code": 3, "msg": f"Invalid JSON: {e}"}, "id": None}
        raw_id = doc.get("id") if isinstance(doc, dict) else None
        good_id = raw_id is None or isinstance(raw_id, str)
        good_id = good_id or (isinstance(raw_id, int) and not isinstance(raw_id, bool) and 0 <= raw_id < 2**64)
        ident = raw_id if good_id else None
        try:
            if not isinstance(doc, dict):
                raise Refused(2, "Invalid request: a request is a JSON object with 'method' and 'id'")
            if not good_id:
                raise Refused(1, "Invalid value type: 'id' must be an unsigned integer, a string or null")
            return {"result": await self._method(doc), "id": ident}
        except Refused as e:
            return {"error": {"code": e.code, "msg": e.msg}, "id": ident}

    async def _method(self, doc: dict[str, Any]) -> Any:
        method = doc.get("method")
        params = doc.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                raise Refused(1, "Invalid value type: 'params' must be a list of stream names")
            tokens = [p for p in dict.fromkeys(params) if self.open_listen_key is not None and looks_like(p)]
            listen = set(tokens)
            names = [p for p in params if p not in listen]
            try:
                streams = streams_of(names, list(self.hub.ex.markets))
            except BadStream as e:
                raise Refused(2, f"Invalid request: {e}") from None
            if method == "UNSUBSCRIBE":  # valid names not subscribed are ignored, as on Binance
                self.hub.unsubscribe(self.sub, [s.name for s in streams])
                for token in tokens:
                    if (user := self.listened.pop(token, None)) is not None:
                        self.hub.users.remove(user)
                return None
            new = {s.name for s in streams} - set(self.sub.streams)
            new_tokens = [t for t in tokens if t not in self.listened]
            if len(self.sub.streams) + len(self.listened) + len(new) + len(new_tokens) > MAX_STREAMS:
                raise Refused(2, f"Invalid request: too many streams, at most {MAX_STREAMS} on one connection")
            users = await self._open(new_tokens)  # checked before anything is subscribed
            await self.hub.subscribe(self.sub, streams)
            await self._listen(users)
            return None
        if method == "LIST_SUBSCRIPTIONS":
            return [*self.sub.streams, *self.listened]
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            if not isinstance(params, list) or not params or not isinstance(params[0], str):
                raise Refused(1, "Invalid value type: 'params' must be [property] or [property, value]")
            if params[0] != "combined":
                raise Refused(0, f"Unknown property {params[0][:32]!r}: the only property is 'combined'")
            if method == "GET_PROPERTY":
                return self.sub.combined
            if len(params) != 2 or not isinstance(params[1], bool):
                raise Refused(1, "Invalid value type: expected Boolean")
            self.sub.combined = params[1]
            return None
        shown = method[:32] if isinstance(method, str) else type(method).__name__
        raise Refused(
            2,
            f"Invalid request: unknown method {shown!r}; use SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, "
            "SET_PROPERTY or GET_PROPERTY",
        )

    async def _open(self, tokens: Sequence[str]) -> dict[str, UserStream]:
        """Each listenKey's account stream, checked, or Refused for the first that may not be
        opened (then none is: a request subscribes all its streams or none)."""
        opened: dict[str, UserStream] = {}
        for token in tokens:
            assert self.open_listen_key is not None  # (tokens are only looked for with one)
            user = await self.open_listen_key(self.sub, token)
            if isinstance(user, str):
                raise Refused(2, f"Invalid request: {user}")
            opened[token] = user
        return opened
