"""One place that renders errors.

The Binance-compatible surface (``/api/...``, ``/sapi/...``) answers ``{"code": <int>, "msg": ...}``
with the Binance code ccxt maps; the native API answers ``{"error": <code>, "message": ...}``. An
unexpected exception becomes a 500 with code ``internal_error`` and no stack trace in the response:
:class:`LastResortMiddleware` answers it in the caller's dialect (an HTML page for a console page)
and keeps the connection open. No input should ever reach it: every parameter is checked at the
edge by ``keyplane.parsing``.
"""

from __future__ import annotations

import html
import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyplane.errors import InvalidInput, KeyplaneError

log = logging.getLogger("keyplane.api")

BINANCE_PREFIXES = ("/api/", "/sapi/")


def is_binance(path: str) -> bool:
    return path.startswith(BINANCE_PREFIXES)


def render(error: KeyplaneError, path: str) -> JSONResponse:
    headers = {"X-Keyplane-Error": error.code, **getattr(error, "headers", {})}
    if is_binance(path):
        body: dict[str, object] = {"code": error.binance_code, "msg": error.message, "reason": error.code}
    else:
        body = {"error": error.code, "message": error.message}
        field = getattr(error, "field", None)
        if field:
            body["field"] = field
    return JSONResponse(body, status_code=error.status, headers=headers)


def http_error(exc: StarletteHTTPException) -> KeyplaneError:
    """Starlette's HTTPException (an unknown path, a wrong method) as a KeyplaneError."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    err = KeyplaneError(str(exc.detail))
    err.code, err.status = code, exc.status_code
    err.headers = dict(exc.headers or {})  # type: ignore[attr-defined]
    return err


def validation_error(exc: RequestValidationError) -> InvalidInput:
    """FastAPI's validation failure as one InvalidInput naming the first field that failed."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header", "cookie")]
    name = ".".join(loc) or "request"
    # A shared parser's own message (a ValueError from keyplane.parsing) is already precise.
    reason = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
    message = reason if reason.startswith("parameter ") else f"parameter {name!r}: {reason}"
    return InvalidInput(message, field=name)


def install(app: FastAPI) -> None:
    @app.exception_handler(KeyplaneError)
    async def _keyplane(request: Request, exc: KeyplaneError) -> JSONResponse:
        return render(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return render(validation_error(exc), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return render(http_error(exc), request.url.path)


INTERNAL_MESSAGE = "internal error; the request may not have been processed"
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Something went wrong - keyplane</title></head>
<body><main><h1>Something went wrong</h1><p>{message}</p><p><a href="/keys">Back to your keys</a></p></main></body>
</html>
"""


def _internal_response(path: str) -> tuple[bytes, bytes]:
    """(content type, body) of the 500 answer for ``path``, in the surface's own shape."""
    if is_binance(path):
        doc: dict[str, object] = {"code": -1000, "msg": INTERNAL_MESSAGE, "reason": "internal_error"}
    elif path.startswith("/v1/") or path == "/healthz":
        doc = {"error": "internal_error", "message": INTERNAL_MESSAGE}
    else:
        page = _PAGE.format(message=html.escape(INTERNAL_MESSAGE[0].upper() + INTERNAL_MESSAGE[1:] + "."))
        return b"text/html; charset=utf-8", page.encode("utf-8")
    return b"application/json", json.dumps(doc).encode("utf-8")


class LastResortMiddleware:
    """Pure ASGI, outermost: an exception nothing else handled becomes a 500 in the caller's
    dialect, logged here with its traceback and never shown to the client. Starlette's own
    server-error handler would re-raise after answering, and the server then drops the client's
    keep-alive connection; this answers and returns, so the connection stays usable."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception:
            path = scope.get("path", "")
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            if started:  # part of an answer is out: nothing sound can follow it
                raise
            content_type, body = _internal_response(path)
            headers = [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"x-keyplane-error", b"internal_error"),
                (b"cache-control", b"no-store"),
            ]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": body})
