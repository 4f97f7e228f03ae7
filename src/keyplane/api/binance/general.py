from __future__ import annotations

import time

from fastapi import APIRouter, Request

from keyplane.api.state import app_state

router = APIRouter(tags=["binance: general"])


@router.get("/api/v3/ping")
async def ping() -> dict[str, object]:
    return {}


@router.get("/api/v3/time")
async def server_time() -> dict[str, int]:
    return {"serverTime": int(time.time() * 1000)}


@router.get("/sapi/v1/system/status")
async def system_status(request: Request) -> dict[str, object]:
    """Binance's wallet status (public; ccxt's ``fetch_status``): 0 ``normal``, or 1
    ``system_maintenance`` when this server runs without the exchange (its markets, orders and
    wallet are then unavailable)."""
    if app_state(request).services.exchange is None:
        return {"status": 1, "msg": "system_maintenance"}
    return {"status": 0, "msg": "normal"}


@router.get("/sapi/v1/spot/delist-schedule")
async def spot_delist_schedule() -> list[dict[str, object]]:
    """Binance's schedule of spot markets to be delisted (``[{"delistTime": ms, "symbols": [...]}]``):
    empty, as every keyplane market trades until the markets file drops it. Trading bots read it
    before they trade (freqtrade's ``DelistFilter`` on Binance spot, at start-up and every
    iteration; a 404 stops them). ccxt signs the call (a ``sapi`` one); the answer is the same for
    every caller, so it is a public route and a signature on it is ignored, as in compat.py."""
    return []


# exchangeInfo lives with the rest of the market data in market.py.
