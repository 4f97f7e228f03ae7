"""RFC 9421 interop, both directions, over real HTTP to a real server.

- Requests signed by ``http-message-signatures`` and ``requests-http-signature`` (PyPI) verify.
- Requests signed by keyplane's own signer verify in both libraries.
- A signature moved to another endpoint, method, query or body fails.
"""

from __future__ import annotations

import datetime as dt
import secrets

import httpx
import pytest
import requests
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)
from requests_http_signature import HTTPSignatureAuth

from keyplane.client.httpsig import sign_request
from kptest.clients import ed25519_keypair

pytestmark = pytest.mark.e2e

REQUIRED = ("@method", "@path", "@query")


def _send(prepared: requests.PreparedRequest) -> httpx.Response:
    """Send a prepared request exactly as signed (same URL string, headers and body)."""
    body = prepared.body if isinstance(prepared.body, bytes) else (prepared.body or "").encode()
    return httpx.request(prepared.method or "GET", prepared.url or "", headers=dict(prepared.headers), content=body)


@pytest.fixture
def hmac_key(make_key):
    return make_key(scopes=("read",))


@pytest.fixture
def ed_key(make_key):
    priv, pub = ed25519_keypair()
    return make_key(scopes=("read", "trade"), key_type="ed25519", public_key=pub), priv


def test_http_message_signatures_hmac_request_verifies(server, hmac_key):
    kid = hmac_key.info.api_key
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.HMAC_SHA256,
        key_resolver=MappingKeyResolver(private_keys={kid: hmac_key.secret.encode()}, public_keys={}),
    )
    prepared = requests.Request("GET", f"{server.url}/v1/keys/self?probe=1").prepare()
    signer.sign(
        prepared,
        key_id=kid,
        nonce=secrets.token_urlsafe(16),
        covered_component_ids=("@method", "@path", "@query", "@authority"),
    )
    resp = _send(prepared)
    assert resp.status_code == 200, resp.text
    assert resp.json()["key_id"] == kid
    assert resp.json()["scopes"] == ["read"]


def test_http_message_signatures_ed25519_request_with_body_verifies(server, ed_key):
    key, priv = ed_key
    kid = key.info.api_key
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(private_keys={kid: priv.encode()}, public_keys={}),
    )
    body = b'{"hello":"world"}'
    prepared = requests.Request("GET", f"{server.url}/v1/keys/self", data=body).prepare()
    signer.sign(prepared, key_id=kid, nonce=secrets.token_urlsafe(16), covered_component_ids=REQUIRED, body=body)
    assert "content-digest" in prepared.headers["Signature-Input"]
    resp = _send(prepared)
    assert resp.status_code == 200, resp.text
    assert resp.json()["key_type"] == "ed25519"


