"""Helpers for the exchange tests: a server with its own exchange settings, funded users and keys,
hand-signed requests, and the ledger invariants every test can assert."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import text

from keyplane.exchange.errors import CancelRejected
from keyplane.exchange.orders import reservation
from keyplane.services import Services, build_services
from keyplane.settings import Settings
from kptest.clients import hmac_sign, now_ms
from kptest.server import ThreadServer, start_in_thread


@dataclass
class ExchangeServer:
    url: str
    services: Services
    thread: ThreadServer
    suffix: str = ""

    def a(self, name: str) -> str:
        """This server's name for a default asset (BTC, ETH, USDT)."""
        return name + self.suffix

    def sym(self, base: str, quote: str) -> str:
        """The ccxt symbol of a default market, e.g. ``BTC/USDT``."""
        return f"{self.a(base)}/{self.a(quote)}"


def unique_markets_file(path: Path, suffix: str) -> Path:
    """The default markets with every asset renamed ``<asset><suffix>``: tests that share one
    PostgreSQL database get markets (and tickers, klines, trade ids) of their own."""
    from keyplane.exchange.markets import DEFAULT_CONFIG

    assets = {name + suffix: entry for name, entry in DEFAULT_CONFIG["assets"].items()}
    markets = {
        m["base"] + suffix + m["quote"] + suffix: {**m, "base": m["base"] + suffix, "quote": m["quote"] + suffix}
        for m in DEFAULT_CONFIG["markets"].values()
    }
    path.write_text(json.dumps({"assets": assets, "markets": markets}))
    return path


@contextmanager
def exchange_server(settings: Settings, suffix: str = "") -> Iterator[ExchangeServer]:
    """A server on ``settings``; with a ``suffix``, on markets of its own (see unique_markets_file)."""
    from keyplane.api.app import create_app

    if suffix:
        path = unique_markets_file(settings.data_dir / "markets.json", suffix)
        settings = settings.model_copy(update={"markets_file": path})
    svc = build_services(settings)
    srv = start_in_thread(create_app(settings, svc))
    try:
        yield ExchangeServer(srv.url, svc, srv, suffix)
    finally:
        srv.stop()
        clear_books(svc)
        svc.close()


def clear_books(svc: Services) -> None:
    """Cancel every resting order and every armed conditional order, so that tests sharing a
    database start from empty books."""
    ex = svc.exchange
    assert ex is not None
    with svc.db.read() as s:
        rows = (
            s.connection()
            .execute(
                text(
                    "SELECT order_id, user_id, symbol FROM ex_book UNION SELECT order_id, user_id, symbol FROM ex_triggers"
                )
            )
            .all()
        )
    for order_id, user_id, symbol in rows:
        if symbol in ex.markets:  # other services' markets are theirs to clear
            # (the other leg of an order list already cancelled: this one went with it)
            with contextlib.suppress(CancelRejected):
                ex.orders.cancel(user_id, ex.markets[symbol], order_id, None)


