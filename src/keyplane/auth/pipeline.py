"""The verification pipeline: every check a signed request passes, cheapest first.

    key header format/checksum -> parse -> key lookup (cache) -> status/expiry -> IP allowlist
    -> timestamp window -> signature -> replay + rate limits (one gate call) -> scope -> symbol

A request is rejected before any expensive work (a cache miss, an Ed25519 verify, a Redis round trip)
if a cheaper check already fails. Each rejection is an :class:`AuthError` subclass with its own code.

:meth:`Authenticator.verify_binance` is the synchronous core (used by the in-process benchmark);
:meth:`Authenticator.authenticate` wraps it with the cache miss, the gate and the usage record.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from keyplane.auth import errors as E
from keyplane.auth.dialects import binance
from keyplane.auth.errors_extra import IpLockedOut
from keyplane.auth.gate import Admission, OpenGate, RequestGate
from keyplane.auth.keycache import KeyCache, UsageRecorder, _Miss
from keyplane.auth.routes import RouteRule
from keyplane.keys import format as keyformat
from keyplane.keys.record import Ed25519Verifier, HmacVerifier, KeyRecord
from keyplane.keys.scopes import SCOPE_ORDER, Scope
from keyplane.settings import Settings

_STATE_CHANGING = frozenset({"POST", "PUT", "DELETE", "PATCH"})


@dataclass(slots=True)
class AuthContext:
    """What a route learns about a verified request."""

    key: KeyRecord
    params: dict[str, str]
    client_ip: str | None
    rule: RouteRule
    dialect: str
    admission: Admission | None = None


class FailureSink(Protocol):
    def __call__(self, error: E.AuthError, *, key_id: str | None, ip: str | None, route: str, method: str) -> None: ...


def _has(scopes: frozenset[Scope]) -> str:
    names = [s.value for s in SCOPE_ORDER if s in scopes]
    return ", ".join(names) if names else "no scopes"


def _ms(value: float) -> str:
    return f"{int(value)}"


class Authenticator:
    def __init__(
        self,
        settings: Settings,
        cache: KeyCache,
        *,
        gate: RequestGate | None = None,
        usage: UsageRecorder | None = None,
        on_failure: FailureSink | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.gate: RequestGate = gate or OpenGate()
        self.usage = usage or UsageRecorder()
        self.on_failure = on_failure
        self.clock = clock
        self.failures: dict[str, int] = {}  # rejections by reason since start-up

    # -- the checks ------------------------------------------------------------------------------

    @staticmethod
    def check_key_format(header: str | None) -> str:
        if not header:
            raise E.KeyMissing("this endpoint needs an API key in the X-MBX-APIKEY header")
        key = header.strip()
        if not keyformat.has_api_key_shape(key):
            raise E.KeyMalformed(
                "the API key is malformed: a keyplane key looks like kp_live_ followed by 28 letters and digits"
            )
        if not keyformat.is_valid_api_key(key):
            raise E.KeyChecksum(f"the API key {keyformat.mask(key)} fails its checksum: it was mistyped or truncated")
        return key

    def check_key_state(self, rec: KeyRecord, now_s: float) -> None:
        if rec.status == "active" and rec.expires_ts is None and rec.idle_s is None and rec.verifiers:
            return  # the common case: nothing to compute
        masked = keyformat.mask(rec.public_id)
        if rec.status == "revoked":
            raise E.KeyRevoked(f"API key {masked} was revoked")
        if rec.status == "disabled":
            raise E.KeyDisabled(f"API key {masked} is disabled; its owner can enable it again")
        if rec.status == "expired":
            raise E.KeyExpired(f"API key {masked} has expired")
        deadline = rec.deadline_ts(self.usage.last_seen.get(rec.public_id))
        if deadline is not None and now_s >= deadline:
            if rec.expires_ts is not None and deadline == rec.expires_ts:
                raise E.KeyExpired(
                    f"API key {masked} expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(deadline))}"
                )
            raise E.KeyExpired(
                f"API key {masked} expired after {self.settings.idle_expiry_days} idle days: keys that can trade "
                "or withdraw without an IP allowlist expire when unused"
            )
        if not rec.verifiers:
            raise E.KeyRevoked(f"API key {masked} has no usable credential")

    @staticmethod
    def check_ip(rec: KeyRecord, ip_text: str | None) -> None:
        if not rec.restrictions.ip_allowlist:
            return
        try:
            ip = ipaddress.ip_address(ip_text) if ip_text else None
        except ValueError:
            ip = None
        if not rec.restrictions.allows_ip(ip):
            seen = ip_text or "an unknown address"
            raise E.IpNotAllowed(
                f"API key {keyformat.mask(rec.public_id)} does not accept requests from {seen} "
                "(the IP keyplane saw); add it to the key's IP allowlist"
            )

    def check_timestamp(self, timestamp_ms: float, recv_window_ms: float, now_s: float) -> None:
        server_ms = now_s * 1000.0
        ahead = timestamp_ms - server_ms
        if ahead >= self.settings.future_tolerance_ms:
            raise E.TimestampOutsideWindow(
                f"Timestamp for this request was {self.settings.future_tolerance_ms}ms ahead of the server's time: "
                f"server time is {_ms(server_ms)}, your timestamp is {_ms(ahead)} ms ahead. Sync your clock (NTP) "
                "or use the server time from /api/v3/time"
            )
        behind = server_ms - timestamp_ms
        if behind > recv_window_ms:
            raise E.TimestampOutsideWindow(
                f"Timestamp for this request is outside of the recvWindow: server time is {_ms(server_ms)}, "
                f"your timestamp is {_ms(behind)} ms behind and recvWindow is {_ms(recv_window_ms)} ms. "
                "Sync your clock (NTP) or use the server time from /api/v3/time"
            )

    @staticmethod
    def check_binance_signature(rec: KeyRecord, req: binance.BinanceRequest, now_s: float) -> None:
        if rec.key_type == "hmac":
            sig_hex = binance.decode_hex(req.signature)
            for v in rec.verifiers:
                live = v.valid_until is None or v.valid_until > now_s
                if live and isinstance(v, HmacVerifier) and v.verify_hex(req.payload, sig_hex):
                    return
        else:
            sig = binance.decode_base64(req.signature)
            for v in rec.verifiers:
                live = v.valid_until is None or v.valid_until > now_s
                if live and isinstance(v, Ed25519Verifier) and v.verify_raw(req.payload, sig):
                    return
        raise E.SignatureInvalid(
            "Signature for this request is not valid: it must be "
            + ("HMAC-SHA256 in hex" if rec.key_type == "hmac" else "Ed25519 in base64")
            + " over the query string followed by the body, exactly as sent, without the signature parameter"
        )

    @staticmethod
    def check_scope(rec: KeyRecord, rule: RouteRule, params: dict[str, str]) -> None:
        if rule.scope is not None and rule.scope not in rec.scopes:
            # "has no operation privilege" is what makes ccxt raise PermissionDenied.
            raise E.ScopeMissing(
                f"API key {keyformat.mask(rec.public_id)} has no operation privilege for this endpoint: "
                f"it needs the '{rule.scope.value}' scope and the key has {_has(rec.scopes)}"
            )
        if rule.symbol_restricted and rec.restrictions.symbols:
            symbol = params.get("symbol", "")
            if not rec.restrictions.allows_symbol(symbol):
                raise E.SymbolNotAllowed(
                    f"API key {keyformat.mask(rec.public_id)} has no operation privilege for symbol "
                    f"{symbol or '(none)'}: it may trade only {', '.join(rec.restrictions.symbols)}"
                )

    # -- the dialects ----------------------------------------------------------------------------

    def verify_binance(
        self,
        rec: KeyRecord,
        req: binance.BinanceRequest,
        client_ip: str | None,
        rule: RouteRule,
        now_s: float,
    ) -> None:
        """Every check after the key lookup, for a Binance-dialect request. Raises AuthError."""
        self.check_key_state(rec, now_s)
        self.check_ip(rec, client_ip)
        self.check_timestamp(req.timestamp_ms, req.recv_window_ms, now_s)
        self.check_binance_signature(rec, req, now_s)

    async def lookup(self, key_id: str) -> KeyRecord:
        self.cache.check_fresh()
        cached = self.cache.get(key_id)
        rec = await self.cache.load(key_id) if isinstance(cached, _Miss) else cached
        if rec is None:
            raise E.KeyUnknown(f"API key {keyformat.mask(key_id)} does not exist on this server")
        return rec

    async def authenticate_binance(
        self,
        *,
        method: str,
        raw_query: bytes,
        raw_body: bytes,
        api_key_header: str | None,
        client_ip: str | None,
        rule: RouteRule,
    ) -> AuthContext:
        ip_key = client_ip or "-"
        if (left := self.gate.locked_out(ip_key)) > 0:
            raise IpLockedOut(left)
        # A key already in the cache is known to be well-formed: skip re-checking its checksum.
        key_id = (
            api_key_header if api_key_header and api_key_header in self.cache else self.check_key_format(api_key_header)
        )
        req = binance.parse(
            raw_query,
            raw_body,
            recv_window_default=self.settings.recv_window_default_ms,
            recv_window_max=self.settings.recv_window_max_ms,
        )
        cached = self.cache.get(key_id) if self.cache.is_fresh() else None
        rec = cached if isinstance(cached, KeyRecord) else await self.lookup(key_id)
        now_s = self.clock()
        self.verify_binance(rec, req, client_ip, rule, now_s)
        # The same signature on a state-changing request is accepted once within its recvWindow.
        replay_token = req.signature.lower() if method in _STATE_CHANGING else None
        admission = await self.gate.admit(
            key_id=key_id,
            client_ip=ip_key,
            rule=rule,
            replay_token=replay_token,
            replay_ttl_s=(req.recv_window_ms + self.settings.future_tolerance_ms) / 1000.0,
        )
        self.check_scope(rec, rule, req.params)
        self.usage.touch(key_id, now_s, client_ip)
        return AuthContext(rec, req.params, client_ip, rule, "binance", admission)

    def count_failure(self, error: E.AuthError, *, key_id: str | None, ip: str | None, route: str, method: str) -> None:
        self.failures[error.code] = self.failures.get(error.code, 0) + 1
        if error.counts_as_failure and ip:
            self.gate.note_failure(ip)
        if self.on_failure is not None:
            self.on_failure(error, key_id=key_id, ip=ip, route=route, method=method)


def scopes_summary(scopes: Sequence[Scope]) -> str:
    return _has(frozenset(scopes))
