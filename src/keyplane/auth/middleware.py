"""The signed-request middleware: pure ASGI, so it adds almost nothing to a request's cost.

(Starlette's ``BaseHTTPMiddleware`` costs most of the throughput and is banned by the linter.)

For a route that the :class:`RouteTable` marks as signed, it reads the body (bounded by
``max_body_bytes``), runs the pipeline, and either answers the rejection itself or stores the
:class:`AuthContext` in ``scope["state"]["auth"]`` and replays the body to the app. Other routes
pass straight through.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyplane.auth.admission import Admission
from keyplane.auth.clientip import IPNetwork, scope_ip
from keyplane.auth.errors import AuthError, BodyTooLarge
from keyplane.auth.pipeline import AuthContext, Authenticator
from keyplane.auth.routes import RouteRule, RouteTable
from keyplane.errors import KeyplaneError

log = logging.getLogger("keyplane.auth")

# Unsigned routes under these prefixes count against the per-IP public limit.
# The unsigned Binance surface (the futures and options stubs included), limited per client IP.
_PUBLIC_LIMITED = ("/api/", "/sapi/", "/fapi/", "/dapi/", "/eapi/")
_PUBLIC_RULE = RouteRule(None, "binance", 1, False, "public")
# Opening a WebSocket (market streams, the WebSocket API) weighs 2 in the same per-IP budget, as a
# WebSocket API connection does on Binance: one address cannot open connections without bound.
_CONNECT_RULE = RouteRule(None, "binance", 2, False, "ws:connect")


def error_body(error: KeyplaneError, dialect: str) -> bytes:
    if dialect == "binance":
        doc: dict[str, Any] = {"code": error.binance_code, "msg": error.message, "reason": error.code}
    else:
        doc = {"error": error.code, "message": error.message}
    return json.dumps(doc).encode("utf-8")


async def send_error(send: Send, error: KeyplaneError, dialect: str) -> None:
    body = error_body(error, dialect)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-keyplane-error", error.code.encode()),
    ]
    for name, value in getattr(error, "headers", {}).items():
        headers.append((name.lower().encode(), value.encode()))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the request body is over the {limit}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class SignedRequestMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        table: RouteTable,
        trusted_proxies: Sequence[IPNetwork] = (),
        max_body_bytes: int = 65536,
    ) -> None:
        self.app = app
        self.auth = authenticator
        self.table = table
        self.trusted = tuple(trusted_proxies)
        self.max_body = max_body_bytes

    def client_ip(self, scope: Scope) -> str | None:
        return scope_ip(scope, self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await self._websocket(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        rule = self.table.match(scope["method"], scope["path"], scope)
        if rule is None:
            if scope["path"].startswith(_PUBLIC_LIMITED):
                await self._public(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        await self._signed(scope, receive, send, rule)

    async def _public(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Unsigned Binance-surface routes: limited per client IP only."""
        try:
            admission = await self.auth.gate.admit_public(self.client_ip(scope) or "-", _PUBLIC_RULE)
        except KeyplaneError as e:
            await send_error(send, e, "binance")
            return
        await self.app(scope, receive, self._with_headers(send, admission, "binance") if admission.limit else send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket opens only within its address's budget; refused, it is accepted and closed
        at once saying why (1008; 1013 when the limiter itself is unavailable: fail closed)."""
        try:
            await self.auth.gate.admit_public(self.client_ip(scope) or "-", _CONNECT_RULE)
        except KeyplaneError as e:
            if (await receive())["type"] == "websocket.connect":
                reason = e.message.encode()[:120].decode(errors="ignore")
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": 1013 if e.status == 503 else 1008, "reason": reason})
            return
        await self.app(scope, receive, send)

    async def _signed(self, scope: Scope, receive: Receive, send: Send, rule: RouteRule) -> None:
        ip = self.client_ip(scope)
        key_id: str | None = None
        try:
            length, chunked = None, False
            for name, value in scope["headers"]:
                if name == b"content-length":
                    length = value
                elif name == b"transfer-encoding":
                    chunked = True
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                raise BodyTooLarge(f"the request body is over the {self.max_body}-byte limit")
            # With neither header the request has no body (RFC 9112 §6.3): skip the receive() round.
            has_body = chunked or (length is not None and length != b"0")
            body = await read_body(receive, self.max_body) if has_body else b""
            if rule.dialect == "binance":
                key_id = _header(scope, b"x-mbx-apikey")
            auth = self.auth
            auth.check_lockout(ip)
            ctx: AuthContext | None
            if rule.key_only:
                ctx = await auth.authenticate_key(key_id, rule, ip)
            else:
                req = auth.read(rule, scope, body)
                # A cached key and an in-process gate: no I/O, so no coroutine.
                ctx = auth.authenticate_now(req, scope["method"], rule, ip)
                if ctx is None:
                    ctx = await auth.authenticate(req, scope["method"], rule, ip)
        except AuthError as e:
            self.auth.count_failure(e, key_id=key_id, ip=ip, route=scope["path"], method=scope["method"])
            await send_error(send, e, rule.dialect)
            return
        except KeyplaneError as e:
            await send_error(send, e, rule.dialect)
            return
        except ConnectionError:
            return
        scope.setdefault("state", {})["auth"] = ctx
        adm = ctx.admission
        reply = self._with_headers(send, adm, rule.dialect) if adm and adm.limit else send
        if not has_body:
            await self.app(scope, receive, reply)
            return

        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, reply)

    def _with_headers(self, send: Send, adm: Admission, dialect: str) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if dialect == "binance":
                    headers.append((b"x-mbx-used-weight-1m", str(adm.used).encode()))
                else:
                    remaining = max(0, (adm.limit or 0) - (adm.used or 0))
                    headers.append((b"ratelimit-limit", str(adm.limit).encode()))
                    headers.append((b"ratelimit-remaining", str(remaining).encode()))
                    headers.append((b"ratelimit-reset", str(adm.reset_s or 0).encode()))
                message = {**message, "headers": headers}
            await send(message)

        return wrapped
