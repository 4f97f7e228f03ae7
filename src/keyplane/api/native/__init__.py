"""The native /v1 API, signed with RFC 9421 HTTP Message Signatures."""

from __future__ import annotations

from fastapi import FastAPI

from keyplane.api.native import keys
from keyplane.api.state import AppState


def install(app: FastAPI, state: AppState) -> None:
    """Add the /v1 routes (the signed-request middleware verifies them in the RFC 9421 dialect)."""
    app.include_router(keys.router)
