"""A small typed client for a keyplane server (and, for the Binance-compatible calls, Binance).

    from keyplane.client import KeyplaneClient

    with KeyplaneClient("http://127.0.0.1:8000", api_key, secret=secret) as kp:
        kp.sync_clock()
        print(kp.api_restrictions()["enableWithdrawals"])

Signed Binance-style calls (``/api/...``, ``/sapi/...``) carry ``X-MBX-APIKEY``, ``timestamp``,
``recvWindow`` and ``signature`` (HMAC-SHA256 hex, or Ed25519 base64 when the credential is a PEM).
Native calls (``/v1/...``) are signed with RFC 9421 HTTP message signatures by
``keyplane.client.httpsig``.

The clock offset against the server is measured on the first signed call and measured again after
a ``timestamp_outside_window`` rejection, which is then retried once. A 429 is retried after its
``Retry-After`` (at most ``rate_limit_retries`` times, each wait capped by ``max_wait_s``).
Errors are the classes in ``keyplane.client.errors``; none of them carries a secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyplane.client import httpsig
from keyplane.client.errors import (
    ApiError,
    ClientError,
    ClockSkew,
    ExchangeUnreachable,
    RateLimited,
    error_for,
)
from keyplane.client.profile import Profile, Secret
from keyplane.client.redact import mask_key


class BinanceSigner:
    """Signs a Binance-style payload with an HMAC secret or an Ed25519 private key."""

    def __init__(self, secret: str) -> None:
        self._ed: Ed25519PrivateKey | None = None
        self._hmac: bytes | None = None
        if "PRIVATE KEY" in secret:
            key = serialization.load_pem_private_key(secret.encode(), None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ClientError("only Ed25519 private keys are supported for signing")
            self._ed = key
        else:
            self._hmac = secret.encode()

    def __repr__(self) -> str:
        return f"BinanceSigner({'ed25519' if self._ed else 'hmac'})"

    def sign(self, payload: str) -> str:
        """The value of the ``signature`` parameter, already percent-encoded."""
        if self._ed is not None:
            return quote(base64.b64encode(self._ed.sign(payload.encode())).decode(), safe="")
        assert self._hmac is not None
        return hmac.new(self._hmac, payload.encode(), hashlib.sha256).hexdigest()


class KeyplaneClient:
    """A signing HTTP client. Parameters:

    - ``base_url``: the server, e.g. ``http://127.0.0.1:8000``;
    - ``api_key``: the key id; ``secret``: the HMAC secret; ``private_key_pem``: an Ed25519 PEM
      instead of ``secret``;
    - ``recv_window``: ms the server may accept a request after its timestamp (default 5000);
    - ``timeout``: seconds per HTTP request; ``rate_limit_retries``/``max_wait_s``: 429 handling;
    - ``transport``: an ``httpx`` transport (tests), ``clock``/``sleep``: time sources (tests).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        secret: str | None = None,
        private_key_pem: str | None = None,
        recv_window: int = 5000,
        timeout: float = 10.0,
        rate_limit_retries: int = 1,
        max_wait_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = Secret(api_key) if api_key else None
        credential = private_key_pem or secret
        self._credential = Secret(credential) if credential else None
        self._signer = BinanceSigner(credential) if credential else None
        self.recv_window = recv_window
        self.rate_limit_retries = rate_limit_retries
        self.max_wait_s = max_wait_s
        self._clock, self._sleep = clock, sleep
        self.offset_ms: float | None = None
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    @classmethod
    def from_profile(cls, profile: Profile, **kwargs: Any) -> KeyplaneClient:
        """A client for a keystore profile (``keyplane`` or ``binance`` exchanges)."""
        base = profile.url if profile.is_keyplane else "https://api.binance.com"
        key = profile.api_key.reveal() if profile.api_key else None
        return cls(base, key, secret=profile.signing_secret, **kwargs)

    def __repr__(self) -> str:
        key = mask_key(self._api_key.reveal()) if self._api_key else None
        return f"KeyplaneClient(base_url={self.base_url!r}, api_key={key!r})"

    def __enter__(self) -> KeyplaneClient:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- time ----------------------------------------------------------------------------------

    def server_time(self) -> int:
        """The server's clock in ms (``GET /api/v3/time``)."""
        return int(self._send("GET", "/api/v3/time", None, signed=False)["serverTime"])

    def sync_clock(self) -> float:
        """Measure ``server - local`` in ms, halving the round trip; returns the offset."""
        before = self._clock()
        server = self.server_time()
        after = self._clock()
        self.offset_ms = server - (before + after) * 500.0
        return self.offset_ms

    def now_ms(self) -> int:
        return int(self._clock() * 1000 + (self.offset_ms or 0.0))

    # ---- calls ---------------------------------------------------------------------------------

    def account(self) -> dict[str, Any]:
        """``GET /api/v3/account``: balances and permissions. Needs the ``read`` scope."""
        result: dict[str, Any] = self.request("GET", "/api/v3/account")
        return result

    def api_restrictions(self) -> dict[str, Any]:
        """``GET /sapi/v1/account/apiRestrictions``: what this key may do (any scope)."""
        result: dict[str, Any] = self.request("GET", "/sapi/v1/account/apiRestrictions")
        return result

    def key_self(self) -> dict[str, Any]:
        """``GET /v1/keys/self`` on the native API, signed with RFC 9421."""
        result: dict[str, Any] = self.native_request("GET", "/v1/keys/self")
        return result

    def request(self, method: str, path: str, params: Mapping[str, Any] | None = None, *, signed: bool = True) -> Any:
        """A Binance-style call. Raises an ``ApiError`` subclass or ``ExchangeUnreachable``."""
        resynced = False
        attempts = 0
        while True:
            if signed and self.offset_ms is None:
                self.sync_clock()
            try:
                return self._send(method, path, params, signed=signed)
            except ClockSkew:
                if resynced or not signed:
                    raise
                resynced = True
                self.sync_clock()
            except RateLimited as e:
                attempts += 1
                if attempts > self.rate_limit_retries or e.retry_after_s > self.max_wait_s:
                    raise
                self._sleep(e.retry_after_s)

    def native_request(self, method: str, path: str, body: bytes = b"") -> Any:
        """A native ``/v1`` call signed with RFC 9421 (``keyplane.client.httpsig``)."""
        if self._api_key is None or self._credential is None:
            raise ClientError("this call needs an API key and its secret")
        url = self.base_url + path
        cred = self._credential.reveal()
        pem = cred if "PRIVATE KEY" in cred else None
        headers = {"Content-Type": "application/json"} if body else {}
        signed = httpsig.sign_request(
            method,
            url,
            headers,
            body,
            key_id=self._api_key.reveal(),
            secret=None if pem else cred,
            private_key_pem=pem,
        )
        return self._do(method, path, content=body or None, headers={**headers, **signed})

    def _send(self, method: str, path: str, params: Mapping[str, Any] | None, *, signed: bool) -> Any:
        items = [(k, _fmt(v)) for k, v in (params or {}).items() if v is not None]
        headers: dict[str, str] = {}
        if signed:
            if self._api_key is None or self._signer is None:
                raise ClientError("this call needs an API key and its secret")
            items += [("timestamp", str(self.now_ms())), ("recvWindow", str(self.recv_window))]
            payload = urlencode(items)
            payload += "&signature=" + self._signer.sign(payload)
            headers["X-MBX-APIKEY"] = self._api_key.reveal()
        else:
            payload = urlencode(items)
        if method.upper() in ("POST", "PUT"):
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            return self._do(method, path, content=payload.encode(), headers=headers)
        return self._do(method, path + ("?" + payload if payload else ""), headers=headers)

    def _do(self, method: str, path: str, *, content: bytes | None = None, headers: dict[str, str]) -> Any:
        try:
            resp = self._http.request(method, path, content=content, headers=headers)
        except httpx.HTTPError as e:
            raise ExchangeUnreachable(f"cannot reach {self.base_url}: {type(e).__name__}") from None
        if resp.status_code < 400:
            try:
                return resp.json()
            except ValueError:
                raise ApiError("the server sent a response that is not JSON", status=resp.status_code) from None
        raise _error(resp)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _error(resp: httpx.Response) -> ApiError:
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    reason = resp.headers.get("X-Keyplane-Error") or body.get("reason") or body.get("error")
    message = str(body.get("msg") or body.get("message") or resp.reason_phrase or "error")
    code = body.get("code") if isinstance(body.get("code"), int) else None
    try:
        retry = float(resp.headers.get("Retry-After", "1"))
    except ValueError:
        retry = 1.0
    text = f"{reason or resp.status_code}: {message}"
    return error_for(
        reason if isinstance(reason, str) else None, text, status=resp.status_code, code=code, retry_after_s=retry
    )
