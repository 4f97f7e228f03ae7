"""Binance's WebSocket API at ``/ws-api/v3``: REST's requests over one connection, and the user-data
stream on it.

A request is ``{"id", "method", "params"}``; the answer ``{"id", "status", "result"}`` or
``{"id", "status", "error": {"code", "msg"}}`` with the REST error's code and message. A signed
request carries ``apiKey``, ``timestamp`` (``recvWindow``) and ``signature`` among its params, signed
over the other params sorted by name (``auth.dialects.binance.read_ws``), and passes the **same**
:meth:`Authenticator.authenticate` as REST: status, expiry, IP allowlist, time window, signature,
scope, symbol restriction, replay guard, rate limits, failure audit. It is then served by the REST
route itself (:data:`METHODS` maps each method to its route), so each rule of an order, a cancel or
an account answer lives in one place.

``userDataStream.subscribe.signature`` starts the account's event stream on the connection:
events arrive as ``{"subscriptionId", "event"}`` (keyplane.streams.userfeed); when the key stops
working, is narrowed past what the stream needs, or expires, the stream sends
``eventStreamTerminated`` and the connection closes (1008) saying why.
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, WebSocket
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyplane.api.state import AppState
from keyplane.api.streams import transport_of
from keyplane.auth.clientip import scope_ip
from keyplane.auth.errors import AuthError, ParamInvalid
from keyplane.auth.pipeline import AuthContext
from keyplane.auth.routes import ATTR, RouteRule, walk
from keyplane.errors import KeyplaneError
from keyplane.streams.hub import Hub
from keyplane.streams.session import Refused, Session
from keyplane.streams.userfeed import UserStream

router = APIRouter()
log = logging.getLogger("keyplane.api")

# WebSocket API method -> the REST route that serves it.
METHODS: dict[str, tuple[str, str]] = {
    "ping": ("GET", "/api/v3/ping"),
    "time": ("GET", "/api/v3/time"),
    "exchangeInfo": ("GET", "/api/v3/exchangeInfo"),
    "depth": ("GET", "/api/v3/depth"),
    "trades.recent": ("GET", "/api/v3/trades"),
    "trades.historical": ("GET", "/api/v3/historicalTrades"),
    "trades.aggregate": ("GET", "/api/v3/aggTrades"),
    "klines": ("GET", "/api/v3/klines"),
    "uiKlines": ("GET", "/api/v3/uiKlines"),
    "avgPrice": ("GET", "/api/v3/avgPrice"),
    "ticker.24hr": ("GET", "/api/v3/ticker/24hr"),
    "ticker": ("GET", "/api/v3/ticker"),
    "ticker.price": ("GET", "/api/v3/ticker/price"),
    "ticker.book": ("GET", "/api/v3/ticker/bookTicker"),
    "order.place": ("POST", "/api/v3/order"),
    "order.test": ("POST", "/api/v3/order/test"),
    "order.status": ("GET", "/api/v3/order"),
    "order.cancel": ("DELETE", "/api/v3/order"),
    "order.cancelReplace": ("POST", "/api/v3/order/cancelReplace"),
    "openOrders.status": ("GET", "/api/v3/openOrders"),
    "openOrders.cancelAll": ("DELETE", "/api/v3/openOrders"),
    "allOrders": ("GET", "/api/v3/allOrders"),
    "orderList.place.oco": ("POST", "/api/v3/orderList/oco"),
    "orderList.place": ("POST", "/api/v3/order/oco"),
    "orderList.status": ("GET", "/api/v3/orderList"),
    "orderList.cancel": ("DELETE", "/api/v3/orderList"),
    "openOrderLists.status": ("GET", "/api/v3/openOrderList"),
    "allOrderLists": ("GET", "/api/v3/allOrderList"),
    "myTrades": ("GET", "/api/v3/myTrades"),
    "account.status": ("GET", "/api/v3/account"),
    "account.commission": ("GET", "/api/v3/account/commission"),
}
_SUBSCRIBE = "userDataStream.subscribe.signature"
_SESSION_SUBSCRIBE = "userDataStream.subscribe"
_UNSUBSCRIBE = "userDataStream.unsubscribe"
_LOGON, _STATUS, _LOGOUT = "session.logon", "session.status", "session.logout"
_OWN = frozenset({_SUBSCRIBE, _SESSION_SUBSCRIBE, _UNSUBSCRIBE, _LOGON, _STATUS, _LOGOUT})
_STREAM_RULE = RouteRule(None, "binance", 2, False, "ws:" + _SUBSCRIBE, key_only=True)
_LOGON_RULE = RouteRule(None, "binance", 2, False, "ws:" + _LOGON)
_PUBLIC_RULE = RouteRule(None, "binance", 1, False, "public")
_STATE_CHANGING = frozenset({"POST", "PUT", "DELETE"})
_MAX_PARAMS = 64


class _Number(str):
    """A JSON number, kept as the client spelled it (the signature covers the spelling)."""


def _texts(params: dict[str, Any]) -> dict[str, str]:
    """Each param as the text the client signed: strings and numbers as sent, booleans as
    ``true``/``false``; anything else is refused."""
    out = {}
    for name, value in params.items():
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, str):
            out[name] = str(value)
        else:
            raise Refused(
                -1100, f"Illegal characters found in parameter '{name[:32]}': values are strings, numbers or booleans."
            )
    return out


class Endpoints:
    """The REST endpoint of each method, found once in the app's routes."""

    def __init__(self, app: FastAPI) -> None:
        by_route = {
            (m, path): r.endpoint for path, r in walk(app.routes) if isinstance(r, Route) for m in r.methods or ()
        }
        self.app = app
        # method -> (HTTP method, path, endpoint, its RouteRule (None: public), whether it takes the request)
        self.table: dict[str, tuple[str, str, Callable[..., Any], RouteRule | None, bool]] = {}
        for name, (method, path) in METHODS.items():
            endpoint = by_route.get((method, path))
            if endpoint is not None:
                takes_request = "request" in inspect.signature(endpoint).parameters
                self.table[name] = (method, path, endpoint, getattr(endpoint, ATTR, None), takes_request)

    async def call(self, name: str, params: dict[str, str], ctx: AuthContext | None, client: Any) -> Any:
        method, path, endpoint, _, takes_request = self.table[name]
        scope = {
            "type": "http", "method": method, "path": path, "headers": [], "app": self.app, "client": client,
            "query_string": urlencode(params).encode() if ctx is None else b"", "state": {"auth": ctx} if ctx else {},
        }  # fmt: skip
        answer = await (endpoint(Request(scope)) if takes_request else endpoint())
        if isinstance(answer, Response):
            return json.loads(bytes(answer.body))
        return answer


