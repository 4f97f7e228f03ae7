"""The native dialect over real HTTP: each malformed or incomplete signature gets its own code."""

from __future__ import annotations

import time

import httpx
import pytest

from keyplane.client.httpsig import content_digest, sign_request
from kptest.clients import ed25519_keypair
from kptest.native import native_request


def test_hmac_and_ed25519_keys_call_keys_self(server, make_key):
    k = make_key(scopes=("read", "trade"), ips=["127.0.0.1/32"], symbols=["BTCUSDT"])
    resp = native_request(server.url, "/v1/keys/self", k.info.api_key, secret=k.secret)
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["scopes"] == ["read", "trade"]
    assert doc["restrictions"]["ip_allowlist"] == ["127.0.0.1/32"]
    assert doc["restrictions"]["symbols"] == ["BTCUSDT"]
    assert doc["caller_ip"] == "127.0.0.1"
    priv, pub = ed25519_keypair()
    e = make_key(key_type="ed25519", public_key=pub)
    resp = native_request(server.url, "/v1/keys/self", e.info.api_key, pem=priv)
    assert resp.status_code == 200, resp.text
    assert resp.json()["key_type"] == "ed25519"


def test_time_is_public(server):
    doc = httpx.get(server.url + "/v1/time").json()
    assert abs(doc["time"] - time.time()) < 5


def _signed(server, key, **sign):
    url = server.url + "/v1/keys/self?q=1"
    return url, sign_request("GET", url, {}, key_id=key.info.api_key, secret=key.secret, **sign)


def _swap_components(headers: dict[str, str], components: str) -> dict[str, str]:
    value = headers["Signature-Input"]
    params = value[value.index(")") + 1 :]
    return {**headers, "Signature-Input": f"sig1=({components}){params}"}


@pytest.mark.parametrize(
    ("mutate", "status", "code", "needle"),
    [
        (lambda h: {k: v for k, v in h.items() if k != "Signature-Input"}, 400, "signature_missing", "Signature-Input"),
        (lambda h: {**h, "Signature-Input": "sig1=(@method);created=1"}, 400, "signature_input_malformed", "malformed"),
        (lambda h: {**h, "Signature-Input": h["Signature-Input"] + ","}, 400, "signature_input_malformed", "trailing"),
        (lambda h: {**h, "Signature": "sig1=:not base64!:"}, 400, "signature_malformed", "malformed"),
        (lambda h: {**h, "Signature": "other=:AAAA:"}, 400, "signature_malformed", "label"),
        (
            lambda h: {**h, "Signature-Input": h["Signature-Input"].replace("hmac-sha256", "rsa-v1_5-sha256")},
            400,
            "algorithm_unknown",
            "rsa-v1_5-sha256",
        ),
        (
            lambda h: {**h, "Signature-Input": h["Signature-Input"].replace("hmac-sha256", "ed25519")},
            400,
            "algorithm_unknown",
            "hmac",
        ),
        (lambda h: _swap_components(h, '"@method" "@path"'), 400, "component_missing", "'@query'"),
        (lambda h: _swap_components(h, '"@method" "@query"'), 400, "component_missing", "'@path'"),
        (lambda h: _swap_components(h, '"@path" "@query"'), 400, "component_missing", "'@method'"),
        (lambda h: {**h, "Signature": "sig1=:" + "A" * 43 + "=:"}, 401, "signature_invalid", "not valid"),
    ],
)
def test_rejections_have_their_own_codes(server, make_key, mutate, status, code, needle):
    k = make_key()
    url, headers = _signed(server, k)
    resp = httpx.get(url, headers=mutate(headers))
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == code
    assert needle in body["message"]
    assert resp.headers["X-Keyplane-Error"] == code


def test_body_needs_a_covered_content_digest(server, make_key):
    k = make_key()
    url = server.url + "/v1/keys/self"
    headers = sign_request("GET", url, {}, key_id=k.info.api_key, secret=k.secret)  # signed without a body
    resp = httpx.request("GET", url, headers=headers, content=b"a body")
    assert resp.status_code == 400
    assert resp.json()["error"] == "component_missing"
    assert "content-digest" in resp.json()["message"]

    headers = sign_request("GET", url, {}, b"a body", key_id=k.info.api_key, secret=k.secret)
    resp = httpx.request("GET", url, headers={**headers, "Content-Digest": content_digest(b"other")}, content=b"a body")
    assert resp.json()["error"] == "content_digest_mismatch"
    resp = httpx.request("GET", url, headers={**headers, "Content-Digest": "md5=:AAAA:"}, content=b"a body")
    assert resp.json()["error"] == "content_digest_invalid"


def test_created_window_is_5s_past_1s_future(server, make_key):
    k = make_key()
    now = int(time.time())
    for created, ok in ((now - 3, True), (now - 8, False), (now + 4, False)):
        url, headers = _signed(server, k, created=created)
        resp = httpx.get(url, headers=headers)
        assert (resp.status_code == 200) == ok, (created - now, resp.text)
        if not ok:
            assert resp.json()["error"] == "timestamp_outside_window"


def test_revoked_and_unknown_keys(server, services, make_key):
    k = make_key()
    services.keys.revoke(k.info.api_key)
    resp = native_request(server.url, "/v1/keys/self", k.info.api_key, secret=k.secret)
    assert resp.status_code == 401 and resp.json()["error"] == "key_revoked"
    resp = native_request(server.url, "/v1/keys/self", "kp_live_nope", secret="x" * 40)
    assert resp.json()["error"] in ("key_malformed", "key_checksum")


def test_no_other_v1_keys_routes(server, make_key):
    k = make_key()
    for method in ("POST", "PUT", "DELETE"):
        resp = native_request(server.url, "/v1/keys/self", k.info.api_key, secret=k.secret, method=method)
        assert resp.status_code == 405, resp.text
    resp = native_request(server.url, "/v1/keys", k.info.api_key, secret=k.secret)
    assert resp.status_code == 404
