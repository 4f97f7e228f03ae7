"""FastAPI dependencies shared by routes."""

from __future__ import annotations

from fastapi import Request

from keyplane.api.state import app_state
from keyplane.auth.errors import AuthUnavailable
from keyplane.auth.pipeline import AuthContext
from keyplane.services import Services

# Dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in its thread
# pool, which costs more than the whole signature check.


async def services(request: Request) -> Services:
    return app_state(request).services


def signed_context(request: Request) -> AuthContext:
    """The verified request, as the signed-request middleware left it.

    Hot signed routes call this directly (``ctx = signed_context(request)``) instead of declaring
    ``Depends(auth)``: FastAPI's dependency solving costs more per request than the signature check.
    """
    ctx: AuthContext | None = getattr(request.state, "auth", None)
    if ctx is None:
        # The route asks for a verified request but the middleware did not verify one: a wiring
        # mistake. Fail closed rather than serve it.
        raise AuthUnavailable("this endpoint is not wired for signed requests; refusing to serve it")
    return ctx


async def auth(request: Request) -> AuthContext:
    """``Depends(auth)``: the same as :func:`signed_context`, for routes off the hot path."""
    ctx: AuthContext | None = getattr(request.state, "auth", None)
    if ctx is None:
        # The route asks for a verified request but the middleware did not verify one: a wiring
        # mistake. Fail closed rather than serve it.
        raise AuthUnavailable("this endpoint is not wired for signed requests; refusing to serve it")
    return ctx
