"""Property-based fuzzing of the console: its HTML forms and the ``/v1/account`` JSON routes, with a
logged-in session and its CSRF token, plus sign-up and log-in without one. Never a 5xx; JSON errors
are ``{"error", "message"}``; a page answers with a page (or a redirect), never with a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kptest.backends import db_scope
from kptest.console import ConsoleClient
from kptest.server import ThreadServer

HOSTILE = [
    "", "\x00", "a\x00b", "１２３４５６", "١٢٣٤٥٦", "²", "³d", "99999999999w", "9999-12-31T23:59:59-12:00",
    "1e999999999", "NaN", "-1", str(2**64), "x" * 5000, "\u202e", "\r\n", "0001-01-01T00:00:00+14:00",
    "2027-02-30", "30d", "24h", "0", "10.0.0.0/8", "BTCUSDT", "read", "withdraw", "hmac", "ed25519",
    "-----BEGIN PUBLIC KEY-----\n\x00\n-----END PUBLIC KEY-----", "0x" + "ab" * 20, "ETH", "USDT",
]  # fmt: skip
TEXT = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=60), st.text(st.characters(codec="utf-8"), max_size=30))
JSON_VALUE = st.one_of(TEXT, st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                       st.lists(TEXT, max_size=5), st.lists(st.lists(TEXT, max_size=2), max_size=2))  # fmt: skip

# (method, path, fields); {key} is an API key of the account
JSON_ROUTES = [
    ("POST", "/v1/account/keys", ["label", "scopes", "ips", "symbols", "max_notional", "daily_withdraw_cap",
                                  "expires_at", "type", "public_key", "totp"]),
    ("PATCH", "/v1/account/keys/{key}", ["label", "scopes", "ips", "symbols", "max_notional", "daily_withdraw_cap",
                                         "expires_at", "totp"]),
    ("POST", "/v1/account/keys/{key}/rotate", ["grace", "public_key", "totp"]),
    ("POST", "/v1/account/keys/{key}/enable", ["totp"]),
    ("POST", "/v1/account/keys/revoke-all", ["confirm", "totp"]),
    ("POST", "/v1/account/recovery-codes", ["totp"]),
    ("POST", "/v1/account/withdraw-addresses", ["coin", "address", "label", "totp"]),
    ("GET", "/v1/account/activity", ["before", "limit", "api_key"]),
    ("GET", "/v1/account/keys/{text}", []),
]  # fmt: skip
FORM_ROUTES = [
    ("/keys/new", ["label", "scopes", "ips", "symbols", "max_notional", "daily_withdraw_cap", "expires_at",
                   "key_type", "public_key", "totp"]),
    ("/keys/{key}/edit", ["label", "scopes", "ips", "symbols", "max_notional", "daily_withdraw_cap", "expires_at",
                          "totp"]),
    ("/keys/{key}/rotate", ["grace", "public_key", "rotate_totp"]),
    ("/keys/{key}/enable", ["enable_totp"]),
    ("/keys/revoke-all", ["confirm", "totp"]),
    ("/security/recovery-codes", ["totp"]),
    ("/wallet/withdraw", ["coin", "address", "amount", "totp"]),
    ("/wallet/addresses", ["coin", "address", "label", "totp"]),
    ("/wallet/addresses/{text}/delete", ["totp"]),
]  # fmt: skip
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8", "Content-Type": "application/x-www-form-urlencoded"}


def _form_body(form: dict[str, str]) -> bytes:
    # As a browser encodes a form; a lone surrogate goes as the bytes a careless client sends.
    return urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in form.items()}).encode("ascii")


_SETTINGS = settings(max_examples=80, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip


@pytest.fixture(scope=db_scope("module"))
def user(server: ThreadServer) -> Iterator[dict[str, Any]]:
    client = ConsoleClient(server.url).ready()
    r = client.create_key(label="fuzz", scopes=["read"])
    assert r.status_code == 201, r.text
    yield {"client": client, "key": r.json()["api_key"]}
    client.close()


def _path(template: str, key: str, text: str) -> str:
    from urllib.parse import quote

    return template.replace("{key}", key).replace("{text}", quote(text.encode("utf-8", "surrogatepass"), safe=""))


def _json_error(r: httpx.Response, where: str) -> None:
    event(f"HTTP {r.status_code}")
    assert r.status_code < 500, f"{where}: {r.status_code} {r.text[:300]}"
    assert r.headers.get("connection", "").lower() != "close", f"{where}: connection dropped"
    if r.status_code >= 400:
        body = r.json()
        assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), f"{where}: {body}"


def _page(r: httpx.Response, where: str) -> None:
    event(f"HTTP {r.status_code}")
    assert r.status_code < 500, f"{where}: {r.status_code} {r.text[:300]}"
    assert r.headers.get("connection", "").lower() != "close", f"{where}: connection dropped"
    if r.status_code not in (302, 303):
        assert r.headers["content-type"].startswith("text/html"), f"{where}: {r.status_code} {r.text[:200]}"


@_SETTINGS
@given(data=st.data())
def test_account_json_routes(user, data):
    client: ConsoleClient = user["client"]
    method, template, names = data.draw(st.sampled_from(JSON_ROUTES), label="route")
    body = data.draw(st.fixed_dictionaries({}, optional=dict.fromkeys(names, JSON_VALUE)), label="body")
    path = _path(template, user["key"], data.draw(TEXT, label="path text"))
    if method == "GET":
        r = client.api("GET", path, params={k: str(v) for k, v in body.items()})
    else:
        r = client.api(method, path, body)
    _json_error(r, f"{method} {path} {body!r}")


@_SETTINGS
@given(data=st.data())
def test_console_forms(user, data):
    client: ConsoleClient = user["client"]
    template, names = data.draw(st.sampled_from(FORM_ROUTES), label="route")
    form = data.draw(st.fixed_dictionaries({}, optional=dict.fromkeys(names, TEXT)), label="form")
    path = _path(template, user["key"], data.draw(TEXT, label="path text"))
    r = client.http.post(path, content=_form_body({**form, "csrf_token": client.csrf}), headers=BROWSER)
    _page(r, f"POST {path} {form!r}")


@settings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(email=TEXT, password=TEXT, json_route=st.booleans(), signup=st.booleans())
def test_signup_and_login_without_a_session(server, email, password, json_route, signup):
    with httpx.Client(base_url=server.url, timeout=20) as http:
        token = http.get("/v1/account/csrf").json()["csrf_token"]
        action = "signup" if signup else "login"
        if json_route:
            r = http.post(f"/v1/account/{action}", json={"email": email, "password": password},
                          headers={"X-CSRF-Token": token})  # fmt: skip
            _json_error(r, f"{action} {email!r}")
        else:
            form = {"email": email, "password": password, "csrf_token": token}
            r = http.post(f"/{action}", content=_form_body(form), headers=BROWSER)
            _page(r, f"/{action} {email!r}")
