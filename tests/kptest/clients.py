"""Real clients: ccxt's binance class pointed at a keyplane server, and a hand signer for tables of
malformed requests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import quote, urlencode

import ccxt
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def ccxt_binance(base_url: str, api_key: str | None = None, secret: str | None = None, **options: Any) -> Any:
    """ccxt.binance with *every* URL overridden (research/clients.md §1.2)."""
    b = base_url.rstrip("/")
    config: dict[str, Any] = {
        "urls": {
            "api": {
                "public": b + "/api/v3",
                "private": b + "/api/v3",
                "v1": b + "/api/v1",
                "v3": b + "/api/v3",
                "sapi": b + "/sapi/v1",
                "sapiV2": b + "/sapi/v2",
                "sapiV3": b + "/sapi/v3",
                "sapiV4": b + "/sapi/v4",
            }
        },
        "options": {
            "fetchCurrencies": False,
            "fetchMargins": False,
            "fetchMarkets": {"types": ["spot"]},
            "adjustForTimeDifference": True,
            "fetchOpenOrders": {"warnWithoutSymbol": False},
            **options,
        },
        "enableRateLimit": False,
        "timeout": 10000,
    }
    if api_key is not None:
        config["apiKey"] = api_key
        config["secret"] = secret
    return ccxt.binance(config)


def ed25519_keypair() -> tuple[str, str]:
    """(private PKCS#8 PEM, public PEM)"""
    priv = Ed25519PrivateKey.generate()
    priv_pem = priv.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    pub_pem = (
        priv.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return priv_pem, pub_pem


def now_ms() -> int:
    return int(time.time() * 1000)


def hmac_sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode("ascii"), payload.encode("ascii"), hashlib.sha256).hexdigest()


def ed25519_sign(private_pem: str, payload: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return quote(base64.b64encode(key.sign(payload.encode("ascii"))).decode(), safe="")


def signed_get(
    base_url: str,
    path: str,
    api_key: str,
    secret: str,
    params: dict[str, Any] | None = None,
    *,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    query = urlencode({**(params or {}), "timestamp": timestamp if timestamp is not None else now_ms()})
    sig = hmac_sign(secret, query)
    return httpx.get(f"{base_url}{path}?{query}&signature={sig}", headers={"X-MBX-APIKEY": api_key, **(headers or {})})
