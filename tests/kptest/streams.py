"""What the market-stream tests share (tests/functional/test_streams_protocol.py, a raw WebSocket
client, and tests/e2e/test_streams_ccxtpro.py, ccxt.pro): a server on markets of its own, funded
trading accounts, and a test body run on an event loop of its own with an overall deadline."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Coroutine
from decimal import Decimal
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


def levels(rows: list[list[str]]) -> list[tuple[Decimal, Decimal]]:
    """A depth answer's or update's ``[price, qty]`` rows as Decimals."""
    return [(Decimal(p), Decimal(q)) for p, q, *_ in rows]


def apply_depth_update(book: dict[str, dict[Decimal, Decimal]], last: int, update: dict[str, Any]) -> int:
    """Apply one ``depthUpdate`` to a local ``book`` (``{"bids": {price: qty}, "asks": ...}``) kept
    since update id ``last``, as Binance tells clients to: an update wholly before ``last`` is
    skipped, the next one must straddle ``last + 1``, a quantity of 0 removes the level. Returns
    the book's update id after it."""
    if update["u"] <= last:
        return last  # from before the snapshot
    assert update["U"] <= last + 1 <= update["u"], (last, update)
    for side, key in (("bids", "b"), ("asks", "a")):
        for p, q in levels(update[key]):
            if q == 0:
                book[side].pop(p, None)
            else:
                book[side][p] = q
    return int(update["u"])
