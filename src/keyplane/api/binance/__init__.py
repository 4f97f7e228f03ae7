"""The Binance-compatible REST surface (research/clients.md §1.4)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, FastAPI

from keyplane.api.binance import account, capital, general, market, trading
from keyplane.api.state import AppState
from keyplane.exchange.service import ExchangeService

log = logging.getLogger("keyplane.exchange")

# Each module's router is included straight into the app: every extra level of router nesting
# costs route-matching time on every request. Routes are matched in order, so the hottest router
# (order placement) comes first; no two routers share a path.
ROUTERS: tuple[APIRouter, ...] = (trading.router, general.router, account.router, market.router, capital.router)


def install(app: FastAPI, state: AppState) -> None:
    for router in ROUTERS:
        app.include_router(router)
    exchange = state.services.exchange
    if exchange is not None:
        state.tasks.append(lambda: advance_withdrawals(exchange))


async def advance_withdrawals(ex: ExchangeService | None, interval_s: float = 0.5) -> None:
    """Move withdrawals along apply -> processing -> completed, in the background."""
    while ex is not None:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(ex.wallet.advance)
        except Exception as e:  # keep the loop alive; the next round retries
            log.warning("withdrawal processing failed: %s", type(e).__name__)
