"""REST user-data streams, as Binance has them: ``POST``/``PUT``/``DELETE /api/v3/userDataStream``
manage a listenKey (keyplane.streams.listenkeys), then ``/ws/<listenKey>`` streams the account's
events (keyplane.api.streams).

These routes are Binance's USER_STREAM security type: the API key alone, no signature
(``RouteRule.key_only``), and the key must be one that may read its account's stream
(``Authenticator.check_stream``: status, expiry, IP allowlist, the read or trade scope).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from keyplane.api.binance.exchange_common import write
from keyplane.api.deps import exchange, signed_context
from keyplane.api.state import AppState, app_state
from keyplane.auth.routes import signed
from keyplane.exchange.params import mandatory
from keyplane.streams.listenkeys import ListenKeys

router = APIRouter(tags=["binance: user data stream"])


def _listen_keys(request: Request) -> ListenKeys:
    hub = app_state(request).hub
    assert hub is not None  # the routes exist only with an exchange
    return hub.users.listen_keys


async def _token(request: Request) -> str:
    """The ``listenKey`` parameter, from the query string or the form body."""
    params = dict(request.query_params)
    body = await request.body()
    if body:
        params.update(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
    return mandatory(params, "listenKey", max_len=64)


@router.post("/api/v3/userDataStream")
@signed(None, key_only=True)
async def create_listen_key(request: Request) -> JSONResponse:
    key = signed_context(request).key
    token = await write(exchange(request), _listen_keys(request).create, key.user_id, key.public_id)
    return JSONResponse({"listenKey": token})


@router.put("/api/v3/userDataStream")
@signed(None, key_only=True)
async def keep_alive_listen_key(request: Request) -> JSONResponse:
    key, token = signed_context(request).key, await _token(request)
    await write(exchange(request), _listen_keys(request).keep_alive, key.public_id, token)
    return JSONResponse({})


@router.delete("/api/v3/userDataStream")
@signed(None, key_only=True)
async def close_listen_key(request: Request) -> JSONResponse:
    key, token = signed_context(request).key, await _token(request)
    await write(exchange(request), _listen_keys(request).close, key.public_id, token)
    return JSONResponse({})


def install(app: FastAPI, state: AppState) -> None:
    if state.hub is not None:
        app.include_router(router)
