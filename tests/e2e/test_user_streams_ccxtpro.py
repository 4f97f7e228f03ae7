"""ccxt.pro's binance class, unchanged, built by ``keyplane.client.ccxt_pro_exchange`` with a key,
on the WebSocket API: ``create_order_ws`` / ``cancel_order_ws`` / ``fetch_balance_ws``, and the
user-data stream behind ``watch_orders``, ``watch_my_trades`` and ``watch_balance``, with HMAC and
Ed25519 keys; every figure checked against ccxt's REST answers for the same account.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Coroutine, Iterator
from typing import Any

import ccxt
import pytest

from keyplane.accounts.stepup import StepUp
from keyplane.client import ccxt_pro_exchange
from kptest.clients import ed25519_keypair
from kptest.exchange import D, ExchangeServer, check_invariants, clear_books, exchange_server

pytestmark = pytest.mark.e2e

WAIT_S = 10.0


@pytest.fixture(scope="module")
def xs(make_settings) -> Iterator[ExchangeServer]:
    suffix = "V" + "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(2))
    with exchange_server(make_settings(), suffix) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _empty_books(xs: ExchangeServer) -> Iterator[None]:
    clear_books(xs.services)
    yield
    clear_books(xs.services)


def run(coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def _pro(xs: ExchangeServer, *, ed25519: bool = False, **credit: str) -> Any:
    svc = xs.services
    assert svc.exchange is not None
    user = svc.accounts.create_user(f"q{secrets.token_hex(6)}@example.com", "correct horse battery staple")
    for asset, amount in credit.items():
        svc.exchange.wallet.credit(user.id, xs.a(asset), amount)
    private, public = ed25519_keypair() if ed25519 else (None, None)
    issued = svc.keys.create(
        user.id, scopes=("read", "trade"), restrictions=svc.keys.build_restrictions(),
        key_type="ed25519" if ed25519 else "hmac", public_key=public, step_up=StepUp.operator(),
    )  # fmt: skip
    return ccxt_pro_exchange(xs.url, issued.info.api_key, private or issued.secret, timeout=10000)


@pytest.mark.parametrize("ed25519", [False, True], ids=["hmac", "ed25519"])
def test_orders_over_the_websocket_api_and_their_events(xs: ExchangeServer, ed25519: bool) -> None:
    symbol = xs.sym("BTC", "USDT")

    async def body() -> None:
        maker = _pro(xs, ed25519=ed25519, BTC="1")
        taker = _pro(xs, ed25519=ed25519, USDT="100000")
        try:
            await maker.load_markets()
            await taker.load_markets()
            # Subscribe first: watch_* start the user-data stream on the WebSocket API connection.
            maker_orders = asyncio.ensure_future(maker.watch_orders(symbol))
            taker_trades = asyncio.ensure_future(taker.watch_my_trades(symbol))
            await asyncio.sleep(0)
            balance_before = await maker.fetch_balance()
            await _until_subscribed(maker)
            await _until_subscribed(taker)
            placed = await maker.create_order_ws(symbol, "limit", "sell", 0.4, 25000)
            assert placed["status"] == "open" and placed["amount"] == 0.4
            orders = await asyncio.wait_for(maker_orders, WAIT_S)
            assert orders[-1]["id"] == placed["id"] and orders[-1]["status"] == "open"
            # Watch for what the fill will change before it happens (a watch returns the next update).
            maker_update = asyncio.ensure_future(maker.watch_orders(symbol))
            maker_balance = asyncio.ensure_future(maker.watch_balance())
            await asyncio.sleep(0)
            filled = await taker.create_order_ws(symbol, "limit", "buy", 0.4, 25000)
            assert filled["status"] == "closed" and filled["filled"] == 0.4
            trades = await asyncio.wait_for(taker_trades, WAIT_S)
            assert trades[-1]["order"] == filled["id"] and trades[-1]["amount"] == 0.4
            assert trades[-1]["price"] == 25000 and trades[-1]["takerOrMaker"] == "taker"
            rest_trades = await taker.fetch_my_trades(symbol)
            assert trades[-1]["id"] == rest_trades[-1]["id"]
            update = await asyncio.wait_for(maker_update, WAIT_S)
            assert update[-1]["status"] == "closed" and update[-1]["filled"] == 0.4
            balance = await asyncio.wait_for(maker_balance, WAIT_S)
            rest_balance = await maker.fetch_balance()
            base, quote = xs.a("BTC"), xs.a("USDT")
            assert (
                D(balance[base]["free"]) == D(rest_balance[base]["free"]) == D(balance_before[base]["free"]) - D("0.4")
            )
            assert D(balance[quote]["free"]) == D(rest_balance[quote]["free"])
            # An order placed and cancelled over the WebSocket API.
            resting = await maker.create_order_ws(symbol, "limit", "sell", 0.1, 90000)
            cancelled = await maker.cancel_order_ws(resting["id"], symbol)
            assert cancelled["status"] == "canceled"
            with pytest.raises(ccxt.OrderNotFound):
                await maker.cancel_order_ws(resting["id"], symbol)
            with pytest.raises(ccxt.InsufficientFunds):
                await taker.create_order_ws(symbol, "limit", "buy", 100, 90000)
        finally:
            await maker.close()
            await taker.close()

    run(body())
    check_invariants(xs.services)


async def _until_subscribed(ex: Any) -> None:
    """The user-data stream's subscription is acknowledged once ccxt has it in its client's
    subscriptions and no subscribe call is pending."""
    url = ex.urls["api"]["ws"]["ws-api"]["spot"]
    for _ in range(200):
        client = ex.clients.get(url)
        if (
            client is not None
            and client.subscriptions.get("spot")
            and not any(k.startswith("authenticate:signature") for k in client.futures)
        ):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the user-data stream subscription was not acknowledged")
