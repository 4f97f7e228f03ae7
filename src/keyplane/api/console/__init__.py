"""The web console and its JSON twin under /v1/account, authenticated by session cookie + CSRF."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from keyplane.services import Services


def install(app: FastAPI, services: Services, state: dict[str, Any]) -> None:
    """Add this surface's routes to the app (its routers are included here as they are built)."""
