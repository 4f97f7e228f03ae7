"""The Binance-compatible REST surface (research/clients.md §1.4)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from keyplane.api.binance import account, capital, compat, general, lists, market, trading
from keyplane.api.state import AppState, periodic

# Each module's router is included straight into the app: every extra level of router nesting
# costs route-matching time on every request. Routes are matched in order, so the hottest router
# (order placement) comes first; no two routers share a path.
ROUTERS: tuple[APIRouter, ...] = (
    trading.router,
    lists.router,
    general.router,
    account.router,
    market.router,
    capital.router,
    compat.router,
)


def install(app: FastAPI, state: AppState) -> None:
    for router in ROUTERS:
        app.include_router(router)
    exchange = state.services.exchange
    if exchange is not None:
        # Withdrawals move along apply -> processing -> completed in the background.
        state.tasks.append(lambda: periodic(exchange.wallet.advance, 0.5, "withdrawal processing"))
