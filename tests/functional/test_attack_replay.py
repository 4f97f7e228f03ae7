"""Attacks on the Binance replay guard: respellings, moved and split signatures, read-to-write
reuse, limits that must leave no token, and several nodes sharing Redis."""

from __future__ import annotations

import base64
import secrets
import time
from urllib.parse import quote, urlencode

import httpx
import pytest

from keyplane.accounts.stepup import StepUp
from kptest.clients import ed25519_keypair, hmac_sign, now_ms
from kptest.native import own_server, unique_prefix

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _order(ts: int, **extra: object) -> str:
    return urlencode(
        {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
         "price": "10000", **extra, "timestamp": ts, "recvWindow": 20000}
    )  # fmt: skip


def _post(base: str, key: str, body: str = "", query: str = "", path: str = "/api/v3/order/test") -> httpx.Response:
    url = base + path + (f"?{query}" if query else "")
    return httpx.post(url, content=body, headers={"X-MBX-APIKEY": key, **FORM}, timeout=10)


def _refused(resp: httpx.Response, *reasons: str) -> None:
    assert resp.status_code in (400, 401), resp.text
    assert resp.json()["reason"] in reasons, resp.text


def _ed_sign(priv_pem: str, payload: str) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(priv_pem.encode(), None).sign(payload.encode())  # type: ignore[union-attr]


def _ed_body_with_plus_and_slash(priv: str) -> tuple[str, bytes]:
    """A body whose signature's base64 holds '+', '/' and a last character with unused bits."""
    for i in range(200):
        body = _order(now_ms(), newClientOrderId=f"spell{i}")
        raw = _ed_sign(priv, body)
        text = base64.b64encode(raw).decode()
        if "+" in text and "/" in text:
            return body, raw
    raise AssertionError("no signature with both '+' and '/'")