class ApiSession(Session):
    """One ``/ws-api/v3`` connection."""

    # Each request pays its own rate-limit weight in the gate; this only bounds a flood of frames.
    max_messages_per_s = 1000

    def __init__(self, ws: WebSocket, hub: Hub, state: AppState, endpoints: Endpoints, transport: Any) -> None:
        super().__init__(ws, hub, combined=False, transport=transport)
        self.state = state
        self.endpoints = endpoints
        self.ip = scope_ip(ws.scope, state.services.settings.trusted_proxies)
        self._ids = itertools.count()
        self.session: UserStream | None = None  # the key that logged on (session.logon), if any
        self.authorized_since = 0
        self.connected_since = int(time.time() * 1000)

    async def answer(self, text: str) -> dict[str, Any]:
        try:
            doc = json.loads(text, parse_int=_Number, parse_float=_Number)
        except ValueError as e:
            return {"id": None, "status": 400, "error": {"code": -1100, "msg": f"Invalid JSON: {e}"}}
        if not isinstance(doc, dict):
            return {"id": None, "status": 400, "error": {"code": -1100, "msg": "A request is a JSON object."}}
        ident = doc.get("id")
        if isinstance(ident, _Number):
            ident = int(ident) if ident.isdigit() else None
        elif not (ident is None or isinstance(ident, str)) or (isinstance(ident, str) and len(ident) > 36):
            ident = None
        try:
            result, limits = await self._method(doc)
        except Refused as e:
            return {"id": ident, "status": 400, "error": {"code": e.code, "msg": e.msg}}
        except KeyplaneError as e:
            return {"id": ident, "status": e.status, "error": {"code": e.binance_code, "msg": e.message}}
        except Exception:  # a defect: the connection carries on, and the log has it
            log.exception("WebSocket API request failed")
            return {"id": ident, "status": 500, "error": {"code": -1000, "msg": "An unknown error occurred."}}
        out: dict[str, Any] = {"id": ident, "status": 200, "result": result}
        if limits is not None:
            out["rateLimits"] = limits
        return out

    async def _method(self, doc: dict[str, Any]) -> tuple[Any, list[dict[str, Any]] | None]:
        name = doc.get("method")
        raw = doc.get("params", {})
        if not isinstance(raw, dict) or len(raw) > _MAX_PARAMS:
            raise Refused(-1100, f"'params' must be an object of at most {_MAX_PARAMS} parameters.")
        if not isinstance(name, str) or (name not in self.endpoints.table and name not in _OWN):
            shown = name[:48] if isinstance(name, str) else type(name).__name__
            raise Refused(-1100, f"Unknown method {shown!r}.")
        params = _texts(raw)
        want_limits = params.get("returnRateLimits", "true") != "false"  # (signed like the rest)
        if name == _UNSUBSCRIBE:
            return self._unsubscribe(params), None
        if name in (_STATUS, _LOGOUT):
            if name == _LOGOUT:
                self._logout()
            return self._session_status(), None
        auth = self.state.authenticator
        if name == _LOGON:
            ctx = await self._authenticate(params, _LOGON_RULE, state_changing=False)
            await self._logon(ctx)
            return self._session_status(), self._limits(ctx, want_limits)
        if name in (_SUBSCRIBE, _SESSION_SUBSCRIBE):
            if name == _SESSION_SUBSCRIBE and self.session is None:
                raise Refused(-1002, "userDataStream.subscribe needs a session: call session.logon first")
            ctx = await self._authenticate(params, _STREAM_RULE, state_changing=False)
            return await self._subscribe(ctx), self._limits(ctx, want_limits)
        method, _, _, rule, _ = self.endpoints.table[name]
        if rule is None:  # a public method
            admission = await auth.gate.admit_public(self.ip or "-", _PUBLIC_RULE)
            result = await self.endpoints.call(name, params, None, self.ws.scope.get("client"))
            return result, (self._limit_doc(admission.limit, admission.used) if want_limits else None)
        ctx = await self._authenticate(params, rule, state_changing=method in _STATE_CHANGING)
        result = await self.endpoints.call(name, ctx.params, ctx, self.ws.scope.get("client"))
        return result, self._limits(ctx, want_limits)

    async def _authenticate(self, params: dict[str, str], rule: RouteRule, *, state_changing: bool) -> AuthContext:
        auth = self.state.authenticator
        key_id = params.get("apiKey")
        try:
            auth.check_lockout(self.ip)
            if "signature" not in params and self.session is not None:
                # The session's key proved itself at session.logon: every other check applies.
                key_id = self.session.key_id
                return await auth.authenticate_key(key_id, rule, self.ip, params)
            req = auth.read_ws(params, state_changing)
            ctx = await auth.authenticate(req, "WS", rule, self.ip)
            if rule.key_only:
                auth.check_stream(ctx.key, self.ip)
            return ctx
        except AuthError as e:
            auth.count_failure(e, key_id=key_id, ip=self.ip, route="/ws-api/v3 " + rule.name, method="WS")
            raise

    async def _subscribe(self, ctx: AuthContext) -> dict[str, int]:
        if any(s.events and s.key_id == ctx.key.public_id for s in self.hub.users.of(self.sub)):
            raise Refused(-1100, "This connection already has a user data stream subscription for this API key.")
        sid = next(self._ids)
        stream = UserStream(
            self.sub, ctx.key.user_id, ctx.key.public_id, self.ip,
            wrap=lambda text: f'{{"subscriptionId":{sid},"event":{text}}}',
            terminated=lambda now_ms: {"e": "eventStreamTerminated", "E": now_ms}, tag=sid,
        )  # fmt: skip
        await self.hub.users.subscribe(stream)
        return {"subscriptionId": sid}

    async def _logon(self, ctx: AuthContext) -> None:
        if ctx.key.key_type != "ed25519":
            raise Refused(-2015, "session.logon takes an Ed25519 API key; sign each request with an HMAC key instead")
        self._logout()
        # A session lives only while its key may: the user-data guard closes the connection when not.
        self.session = UserStream(
            self.sub, ctx.key.user_id, ctx.key.public_id, self.ip, wrap=lambda text: text, terminated=None,
            events=False,
        )  # fmt: skip
        self.authorized_since = int(time.time() * 1000)
        await self.hub.users.subscribe(self.session)

    def _logout(self) -> None:
        if self.session is not None:
            self.hub.users.remove(self.session)
            self.session = None

    def _session_status(self) -> dict[str, Any]:
        s = self.session
        return {
            "apiKey": None if s is None else s.key_id,
            "authorizedSince": None if s is None else self.authorized_since,
            "connectedSince": self.connected_since,
            "returnRateLimits": True,
            "serverTime": int(time.time() * 1000),
            "userDataStream": any(u.events for u in self.hub.users.of(self.sub)),
        }

    def _unsubscribe(self, params: dict[str, str]) -> dict[str, Any]:
        wanted = params.get("subscriptionId")
        if wanted is not None and not wanted.isdigit():
            raise ParamInvalid(f"parameter 'subscriptionId' must be an integer, got {wanted[:16]!r}")
        for stream in self.hub.users.of(self.sub):
            if stream.events and (wanted is None or stream.tag == int(wanted)):
                self.hub.users.remove(stream)
        return {}

    def _limits(self, ctx: AuthContext, wanted: bool) -> list[dict[str, Any]] | None:
        adm = ctx.admission
        return self._limit_doc(adm.limit, adm.used) if wanted and adm is not None else None

    @staticmethod
    def _limit_doc(limit: int | None, used: int | None) -> list[dict[str, Any]] | None:
        if limit is None:
            return []
        return [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": limit,
                 "count": used or 0}]  # fmt: skip


def install(app: FastAPI, state: AppState) -> None:
    app.include_router(router)


@router.websocket("/ws-api/v3")
async def ws_api(ws: WebSocket) -> None:
    state: AppState = ws.app.state.keyplane
    if state.hub is None:
        await ws.accept()
        await ws.close(1011, "this server runs without an exchange: no WebSocket API")
        return
    endpoints = getattr(ws.app.state, "ws_endpoints", None)
    if endpoints is None:
        endpoints = ws.app.state.ws_endpoints = Endpoints(ws.app)
    await ApiSession(ws, state.hub, state, endpoints, transport_of(ws)).run([])
