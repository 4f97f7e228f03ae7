"""Binance-compatible WebSocket market streams: ``/ws``, ``/ws/<stream>``, ``/stream?streams=a/b``.

``/ws/...`` sends payloads bare; ``/stream`` wraps each as ``{"stream": name, "data": payload}``.
A path segment of digits alone (ccxt.pro opens ``/ws/0``, ``/ws/1``...) names no stream. A
listenKey is a stream name, in the URL or in ``SUBSCRIBE``, checked by :func:`_user_stream` either
way. The connection itself is :class:`keyplane.streams.session.Session`; the fan-out,
:mod:`keyplane.streams.hub`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any

from fastapi import APIRouter, FastAPI, WebSocket
from starlette.types import ASGIApp, Receive, Scope, Send

from keyplane.api.binance.exchange_common import write
from keyplane.api.state import AppState
from keyplane.auth.clientip import scope_ip
from keyplane.auth.errors import AuthError
from keyplane.streams import listenkeys
from keyplane.streams.hub import Hub, RedisRelay
from keyplane.streams.session import MAX_FRAME, Session
from keyplane.streams.subscriber import Subscriber
from keyplane.streams.userfeed import UserStream

router = APIRouter()
log = logging.getLogger("keyplane.streams")
_PRUNE_EVERY_S = 60.0

# uvicorn's WebSocket options, for ``keyplane serve`` and the test servers alike: wsproto waits
# while a client's socket buffer is full (so a slow client backs up into its bounded queue and is
# disconnected, rather than into the server's memory); no per-message compression (it doubled the
# memory of an idle connection and the CPU of every event, benchmarks/streams); Binance's ping
# interval.
SERVER_OPTIONS: dict[str, object] = {
    "ws": "wsproto",
    "ws_per_message_deflate": False,
    "ws_max_size": MAX_FRAME,
    "ws_ping_interval": 20.0,
    "ws_ping_timeout": 60.0,
}


def _hub(ws: WebSocket) -> Hub | None:
    state: AppState = ws.app.state.keyplane
    return state.hub


async def _serve(ws: WebSocket, names: list[str], combined: bool) -> None:
    hub = _hub(ws)
    if hub is None:
        await ws.accept()
        await ws.close(1011, "this server runs without an exchange: no market streams")
        return
    opener = functools.partial(_user_stream, ws)
    session = Session(ws, hub, combined, transport=transport_of(ws), open_listen_key=opener)
    tokens = [n for n in names if listenkeys.looks_like(n)]
    users = {}
    for token in tokens:
        opened = await _user_stream(ws, session.sub, token)
        if isinstance(opened, str):
            await ws.accept()
            await ws.close(1008, opened)
            return
        users[token] = opened
    await session.run([n for n in names if n not in tokens], users)


async def _user_stream(ws: WebSocket, sub: Subscriber, token: str) -> UserStream | str:
    """The account stream a listenKey opens on the connection ``ws`` (whose subscriber is ``sub``),
    or why it may not: it does not exist or has expired, or its key may not read its account from
    the connection's address. A listenKey is a bearer token: the stream is its key's account's,
    whoever holds it."""
    state: AppState = ws.app.state.keyplane
    hub = state.hub
    assert hub is not None
    found = await asyncio.to_thread(hub.users.listen_keys.find, token)
    if found is None:
        return "This listenKey does not exist: it expired or was closed. Create one with POST /api/v3/userDataStream."
    ip = scope_ip(ws.scope, state.services.settings.trusted_proxies)
    auth = state.authenticator
    try:
        auth.check_stream(await auth.lookup(found.key_id), ip)
    except AuthError as e:
        return e.message

    def wrap(text: str) -> str:
        return f'{{"stream":{json.dumps(token)},"data":{text}}}' if sub.combined else text

    return UserStream(
        sub, found.user_id, found.key_id, ip, wrap,
        terminated=lambda now_ms: {"e": "listenKeyExpired", "E": now_ms, "listenKey": token},
        listen_digest=found.digest,
    )  # fmt: skip


_TRANSPORT = "keyplane.transport"


def transport_of(ws: WebSocket) -> Any:
    """The connection's socket, if the server exposes it (:class:`StreamSocket`), else None."""
    return ws.scope.get(_TRANSPORT)


class StreamSocket:
    """Pure ASGI, outermost: for a WebSocket, notes the connection's socket (the ``transport`` of
    uvicorn's protocol object, whose method ``send`` is) in the scope, so that the hub can write
    each event's frame to it directly (keyplane.streams.hub.Subscriber). Under a server that does
    not expose it, streams take the ASGI ``websocket.send`` path instead."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if all(hasattr(transport, m) for m in ("write", "get_write_buffer_size", "is_closing")):
                scope[_TRANSPORT] = transport
        await self.app(scope, receive, send)


@router.websocket("/ws")
async def raw_streams(ws: WebSocket) -> None:
    await _serve(ws, [], combined=False)


@router.websocket("/ws/{path:path}")
async def raw_named(ws: WebSocket, path: str) -> None:
    names = [] if path.isdigit() else [p for p in path.split("/") if p]
    await _serve(ws, names, combined=False)


@router.websocket("/stream")
async def combined_streams(ws: WebSocket) -> None:
    names = [p for p in ws.query_params.get("streams", "").split("/") if p]
    await _serve(ws, names, combined=True)


def _guard_user_streams(state: AppState, hub: Hub) -> None:
    """A user-data stream lives only while its key may read its account from the connection's
    address: the pipeline's own rule (``Authenticator.check_stream``), asked again whenever the key
    cache drops a key and every ``userfeed.GUARD_S``."""
    auth = state.authenticator

    async def check(key_id: str, ip: str | None) -> str | None:
        try:
            auth.check_stream(await auth.lookup(key_id), ip)
        except AuthError as e:
            return e.message
        return None

    hub.users.guard_check = check
    state.cache.on_evict.append(hub.users.keys_changed)
    state.tasks.append(hub.users.guard)


def install(app: FastAPI, state: AppState) -> None:
    app.include_router(router)
    hub, settings = state.hub, state.services.settings
    if hub is None:
        return
    exchange = state.services.exchange
    assert exchange is not None  # a hub exists only with an exchange
    exchange.orders.on_commit.append(hub.poke)
    exchange.wallet.on_commit.append(hub.account_changed)
    state.tasks.append(hub.run)
    _guard_user_streams(state, hub)

    async def prune() -> None:  # the book-change log the diff-depth streams read, kept bounded
        while True:
            await asyncio.sleep(_PRUNE_EVERY_S)
            try:
                await write(exchange, exchange.data.prune_book_changes)  # the exchange's one writer
                await write(exchange, exchange.events.prune)
            except Exception as e:
                log.warning("pruning the book-change log failed: %s", type(e).__name__)

    state.tasks.append(prune)
    if settings.redis_url:
        relay = RedisRelay(settings.redis_url, settings.redis_prefix + "market:changed", hub, settings.redis_timeout_s)
        state.tasks.append(relay.run)
