from __future__ import annotations

import time

from fastapi import APIRouter

router = APIRouter(tags=["binance: general"])


@router.get("/api/v3/ping")
async def ping() -> dict[str, object]:
    return {}


@router.get("/api/v3/time")
async def server_time() -> dict[str, int]:
    return {"serverTime": int(time.time() * 1000)}


# exchangeInfo lives with the rest of the market data in market.py.