@pytest.mark.parametrize("alg", ["hmac", "ed25519"])
def test_requests_http_signature_request_verifies(server, hmac_key, ed_key, alg):
    if alg == "hmac":
        kid, material, algorithm = hmac_key.info.api_key, hmac_key.secret.encode(), algorithms.HMAC_SHA256
    else:
        kid, material, algorithm = ed_key[0].info.api_key, ed_key[1].encode(), algorithms.ED25519
    auth = HTTPSignatureAuth(
        signature_algorithm=algorithm,
        key=material,
        key_id=kid,
        covered_component_ids=("@method", "@path", "@query", "@authority", "@target-uri"),
        use_nonce=True,
    )
    resp = requests.get(f"{server.url}/v1/keys/self?a=1&b=2", auth=auth, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["key_id"] == kid


def test_keyplane_signer_verifies_in_both_libraries(hmac_key, ed_key):
    url = "http://exchange.example:8000/v1/keys/self?symbol=BTCUSDT&limit=5"
    body = b'{"x":1}'
    cases = [
        (hmac_key.info.api_key, {"secret": hmac_key.secret}, algorithms.HMAC_SHA256, hmac_key.secret.encode()),
    ]
    from cryptography.hazmat.primitives import serialization

    priv = serialization.load_pem_private_key(ed_key[1].encode(), None)
    ed_pub = priv.public_key()
    cases.append((ed_key[0].info.api_key, {"private_key_pem": ed_key[1]}, algorithms.ED25519, ed_pub))
    for kid, material, algorithm, public in cases:
        headers = sign_request("POST", url, {}, body, key_id=kid, **material)
        prepared = requests.Request("POST", url, headers=headers, data=body).prepare()
        resolver = MappingKeyResolver(public_keys={kid: public}, private_keys={})
        verifier = HTTPMessageVerifier(signature_algorithm=algorithm, key_resolver=resolver)
        results = verifier.verify(prepared, require_components=(*REQUIRED, "content-digest"), body=body)
        assert results[0].parameters["keyid"] == kid
        assert results[0].body == body
        result = HTTPSignatureAuth.verify(
            prepared, require_components=REQUIRED, signature_algorithm=algorithm, key_resolver=resolver
        )
        assert result.parameters["keyid"] == kid
        # A changed body fails the library's digest check too.
        tampered = requests.Request("POST", url, headers=headers, data=b'{"x":2}').prepare()
        with pytest.raises(InvalidSignature):
            HTTPSignatureAuth.verify(
                tampered, require_components=REQUIRED, signature_algorithm=algorithm, key_resolver=resolver
            )


def test_keyplane_signer_against_the_server(server, hmac_key):
    url = f"{server.url}/v1/keys/self?x=1"
    headers = sign_request("GET", url, {}, key_id=hmac_key.info.api_key, secret=hmac_key.secret)
    resp = httpx.get(url, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["RateLimit-Limit"]


def _moved(server, hmac_key, change: str) -> httpx.Response:
    url = f"{server.url}/v1/keys/self?x=1"
    body = b"original body"
    headers = sign_request("GET", url, {}, body, key_id=hmac_key.info.api_key, secret=hmac_key.secret)
    if change == "query":
        return httpx.request("GET", f"{server.url}/v1/keys/self?x=2", headers=headers, content=body)
    if change == "body":
        return httpx.request("GET", url, headers=headers, content=b"another body!")
    if change == "body-and-digest":
        from keyplane.client.httpsig import content_digest

        other = b"another body!"
        return httpx.request("GET", url, headers={**headers, "Content-Digest": content_digest(other)}, content=other)
    raise AssertionError(change)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("query", "signature_invalid"),
        ("body", "content_digest_mismatch"),
        ("body-and-digest", "signature_invalid"),
    ],
)
def test_a_signature_moved_to_another_query_or_body_fails(server, hmac_key, change, code):
    resp = _moved(server, hmac_key, change)
    assert resp.status_code in (400, 401), resp.text
    assert resp.json()["error"] == code


def test_a_signature_moved_to_another_method_or_path_fails(server, hmac_key):
    """The same signature base with another @method or @path no longer verifies."""
    import hashlib
    import hmac as hmac_mod

    from keyplane.auth.dialects import httpsig

    headers = sign_request("GET", "http://h/v1/keys/self?x=1", {}, key_id=hmac_key.info.api_key, secret=hmac_key.secret)
    req = httpsig.parse({k.lower(): v for k, v in headers.items()}, has_body=False)
    for method, path in (("GET", "/v1/keys/self"), ("POST", "/v1/keys/self"), ("GET", "/v1/other")):
        base = httpsig.signature_base(req, httpsig.Target(method, path, "x=1", "h", "http", {}))
        good = hmac_mod.compare_digest(
            hmac_mod.new(hmac_key.secret.encode(), base, hashlib.sha256).digest(), req.signature
        )
        assert good == ((method, path) == ("GET", "/v1/keys/self"))


def test_expired_created_rejected_with_the_server_time(server, hmac_key):
    url = f"{server.url}/v1/keys/self"
    old = int(dt.datetime.now(dt.UTC).timestamp()) - 60
    headers = sign_request("GET", url, {}, key_id=hmac_key.info.api_key, secret=hmac_key.secret, created=old)
    resp = httpx.get(url, headers=headers)
    assert resp.status_code == 400
    assert resp.json()["error"] == "timestamp_outside_window"
    assert "60 s ago" in resp.json()["message"] or "s ago" in resp.json()["message"]
