"""The console wallet over real HTTP: balances, the demo faucet, a withdrawal behind TOTP, and the
withdrawal address allowlist (pages and the /v1/account/withdraw-addresses JSON API), which then
binds signed API withdrawals too."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from keyplane.accounts.stepup import StepUp
from kptest.backends import db_scope
from kptest.console import ConsoleClient, csrf_in
from kptest.exchange import ExchangeServer, check_invariants, exchange_server, signed_request

ETH_ADDR = "0x" + "ef" * 20
OTHER_ADDR = "0x" + "12" * 20


@pytest.fixture(scope=db_scope("module"))
def xs(make_settings) -> Iterator[ExchangeServer]:
    with exchange_server(make_settings(demo=True, totp_drift_steps=10, withdraw_step_s=0.1)) as srv:
        yield srv


@pytest.fixture
def console(xs) -> Iterator[ConsoleClient]:
    c = ConsoleClient(xs.url, drift=10).ready()
    yield c
    c.close()


def _page(console: ConsoleClient) -> str:
    r = console.http.get("/wallet")
    assert r.status_code == 200
    return r.text


def test_faucet_withdraw_and_allowlist(xs, console):
    html = _page(console)
    assert 'aria-current="page">Wallet' in html and "Get demo funds" in html
    token = csrf_in(html)
    r = console.http.post("/wallet/faucet", data={"csrf_token": token})
    assert r.status_code == 303
    html = _page(console)
    assert re.search(r"<td>USDT</td><td><code>10000\.00000000</code>", html)

    # A withdrawal needs a fresh code; a wrong one is shown next to the code field.
    form = {"csrf_token": token, "coin": "USDT", "address": ETH_ADDR, "amount": "50"}
    r = console.http.post("/wallet/withdraw", data={**form, "totp": "000000"})
    assert r.status_code == 400 and "wrong" in r.text
    r = console.http.post("/wallet/withdraw", data={**form, "address": "nope", "totp": console.code()})
    assert r.status_code == 400 and "is not a valid USDT" in r.text
    r = console.http.post("/wallet/withdraw", data={**form, "totp": console.code()})
    assert r.status_code == 303
    assert re.search(r"<td>USDT</td><td><code>9949\.00000000</code>", _page(console))

    # The allowlist: JSON API needs a code; once it has an entry, API-key withdrawals elsewhere fail.
    assert console.api("GET", "/v1/account/withdraw-addresses").json() == []
    r = console.api("POST", "/v1/account/withdraw-addresses", {"coin": "USDT", "address": ETH_ADDR, "totp": "123456"})
    assert r.status_code == 400 and r.json()["error"] == "totp_invalid"
    r = console.api("POST", "/v1/account/withdraw-addresses",
                    {"coin": "USDT", "address": ETH_ADDR, "label": "cold", "totp": console.code()})  # fmt: skip
    assert r.status_code == 201 and r.json()["address"] == ETH_ADDR
    entry = r.json()["id"]
    r = console.http.post(
        "/v1/account/withdraw-addresses", json={"coin": "USDT", "address": OTHER_ADDR, "totp": console.code()}
    )  # fmt: skip  (no CSRF header)
    assert r.status_code == 403

    user = xs.services.accounts.get_by_email(console.email)
    issued = xs.services.keys.create(
        user.id,
        scopes=("read", "withdraw"),
        restrictions=xs.services.keys.build_restrictions(ips=["127.0.0.1/32"]),
        step_up=StepUp.operator(),
    )
    key, secret = issued.info.api_key, issued.secret
    r = signed_request("POST", xs.url, "/sapi/v1/capital/withdraw/apply", key, secret,
                       {"coin": "USDT", "address": OTHER_ADDR, "amount": "20"})  # fmt: skip
    assert r.status_code == 400 and "not on this account's USDT withdrawal address allowlist" in r.json()["msg"]
    r = signed_request("POST", xs.url, "/sapi/v1/capital/withdraw/apply", key, secret,
                       {"coin": "USDT", "address": ETH_ADDR, "amount": "20"})  # fmt: skip
    assert r.status_code == 200

    html = _page(console)
    assert ETH_ADDR in html and "cold" in html
    r = console.http.post(f"/wallet/addresses/{entry}/delete", data={"csrf_token": token, "totp": console.code()})
    assert r.status_code == 303
    assert console.api("GET", "/v1/account/withdraw-addresses").json() == []
    check_invariants(xs.services)


def test_signed_api_keys_cannot_manage_the_allowlist(xs, console):
    r = console.http.get("/v1/account/withdraw-addresses", headers={"X-MBX-APIKEY": "kp_live_x"})
    assert r.status_code == 403 and r.json()["error"] == "api_key_not_allowed"


def test_faucet_is_off_outside_demo_mode(make_settings):
    with exchange_server(make_settings(totp_drift_steps=10)) as srv:
        c = ConsoleClient(srv.url, drift=10).ready()
        try:
            html = c.http.get("/wallet").text
            assert "Get demo funds" not in html
            r = c.http.post("/wallet/faucet", data={"csrf_token": csrf_in(html)})
            assert r.status_code == 404 and "only in demo mode" in r.text
        finally:
            c.close()
