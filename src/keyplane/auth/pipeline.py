"""The verification pipeline: every check a signed request passes, cheapest first.

    IP lockout -> key header format/checksum -> parse -> key lookup (cache) -> status/expiry
    -> IP allowlist -> timestamp window (and the restart cut-off) -> signature -> scope -> symbol
    -> replay + rate limits (one gate call)

A request is rejected before any expensive work (a cache miss, an Ed25519 verify, a Redis round trip)
if a cheaper check already fails. Each rejection is an :class:`AuthError` subclass with its own code.
Scope comes before the gate, so a request the key may not make spends no rate-limit weight and
leaves no replay token behind (its corrected retry is not answered "replayed").

For the Binance dialect, :meth:`Authenticator.check_binance` is the one place the checks after the
key lookup run. :meth:`Authenticator.authenticate_binance_cached` runs it without a coroutine when
the key is cached and the gate answers from memory; :meth:`Authenticator.authenticate_binance` takes
any request (a cache miss, a Redis gate). The ``check_*`` methods are what the other dialects use.

The replay token is the decoded signature's bytes, never its spelling. A token first seen on a
state-changing request is accepted once; a read's token may be repeated on the same method and
route only, so a read's signature never becomes a cancel.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol

from keyplane.auth import errors as E
from keyplane.auth.dialects import binance
from keyplane.auth.errors import IpLockedOut
from keyplane.auth.gates import Admission, OpenGate, RequestGate
from keyplane.auth.keycache import KeyCache, UsageRecorder, _Miss
from keyplane.auth.routes import RouteRule
from keyplane.keys import format as keyformat
from keyplane.keys.record import KeyRecord
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
    # Epoch seconds after which the client no longer expects the request to take effect (its
    # timestamp plus recvWindow): the exchange checks it again before an order reaches the book.
    not_after_s: float | None = None


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
        # Read once, for the per-request path.
        self._future_ms = settings.future_tolerance_ms
        self._recv_window_default = settings.recv_window_default_ms
        self._recv_window_max = settings.recv_window_max_ms

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
        if rec.status == "active" and rec.verifiers:
            if rec.expires_ts is None and rec.idle_s is None:
                return  # the common case: nothing to compute
            deadline = rec.deadline_ts(self.usage.last_seen.get(rec.public_id))
            if deadline is None or now_s < deadline:
                return
        self._reject_key_state(rec, now_s)

    def _reject_key_state(self, rec: KeyRecord, now_s: float) -> None:
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
        raise E.KeyDisabled(f"API key {masked} is {rec.status}")  # a status this version does not know

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
    def check_signature(rec: KeyRecord, payload: bytes, signature: bytes, now_s: float) -> None:
        """Verify ``signature`` over ``payload`` with any of the key's current credentials."""
        for v in rec.verifiers:
            if (v.valid_until is None or v.valid_until > now_s) and v.verify_raw(payload, signature):
                return
        Authenticator.reject_signature(rec)

    def check_replay_window(self, signed_at_s: float, future_s: float) -> None:
        """Refuse a request that a previous process may have accepted already.

        After an unclean stop the previous process's replay tokens are lost (auth/replaylog.py),
        and it accepted requests signed up to ``future_s`` (the dialect's tolerance for a clock
        ahead) after the moment it died: any request signed before this process started, plus that
        tolerance, is refused rather than possibly accepted twice. Only for ~1 s after such a start."""
        since = self.gate.replay_since_s
        if signed_at_s < since + future_s:
            raise E.TimestampOutsideWindow(
                "this request was signed before the server restarted at "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(since))}, so it cannot be checked "
                "for replay: sign it again with a fresh timestamp"
            )

    @staticmethod
    def reject_signature(rec: KeyRecord) -> NoReturn:
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

    async def lookup(self, key_id: str) -> KeyRecord:
        self.cache.check_fresh()
        cached = self.cache.get(key_id)
        rec = await self.cache.load(key_id) if isinstance(cached, _Miss) else cached
        if rec is None:
            raise E.KeyUnknown(f"API key {keyformat.mask(key_id)} does not exist on this server")
        return rec

    def check_binance(
        self, rec: KeyRecord, req: binance.BinanceRequest, method: str, rule: RouteRule, client_ip: str | None
    ) -> tuple[str, str | None, float, float]:
        """Every Binance-dialect check between the key lookup and the gate: status and expiry, IP
        allowlist, timestamp window, signature, scope. Returns what the gate needs: the replay
        token (the signature's bytes), what it may repeat as (None: once) and its TTL; and the
        time the checks ran at."""
        now_s = self.clock()
        if not (
            now_s < rec.usable_until
            and (rec.idle_s is None or now_s - self.usage.last_seen.get(rec.public_id, 0.0) < rec.idle_s)
        ):
            self.check_key_state(rec, now_s)
        if rec.restrictions.ip_allowlist:
            self.check_ip(rec, client_ip)
        ahead_ms = req.timestamp_ms - now_s * 1000.0
        if ahead_ms >= self._future_ms or -ahead_ms > req.recv_window_ms:
            self.check_timestamp(req.timestamp_ms, req.recv_window_ms, now_s)
        changing = method in _STATE_CHANGING
        if changing and req.timestamp_ms < self.gate.replay_since_s * 1000.0 + self._future_ms:
            self.check_replay_window(req.timestamp_ms / 1000.0, self._future_ms / 1000.0)
        sig = binance.decode_hex(req.signature) if rec.key_type == "hmac" else binance.decode_base64(req.signature)
        self.check_signature(rec, req.payload, sig, now_s)
        if (rule.scope is not None and rule.scope not in rec.scopes) or (
            rule.symbol_restricted and rec.restrictions.symbols
        ):
            self.check_scope(rec, rule, req.params)
        ttl_s = (req.recv_window_ms + self._future_ms) / 1000.0
        return sig.hex(), None if changing else f"{method} {rule.name}", ttl_s, now_s

    def _parse_binance(self, raw_query: bytes, raw_body: bytes) -> binance.BinanceRequest:
        return binance.parse(raw_query, raw_body, self._recv_window_default, self._recv_window_max)

    def authenticate_binance_cached(
        self,
        method: str,
        raw_query: bytes,
        raw_body: bytes,
        api_key_header: str | None,
        client_ip: str | None,
        rule: RouteRule,
    ) -> AuthContext | None:
        """The whole Binance-dialect pipeline without a coroutine, for the common case: the key is in
        a fresh cache and the gate answers from memory. Returns None, having checked nothing, when
        that is not so; then :meth:`authenticate_binance` takes the request."""
        if not api_key_header or not self.gate.in_process:
            return None
        rec = self.cache.hot(api_key_header)
        if rec is None:
            return None
        ip_key = client_ip or "-"
        if (left := self.gate.locked_out(ip_key)) > 0:
            raise IpLockedOut(left)
        req = self._parse_binance(raw_query, raw_body)
        token, repeatable_as, ttl_s, now_s = self.check_binance(rec, req, method, rule, client_ip)
        admission = self.gate.admit_now(rec.public_id, ip_key, rule, token, ttl_s, repeatable_as)
        self.usage.touch(rec.public_id, now_s, client_ip)
        return AuthContext(rec, req.params, client_ip, rule, "binance", admission, req.not_after_s)

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
        """The whole Binance-dialect pipeline, for any key: a cache miss loads it, and a gate that
        does I/O (Redis) is awaited."""
        ctx = self.authenticate_binance_cached(method, raw_query, raw_body, api_key_header, client_ip, rule)
        if ctx is not None:
            return ctx
        ip_key = client_ip or "-"
        gate = self.gate
        if (left := gate.locked_out(ip_key)) > 0:
            raise IpLockedOut(left)
        # A key in the cache is known to be well-formed, so its checksum is not checked again.
        cached = self.cache.hot(api_key_header) if api_key_header else None
        key_id = cached.public_id if cached is not None else self.check_key_format(api_key_header)
        req = self._parse_binance(raw_query, raw_body)
        rec = cached if cached is not None else await self.lookup(key_id)
        token, repeatable_as, ttl_s, now_s = self.check_binance(rec, req, method, rule, client_ip)
        if gate.in_process:
            admission = gate.admit_now(key_id, ip_key, rule, token, ttl_s, repeatable_as)
        else:
            admission = await gate.admit(
                key_id=key_id,
                client_ip=ip_key,
                rule=rule,
                replay_token=token,
                replay_ttl_s=ttl_s,
                repeatable_as=repeatable_as,
            )
        self.usage.touch(key_id, now_s, client_ip)
        return AuthContext(rec, req.params, client_ip, rule, "binance", admission, req.not_after_s)

    def count_failure(self, error: E.AuthError, *, key_id: str | None, ip: str | None, route: str, method: str) -> None:
        self.failures[error.code] = self.failures.get(error.code, 0) + 1
        if error.counts_as_failure and ip:
            self.gate.note_failure(ip)
        if self.on_failure is not None:
            self.on_failure(error, key_id=key_id, ip=ip, route=route, method=method)


def scopes_summary(scopes: Sequence[Scope]) -> str:
    return _has(frozenset(scopes))
