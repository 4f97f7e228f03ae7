"""The exchange while the database makes it wait: another writer holds SQLite's write lock, or a
PostgreSQL row lock holds the market. Reads keep answering, nothing answers a spurious 503, and a
write that waited past its own recvWindow is refused (-1021) instead of applied late."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import pytest

from keyplane.accounts.stepup import StepUp
from kptest.clients import hmac_sign, now_ms
from kptest.exchange import ExchangeServer, exchange_server


@pytest.fixture
def xs(make_settings) -> Iterator[ExchangeServer]:
    # A staleness bound shorter than the lock waits below: a cache that goes stale because the
    # server stalled would fail these requests closed.
    settings = make_settings(key_cache_max_staleness_s=0.5, key_cache_poll_s=0.05)
    with exchange_server(settings, suffix="W") as server:
        yield server


def _trader(xs: ExchangeServer) -> tuple[int, str, str]:
    svc = xs.services
    user = svc.accounts.create_user(f"wait-{now_ms()}-{threading.get_ident()}@example.com", "a long enough password")
    assert svc.exchange is not None
    svc.exchange.wallet.credit(user.id, xs.a("USDT"), "100000")
    issued = svc.keys.create(user.id, scopes=("read", "trade"), step_up=StepUp.operator())
    assert issued.secret is not None
    # One signed read first, so the key is cached and a request's own lookup adds no delay.
    assert _signed("GET", xs, "/api/v3/account", issued.info.api_key, issued.secret, {}).status_code == 200
    return user.id, issued.info.api_key, issued.secret


def _signed(
    method: str, xs: ExchangeServer, path: str, key: str, secret: str, params: dict[str, Any]
) -> httpx.Response:
    payload = urlencode({**params, "timestamp": now_ms()})
    signed = f"{payload}&signature={hmac_sign(secret, payload)}"
    headers = {"X-MBX-APIKEY": key}
    if method == "POST":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return httpx.post(xs.url + path, content=signed, headers=headers, timeout=15)
    return httpx.request(method, f"{xs.url}{path}?{signed}", headers=headers, timeout=15)


def _order(xs: ExchangeServer, price: str = "100", **extra: Any) -> dict[str, Any]:
    return {"symbol": xs.a("BTC") + xs.a("USDT"), "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
            "price": price, "quantity": "1", **extra}  # fmt: skip


@contextmanager
def _market_locked(xs: ExchangeServer) -> Iterator[None]:
    """Another writer holds what an order needs: SQLite's write lock, or the market row on PostgreSQL."""
    svc = xs.services
    symbol = xs.a("BTC") + xs.a("USDT")
    if svc.db.is_sqlite:
        conn = sqlite3.connect(svc.settings.data_dir / "keyplane.db", isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE ex_markets SET trade_seq = trade_seq WHERE symbol = ?", (symbol,))
        try:
            yield
        finally:
            conn.execute("COMMIT")
            conn.close()
        return
    assert svc.settings.database_url is not None
    with psycopg.connect(svc.settings.database_url) as pg:
        pg.execute("SELECT trade_seq FROM ex_markets WHERE symbol = %s FOR UPDATE", (symbol,))
        yield
        pg.rollback()


def _in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        out["response"] = fn()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _orders_of(xs: ExchangeServer, user_id: int) -> list[tuple[Any, ...]]:
    ex = xs.services.exchange
    assert ex is not None
    return [(v.id, v.status) for v in ex.orders.recent_orders(user_id)]


def test_reads_answer_and_nothing_fails_closed_while_a_writer_holds_the_lock(xs):
    if not xs.services.db.is_sqlite:
        pytest.skip("SQLite's single write lock; PostgreSQL locks rows")
    uid, key, secret = _trader(xs)
    assert _signed("GET", xs, "/api/v3/account", key, secret, {}).status_code == 200
    hold_s = 1.5  # three times the key cache's staleness bound
    with _market_locked(xs):
        held_until = time.monotonic() + hold_s
        thread, out = _in_thread(lambda: _signed("POST", xs, "/api/v3/order", key, secret, _order(xs)))
        reads = 0
        while time.monotonic() < held_until:  # the order waits for the lock meanwhile
            started = time.monotonic()
            resp = _signed("GET", xs, "/api/v3/account", key, secret, {})
            assert resp.status_code == 200, resp.text
            assert time.monotonic() - started < 1.0, "a read waited for the write lock"
            reads += 1
        assert thread.is_alive(), "the order did not wait for the lock"
        assert reads >= 3
    thread.join(15)
    resp = out["response"]
    assert resp.status_code == 200, resp.text
    after = _signed("GET", xs, "/api/v3/openOrders", key, secret, {"symbol": xs.a("BTC") + xs.a("USDT")})
    assert after.status_code == 200, after.text
    assert [o["orderId"] for o in after.json()] == [resp.json()["orderId"]]
    assert _orders_of(xs, uid) == [(resp.json()["orderId"], "NEW")]


def test_an_order_that_waited_past_its_recv_window_is_not_placed(xs):
    uid, key, secret = _trader(xs)
    with _market_locked(xs):
        started = time.monotonic()
        thread, out = _in_thread(lambda: _signed("POST", xs, "/api/v3/order", key, secret, _order(xs, recvWindow=600)))
        while time.monotonic() - started < 1.2 and thread.is_alive():  # held well past the window
            thread.join(0.05)
        assert thread.is_alive(), "the order did not wait for the lock"
    thread.join(15)
    resp = out["response"]
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["code"] == -1021 and body["reason"] == "timestamp_outside_window", body
    assert "recvWindow" in body["msg"]
    assert _orders_of(xs, uid) == []
    ex = xs.services.exchange
    assert ex is not None
    assert ex.balances(uid)[xs.a("USDT")] == (100000 * 10**8, 0)


def test_a_cancel_that_waited_past_its_recv_window_leaves_the_order_open(xs):
    uid, key, secret = _trader(xs)
    placed = _signed("POST", xs, "/api/v3/order", key, secret, _order(xs))
    assert placed.status_code == 200, placed.text
    order_id = placed.json()["orderId"]
    params = {"symbol": xs.a("BTC") + xs.a("USDT"), "orderId": order_id, "recvWindow": 600}
    with _market_locked(xs):
        started = time.monotonic()
        thread, out = _in_thread(lambda: _signed("DELETE", xs, "/api/v3/order", key, secret, params))
        while time.monotonic() - started < 1.2 and thread.is_alive():
            thread.join(0.05)
        assert thread.is_alive(), "the cancel did not wait for the lock"
    thread.join(15)
    resp = out["response"]
    assert resp.status_code == 400 and resp.json()["code"] == -1021, resp.text
    assert _orders_of(xs, uid) == [(order_id, "NEW")]