def signed_request(
    method: str, base_url: str, path: str, api_key: str, secret: str, params: dict[str, Any] | None = None
) -> httpx.Response:
    """A Binance-style signed request (HMAC): query string for GET/DELETE, form body for POST."""
    payload = urlencode({**(params or {}), "timestamp": now_ms()})
    signed = f"{payload}&signature={hmac_sign(secret, payload)}"
    headers = {"X-MBX-APIKEY": api_key}
    if method in ("POST", "PUT"):
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return httpx.request(method, base_url + path, content=signed, headers=headers, timeout=10)
    return httpx.request(method, f"{base_url}{path}?{signed}", headers=headers, timeout=10)


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def check_invariants(svc: Services) -> None:
    """The ledger invariants, over the whole database (for this service's assets and markets):

    - every ledger reference balances per asset (double entry);
    - per asset, every account except ``external`` sums to deposits minus completed withdrawals;
    - each user's balance row equals the sum of that user's ledger entries;
    - no balance is negative;
    - each user's locked balance equals the reservations of their open orders (resting ones and
      armed conditional ones);
    - no book is crossed.
    """
    ex = svc.exchange
    assert ex is not None
    with svc.db.read() as s:
        c = s.connection()
        unbalanced = c.execute(
            text("SELECT ref, asset, SUM(amount) FROM ex_ledger GROUP BY ref, asset HAVING SUM(amount) <> 0")
        ).all()
        assert unbalanced == [], f"unbalanced ledger references: {unbalanced[:5]}"
        for asset in ex.assets:
            inside = c.execute(
                text("SELECT COALESCE(SUM(amount), 0) FROM ex_ledger WHERE asset = :a AND account <> 'external'"),
                {"a": asset},
            ).scalar_one()
            deposits = c.execute(
                text("SELECT COALESCE(SUM(amount), 0) FROM ex_deposits WHERE coin = :a"), {"a": asset}
            ).scalar_one()
            withdrawn = c.execute(
                text("SELECT COALESCE(SUM(amount), 0) FROM ex_withdrawals WHERE coin = :a AND status = 6"),
                {"a": asset},
            ).scalar_one()
            assert int(inside) == int(deposits) - int(withdrawn), asset
        ledger_by_user: dict[tuple[int, str, str], int] = {}
        for account, asset, total in c.execute(
            text(
                "SELECT account, asset, SUM(amount) FROM ex_ledger WHERE account LIKE 'user:%' GROUP BY account, asset"
            )
        ):
            _, uid, kind = account.split(":")
            ledger_by_user[(int(uid), asset, kind)] = int(total)
        held: dict[tuple[int, str], int] = {}
        for _oid, uid, symbol, side, price, remaining in c.execute(
            text("SELECT order_id, user_id, symbol, side, price, remaining FROM ex_book")
        ):
            if symbol not in ex.markets:
                continue
            m = ex.markets[symbol]
            asset = m.quote.name if side == "BUY" else m.base.name
            held[(uid, asset)] = held.get((uid, asset), 0) + reservation(m, side, price, remaining)
        for uid, symbol, side, amount in c.execute(text("SELECT user_id, symbol, side, held FROM ex_triggers")):
            if symbol not in ex.markets:
                continue
            m = ex.markets[symbol]
            asset = m.quote.name if side == "BUY" else m.base.name
            held[(uid, asset)] = held.get((uid, asset), 0) + amount
        for uid, asset, avail, locked in c.execute(text("SELECT user_id, asset, available, locked FROM ex_balances")):
            assert avail >= 0 and locked >= 0
            if asset not in ex.assets:
                continue
            assert ledger_by_user.get((uid, asset, "available"), 0) == avail, (uid, asset)
            assert ledger_by_user.get((uid, asset, "locked"), 0) == locked, (uid, asset)
            assert held.get((uid, asset), 0) == locked, (uid, asset, "locked vs open orders")
        for symbol in ex.markets:
            bid = c.execute(
                text("SELECT MAX(price) FROM ex_book WHERE symbol = :s AND side = 'BUY'"), {"s": symbol}
            ).scalar()
            ask = c.execute(
                text("SELECT MIN(price) FROM ex_book WHERE symbol = :s AND side = 'SELL'"), {"s": symbol}
            ).scalar()
            assert bid is None or ask is None or bid < ask, f"{symbol} book crossed: bid {bid} >= ask {ask}"


def D(x: Any) -> Decimal:
    return Decimal(str(x))


def funded_user(svc: Services, **credit: str) -> int:
    """A new user credited with ``credit`` (asset name: amount); its id."""
    assert svc.exchange is not None
    uid = svc.accounts.create_user(f"f{secrets.token_hex(6)}@example.com", "correct horse battery staple").id
    for asset, amount in credit.items():
        svc.exchange.wallet.credit(uid, asset, amount)
    return uid


def ccxt_trader(xs: ExchangeServer, **credit: str) -> Any:
    """ccxt's binance class (keyplane.client) on a new account of ``xs``, credited with ``credit``
    (asset: amount, before the server's suffix), with a key that may read and trade; markets loaded."""
    from keyplane.accounts.stepup import StepUp
    from keyplane.client import ccxt_exchange

    svc = xs.services
    uid = funded_user(svc, **{xs.a(asset): amount for asset, amount in credit.items()})
    issued = svc.keys.create(uid, scopes=("read", "trade"), step_up=StepUp.operator())
    ex = ccxt_exchange(xs.url, issued.info.api_key, issued.secret, timeout=10000)
    ex.load_markets()
    return ex
