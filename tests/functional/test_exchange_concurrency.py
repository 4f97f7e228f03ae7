"""Several clients place crossing orders at once through two ``keyplane serve`` processes on one
PostgreSQL database: every order is matched exactly once under the per-market lock, trade ids stay
gapless, and the ledger invariants hold afterwards."""

from __future__ import annotations

import random
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text

from keyplane.accounts.stepup import StepUp
from keyplane.services import build_services
from kptest.backends import Backend
from kptest.exchange import check_invariants, clear_books, signed_request
from kptest.server import start_process

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LIMITS = {
    "KEYPLANE_RATE_LIMIT_PER_KEY": "100000/minute",
    "KEYPLANE_RATE_LIMIT_PER_IP": "100000/minute",
    "KEYPLANE_RATE_LIMIT_PUBLIC_PER_IP": "100000/minute",
    "KEYPLANE_LOCKOUT_FAILURES": "100000",
}
CLIENTS = 6
ORDERS_PER_CLIENT = 40


def test_crossing_orders_through_two_processes(tmp_path: Path, kp_backend: Backend, master_keys, make_settings):
    if not kp_backend.postgres:
        pytest.skip("two server processes on one database need the postgres backend")
    settings = make_settings()  # this test's database and Redis prefix, shared by both processes
    env = {
        **LIMITS,
        "KEYPLANE_DATABASE_URL": settings.database_url,
        "KEYPLANE_REDIS_URL": kp_backend.redis_url or "",
        "KEYPLANE_REDIS_PREFIX": settings.redis_prefix,
        "KEYPLANE_MASTER_KEYS": master_keys,
    }
    svc = build_services(settings)
    ex = svc.exchange
    clear_books(svc)
    accounts = []
    for _ in range(CLIENTS):
        user = svc.accounts.create_user(f"c{secrets.token_hex(6)}@example.com", "correct horse battery staple")
        ex.wallet.credit(user.id, "USDT", "100000")
        ex.wallet.credit(user.id, "BTC", "100")
        issued = svc.keys.create(user.id, scopes=("read", "trade"), step_up=StepUp.operator())
        accounts.append((issued.info.api_key, issued.secret))
    a = start_process({**env, "KEYPLANE_DATA_DIR": str(tmp_path / "a")}, tmp_path / "a.log")
    b = start_process({**env, "KEYPLANE_DATA_DIR": str(tmp_path / "b")}, tmp_path / "b.log")
    try:

        def client(i: int) -> list[str]:
            rng = random.Random(i)
            key, secret = accounts[i]
            statuses = []
            deadline = time.monotonic() + 60
            for n in range(ORDERS_PER_CLIENT):
                if time.monotonic() > deadline:
                    break
                node = (a, b)[(i + n) % 2]
                side = "BUY" if (i + n) % 2 else "SELL"
                price = f"{100 + rng.randint(-5, 5)}.00"
                kind = rng.random()
                if kind < 0.15:
                    params = {"symbol": "BTCUSDT", "side": side, "type": "MARKET", "quantity": "0.1"}
                else:
                    params = {"symbol": "BTCUSDT", "side": side, "type": "LIMIT", "timeInForce": "GTC",
                              "price": price, "quantity": f"0.{rng.randint(1, 9)}"}  # fmt: skip
                r = signed_request("POST", node.url, "/api/v3/order", key, secret, params)
                assert r.status_code in (200, 400), r.text
                statuses.append(r.json().get("status") or r.json().get("reason"))
                if r.status_code == 200 and r.json()["status"] in ("NEW", "PARTIALLY_FILLED") and rng.random() < 0.2:
                    c = signed_request("DELETE", node.url, "/api/v3/order", key, secret,
                                       {"symbol": "BTCUSDT", "orderId": r.json()["orderId"]})  # fmt: skip
                    assert c.status_code in (200, 400), c.text
            return statuses

        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [s for batch in pool.map(client, range(CLIENTS)) for s in batch]
    finally:
        a.stop()
        b.stop()
    assert results.count("FILLED") + results.count("PARTIALLY_FILLED") > 10, results
    assert "internal_error" not in results
    check_invariants(svc)
    with svc.db.read() as s:
        c = s.connection()
        count, top = c.execute(text("SELECT COUNT(*), MAX(id) FROM ex_trades WHERE symbol = 'BTCUSDT'")).one()
        seq = c.execute(text("SELECT trade_seq FROM ex_markets WHERE symbol = 'BTCUSDT'")).scalar_one()
        fills = c.execute(text("SELECT COUNT(*) FROM ex_fills WHERE symbol = 'BTCUSDT'")).scalar_one()
    assert count == top == seq, "trade ids must be gapless and unique under the market lock"
    assert fills == 2 * count
    clear_books(svc)
    svc.close()
