"""Concurrent order placements over real HTTP: on SQLite the server places them in shared
transactions (group commit). Every request still gets its own answer: accepted orders are all
there, a refused one gets its own Binance error and changes nothing, and the ledger balances."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from keyplane.accounts.stepup import StepUp
from kptest.backends import db_scope
from kptest.exchange import ExchangeServer, check_invariants, clear_books, exchange_server, signed_request

THREADS = 16


@pytest.fixture(scope=db_scope("module"))
def xs(make_settings) -> Iterator[ExchangeServer]:
    with exchange_server(make_settings(rate_limit_per_key="100000/minute", rate_limit_per_ip="100000/minute")) as srv:
        yield srv


def _account(xs, usdt: str) -> tuple[int, str, str]:
    svc = xs.services
    user = svc.accounts.create_user(f"g{secrets.token_hex(6)}@example.com", "correct horse battery staple")
    svc.exchange.wallet.credit(user.id, "USDT", usdt)
    issued = svc.keys.create(user.id, scopes=("read", "trade"), step_up=StepUp.operator())
    return user.id, issued.info.api_key, issued.secret


def test_concurrent_orders_each_get_their_own_outcome(xs):
    clear_books(xs.services)
    rich, poor = _account(xs, "100000"), _account(xs, "10")
    base = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01"}
    jobs = []
    for i in range(48):
        if i % 8 == 3:  # 200 USDT: more than the poor account has
            jobs.append(("poor", poor, {**base, "price": "20000"}))
        elif i % 8 == 5:  # the same client order id twice: one of the two is a duplicate
            jobs.append(("dup", rich, {**base, "price": "15000", "newClientOrderId": f"dup-{i}"}))
            jobs.append(("dup", rich, {**base, "price": "15001", "newClientOrderId": f"dup-{i}"}))
        else:
            jobs.append(("ok", rich, {**base, "price": f"{10000 + i}", "newClientOrderId": f"ok-{i}"}))

    def send(job):
        kind, (_, key, secret), params = job
        r = signed_request("POST", xs.url, "/api/v3/order", key, secret, params)
        return kind, params.get("newClientOrderId"), r.status_code, r.json()

    gc = xs.services.exchange.group_commit
    before = gc.orders
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(send, jobs))
    if xs.services.db.is_sqlite:  # every placement went through the group commit
        assert gc.orders - before == len(jobs)

    for kind, _, status, body in results:
        if kind == "ok":
            assert status == 200 and body["status"] == "NEW", body
        elif kind == "poor":
            assert status == 400 and body["code"] == -2010, body
            assert body["msg"] == "Account has insufficient balance for requested action."
    dup_outcomes: dict[str, list[int]] = {}
    for kind, cid, status, body in results:
        if kind == "dup":
            dup_outcomes.setdefault(cid, []).append(status)
            if status != 200:
                assert (body["code"], body["msg"]) == (-2010, "Duplicate order sent."), body
    assert all(sorted(s) == [200, 400] for s in dup_outcomes.values()), dup_outcomes

    accepted = sum(1 for _, _, status, _ in results if status == 200)
    with xs.services.db.read() as s:
        c = s.connection()
        placed = c.execute(
            text("SELECT COUNT(*) FROM ex_orders WHERE user_id IN (:a, :b)"), {"a": rich[0], "b": poor[0]}
        ).scalar_one()
    assert placed == accepted
    assert xs.services.exchange.balances(poor[0])["USDT"] == (10_00_000_000, 0)
    check_invariants(xs.services)
    clear_books(xs.services)
