"""The inputs that once answered 500, each with the 4xx and the error it must get instead."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import text

from keyplane.accounts.stepup import StepUp
from kptest.backends import db_scope
from kptest.console import ConsoleClient
from kptest.exchange import ExchangeServer, exchange_server, signed_request

ETH_ADDR = "0x" + "ab" * 20


@pytest.fixture(scope=db_scope("module"))
def xs(make_settings) -> Iterator[ExchangeServer]:
    with exchange_server(make_settings()) as srv:
        yield srv


@pytest.fixture(scope=db_scope("module"))
def trader(xs):
    svc = xs.services
    user = svc.accounts.create_user("edges@example.com", "correct horse battery staple")
    svc.exchange.wallet.credit(user.id, "USDT", "1000")
    issued = svc.keys.create(
        user.id,
        scopes=("read", "trade", "withdraw"),
        restrictions=svc.keys.build_restrictions(ips=["127.0.0.1"]),
        step_up=StepUp.operator(),
    )
    return issued.info.api_key, issued.secret


SIGNED_CASES = [
    ("GET", "/api/v3/allOrders", {"symbol": "BTCUSDT", "limit": "²"}, -1100, "digits 0-9"),
    ("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": str(2**64)}, -1102, "between 0 and"),
    ("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT", "fromId": "9" * 30}, -1102, "30-digit"),
    ("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT", "startTime": "１２３"}, -1100, "digits 0-9"),
    ("GET", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "a\x00b"}, -1100, "NUL"),
    ("GET", "/sapi/v1/capital/withdraw/history", {"coin": "USDT\x00"}, -1100, "NUL"),
    ("POST", "/sapi/v1/capital/withdraw/apply", {"coin": "USDT", "address": ETH_ADDR, "amount": "9" * 20}, -1102,
     "too large"),
    ("POST", "/sapi/v1/capital/withdraw/apply", {"coin": "USDT", "address": ETH_ADDR, "amount": "20",
                                                 "addressTag": "t" * 65}, -1102, "at most 64 characters"),
    ("POST", "/api/v3/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quoteOrderQty": "1e999999999"},
     -1100, "Illegal characters"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "params", "code", "text"), SIGNED_CASES)
def test_signed_edges(xs, trader, method, path, params, code, text):
    r = signed_request(method, xs.url, path, *trader, params)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == code and text in r.json()["msg"], r.json()


@pytest.mark.parametrize("value", ["123", "null", "true", '[["BTCUSDT"]]', "[1]", "[" * 3000, "{}"])
@pytest.mark.parametrize("path", ["/api/v3/exchangeInfo", "/api/v3/ticker/24hr", "/api/v3/ticker/price"])
def test_symbols_must_be_an_array_of_symbols(xs, path, value):
    r = httpx.get(f"{xs.url}{path}?symbols={quote(value)}")
    assert r.status_code == 400, r.text
    assert r.json()["code"] == -1100 and "symbols" in r.json()["msg"]
    unknown = quote('["NOPEUSDT"]')
    r = httpx.get(f"{xs.url}{path}?symbols={unknown}")
    assert r.status_code == 400 and r.json()["code"] == -1121


def test_keep_alive_survives_a_rejection(xs):
    with httpx.Client(base_url=xs.url) as http:
        for _ in range(3):
            r = http.get("/api/v3/depth?symbol=BTCUSDT&limit=%C2%B2")
            assert r.status_code == 400 and r.json()["code"] == -1100
            assert r.headers.get("connection", "").lower() != "close"


@pytest.fixture
def console(server) -> Iterator[ConsoleClient]:
    client = ConsoleClient(server.url).ready()
    yield client
    client.close()


def _totp_failures(services, user_email: str) -> int:
    with services.db.read() as s:
        return int(
            s.connection()
            .execute(
                text(
                    "SELECT COUNT(*) FROM audit_events e JOIN users u ON u.id = e.user_id "
                    "WHERE u.email = :e AND e.event_type = 'account:totp:failed'"
                ),
                {"e": user_email},
            )
            .scalar_one()
        )


@pytest.mark.parametrize("code", ["１２３４５６", "١٢٣٤٥٦"])
def test_non_ascii_totp_digits_are_a_wrong_code_that_counts(console, services, code):
    before = _totp_failures(services, console.email)
    r = console.create_key(label="x", totp=code)  # a step-up
    assert r.status_code == 400 and r.json()["error"] == "totp_invalid", r.text
    r = console.login(code=code)  # the login's second step
    assert r.status_code == 400 and r.json()["error"] == "totp_invalid", r.text
    assert _totp_failures(services, console.email) == before + 2  # both audited (and so throttled)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("expires_at", "³d", "not a duration"),
        ("expires_at", "99999999999w", "longer than the maximum"),
        ("expires_at", "9999-12-31T23:59:59-12:00", "outside the accepted range"),
        ("max_notional", "1e999999999", "positive number such as"),
        ("label", "a\x00b", "NUL"),
        ("ips", ["10.0.0.1\x00"], "NUL"),
    ],
)
def test_key_inputs(console, field, value, message):
    r = console.create_key(**{field: value})
    assert r.status_code == 400, r.text
    assert message in r.json()["message"], r.json()


@pytest.mark.parametrize("route", ["signup", "login"])
def test_nul_at_signup_and_login(server, route):
    with httpx.Client(base_url=server.url) as http:
        token = http.get("/v1/account/csrf").json()["csrf_token"]
        r = http.post(
            f"/v1/account/{route}", json={"email": "a\x00@example.com", "password": "x" * 20},
            headers={"X-CSRF-Token": token},
        )  # fmt: skip
        assert r.status_code == 400 and r.json()["field"] == "email", r.text
        r = http.post(f"/{route}", data={"email": "a\x00@example.com", "password": "x" * 20, "csrf_token": token})
        assert r.status_code in (400, 401) and r.headers["content-type"].startswith("text/html"), r.text
