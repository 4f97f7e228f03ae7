"""The Binance-compatible REST surface (research/clients.md §1.4)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI

from keyplane.api.binance import account, general
from keyplane.services import Services

router = APIRouter()
router.include_router(general.router)
router.include_router(account.router)


def install(app: FastAPI, services: Services, state: dict[str, Any]) -> None:
    app.include_router(router)
