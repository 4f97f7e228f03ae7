"""What the market-stream tests share (tests/functional/test_streams_protocol.py, a raw WebSocket
client, and tests/e2e/test_streams_ccxtpro.py, ccxt.pro): a server on markets of its own, funded
trading accounts, and a test body run on an event loop of its own with an overall deadline."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Coroutine
from typing import Any

from keyplane.accounts.service import UserInfo
from keyplane.accounts.stepup import StepUp
from keyplane.keys.schemas import IssuedKey
from keyplane.services import Services


def market_suffix(letter: str) -> str:
    """A suffix for a module's asset names (``<letter>`` and two random capitals): markets, tickers
    and trade ids of its own on a database other modules share (see kptest.exchange)."""
    return letter + "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(2))


def ws_url(http_url: str) -> str:
    """The WebSocket base URL of a server's ``http://`` one."""
    return "ws" + http_url[len("http") :]


def run(coro: Coroutine[Any, Any, Any], timeout: float = 45.0) -> Any:
    """Runs a test body on a loop of its own, with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def trading_account(svc: Services, **credit: str) -> tuple[UserInfo, IssuedKey]:
    """A new user credited with ``credit`` (asset name: amount), and an HMAC key of it that may
    read and trade."""
    assert svc.exchange is not None
    user = svc.accounts.create_user(f"w{secrets.token_hex(6)}@example.com", "correct horse battery staple")
    for asset, amount in credit.items():
        svc.exchange.wallet.credit(user.id, asset, amount)
    issued = svc.keys.create(
        user.id,
        scopes=("read", "trade"),
        restrictions=svc.keys.build_restrictions(),
        key_type="hmac",
        public_key=None,
        step_up=StepUp.operator(),
    )
    return user, issued
