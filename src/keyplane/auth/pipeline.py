"""The verification pipeline: every check a signed request passes, cheapest first.

    IP lockout -> parse (the dialect) -> key header format/checksum -> key lookup (cache) -> status/expiry
    -> IP allowlist -> timestamp window (and the restart cut-off) -> signature -> scope -> symbol
    -> replay + rate limits (one gate call)

A request is rejected before any expensive work (a cache miss, an Ed25519 verify, a Redis round trip)
if a cheaper check already fails. Each rejection is an :class:`AuthError` subclass with its own code.
Scope comes before the gate, so a request the key may not make spends no rate-limit weight and
leaves no replay token behind (its corrected retry is not answered "replayed").

Each dialect only parses (:meth:`Authenticator.read` -> one :class:`SignedRequest`);
:meth:`Authenticator.check` is the one place the checks after the key lookup run, for every
dialect. :meth:`Authenticator.authenticate_now` runs them without a coroutine when the key is
cached and the gate answers from memory; :meth:`Authenticator.authenticate` takes any request (a
cache miss, a Redis gate) and is the entry point the middleware calls.

The replay token is the decoded signature's bytes, never its spelling. A token first seen on a
state-changing request is accepted once; a read's token may be repeated on the same method and
route only, so a read's signature never becomes a cancel.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from keyplane.auth import errors as E
from keyplane.auth.admission import Admission, RequestGate
from keyplane.auth.dialects import binance, httpsig
from keyplane.auth.keycache import KeyCache, UsageRecorder, _Miss
from keyplane.auth.request import SignedRequest
from keyplane.auth.routes import RouteRule
from keyplane.keys import format as keyformat
from keyplane.keys.record import KeyRecord
from keyplane.keys.scopes import MIN_BOUND_PREFIX, SCOPE_ORDER, Scope
from keyplane.settings import Settings


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


_STREAM_SCOPES = frozenset({Scope.READ, Scope.TRADE})


def _ms(value: float) -> str:
    return f"{int(value)}"


class Authenticator:
    def __init__(
        self,
        settings: Settings,
        cache: KeyCache,
        *,
        gate: RequestGate,
        usage: UsageRecorder | None = None,
        on_failure: FailureSink | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.gate = gate
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
                "or withdraw without being bound to an IP (an allowlist of /24 or /48 or narrower) expire when unused"
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

    def check_time(self, req: SignedRequest, now_s: float) -> None:
        """Raise the dialect's precise rejection for a request outside its window."""
        if req.dialect == "binance":
            self.check_timestamp(
                round(req.signed_at_s * 1000.0, 3), round((req.not_after_s - req.signed_at_s) * 1000.0, 3), now_s
            )
        s = self.settings
        httpsig.reject_time(req.signed_at_s, req.not_after_s, now_s, s.httpsig_past_s, s.httpsig_future_s)

    def check_replay_window(self, req: SignedRequest) -> None:
        """Refuse a single-use request that a previous process may have accepted already.

        After an unclean stop the previous process's replay tokens are lost (auth/replaylog.py).
        It accepted requests whose window had opened (``not_before_s``, the time claim less the
        dialect's tolerance for a clock ahead) before it died, so any request whose window opened
        before this process started is refused rather than possibly accepted twice. This holds only
        for about a second after such a start."""
        since = self.gate.replay_since_s
        if req.not_before_s < since:
            raise E.TimestampOutsideWindow(
                "this request was signed before the server restarted at "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(since))}, so it cannot be checked "
                "for replay: sign it again with a fresh timestamp"
            )

    @staticmethod
    def check_algorithm(rec: KeyRecord, req: SignedRequest) -> None:
        """The signature must be of the key's type: the dialect's precise rejection if not."""
        if req.dialect == "binance":
            binance.reject_encoding(req.signature_text, rec.key_type)
        elif req.algorithm is not None:
            httpsig.reject_algorithm(req.algorithm, rec.key_type)

    @staticmethod
    def reject_signature(rec: KeyRecord, dialect: str = "binance", method: str = "") -> NoReturn:
        hmac_key = rec.key_type == "hmac"
        if dialect == "binance":
            over = (
                "every parameter but signature, sorted by name, as name=value joined by &"
                if method == "WS"  # the WebSocket API's rule (keyplane.api.wsapi)
                else "the query string followed by the body, exactly as sent, without the signature parameter"
            )
            raise E.SignatureInvalid(
                "Signature for this request is not valid: it must be "
                + ("HMAC-SHA256 in hex" if hmac_key else "Ed25519 in base64")
                + " over "
                + over
            )
        raise E.SignatureInvalid(
            "the RFC 9421 signature is not valid: sign the signature base of @method, @path, @query "
            "(and content-digest) with "
            + ("HMAC-SHA256 keyed with your secret" if hmac_key else "your Ed25519 private key")
        )

    @staticmethod
    def reject_replay(req: SignedRequest, error: E.ReplayDetected) -> NoReturn:
        if req.dialect == "httpsig":
            raise E.NonceReused(
                "this nonce was already used with this key: every request needs a fresh nonce"
            ) from error
        raise error

    @staticmethod
    def check_scope(rec: KeyRecord, rule: RouteRule, params: dict[str, str]) -> None:
        if rule.scope is not None and rule.scope not in rec.scopes:
            # "has no operation privilege" is what makes ccxt raise PermissionDenied.
            if rule.scope in rec.withheld_scopes:
                raise E.ScopeMissing(
                    f"API key {keyformat.mask(rec.public_id)} has no operation privilege for this endpoint: "
                    f"its '{rule.scope.value}' scope needs the key bound to an IP (every allowlist entry a "
                    f"/{MIN_BOUND_PREFIX[4]} (IPv4) or /{MIN_BOUND_PREFIX[6]} (IPv6) or narrower)"
                )
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

    def check_stream(self, rec: KeyRecord, client_ip: str | None) -> None:
        """May ``rec`` read its account's user-data stream from ``client_ip``: the rule a stream is
        opened with, and kept open by (keyplane.streams.userfeed asks again whenever the key
        changes). The key must work (status, expiry), accept the address (IP allowlist), and hold
        a scope that reads the account's orders: read or trade (a withdraw-only key sees nothing)."""
        self.check_key_state(rec, self.clock())
        self.check_ip(rec, client_ip)
        if not rec.scopes & _STREAM_SCOPES:
            raise E.ScopeMissing(
                f"API key {keyformat.mask(rec.public_id)} has no operation privilege for user data streams: "
                f"they need the 'read' or the 'trade' scope and the key has {_has(rec.scopes)}"
            )

    # -- the pipeline ----------------------------------------------------------------------------

    def check_lockout(self, client_ip: str | None) -> None:
        if (left := self.gate.locked_out(client_ip or "-")) > 0:
            raise E.IpLockedOut(left)

    def read(self, rule: RouteRule, scope: Mapping[str, Any], body: bytes) -> SignedRequest:
        """Parse a request (an ASGI HTTP scope and its body) in the route's dialect."""
        if rule.dialect == "binance":
            key_header = None
            for name, value in scope["headers"]:
                if name == b"x-mbx-apikey":
                    key_header = value.decode("latin-1")
                    break
            return binance.read(
                scope["method"],
                scope.get("query_string", b""),
                body,
                key_header,
                self._recv_window_default,
                self._recv_window_max,
                self._future_ms,
            )
        s = self.settings
        return httpsig.read(scope, body, s.httpsig_past_s, s.httpsig_future_s)

    def read_ws(self, params: dict[str, str], state_changing: bool) -> SignedRequest:
        """Parse a WebSocket API request's parameters (keyplane.api.wsapi) in the Binance dialect."""
        return binance.read_ws(
            params, state_changing, self._recv_window_default, self._recv_window_max, self._future_ms
        )

    async def lookup(self, key_id: str) -> KeyRecord:
        self.cache.check_fresh()
        cached = self.cache.get(key_id)
        rec = await self.cache.load(key_id) if isinstance(cached, _Miss) else cached
        if rec is None:
            raise E.KeyUnknown(f"API key {keyformat.mask(key_id)} does not exist on this server")
        return rec

    def check(
        self, rec: KeyRecord, req: SignedRequest, method: str, rule: RouteRule, client_ip: str | None
    ) -> tuple[str | None, float, float]:
        """Every check between the key lookup and the gate, in order: status and expiry, IP
        allowlist, time window (and the restart cut-off), signature type, body digest, signature,
        scope. Each is an inline test of the common case; the ``check_*`` method that builds the
        precise rejection runs only when that test fails. Returns what the gate needs besides the
        token (what it may repeat as, None for once; its TTL) and the time the checks ran at."""
        now_s = self.clock()
        if not (
            now_s < rec.usable_until
            and (rec.idle_s is None or now_s - self.usage.last_seen.get(rec.public_id, 0.0) < rec.idle_s)
        ):
            self.check_key_state(rec, now_s)
        if rec.restrictions.ip_allowlist:
            self.check_ip(rec, client_ip)
        if not (req.not_before_s < now_s <= req.not_after_s):
            self.check_time(req, now_s)
        if req.single_use and req.not_before_s < self.gate.replay_since_s:
            self.check_replay_window(req)
        if req.algorithm != rec.key_type and (req.algorithm is not None or req.dialect == "binance"):
            self.check_algorithm(rec, req)
        if req.digest is not None:
            httpsig.verify_content_digest(*req.digest)
        for v in rec.verifiers:
            if (v.valid_until is None or v.valid_until > now_s) and v.verify_raw(req.payload, req.signature):
                break
        else:
            self.reject_signature(rec, req.dialect, method)
        if (rule.scope is not None and rule.scope not in rec.scopes) or (
            rule.symbol_restricted and rec.restrictions.symbols
        ):
            self.check_scope(rec, rule, req.params)
        repeatable_as = None if req.single_use else f"{method} {rule.name}"
        return repeatable_as, req.not_after_s - req.not_before_s + 1.0, now_s

    def authenticate_now(
        self, req: SignedRequest, method: str, rule: RouteRule, client_ip: str | None
    ) -> AuthContext | None:
        """:meth:`authenticate` without a coroutine, for the common case: the key is in a fresh
        cache and the gate answers from memory. Returns None, having checked nothing, otherwise."""
        if req.key_id is None or not self.gate.in_process:
            return None
        rec = self.cache.hot(req.key_id)
        return None if rec is None else self._admit_now(rec, req, method, rule, client_ip)

    def _admit_now(
        self, rec: KeyRecord, req: SignedRequest, method: str, rule: RouteRule, client_ip: str | None
    ) -> AuthContext:
        repeatable_as, ttl_s, now_s = self.check(rec, req, method, rule, client_ip)
        try:
            admission = self.gate.admit_now(
                rec.public_id, client_ip or "-", rule, req.replay_token, ttl_s, repeatable_as
            )
        except E.ReplayDetected as e:
            self.reject_replay(req, e)
        self.usage.touch(rec.public_id, now_s, client_ip)
        return AuthContext(rec, req.params, client_ip, rule, req.dialect, admission, req.not_after_s)

    async def authenticate(
        self, req: SignedRequest, method: str, rule: RouteRule, client_ip: str | None
    ) -> AuthContext:
        """Run every check on a signed request of any dialect, once: a cache miss loads the key,
        and a gate that does I/O (Redis) is awaited. Returns the verified request or raises the
        :class:`AuthError` that names the first check it failed."""
        ctx = self.authenticate_now(req, method, rule, client_ip)
        if ctx is not None:
            return ctx
        # A key in the cache is known to be well-formed, so its checksum is not checked again.
        rec = self.cache.hot(req.key_id) if req.key_id else None
        if rec is None:
            rec = await self.lookup(self.check_key_format(req.key_id))
        if self.gate.in_process:
            return self._admit_now(rec, req, method, rule, client_ip)
        repeatable_as, ttl_s, now_s = self.check(rec, req, method, rule, client_ip)
        try:
            admission = await self.gate.admit(
                rec.public_id, client_ip or "-", rule, req.replay_token, ttl_s, repeatable_as
            )
        except E.ReplayDetected as e:
            self.reject_replay(req, e)
        self.usage.touch(rec.public_id, now_s, client_ip)
        return AuthContext(rec, req.params, client_ip, rule, req.dialect, admission, req.not_after_s)

    async def authenticate_key(
        self, key_header: str | None, rule: RouteRule, client_ip: str | None, params: dict[str, str] | None = None
    ) -> AuthContext:
        """A request whose key was proven without a signature on it: Binance's USER_STREAM routes
        (``RouteRule.key_only``, the listenKey routes, which clients call with the API key alone:
        :meth:`check_stream`), and requests on a WebSocket API session whose key logged on with a
        signature (``session.logon``: any rule). Every check of :meth:`check` that does not need a
        signature: status and expiry, IP allowlist, scope and symbol; then the gate's rate limits
        (no replay token: nothing here is signed)."""
        key_id = key_header.strip() if key_header else None
        rec = self.cache.hot(key_id) if key_id else None
        if rec is None:
            rec = await self.lookup(self.check_key_format(key_header))
        params = params or {}
        if rule.key_only:
            self.check_stream(rec, client_ip)
        else:
            self.check_key_state(rec, self.clock())
            self.check_ip(rec, client_ip)
            self.check_scope(rec, rule, params)
        admission = await self.gate.admit(rec.public_id, client_ip or "-", rule, None, 0.0)
        self.usage.touch(rec.public_id, self.clock(), client_ip)
        return AuthContext(rec, params, client_ip, rule, "binance", admission)

    def count_failure(self, error: E.AuthError, *, key_id: str | None, ip: str | None, route: str, method: str) -> None:
        self.failures[error.code] = self.failures.get(error.code, 0) + 1
        if error.counts_as_failure and ip:
            self.gate.note_failure(ip)
        if self.on_failure is not None:
            self.on_failure(error, key_id=key_id, ip=ip, route=route, method=method)
