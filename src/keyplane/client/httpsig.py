"""Sign requests for keyplane's native API: RFC 9421 HTTP Message Signatures + RFC 9530 digests.

    headers = sign_request("GET", "https://exchange.example/v1/keys/self", {}, key_id=KEY, secret=SECRET)
    httpx.get(url, headers=headers)

The signature covers ``@method``, ``@path``, ``@query`` and, when there is a body,
``content-digest``, with the parameters ``created``, ``nonce``, ``keyid`` and ``alg``. Any RFC 9421
verifier can check it. This module is part of the client half: it imports nothing from the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

LABEL = "sig1"


def content_digest(body: bytes) -> str:
    """The ``Content-Digest`` value (sha-256) for ``body``."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def _sf_string(value: str) -> str:
    if not all(" " <= ch <= "~" for ch in value):
        raise ValueError("signature parameters must be printable ASCII")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sign(base: bytes, secret: str | None, private_key_pem: str | None) -> tuple[str, bytes]:
    if (secret is None) == (private_key_pem is None):
        raise ValueError("pass exactly one of secret (HMAC keys) or private_key_pem (Ed25519 keys)")
    if secret is not None:
        return "hmac-sha256", hmac.new(secret.encode("utf-8"), base, hashlib.sha256).digest()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    assert private_key_pem is not None
    key = serialization.load_pem_private_key(private_key_pem.encode("utf-8"), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("private_key_pem must hold an Ed25519 private key")
    return "ed25519", key.sign(base)


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes = b"",
    *,
    key_id: str,
    secret: str | None = None,
    private_key_pem: str | None = None,
    created: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Sign one request and return the headers to add to it.

    :param method: the HTTP method, as sent.
    :param url: the full URL, as sent: its path and query are signed byte for byte, so send exactly
        this string (do not let the HTTP client re-encode it).
    :param headers: the request's other headers (only ``Content-Digest``, if already set, is used).
    :param body: the exact body bytes; when non-empty, ``Content-Digest`` is added and signed.
    :param key_id: the API key (``kp_live_...``), sent as the ``keyid`` parameter.
    :param secret: the key's secret, for an HMAC key.
    :param private_key_pem: the PKCS#8 PEM private key, for an Ed25519 key.
    :param created: Unix seconds of signing; defaults to now. The server accepts 5 s in the past.
    :param nonce: a unique value per request; defaults to 128 random bits. The server accepts a
        nonce once per key.
    :returns: ``Signature-Input``, ``Signature`` and, with a body, ``Content-Digest``.
    :raises ValueError: no or both key materials, a non-Ed25519 PEM, or non-ASCII parameters.
    """
    parts = urlsplit(url)
    out: dict[str, str] = {}
    components = ["@method", "@path", "@query"]
    lines = [f'"@method": {method.upper()}', f'"@path": {parts.path or "/"}', f'"@query": ?{parts.query}']
    if body:
        digest = next((v for k, v in headers.items() if k.lower() == "content-digest"), None)
        if digest is None:
            digest = content_digest(body)
            out["Content-Digest"] = digest
        components.append("content-digest")
        lines.append(f'"content-digest": {digest.strip()}')
    alg = "hmac-sha256" if secret is not None else "ed25519"
    params = (
        f";created={int(time.time()) if created is None else int(created)}"
        f";nonce={_sf_string(nonce or secrets.token_urlsafe(16))}"
        f";keyid={_sf_string(key_id)}"
        f";alg={_sf_string(alg)}"
    )
    signature_params = "(" + " ".join(f'"{c}"' for c in components) + ")" + params
    lines.append(f'"@signature-params": {signature_params}')
    _, signature = _sign("\n".join(lines).encode("ascii"), secret, private_key_pem)
    out["Signature-Input"] = f"{LABEL}={signature_params}"
    out["Signature"] = f"{LABEL}=:{base64.b64encode(signature).decode('ascii')}:"
    return out
