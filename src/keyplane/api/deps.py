"""FastAPI dependencies shared by routes."""

from __future__ import annotations

from fastapi import Request

from keyplane.auth.errors import AuthUnavailable
from keyplane.auth.pipeline import AuthContext
from keyplane.services import Services


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def auth(request: Request) -> AuthContext:
    """The verified request, as the signed-request middleware left it."""
    ctx: AuthContext | None = getattr(request.state, "auth", None)
    if ctx is None:
        # The route asks for a verified request but the middleware did not verify one: a wiring
        # mistake. Fail closed rather than serve it.
        raise AuthUnavailable("this endpoint is not wired for signed requests; refusing to serve it")
    return ctx
