"""The replay guard over real HTTP (in-process on SQLite, Redis on the postgres backend)."""

from __future__ import annotations

import base64
import secrets
from urllib.parse import unquote, urlencode

import httpx

from keyplane.accounts.stepup import StepUp
from keyplane.client.httpsig import sign_request
from kptest.clients import ed25519_keypair, ed25519_sign, hmac_sign, now_ms, signed_get


def test_an_httpsig_nonce_is_accepted_once_per_key(server, make_key):
    k = make_key()
    url = server.url + "/v1/keys/self?a=1"
    headers = sign_request("GET", url, {}, key_id=k.info.api_key, secret=k.secret)
    first = httpx.get(url, headers=headers)
    assert first.status_code == 200, first.text
    again = httpx.get(url, headers=headers)
    assert again.status_code == 401
    assert again.json()["error"] == "nonce_reused"

    # The same nonce in a freshly signed request (another query) is still a reused nonce...
    nonce = secrets.token_urlsafe(12)
    url2 = server.url + "/v1/keys/self?a=2"
    h1 = sign_request("GET", url, {}, key_id=k.info.api_key, secret=k.secret, nonce=nonce)
    h2 = sign_request("GET", url2, {}, key_id=k.info.api_key, secret=k.secret, nonce=nonce)
    assert httpx.get(url, headers=h1).status_code == 200
    assert httpx.get(url2, headers=h2).json()["error"] == "nonce_reused"
    # ...but it is per key: another key may use it.
    other = make_key()
    h3 = sign_request("GET", url, {}, key_id=other.info.api_key, secret=other.secret, nonce=nonce)
    assert httpx.get(url, headers=h3).status_code == 200


def _order_test(base: str, key: str, secret: str, ts: int) -> httpx.Response:
    body = urlencode(
        {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
         "price": "10000", "timestamp": ts, "recvWindow": 5000}
    )  # fmt: skip
    sig = hmac_sign(secret, body)
    return httpx.post(
        base + "/api/v3/order/test",
        content=f"{body}&signature={sig}",
        headers={"X-MBX-APIKEY": key, "Content-Type": "application/x-www-form-urlencoded"},
    )


def test_binance_state_changing_signature_is_accepted_once(server, make_key):
    k = make_key(scopes=("read", "trade"))
    ts = now_ms()
    first = _order_test(server.url, k.info.api_key, k.secret, ts)
    assert first.headers.get("X-Keyplane-Error") != "replayed", first.text
    assert first.status_code != 401, first.text
    again = _order_test(server.url, k.info.api_key, k.secret, ts)
    assert again.status_code == 401, again.text
    assert again.json()["reason"] == "replayed"
    assert again.json()["code"] == -1022
    # A new timestamp is a new signature: accepted.
    fresh = _order_test(server.url, k.info.api_key, k.secret, now_ms() + 1)
    assert fresh.headers.get("X-Keyplane-Error") != "replayed"


def test_binance_reads_may_repeat_within_the_window(server, make_key):
    """GET is not state-changing: the same signed read may be retried (ccxt does)."""
    k = make_key()
    ts = now_ms()
    for _ in range(3):
        resp = signed_get(server.url, "/api/v3/account", k.info.api_key, k.secret, timestamp=ts)
        assert resp.status_code == 200, resp.text


def test_redis_down_fails_closed(make_settings):
    """No Redis, no replay check: signed requests get 503, never served unchecked."""
    from kptest.native import native_request, own_server

    with own_server(make_settings, redis_url="redis://127.0.0.1:1/0", redis_timeout_s=0.3) as (srv, svc):
        owner = svc.accounts.create_user(f"noredis-{id(svc)}@example.com", "a long enough password")
        k = svc.keys.create(owner.id, scopes=("read", "trade"), step_up=StepUp.operator())
        resp = _order_test(srv.url, k.info.api_key, k.secret or "", now_ms())
        assert resp.status_code == 503, resp.text
        assert resp.json()["reason"] == "service_unavailable" and resp.json()["code"] == -1001
        native = native_request(srv.url, "/v1/keys/self", k.info.api_key, secret=k.secret)
        assert native.status_code == 503 and native.json()["error"] == "service_unavailable"
        assert signed_get(srv.url, "/api/v3/account", k.info.api_key, k.secret or "").status_code == 503


