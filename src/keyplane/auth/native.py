"""Verifying a native (RFC 9421) request: the same checks as the binance dialect, same order.

    IP lockout -> Signature-Input/Signature parse -> key format -> key lookup (cache) -> status/expiry
    -> IP allowlist -> created window (and the restart cut-off) -> algorithm fits the key
    -> signature base -> Content-Digest -> signature -> scope -> symbol
    -> replay (nonce) + rate limits (one gate call)

The middleware calls :meth:`HttpSigAuthenticator.authenticate` for routes marked
``@signed(..., dialect="httpsig")``. Key state, IP, scope, the gate and usage are the
:class:`Authenticator`'s own checks, so both dialects enforce exactly the same policy.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from keyplane.auth import errors as E
from keyplane.auth.dialects import httpsig
from keyplane.auth.errors import IpLockedOut, NonceReused, ReplayDetected
from keyplane.auth.pipeline import AuthContext, Authenticator
from keyplane.auth.routes import RouteRule
from keyplane.keys.record import Ed25519Verifier, HmacVerifier, KeyRecord

# Headers the signature may cover; others are ignored when the scope is read.
_HEADER_LIMIT = 64


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    """Lowercase name -> value, repeated fields combined with ", " (RFC 9421 §2.1)."""
    out: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"][: _HEADER_LIMIT * 2]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1").strip()
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _target(scope: dict[str, Any], headers: dict[str, str]) -> httpsig.Target:
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1").split("?", 1)[0] if raw_path else scope["path"]
    server = scope.get("server")
    authority = headers.get("host") or (f"{server[0]}:{server[1]}" if server else "")
    return httpsig.Target(
        method=scope["method"],
        path=path,
        query=scope.get("query_string", b"").decode("latin-1"),
        authority=authority,
        scheme=scope.get("scheme", "http"),
        headers=headers,
    )


def _verify(rec: KeyRecord, base: bytes, signature: bytes, now_s: float) -> None:
    for v in rec.verifiers:
        if v.valid_until is not None and v.valid_until <= now_s:
            continue
        if isinstance(v, HmacVerifier) and rec.key_type == "hmac" and v.verify_raw(base, signature):
            return
        if isinstance(v, Ed25519Verifier) and rec.key_type == "ed25519" and v.verify_raw(base, signature):
            return
    raise E.SignatureInvalid(
        "the RFC 9421 signature is not valid: sign the signature base of @method, @path, @query "
        "(and content-digest) with "
        + ("HMAC-SHA256 keyed with your secret" if rec.key_type == "hmac" else "your Ed25519 private key")
    )


class HttpSigAuthenticator:
    """``state["httpsig"]``: what the middleware calls for native routes."""

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth
        self.past_s = auth.settings.httpsig_past_s
        self.future_s = auth.settings.httpsig_future_s

    async def authenticate(self, scope: Any, body: bytes, client_ip: str | None, rule: RouteRule) -> AuthContext:
        a = self.auth
        ip_key = client_ip or "-"
        if (left := a.gate.locked_out(ip_key)) > 0:
            raise IpLockedOut(left)
        headers = _headers(scope)
        req = httpsig.parse(headers, has_body=bool(body))
        key_id = req.key_id if req.key_id in a.cache else a.check_key_format(req.key_id)
        rec = await a.lookup(key_id)
        now_s = a.clock()
        a.check_key_state(rec, now_s)
        a.check_ip(rec, client_ip)
        httpsig.check_created(req, now_s, self.past_s, self.future_s)
        # Every nonce is single-use, reads included: one signed before a restart can't be checked.
        a.check_replay_window(float(req.created), float(self.future_s))
        httpsig.check_algorithm(req, rec.key_type)
        target = _target(scope, headers)
        base = httpsig.signature_base(req, target)
        if body or "content-digest" in req.components:
            httpsig.verify_content_digest(headers.get("content-digest"), body)
        _verify(rec, base, req.signature, now_s)
        params = dict(parse_qsl(target.query, keep_blank_values=True)) if rule.symbol_restricted else {}
        a.check_scope(rec, rule, params)
        try:
            admission = await a.gate.admit(
                key_id=key_id,
                client_ip=ip_key,
                rule=rule,
                # Every nonce is accepted once per key while ``created`` could still pass the window.
                replay_token="nonce:" + req.nonce,
                replay_ttl_s=float(self.past_s + self.future_s + 1),
            )
        except ReplayDetected as e:
            raise NonceReused("this nonce was already used with this key: every request needs a fresh nonce") from e
        a.usage.touch(key_id, now_s, client_ip)
        return AuthContext(rec, params, client_ip, rule, "httpsig", admission)