def _noncanonical(text: str) -> str:
    """The same 64 bytes with non-zero unused bits in the last base64 character."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = text[-3]  # 64 bytes -> 86 characters + "=="; the 86th carries 2 bits and 4 unused ones
    return text[:-3] + alphabet[alphabet.index(last) | 1] + "=="


def test_every_spelling_of_an_ed25519_signature_is_one_request(server, make_key):
    priv, pub = ed25519_keypair()
    k = make_key(scopes=("read", "trade"), key_type="ed25519", public_key=pub)
    body, raw = _ed_body_with_plus_and_slash(priv)
    b64 = base64.b64encode(raw).decode()
    plus_only = b64.replace("+", "%2B")  # '/' and '=' left literal: a documented spelling
    first = _post(server.url, k.info.api_key, f"{body}&signature={plus_only}")
    assert first.status_code == 200, first.text
    full = quote(b64, safe="")
    accepted_spellings = [
        full,
        full.replace("%2B", "%2b").replace("%2F", "%2f").replace("%3D", "%3d"),
        full.replace("%2F", "/"),
        full.replace("%3D", "="),
        b64.replace("+", "%2b"),
        "".join(("%2B" if c == "+" else "%2f" if c == "/" else c) for c in b64),
    ]
    for spelling in accepted_spellings:
        _refused(_post(server.url, k.info.api_key, f"{body}&signature={spelling}"), "replayed")
        # and moved into the query string
        _refused(_post(server.url, k.info.api_key, body, query=f"signature={spelling}"), "replayed")
    refused_spellings = [
        b64,  # raw '+' (a form decoder reads a space)
        base64.urlsafe_b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        quote(b64.rstrip("="), safe=""),
        quote(_noncanonical(b64), safe=""),
        full.replace("%2B", "%252B"),
        full.replace("%3D%3D", "%3D"),
        full + "%3D",
        full.replace("%2F", "%2F%0A", 1),
        quote(b64[:40] + "\n" + b64[40:], safe=""),
        b64.replace("+", " "),
        full.replace("%2B", "%2B%00", 1),
    ]
    for spelling in refused_spellings:
        r = _post(server.url, k.info.api_key, f"{body}&signature={spelling}")
        _refused(r, "signature_encoding", "replayed", "param_invalid", "signature_invalid")


def test_hmac_hex_case_and_placement_are_one_request(server, make_key):
    k = make_key(scopes=("read", "trade"))
    body = _order(now_ms())
    sig = hmac_sign(k.secret, body)
    assert _post(server.url, k.info.api_key, f"{body}&signature={sig}").status_code == 200
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(sig))
    for spelling in (sig.upper(), mixed):
        _refused(_post(server.url, k.info.api_key, f"{body}&signature={spelling}"), "replayed")
    # Signature moved to the query; the signed string split between the query and the body (the
    # payload is the query followed by the body, so it still verifies); signature first in the body.
    half = len(body) // 2
    for query, form in (
        (f"signature={sig}", body),
        (body, f"signature={sig}"),
        (f"{body}&signature={sig}", ""),
        (body[:half], f"{body[half:]}&signature={sig}"),
        (f"{body[:half]}", f"signature={sig}&{body[half:]}"),
        ("", f"signature={sig}&{body}"),
    ):
        _refused(_post(server.url, k.info.api_key, form, query=query), "replayed", "signature_invalid")
    # The same signature with another key's header is never accepted.
    other = make_key(scopes=("read", "trade"))
    _refused(_post(server.url, other.info.api_key, f"{body}&signature={sig}"), "signature_invalid")
    # The same request on the real order route (another state-changing route) is a replay too.
    _refused(_post(server.url, k.info.api_key, f"{body}&signature={sig}", path="/api/v3/order"), "replayed")


def test_tampering_around_the_signature_is_refused(server, make_key):
    k = make_key(scopes=("read", "trade"))
    body = _order(now_ms())
    sig = hmac_sign(k.secret, body)
    cases = [
        (f"{body}&signature={sig}&quantity=1", ("signature_invalid", "duplicate_parameter")),
        (f"{body}&signature={sig}&evil=1", ("signature_invalid",)),
        (f"{body}&signature={sig}&signature={sig}", ("duplicate_parameter",)),
        (f"{body}&timestamp={now_ms()}&signature={sig}", ("duplicate_parameter", "signature_invalid")),
        (f"{body.replace('BTCUSDT', 'BTC%55SDT')}&signature={sig}", ("signature_invalid",)),
        (f"{body.replace('quantity=0.01', 'quantity=0.10')}&signature={sig}", ("signature_invalid",)),
        ("&".join(reversed(body.split("&"))) + f"&signature={sig}", ("signature_invalid",)),
        (f"{body}&%73ignature={sig}", ("signature_missing",)),
        (f"{body}&xsignature={sig}", ("signature_missing",)),
    ]
    for form, reasons in cases:
        _refused(_post(server.url, k.info.api_key, form), *reasons)
    # None of those spent the token: the untouched request is accepted, once.
    assert _post(server.url, k.info.api_key, f"{body}&signature={sig}").status_code == 200
    _refused(_post(server.url, k.info.api_key, f"{body}&signature={sig}"), "replayed")


def test_a_reads_signature_never_places_or_cancels(server, make_key):
    """A GET carrying order parameters (ignored by the read) must not become POST /order or DELETE."""
    k = make_key(scopes=("read", "trade"))
    query = _order(now_ms(), orderId=424242)
    sig = hmac_sign(k.secret, query)
    h = {"X-MBX-APIKEY": k.info.api_key}
    url = f"{server.url}/api/v3/order?{query}&signature={sig}"
    r = httpx.get(url, headers=h)
    assert r.status_code != 401, r.text
    assert httpx.get(url, headers=h).json().get("reason") != "replayed"  # a read may repeat
    for method in ("POST", "DELETE", "PUT", "PATCH"):
        resp = httpx.request(method, url, headers=h)
        assert resp.status_code != 200, (method, resp.text)
        if resp.status_code not in (404, 405):
            _refused(resp, "replayed")
    for path in ("/api/v3/openOrders", "/api/v3/allOrders", "/api/v3/myTrades", "/api/v3/account",
                 "/sapi/v1/capital/withdraw/history", "/sapi/v1/account/apiRestrictions"):  # fmt: skip
        _refused(httpx.get(f"{server.url}{path}?{query}&signature={sig}", headers=h), "replayed")
    # Spelled in upper case, on the order route as a POST with the query moved into the body.
    _refused(_post(server.url, k.info.api_key, f"{query}&signature={sig.upper()}", path="/api/v3/order"), "replayed")


def test_a_rate_limited_order_leaves_no_token_and_is_placed_once(make_settings):
    with own_server(make_settings, rate_limit_per_key="2/second", redis_prefix=unique_prefix()) as (srv, svc):
        owner = svc.accounts.create_user(f"rl-{secrets.token_hex(4)}@example.com", "a long enough password")
        k = svc.keys.create(owner.id, scopes=("read", "trade"), step_up=StepUp.operator())
        body = _order(now_ms())
        form = f"{body}&signature={hmac_sign(k.secret, body)}"
        statuses = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            # Spend this second's budget with other requests, then send the order.
            for i in range(3):
                other = _order(now_ms(), newClientOrderId=f"filler{i}{secrets.token_hex(2)}")
                _post(srv.url, k.info.api_key, f"{other}&signature={hmac_sign(k.secret, other)}")
            r = _post(srv.url, k.info.api_key, form)
            statuses.append(r.json().get("reason") if r.status_code != 200 else 200)
            if r.status_code == 200:
                break
            assert r.status_code == 429, r.text
        assert "rate_limited" in statuses, f"the limiter never refused the order: {statuses}"
        assert statuses and statuses[-1] == 200, statuses
        assert "replayed" not in statuses, statuses
        # Once accepted, never again, whatever the limiter says.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            r = _post(srv.url, k.info.api_key, form)
            if r.status_code != 429:
                break
        _refused(r, "replayed")


def test_scope_missing_then_granted_is_accepted_once(server, services, make_key):
    k = make_key(scopes=("read",))
    body = _order(now_ms())
    form = f"{body}&signature={hmac_sign(k.secret, body)}"
    _refused(_post(server.url, k.info.api_key, form), "scope_missing")
    services.keys.update(k.info.api_key, scopes=["read", "trade"], step_up=StepUp.operator())
    deadline = time.monotonic() + 5
    while True:
        r = _post(server.url, k.info.api_key, form)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        assert r.json()["reason"] == "scope_missing", r.text
    assert r.status_code == 200, r.text
    _refused(_post(server.url, k.info.api_key, form), "replayed")


def test_two_nodes_share_the_replay_guard(make_settings, kp_backend):
    if not kp_backend.postgres:
        pytest.skip("several nodes need Redis (postgres backend)")
    prefix = unique_prefix()
    with (
        own_server(make_settings, redis_prefix=prefix) as (a, svc),
        # Node B on node A's database (every make_settings() call has a database of its own).
        own_server(make_settings, redis_prefix=prefix, database_url=svc.settings.database_url) as (b, _),
    ):
        owner = svc.accounts.create_user(f"nodes-{secrets.token_hex(4)}@example.com", "a long enough password")
        k = svc.keys.create(owner.id, scopes=("read", "trade"), step_up=StepUp.operator())
        body = _order(now_ms())
        sig = hmac_sign(k.secret, body)
        assert _post(a.url, k.info.api_key, f"{body}&signature={sig}").status_code == 200
        _refused(_post(b.url, k.info.api_key, f"{body}&signature={sig.upper()}"), "replayed")
        _refused(_post(b.url, k.info.api_key, body, query=f"signature={sig}"), "replayed")
        # A read on node A; its signature as a cancel on node B.
        q = urlencode({"symbol": "BTCUSDT", "orderId": 77, "timestamp": now_ms()})
        qs = f"{q}&signature={hmac_sign(k.secret, q)}"
        h = {"X-MBX-APIKEY": k.info.api_key}
        assert httpx.get(f"{a.url}/api/v3/order?{qs}", headers=h).status_code != 401
        assert httpx.get(f"{b.url}/api/v3/order?{qs}", headers=h).json().get("reason") != "replayed"
        _refused(httpx.delete(f"{b.url}/api/v3/order?{qs}", headers=h), "replayed")
        _refused(httpx.get(f"{b.url}/api/v3/openOrders?{qs}", headers=h), "replayed")