def _ed25519_order_test(base: str, key: str, sig_spelling: str, body: str) -> httpx.Response:
    return httpx.post(
        base + "/api/v3/order/test",
        content=f"{body}&signature={sig_spelling}",
        headers={"X-MBX-APIKEY": key, "Content-Type": "application/x-www-form-urlencoded"},
    )


def test_an_ed25519_signature_respelled_is_still_a_replay(server, make_key):
    """The replay token is the signature's bytes: another spelling of them is the same request."""
    priv, pub = ed25519_keypair()
    k = make_key(scopes=("read", "trade"), key_type="ed25519", public_key=pub)
    body = urlencode(
        {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
         "price": "10000", "timestamp": now_ms(), "recvWindow": 5000}
    )  # fmt: skip
    canonical = ed25519_sign(priv, body)  # percent-encoded standard base64: "...%3D%3D"
    assert canonical.endswith("%3D%3D")
    first = _ed25519_order_test(server.url, k.info.api_key, canonical, body)
    assert first.status_code == 200, first.text
    for spelling in (
        canonical.replace("%3D", "%3d"),  # the escapes in lower case
        canonical.replace("%3D", "="),  # padding left unescaped
        canonical.replace("%2F", "/"),
    ):
        again = _ed25519_order_test(server.url, k.info.api_key, spelling, body)
        assert again.status_code == 401, again.text
        assert again.json()["reason"] == "replayed"
    # Spellings Binance does not document are refused outright.
    raw = base64.b64decode(unquote(canonical))
    for spelling in (base64.urlsafe_b64encode(raw).decode().rstrip("="), unquote(canonical).rstrip("=")):
        resp = _ed25519_order_test(server.url, k.info.api_key, spelling, body)
        assert resp.json()["reason"] == "signature_encoding", resp.text


def test_a_reads_signature_is_refused_on_another_method_or_route(server, make_key):
    """GET /api/v3/order's signature replayed as DELETE with the same query must not cancel."""
    k = make_key(scopes=("read", "trade"))
    query = urlencode({"symbol": "BTCUSDT", "orderId": 987654321, "timestamp": now_ms()})
    signed = f"{query}&signature={hmac_sign(k.secret, query)}"
    headers = {"X-MBX-APIKEY": k.info.api_key}

    read = httpx.get(f"{server.url}/api/v3/order?{signed}", headers=headers)
    assert read.json()["reason"] == "order_not_found", read.text  # past auth: the order is unknown
    assert httpx.get(f"{server.url}/api/v3/order?{signed}", headers=headers).json()["reason"] == "order_not_found"
    cancel = httpx.delete(f"{server.url}/api/v3/order?{signed}", headers=headers)
    assert cancel.status_code == 401, cancel.text
    assert cancel.json()["reason"] == "replayed"
    other_route = httpx.get(f"{server.url}/api/v3/openOrders?{signed}", headers=headers)
    assert other_route.json()["reason"] == "replayed"

    # The other way round: a cancel's signature is never accepted again, not even as a read.
    query2 = urlencode({"symbol": "BTCUSDT", "orderId": 987654322, "timestamp": now_ms()})
    signed2 = f"{query2}&signature={hmac_sign(k.secret, query2)}"
    cancel2 = httpx.delete(f"{server.url}/api/v3/order?{signed2}", headers=headers)
    assert cancel2.status_code != 401, cancel2.text
    assert httpx.get(f"{server.url}/api/v3/order?{signed2}", headers=headers).json()["reason"] == "replayed"


def test_scope_is_checked_before_the_rate_limit_and_the_replay_guard(make_settings):
    """A request the key may not make spends no weight and leaves no replay token."""
    from kptest.native import own_server, unique_prefix

    with own_server(make_settings, rate_limit_per_key="3/minute", redis_prefix=unique_prefix()) as (srv, svc):
        owner = svc.accounts.create_user(f"scope-{secrets.token_hex(4)}@example.com", "a long enough password")
        k = svc.keys.create(owner.id, scopes=("read",), step_up=StepUp.operator())
        ts = now_ms()
        for _ in range(5):  # the same signed order, more times than the limit allows requests
            resp = _order_test(srv.url, k.info.api_key, k.secret, ts)
            assert resp.status_code == 401, resp.text
            assert resp.json()["reason"] == "scope_missing"
        ok = signed_get(srv.url, "/api/v3/account", k.info.api_key, k.secret)
        assert ok.status_code == 200, ok.text
