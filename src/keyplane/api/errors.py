"""One place that renders errors.

The Binance-compatible surface (``/api/...``, ``/sapi/...``) answers ``{"code": <int>, "msg": ...}``
with the Binance code ccxt maps; the native API answers ``{"error": <code>, "message": ...}``. An
unexpected exception becomes a 500 with code ``internal_error`` and no stack trace in the response.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def install(app: FastAPI) -> None:
    @app.exception_handler(KeyplaneError)
    async def _keyplane(request: Request, exc: KeyplaneError) -> JSONResponse:
        return render(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        name = ".".join(loc) or "request"
        message = f"parameter {name!r}: {first.get('msg', 'is invalid')}"
        return render(InvalidInput(message, field=name), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        err = KeyplaneError(str(exc.detail))
        err.code, err.status = code, exc.status_code
        err.binance_code = -1000
        return render(err, request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        err = KeyplaneError("internal error; the request may not have been processed")
        err.code, err.status, err.binance_code = "internal_error", 500, -1000
        return render(err, request.url.path)
