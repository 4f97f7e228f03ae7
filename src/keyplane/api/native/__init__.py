"""The native /v1 API, signed with RFC 9421 HTTP Message Signatures."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from keyplane.api.native import keys
from keyplane.services import Services


def install(app: FastAPI, services: Services, state: dict[str, Any]) -> None:
    """Add the /v1 routes (the signed-request middleware verifies them in the RFC 9421 dialect)."""
    app.include_router(keys.router)
