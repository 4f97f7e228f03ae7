"""What routes of every surface reach from the request: the verified signed request, the exchange."""

from __future__ import annotations

from fastapi import Request

from keyplane.api.state import app_state
from keyplane.auth.errors import AuthUnavailable
from keyplane.auth.pipeline import AuthContext
from keyplane.errors import ServiceUnavailable
from keyplane.exchange.service import ExchangeService


def signed_context(request: Request) -> AuthContext:
    """The verified request, as the signed-request middleware left it.

    Signed routes call this directly (``ctx = signed_context(request)``) instead of declaring a
    ``Depends``: FastAPI's dependency solving costs more per request than the signature check.
    """
    ctx: AuthContext | None = getattr(request.state, "auth", None)
    if ctx is None:
        # The route asks for a verified request but the middleware did not verify one: a wiring
        # mistake. Fail closed rather than serve it.
        raise AuthUnavailable("this endpoint is not wired for signed requests; refusing to serve it")
    return ctx


def exchange(request: Request) -> ExchangeService:
    """The app's exchange; ServiceUnavailable when the server runs without one."""
    svc = app_state(request).services.exchange
    if svc is None:
        raise ServiceUnavailable("the exchange is not enabled on this server")
    return svc
