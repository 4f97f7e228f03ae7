"""The verification pipeline (auth/pipeline.py) end to end, with nothing of keyplane's replaced.

Each test builds a real ``Authenticator(settings, KeyCache(loader), gate=MemoryGate(settings))`` on
a fixed fake clock, where ``loader`` hands back :class:`KeyRecord` s built here with real verifiers.
Requests go in as ASGI scopes and bodies through :meth:`Authenticator.read`, then
:meth:`Authenticator.authenticate` (or :meth:`Authenticator.authenticate_now`), exactly as the
middleware calls them. Signatures are computed here from first principles (hmac, PyNaCl), except
one interop test that uses keyplane's own RFC 9421 client.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.signing import SigningKey

from keyplane.auth import errors as E
from keyplane.auth.gates import MemoryGate
from keyplane.auth.keycache import KeyCache
from keyplane.auth.pipeline import AuthContext, Authenticator
from keyplane.auth.request import SignedRequest
from keyplane.auth.routes import RouteRule
from keyplane.client.httpsig import sign_request
from keyplane.keys import format as keyformat
from keyplane.keys.record import Ed25519Verifier, HmacVerifier, KeyRecord, Verifier
from keyplane.keys.scopes import Restrictions, Scope
from keyplane.settings import Settings

NOW = 1_700_000_000.0
NOW_MS = 1_700_000_000_000
DAY = 86_400.0
IP = "192.0.2.10"
ALLOWED_NET = "203.0.113.0/24"
ALLOWED_IP = "203.0.113.5"


def api_key(tag: str) -> str:
    """A well-formed key (valid checksum), the same on every run."""
    head = "kp_live_" + tag.ljust(keyformat.KEY_BODY_LEN, "0")
    return head + keyformat.checksum(head)


def secret(tag: str) -> str:
    head = keyformat.SECRET_PREFIX + tag.ljust(keyformat.SECRET_BODY_LEN, "0")
    return head + keyformat.checksum(head)


SECRET = secret("current")
OLD_SECRET = secret("previous")
OTHER_SECRET = secret("other")
SIGNER = SigningKey(bytes(range(32)))
OLD_SIGNER = SigningKey(bytes(range(1, 33)))
OTHER_SIGNER = SigningKey(bytes(range(2, 34)))

HMAC_KEY = api_key("Hmac")
ED_KEY = api_key("Ed")
READ_KEY = api_key("Read")  # read only, symbols BTCUSDT
IP_KEY = api_key("Ip")  # allowlist 203.0.113.0/24
SYMBOL_KEY = api_key("Sym")  # read+trade, symbols BTCUSDT
WITHHELD_KEY = api_key("Withheld")  # holds withdraw, not usable without an IP binding
REVOKED_KEY = api_key("Revoked")
REVOKED_IP_KEY = api_key("RevokedIp")  # revoked and allowlisted
DISABLED_KEY = api_key("Disabled")
EXPIRED_KEY = api_key("Expired")  # status expired
EXPIRES_KEY = api_key("Expires")  # active, expires_ts in the past
IDLE_KEY = api_key("Idle")  # active, idle deadline passed
IDLE_FRESH_KEY = api_key("IdleFresh")  # active, used a day ago
NOCRED_KEY = api_key("NoCred")  # active without a verifier
ODD_KEY = api_key("Odd")  # a status this version does not know
UNKNOWN_KEY = api_key("Unknown")  # well-formed, not in the store
BROKEN_KEY = api_key("Broken")  # its lookup fails (the store is down)
BAD_CHECKSUM_KEY = HMAC_KEY[:-1] + ("A" if HMAC_KEY[-1] != "A" else "B")

ACCOUNT = RouteRule(Scope.READ, "binance", 10, False, "account")
OPEN_ORDERS = RouteRule(Scope.READ, "binance", 3, False, "openOrders")
ORDER = RouteRule(Scope.TRADE, "binance", 1, True, "order")
WITHDRAW = RouteRule(Scope.WITHDRAW, "binance", 1, False, "withdraw")
SELF = RouteRule(None, "binance", 1, False, "apiRestrictions")
NATIVE_READ = RouteRule(Scope.READ, "httpsig", 1, False, "key_self")
NATIVE_TRADE = RouteRule(Scope.TRADE, "httpsig", 1, True, "orders")


def record(
    public_id: str,
    key_type: str = "hmac",
    *,
    scopes: tuple[Scope, ...] = (Scope.READ, Scope.TRADE),
    withheld: tuple[Scope, ...] = (),
    status: str = "active",
    verifiers: tuple[Verifier, ...] | None = None,
    ips: tuple[str, ...] = (),
    symbols: tuple[str, ...] = (),
    expires_ts: float | None = None,
    idle_s: float | None = None,
    created_ts: float = NOW - DAY,
    last_used_ts: float | None = None,
) -> KeyRecord:
    """A KeyRecord as KeyRecords.load builds one from a row."""
    if verifiers is None:
        verifiers = (
            (HmacVerifier(SECRET.encode()),) if key_type == "hmac" else (Ed25519Verifier(bytes(SIGNER.verify_key)),)
        )
    restrictions = Restrictions(
        ip_allowlist=tuple(ipaddress.ip_network(n) for n in ips),
        symbols=symbols,
        expires_at=None if expires_ts is None else dt.datetime.fromtimestamp(expires_ts, dt.UTC),
    )
    return KeyRecord(
        db_id=abs(hash(public_id)) % 10_000,
        public_id=public_id,
        user_id=7,
        key_type=key_type,
        scopes=frozenset(scopes),
        withheld_scopes=frozenset(withheld),
        restrictions=restrictions,
        status=status,
        verifiers=verifiers,
        expires_ts=expires_ts,
        idle_s=idle_s,
        created_ts=created_ts,
        last_used_ts=last_used_ts,
    )


IDLE_S = 90 * DAY


def all_records() -> dict[str, KeyRecord]:
    return {
        HMAC_KEY: record(HMAC_KEY),
        ED_KEY: record(ED_KEY, "ed25519"),
        READ_KEY: record(READ_KEY, scopes=(Scope.READ,), symbols=("BTCUSDT",)),
        IP_KEY: record(IP_KEY, ips=(ALLOWED_NET,)),
        SYMBOL_KEY: record(SYMBOL_KEY, symbols=("BTCUSDT",)),
        WITHHELD_KEY: record(WITHHELD_KEY, withheld=(Scope.WITHDRAW,)),
        REVOKED_KEY: record(REVOKED_KEY, status="revoked", verifiers=()),
        REVOKED_IP_KEY: record(REVOKED_IP_KEY, status="revoked", verifiers=(), ips=(ALLOWED_NET,)),
        DISABLED_KEY: record(DISABLED_KEY, status="disabled", verifiers=()),
        EXPIRED_KEY: record(EXPIRED_KEY, status="expired", verifiers=()),
        EXPIRES_KEY: record(EXPIRES_KEY, expires_ts=NOW - 1),
        IDLE_KEY: record(IDLE_KEY, idle_s=IDLE_S, created_ts=NOW - IDLE_S - DAY),
        IDLE_FRESH_KEY: record(IDLE_FRESH_KEY, idle_s=IDLE_S, created_ts=NOW - IDLE_S - DAY, last_used_ts=NOW - DAY),
        NOCRED_KEY: record(NOCRED_KEY, verifiers=()),
        ODD_KEY: record(ODD_KEY, status="frozen"),
    }


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


_SETTINGS: dict[tuple[str, tuple[tuple[str, Any], ...]], Settings] = {}


def _settings(data_dir: Any, **overrides: Any) -> Settings:
    """Settings with the windows and limits these tests assume (made once per combination: a
    Settings costs a few milliseconds)."""
    memo = (str(data_dir), tuple(sorted(overrides.items())))
    if memo not in _SETTINGS:
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "recv_window_default_ms": 5000,
            "recv_window_max_ms": 60000,
            "future_tolerance_ms": 1000,
            "httpsig_past_s": 5,
            "httpsig_future_s": 1,
            "rate_limit_per_key": "1000/minute",
            "rate_limit_per_ip": "1000/minute",
            "lockout_failures": 1000,
            **overrides,
        }
        _SETTINGS[memo] = Settings(**values)
    return _SETTINGS[memo]


class Rig:
    """One Authenticator over a dict of records, on a fake clock."""

    def __init__(
        self,
        data_dir: Any,
        records: dict[str, KeyRecord] | None = None,
        *,
        max_staleness_s: float | None = None,
        on_failure: Any = None,
        **settings: Any,
    ) -> None:
        self.settings = _settings(data_dir, **settings)
        self.records = all_records() if records is None else records
        self.loads: list[str] = []
        self.clock = Clock()
        self.cache = KeyCache(self._load, max_staleness_s=max_staleness_s, clock=self.clock)
        self.gate = MemoryGate(self.settings, clock=self.clock)
        self.auth = Authenticator(self.settings, self.cache, gate=self.gate, clock=self.clock, on_failure=on_failure)

    def _load(self, key_id: str) -> KeyRecord | None:
        self.loads.append(key_id)
        if key_id == BROKEN_KEY:
            raise ConnectionError("the database is down")
        return self.records.get(key_id)

    def read(self, rule: RouteRule, scope: dict[str, Any], body: bytes = b"") -> SignedRequest:
        return self.auth.read(rule, scope, body)

    def binance(
        self,
        rule: RouteRule,
        query: str | bytes = b"",
        body: str | bytes = b"",
        *,
        key: str | None = HMAC_KEY,
        method: str = "GET",
        ip: str | None = IP,
    ) -> AuthContext:
        scope = binance_scope(method, _b(query), key)
        req = self.auth.read(rule, scope, _b(body))
        return asyncio.run(self.auth.authenticate(req, method, rule, ip))

    def native(self, rule: RouteRule, scope: dict[str, Any], body: bytes = b"", *, ip: str | None = IP) -> AuthContext:
        req = self.auth.read(rule, scope, body)
        return asyncio.run(self.auth.authenticate(req, scope["method"], rule, ip))


def _b(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


def rejects(expected: type[E.AuthError], fn: Callable[[], object]) -> E.AuthError:
    """``fn`` raises exactly ``expected`` (not a subclass) with its code, and a client-error status."""
    with pytest.raises(E.AuthError) as info:
        fn()
    error = info.value
    assert type(error) is expected, f"{type(error).__name__}: {error}"
    assert error.code == expected.code
    assert 400 <= error.status < 500
    return error


# -- the Binance wire format -------------------------------------------------------------------


def binance_scope(method: str, query: bytes, key: str | None, path: str = "/api/v3/order") -> dict[str, Any]:
    headers = [(b"host", b"testserver"), (b"content-type", b"application/x-www-form-urlencoded")]
    if key is not None:
        headers.append((b"x-mbx-apikey", key.encode("latin-1")))
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": headers,
    }


def hex_sig(payload: str, key: str = SECRET) -> str:
    return hmac.new(key.encode(), payload.encode(), hashlib.sha256).hexdigest()


def b64_sig(payload: str, signer: SigningKey = SIGNER) -> str:
    """The canonical base64 of the Ed25519 signature, not percent-encoded."""
    return base64.b64encode(signer.sign(payload.encode()).signature).decode()


def ed_sig(payload: str, signer: SigningKey = SIGNER) -> str:
    """The Ed25519 signature as python-binance sends it: base64, percent-encoded."""
    return quote(b64_sig(payload, signer), safe="")


def params(extra: str = "", *, ts: int | str | None = NOW_MS, symbol: str | None = "BTCUSDT") -> str:
    parts = [f"symbol={symbol}"] if symbol is not None else []
    if extra:
        parts.append(extra)
    if ts is not None:
        parts.append(f"timestamp={ts}")
    return "&".join(parts)


def with_sig(payload: str, sig: str) -> str:
    return f"{payload}&signature={sig}" if payload else f"signature={sig}"


def hq(extra: str = "", *, ts: int | str | None = NOW_MS, symbol: str | None = "BTCUSDT", key: str = SECRET) -> str:
    """A query signed with HMAC."""
    p = params(extra, ts=ts, symbol=symbol)
    return with_sig(p, hex_sig(p, key))


def eq(extra: str = "", *, ts: int | str | None = NOW_MS, signer: SigningKey = SIGNER) -> str:
    """A query signed with Ed25519."""
    p = params(extra, ts=ts)
    return with_sig(p, ed_sig(p, signer))


# -- the RFC 9421 wire format ------------------------------------------------------------------


def digest_of(body: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def native_scope(
    method: str = "GET",
    path: str = "/v1/keys/self",
    query: str = "",
    *,
    body: bytes = b"",
    key: str = HMAC_KEY,
    secret_text: str | None = SECRET,
    signer: SigningKey | None = None,
    components: tuple[str, ...] | None = None,
    created: int = int(NOW),
    expires: int | None = None,
    nonce: str = "nonce-0001",
    alg: str | None = "default",
    digest: str | None = "default",
    extra_headers: dict[str, str] | None = None,
    sign_as: tuple[str, str, str] | None = None,
    label: str = "sig1",
    sig_label: str | None = None,
) -> dict[str, Any]:
    """An ASGI scope carrying an RFC 9421 signature computed here (RFC 9421 §2.5).

    ``sign_as`` = (method, path, query) signs another target than the one sent; ``digest`` is the
    Content-Digest header sent (and signed, when covered): "default" for the body's own."""
    if components is None:
        components = ("@method", "@path", "@query") + (("content-digest",) if body else ())
    if digest == "default":
        digest = digest_of(body) if body else None
    if alg == "default":
        alg = "ed25519" if signer is not None else "hmac-sha256"
    headers = {"host": "testserver", **(extra_headers or {})}
    if digest is not None:
        headers["content-digest"] = digest
    s_method, s_path, s_query = sign_as or (method, path, query)
    values = {"@method": s_method.upper(), "@path": s_path, "@query": "?" + s_query, "@authority": "testserver"}
    lines = [f'"{c}": {values[c] if c in values else headers.get(c, "")}' for c in components]
    sig_params = "(" + " ".join(f'"{c}"' for c in components) + ")"
    sig_params += f';created={created};nonce="{nonce}";keyid="{key}"'
    if alg is not None:
        sig_params += f';alg="{alg}"'
    if expires is not None:
        sig_params += f";expires={expires}"
    lines.append(f'"@signature-params": {sig_params}')
    base = "\n".join(lines).encode()
    if signer is not None:
        raw = signer.sign(base).signature
    else:
        assert secret_text is not None
        raw = hmac.new(secret_text.encode(), base, hashlib.sha256).digest()
    headers["signature-input"] = f"{label}={sig_params}"
    headers["signature"] = f"{sig_label or label}=:{base64.b64encode(raw).decode()}:"
    return raw_scope(method, path, query, headers)


def raw_scope(method: str, path: str, query: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "scheme": "https",
        "server": ("testserver", 443),
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }


def without(scope: dict[str, Any], *names: str) -> dict[str, Any]:
    drop = {n.encode() for n in names}
    return {**scope, "headers": [(k, v) for k, v in scope["headers"] if k not in drop]}


def replaced(scope: dict[str, Any], name: str, value: str) -> dict[str, Any]:
    return {**without(scope, name), "headers": [*without(scope, name)["headers"], (name.encode(), value.encode())]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tmp_path_factory.mktemp("pipeline")


@pytest.fixture
def rig(data_dir: Any) -> Rig:
    return Rig(data_dir)


# == 1. malformed Binance requests: one exact error each ==========================================


class Bad(NamedTuple):
    expected: type[E.AuthError]
    query: str
    body: str = ""
    key: str | None = HMAC_KEY
    method: str = "GET"
    rule: RouteRule = ACCOUNT
    ip: str | None = IP


ED_ON_HMAC = eq()  # a valid Ed25519 signature, sent with an HMAC key
_P = params()
_HEX = hex_sig(_P)
_B64 = b64_sig(_P)

BINANCE_MALFORMED = [
    # the key header
    pytest.param(Bad(E.KeyMissing, hq(), key=None), id="key-header-missing"),
    pytest.param(Bad(E.KeyMissing, hq(), key=""), id="key-header-empty"),
    pytest.param(Bad(E.KeyMalformed, hq(), key="not-a-key"), id="key-garbage"),
    pytest.param(Bad(E.KeyMalformed, hq(), key=HMAC_KEY[:-1]), id="key-truncated"),
    pytest.param(Bad(E.KeyMalformed, hq(), key=HMAC_KEY + "0"), id="key-too-long"),
    pytest.param(Bad(E.KeyMalformed, hq(), key="kp_prod_" + HMAC_KEY[8:]), id="key-wrong-prefix"),
    pytest.param(Bad(E.KeyMalformed, hq(), key=HMAC_KEY.upper()), id="key-uppercased"),
    pytest.param(Bad(E.KeyMalformed, hq(), key=HMAC_KEY[:20] + "é" + HMAC_KEY[21:]), id="key-non-ascii"),
    pytest.param(Bad(E.KeyChecksum, hq(), key=BAD_CHECKSUM_KEY), id="key-bad-checksum"),
    # the signature
    pytest.param(Bad(E.SignatureMissing, _P), id="signature-missing"),
    pytest.param(Bad(E.SignatureMissing, _P, "quantity=1"), id="signature-missing-with-body"),
    pytest.param(Bad(E.SignatureEncoding, with_sig(_P, "")), id="signature-empty"),
    pytest.param(Bad(E.SignatureEncoding, with_sig(_P, "zz" * 32)), id="signature-64-non-hex"),
    pytest.param(Bad(E.SignatureEncoding, with_sig(_P, _HEX[:-2])), id="signature-hex-short"),
    pytest.param(Bad(E.SignatureEncoding, with_sig(_P, _HEX + "ab")), id="signature-hex-long"),
    pytest.param(Bad(E.SignatureEncoding, with_sig(_P, _HEX[:31] + " " + _HEX[32:])), id="signature-hex-space"),
    pytest.param(Bad(E.SignatureEncoding, with_sig(_P, "!" * 88), key=ED_KEY), id="signature-not-base64"),
    pytest.param(Bad(E.SignatureEncoding, with_sig(_P, _B64.rstrip("=")), key=ED_KEY), id="signature-b64-unpadded"),
    pytest.param(
        Bad(E.SignatureEncoding, with_sig(_P, base64.b64encode(bytes(63)).decode()), key=ED_KEY),
        id="signature-b64-63-bytes",
    ),
    pytest.param(
        Bad(E.SignatureEncoding, with_sig(_P, base64.b64encode(bytes(65)).decode()), key=ED_KEY),
        id="signature-b64-65-bytes",
    ),
    pytest.param(
        Bad(E.SignatureEncoding, with_sig(_P, "A" * 85 + "B=="), key=ED_KEY), id="signature-b64-non-canonical"
    ),
    pytest.param(
        Bad(E.SignatureEncoding, with_sig(_P, "+" + "A" * 85 + "=="), key=ED_KEY), id="signature-b64-raw-plus"
    ),
    pytest.param(
        Bad(E.SignatureEncoding, with_sig(_P, "-_" + "A" * 84 + "=="), key=ED_KEY), id="signature-b64-urlsafe"
    ),
    pytest.param(
        Bad(E.SignatureEncoding, with_sig(_P, "%41" + "A" * 85 + "%3D%3D"), key=ED_KEY),
        id="signature-b64-other-escape",
    ),
    pytest.param(Bad(E.DuplicateParameter, f"{with_sig(_P, _HEX)}&signature={_HEX}"), id="signature-twice-query"),
    pytest.param(
        Bad(E.DuplicateParameter, f"signature={_HEX}&{_P}&signature={_HEX}"), id="signature-twice-query-split"
    ),
    pytest.param(
        Bad(E.DuplicateParameter, with_sig(_P, _HEX), f"quantity=1&signature={_HEX}", method="POST", rule=ORDER),
        id="signature-query-and-body",
    ),
    # the timestamp
    pytest.param(Bad(E.ParamMissing, hq(ts=None)), id="timestamp-missing"),
    pytest.param(Bad(E.ParamInvalid, hq(ts="")), id="timestamp-empty"),
    pytest.param(Bad(E.ParamInvalid, hq(ts="now")), id="timestamp-non-numeric"),
    pytest.param(Bad(E.ParamInvalid, hq(ts=-NOW_MS)), id="timestamp-negative"),
    pytest.param(Bad(E.ParamInvalid, hq(ts="1.7e12")), id="timestamp-exponent"),
    pytest.param(Bad(E.ParamInvalid, hq(ts=f"{NOW_MS}.5")), id="timestamp-fraction"),
    pytest.param(Bad(E.TimestampOutsideWindow, hq(ts=10**20)), id="timestamp-huge-20-digits"),
    pytest.param(Bad(E.TimestampOutsideWindow, hq(ts=0)), id="timestamp-zero"),
    pytest.param(Bad(E.TimestampOutsideWindow, hq(ts=NOW_MS - 5001)), id="timestamp-past-default-window"),
    pytest.param(Bad(E.TimestampOutsideWindow, hq("recvWindow=1000", ts=NOW_MS - 1001)), id="timestamp-past-window"),
    pytest.param(Bad(E.TimestampOutsideWindow, hq(ts=NOW_MS + 1000)), id="timestamp-future"),
    pytest.param(Bad(E.TimestampOutsideWindow, hq(ts=(NOW_MS + 1000) * 1000)), id="timestamp-future-microseconds"),
    # recvWindow
    pytest.param(Bad(E.RecvWindowInvalid, hq("recvWindow=0")), id="recvwindow-zero"),
    pytest.param(Bad(E.RecvWindowInvalid, hq("recvWindow=-5000")), id="recvwindow-negative"),
    pytest.param(Bad(E.RecvWindowInvalid, hq("recvWindow=60001")), id="recvwindow-over-max"),
    pytest.param(Bad(E.RecvWindowInvalid, hq("recvWindow=" + "9" * 400)), id="recvwindow-huge"),
    pytest.param(Bad(E.RecvWindowInvalid, hq("recvWindow=abc")), id="recvwindow-non-numeric"),
    pytest.param(Bad(E.RecvWindowInvalid, hq("recvWindow=")), id="recvwindow-empty"),
    pytest.param(Bad(E.RecvWindowInvalid, hq("recvWindow=nan")), id="recvwindow-nan"),
    pytest.param(Bad(E.RecvWindowInvalid, hq("recvWindow=inf")), id="recvwindow-inf"),
    pytest.param(Bad(E.RecvWindowInvalid, hq("recvWindow=0x10")), id="recvwindow-hex"),
    # other parameters
    pytest.param(Bad(E.DuplicateParameter, hq("symbol=ETHUSDT")), id="param-duplicate"),
    pytest.param(Bad(E.DuplicateParameter, hq(f"timestamp={NOW_MS}")), id="timestamp-duplicate"),
    pytest.param(Bad(E.ParamInvalid, hq("note=%FF")), id="param-bad-percent-utf8"),
    pytest.param(Bad(E.ParamInvalid, hq("note=\xe9")), id="param-raw-non-ascii"),
    # the key's record
    pytest.param(Bad(E.KeyUnknown, hq(), key=UNKNOWN_KEY), id="key-unknown"),
    pytest.param(Bad(E.KeyRevoked, hq(), key=REVOKED_KEY), id="key-revoked"),
    pytest.param(Bad(E.KeyRevoked, hq(), key=NOCRED_KEY), id="key-without-credential"),
    pytest.param(Bad(E.KeyDisabled, hq(), key=DISABLED_KEY), id="key-disabled"),
    pytest.param(Bad(E.KeyDisabled, hq(), key=ODD_KEY), id="key-unknown-status"),
    pytest.param(Bad(E.KeyExpired, hq(), key=EXPIRED_KEY), id="key-status-expired"),
    pytest.param(Bad(E.KeyExpired, hq(), key=EXPIRES_KEY), id="key-past-expires-at"),
    pytest.param(Bad(E.KeyExpired, hq(), key=IDLE_KEY), id="key-idle-expired"),
    # the client IP
    pytest.param(Bad(E.IpNotAllowed, hq(), key=IP_KEY), id="ip-not-on-allowlist"),
    pytest.param(Bad(E.IpNotAllowed, hq(), key=IP_KEY, ip=None), id="ip-unknown"),
    pytest.param(Bad(E.IpNotAllowed, hq(), key=IP_KEY, ip="not-an-ip"), id="ip-unparsable"),
    pytest.param(Bad(E.IpNotAllowed, hq(), key=IP_KEY, ip="2001:db8::1"), id="ip-v6-not-on-v4-allowlist"),
    # the signature's value
    pytest.param(Bad(E.SignatureInvalid, hq(key=OTHER_SECRET)), id="hmac-wrong-secret"),
    pytest.param(Bad(E.SignatureInvalid, with_sig(params(symbol="ETHUSDT"), _HEX)), id="hmac-tampered-param"),
    pytest.param(Bad(E.SignatureInvalid, with_sig(_P, "0" * 64)), id="hmac-zero-signature"),
    pytest.param(Bad(E.SignatureInvalid, eq(signer=OTHER_SIGNER), key=ED_KEY), id="ed25519-other-key"),
    pytest.param(
        Bad(E.SignatureInvalid, with_sig(_P, base64.b64encode(bytes(64)).decode()), key=ED_KEY), id="ed25519-zero"
    ),
    pytest.param(
        Bad(E.SignatureInvalid, with_sig(_P, _HEX), "quantity=1", method="POST", rule=ORDER),
        id="hmac-body-not-covered",
    ),
    # the signature's type
    pytest.param(Bad(E.SignatureEncoding, ED_ON_HMAC), id="ed25519-signature-on-hmac-key"),
    pytest.param(Bad(E.SignatureEncoding, hq(), key=ED_KEY), id="hmac-signature-on-ed25519-key"),
    # scope and symbol
    pytest.param(Bad(E.ScopeMissing, hq(), key=READ_KEY, method="POST", rule=ORDER), id="scope-read-key-on-trade"),
    pytest.param(Bad(E.ScopeMissing, hq(), key=HMAC_KEY, method="POST", rule=WITHDRAW), id="scope-no-withdraw"),
    pytest.param(Bad(E.ScopeMissing, hq(), key=WITHHELD_KEY, method="POST", rule=WITHDRAW), id="scope-withheld"),
    pytest.param(
        Bad(E.SymbolNotAllowed, hq(symbol="ETHUSDT"), key=SYMBOL_KEY, method="POST", rule=ORDER),
        id="symbol-not-allowed",
    ),
    pytest.param(
        Bad(E.SymbolNotAllowed, hq(symbol=None), key=SYMBOL_KEY, method="POST", rule=ORDER), id="symbol-missing"
    ),
]


@pytest.mark.parametrize("case", BINANCE_MALFORMED)
def test_binance_rejects_malformed(rig: Rig, case: Bad) -> None:
    rejects(
        case.expected,
        lambda: rig.binance(case.rule, case.query, case.body, key=case.key, method=case.method, ip=case.ip),
    )
    assert rig.gate._tokens == {}  # a rejected request leaves no replay token


def test_binance_rejection_messages_name_the_reason(rig: Rig) -> None:
    idle = rejects(E.KeyExpired, lambda: rig.binance(ACCOUNT, hq(), key=IDLE_KEY))
    assert "idle days" in idle.message
    at = rejects(E.KeyExpired, lambda: rig.binance(ACCOUNT, hq(), key=EXPIRES_KEY))
    assert "expired at 2023-11-14T22:13:19Z" in at.message
    ip = rejects(E.IpNotAllowed, lambda: rig.binance(ACCOUNT, hq(), key=IP_KEY, ip="198.51.100.7"))
    assert "198.51.100.7" in ip.message
    withheld = rejects(E.ScopeMissing, lambda: rig.binance(WITHDRAW, hq(), key=WITHHELD_KEY, method="POST"))
    assert "has no operation privilege" in withheld.message and "bound to an IP" in withheld.message
    scope = rejects(E.ScopeMissing, lambda: rig.binance(ORDER, hq(), key=READ_KEY, method="POST"))
    assert "needs the 'trade' scope and the key has read" in scope.message
    symbol = rejects(E.SymbolNotAllowed, lambda: rig.binance(ORDER, hq(symbol=None), key=SYMBOL_KEY, method="POST"))
    assert "(none)" in symbol.message
    future = rejects(E.TimestampOutsideWindow, lambda: rig.binance(ACCOUNT, hq(ts=NOW_MS + 1500)))
    assert "ahead" in future.message and "1500 ms ahead" in future.message
    past = rejects(E.TimestampOutsideWindow, lambda: rig.binance(ACCOUNT, hq(ts=NOW_MS - 7000)))
    assert "7000 ms behind and recvWindow is 5000 ms" in past.message
    encoding = rejects(E.SignatureEncoding, lambda: rig.binance(ACCOUNT, ED_ON_HMAC))
    assert "an HMAC-SHA256 signature is 64 hex characters; got" in encoding.message
    # each carries the Binance code ccxt maps
    assert (idle.binance_code, ip.binance_code, scope.binance_code, future.binance_code) == (-1002, -2015, -2015, -1021)


@pytest.mark.parametrize(
    "timestamp",
    [
        pytest.param("9" * 400, id="400-digits-overflows-float"),
        pytest.param("9" * 5000, id="5000-digits-over-int-conversion-limit"),
    ],
)
def test_binance_absurd_timestamp_is_a_client_error(rig: Rig, timestamp: str) -> None:
    """Past any int64 a timestamp is far outside every window, as a 20-digit one is (never a 500
    from a float overflow or Python's int-string limit)."""
    error = rejects(E.TimestampOutsideWindow, lambda: rig.binance(ACCOUNT, hq(ts=timestamp)))
    assert error.status == 400


def _order_in(where: str, key_type: str = "hmac") -> tuple[str, str]:
    """(query, body) of one signed order, its parameters and signature in the query or the body."""
    p = params("side=BUY&quantity=1")
    sig = hex_sig(p) if key_type == "hmac" else ed_sig(p)
    return (with_sig(p, sig), "") if where == "query" else ("", with_sig(p, sig))


@pytest.mark.parametrize("where", ["query", "body"])
@pytest.mark.parametrize(("key_type", "key"), [("hmac", HMAC_KEY), ("ed25519", ED_KEY)])
def test_replayed_state_changing_request(rig: Rig, where: str, key_type: str, key: str) -> None:
    query, body = _order_in(where, key_type)
    ctx = rig.binance(ORDER, query, body, key=key, method="POST")
    assert ctx.params["quantity"] == "1" and ctx.key.public_id == key
    error = rejects(E.ReplayDetected, lambda: rig.binance(ORDER, query, body, key=key, method="POST"))
    assert error.binance_code == -1022
    rig.clock.now = NOW + 4.9  # later, but still inside its window
    rejects(E.ReplayDetected, lambda: rig.binance(ORDER, query, body, key=key, method="POST"))
    if key_type == "hmac":  # the guard is per key: another key with the same secret may send it once
        assert rig.binance(ORDER, query, body, key=IP_KEY, method="POST", ip=ALLOWED_IP).key.public_id == IP_KEY


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        pytest.param(("GET", ACCOUNT), ("GET", ACCOUNT), None, id="read-repeated-same-route-ok"),
        pytest.param(("GET", ACCOUNT), ("GET", OPEN_ORDERS), E.ReplayDetected, id="read-on-another-read-route"),
        pytest.param(("GET", ACCOUNT), ("DELETE", ORDER), E.ReplayDetected, id="read-becomes-cancel"),
        pytest.param(("GET", ACCOUNT), ("POST", ORDER), E.ReplayDetected, id="read-becomes-order"),
        pytest.param(("GET", ORDER), ("DELETE", ORDER), E.ReplayDetected, id="read-same-route-other-method"),
        pytest.param(("POST", ORDER), ("POST", ORDER), E.ReplayDetected, id="order-twice"),
        pytest.param(("POST", ORDER), ("GET", ORDER), E.ReplayDetected, id="order-then-read"),
        pytest.param(("DELETE", ORDER), ("DELETE", ORDER), E.ReplayDetected, id="cancel-twice"),
        pytest.param(("PUT", ORDER), ("PATCH", ORDER), E.ReplayDetected, id="put-then-patch"),
    ],
)
def test_signature_reuse_across_methods_and_routes(rig: Rig, first: tuple, second: tuple, expected: Any) -> None:
    query = hq()
    ctx = rig.binance(first[1], query, method=first[0])
    assert ctx.rule is first[1]
    if expected is None:
        again = rig.binance(second[1], query, method=second[0])
        assert again.rule is second[1] and again.key.public_id == HMAC_KEY
    else:
        rejects(expected, lambda: rig.binance(second[1], query, method=second[0]))


# == 2. RFC 9421 (httpsig) ======================================================================


class NBad(NamedTuple):
    expected: type[E.AuthError]
    scope: dict[str, Any]
    body: bytes = b""
    rule: RouteRule = NATIVE_READ


_SIGNED = native_scope()
_BODY = b'{"symbol":"BTCUSDT","side":"BUY"}'
_ALL = ("@method", "@path", "@query")

HTTPSIG_MALFORMED = [
    # the two headers
    pytest.param(NBad(E.SignatureMissing, without(_SIGNED, "signature-input", "signature")), id="no-signature-headers"),
    pytest.param(NBad(E.SignatureMissing, without(_SIGNED, "signature-input")), id="signature-input-missing"),
    pytest.param(NBad(E.SignatureMissing, without(_SIGNED, "signature")), id="signature-missing"),
    pytest.param(NBad(E.SignatureMissing, replaced(_SIGNED, "signature", "")), id="signature-empty"),
    pytest.param(
        NBad(E.SignatureInputMalformed, replaced(_SIGNED, "signature-input", 'sig1=("@method"')),
        id="signature-input-garbled",
    ),
    pytest.param(
        NBad(E.SignatureInputMalformed, replaced(_SIGNED, "signature-input", "sig1=(1 2 3);created=1")),
        id="signature-input-non-string-components",
    ),
    pytest.param(NBad(E.SignatureMalformed, replaced(_SIGNED, "signature", "sig1=notbytes")), id="signature-garbled"),
    pytest.param(NBad(E.SignatureMalformed, replaced(_SIGNED, "signature", "sig1=:***:")), id="signature-bad-base64"),
    pytest.param(NBad(E.SignatureMalformed, native_scope(sig_label="sig2")), id="signature-label-mismatch"),
    # alg
    pytest.param(NBad(E.AlgorithmUnknown, native_scope(alg="rsa-v1_5-sha256")), id="alg-unknown"),
    pytest.param(NBad(E.AlgorithmUnknown, native_scope(alg="HMAC-SHA256")), id="alg-wrong-case"),
    pytest.param(NBad(E.AlgorithmUnknown, native_scope(alg="ed25519")), id="alg-ed25519-on-hmac-key"),
    pytest.param(
        NBad(E.AlgorithmUnknown, native_scope(key=ED_KEY, signer=SIGNER, alg="hmac-sha256")),
        id="alg-hmac-on-ed25519-key",
    ),
    # keyid
    pytest.param(NBad(E.KeyMissing, native_scope(key="")), id="keyid-empty"),
    pytest.param(NBad(E.KeyMalformed, native_scope(key="not-a-key")), id="keyid-malformed"),
    pytest.param(NBad(E.KeyChecksum, native_scope(key=BAD_CHECKSUM_KEY)), id="keyid-bad-checksum"),
    pytest.param(NBad(E.KeyUnknown, native_scope(key=UNKNOWN_KEY)), id="keyid-unknown"),
    pytest.param(NBad(E.KeyRevoked, native_scope(key=REVOKED_KEY)), id="keyid-revoked"),
    pytest.param(NBad(E.IpNotAllowed, native_scope(key=IP_KEY)), id="keyid-ip-not-allowed"),
    pytest.param(
        NBad(
            E.SignatureInputMalformed,
            replaced(_SIGNED, "signature-input", 'sig1=("@method" "@path" "@query");created=1;nonce="abcdefgh"'),
        ),
        id="keyid-missing",
    ),
    # parameters
    pytest.param(
        NBad(
            E.SignatureInputMalformed,
            replaced(_SIGNED, "signature-input", 'sig1=("@method" "@path" "@query");nonce="abcdefgh";keyid="k"'),
        ),
        id="created-missing",
    ),
    pytest.param(NBad(E.SignatureInputMalformed, native_scope(nonce="short")), id="nonce-too-short"),
    pytest.param(NBad(E.SignatureInputMalformed, native_scope(nonce="n" * 129)), id="nonce-too-long"),
    # covered components
    pytest.param(NBad(E.ComponentMissing, native_scope(components=("@method", "@path"))), id="component-no-query"),
    pytest.param(NBad(E.ComponentMissing, native_scope(components=("@path", "@query"))), id="component-no-method"),
    pytest.param(NBad(E.ComponentMissing, native_scope(components=("@method", "@query"))), id="component-no-path"),
    pytest.param(
        NBad(E.ComponentMissing, native_scope("POST", "/v1/orders", body=_BODY, components=_ALL), _BODY, NATIVE_TRADE),
        id="component-body-without-content-digest",
    ),
    pytest.param(
        NBad(E.ComponentMissing, native_scope(components=(*_ALL, "date"))), id="component-covered-header-absent"
    ),
    pytest.param(
        NBad(
            E.ComponentMissing,
            without(native_scope("POST", "/v1/orders", body=_BODY), "content-digest"),
            _BODY,
            NATIVE_TRADE,
        ),
        id="content-digest-covered-but-absent",
    ),
    pytest.param(
        NBad(E.SignatureInputMalformed, native_scope(components=(*_ALL, "@status"))), id="component-response-only"
    ),
    # time
    pytest.param(NBad(E.TimestampOutsideWindow, native_scope(created=int(NOW) + 2)), id="created-future"),
    pytest.param(NBad(E.TimestampOutsideWindow, native_scope(created=int(NOW) + 10**6)), id="created-far-future"),
    pytest.param(NBad(E.TimestampOutsideWindow, native_scope(created=int(NOW) - 6)), id="created-too-old"),
    pytest.param(NBad(E.TimestampOutsideWindow, native_scope(created=-1)), id="created-negative"),
    pytest.param(NBad(E.TimestampOutsideWindow, native_scope(expires=int(NOW) - 1)), id="expires-passed"),
    # body digest
    pytest.param(
        NBad(E.ContentDigestMismatch, native_scope("POST", "/v1/orders", body=_BODY), _BODY + b" ", NATIVE_TRADE),
        id="content-digest-mismatch",
    ),
    pytest.param(
        NBad(
            E.ContentDigestInvalid,
            native_scope("POST", "/v1/orders", body=_BODY, digest="md5=:AAAA:"),
            _BODY,
            NATIVE_TRADE,
        ),
        id="content-digest-unsupported-alg",
    ),
    pytest.param(
        NBad(
            E.ContentDigestInvalid,
            native_scope("POST", "/v1/orders", body=_BODY, digest="sha-256=abc"),
            _BODY,
            NATIVE_TRADE,
        ),
        id="content-digest-malformed",
    ),
    # the signature's value
    pytest.param(NBad(E.SignatureInvalid, native_scope(secret_text=OTHER_SECRET)), id="wrong-secret"),
    pytest.param(NBad(E.SignatureInvalid, native_scope(key=ED_KEY, signer=OTHER_SIGNER)), id="ed25519-other-key"),
    pytest.param(
        NBad(E.SignatureInvalid, native_scope(sign_as=("GET", "/v1/keys/other", ""))), id="moved-to-another-path"
    ),
    pytest.param(
        NBad(E.SignatureInvalid, native_scope(query="a=2", sign_as=("GET", "/v1/keys/self", "a=1"))),
        id="moved-to-another-query",
    ),
    pytest.param(
        NBad(E.SignatureInvalid, native_scope("DELETE", sign_as=("GET", "/v1/keys/self", "")), rule=NATIVE_TRADE),
        id="moved-to-another-method",
    ),
    # scope
    pytest.param(
        NBad(E.ScopeMissing, native_scope("POST", "/v1/orders", key=READ_KEY), rule=NATIVE_TRADE), id="scope-missing"
    ),
]


@pytest.mark.parametrize("case", HTTPSIG_MALFORMED)
def test_httpsig_rejects_malformed(rig: Rig, case: NBad) -> None:
    rejects(case.expected, lambda: rig.native(case.rule, case.scope, case.body))
    assert rig.gate._tokens == {}


def test_httpsig_component_missing_names_the_component(rig: Rig) -> None:
    error = rejects(E.ComponentMissing, lambda: rig.native(NATIVE_READ, native_scope(components=(*_ALL, "date"))))
    assert isinstance(error, E.ComponentMissing) and error.component == "date"
    error = rejects(E.ComponentMissing, lambda: rig.native(NATIVE_READ, native_scope(components=("@method", "@path"))))
    assert isinstance(error, E.ComponentMissing) and error.component == "@query"


def test_httpsig_time_messages(rig: Rig) -> None:
    future = rejects(E.TimestampOutsideWindow, lambda: rig.native(NATIVE_READ, native_scope(created=int(NOW) + 30)))
    assert "30 s in the future" in future.message
    old = rejects(E.TimestampOutsideWindow, lambda: rig.native(NATIVE_READ, native_scope(created=int(NOW) - 30)))
    assert "30 s ago" in old.message
    expired = rejects(E.TimestampOutsideWindow, lambda: rig.native(NATIVE_READ, native_scope(expires=int(NOW) - 1)))
    assert f"expired at {int(NOW) - 1}" in expired.message


def test_httpsig_created_at_the_future_edge_is_called_future(rig: Rig) -> None:
    error = rejects(E.TimestampOutsideWindow, lambda: rig.native(NATIVE_READ, native_scope(created=int(NOW) + 1)))
    assert "in the future" in error.message


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_httpsig_nonce_replay(rig: Rig, method: str) -> None:
    """Every native request is single-use: its nonce, even on a read, is accepted once per key."""
    scope = native_scope(method, nonce="the-same-nonce")
    ctx = rig.native(NATIVE_READ, scope)
    assert ctx.dialect == "httpsig"
    error = rejects(E.NonceReused, lambda: rig.native(NATIVE_READ, scope))
    assert isinstance(error, E.ReplayDetected)
    # a new signature over the same nonce (another query) is the same token
    rejects(E.NonceReused, lambda: rig.native(NATIVE_READ, native_scope(method, query="x=1", nonce="the-same-nonce")))
    # the nonce is per key: another key may use it
    assert (
        rig.native(NATIVE_READ, native_scope(method, key=ED_KEY, signer=SIGNER, nonce="the-same-nonce")).key.public_id
        == ED_KEY
    )


# == 3. the order of the checks ==================================================================


class Two(NamedTuple):
    expected: type[E.AuthError]
    query: str
    key: str = HMAC_KEY
    method: str = "GET"
    rule: RouteRule = ACCOUNT
    ip: str | None = IP


BINANCE_ORDER = [
    pytest.param(Two(E.KeyUnknown, hq(ts=NOW_MS - 60_000), UNKNOWN_KEY), id="lookup-before-time"),
    pytest.param(Two(E.KeyUnknown, hq(key=OTHER_SECRET), UNKNOWN_KEY), id="lookup-before-signature"),
    pytest.param(Two(E.KeyRevoked, hq(), REVOKED_IP_KEY), id="status-before-ip"),
    pytest.param(Two(E.KeyExpired, hq(ts=NOW_MS - 60_000, key=OTHER_SECRET), EXPIRES_KEY), id="expiry-before-time"),
    pytest.param(
        Two(E.KeyExpired, hq(ts=NOW_MS - 60_000, key=OTHER_SECRET), IDLE_KEY, "POST", ORDER),
        id="idle-expiry-before-time-and-signature",
    ),
    pytest.param(Two(E.IpNotAllowed, hq(key=OTHER_SECRET), IP_KEY), id="ip-before-signature"),
    pytest.param(Two(E.IpNotAllowed, hq(ts=NOW_MS - 60_000), IP_KEY), id="ip-before-time"),
    pytest.param(Two(E.IpNotAllowed, eq(), IP_KEY), id="ip-before-signature-type"),
    pytest.param(Two(E.TimestampOutsideWindow, hq(ts=NOW_MS - 60_000, key=OTHER_SECRET)), id="time-before-signature"),
    pytest.param(Two(E.TimestampOutsideWindow, hq(ts=NOW_MS + 60_000, key=OTHER_SECRET)), id="future-before-signature"),
    pytest.param(Two(E.TimestampOutsideWindow, eq(ts=NOW_MS - 60_000)), id="time-before-signature-type"),
    pytest.param(Two(E.SignatureEncoding, eq(), READ_KEY, "POST", ORDER), id="signature-type-before-scope"),
    pytest.param(Two(E.SignatureInvalid, hq(key=OTHER_SECRET), READ_KEY, "POST", ORDER), id="signature-before-scope"),
    pytest.param(
        Two(E.SignatureInvalid, hq(symbol="ETHUSDT", key=OTHER_SECRET), SYMBOL_KEY, "POST", ORDER),
        id="signature-before-symbol",
    ),
    pytest.param(Two(E.ScopeMissing, hq(symbol="ETHUSDT"), READ_KEY, "POST", ORDER), id="scope-before-symbol"),
]


@pytest.mark.parametrize("case", BINANCE_ORDER)
def test_binance_first_failing_check_wins(rig: Rig, case: Two) -> None:
    rejects(case.expected, lambda: rig.binance(case.rule, case.query, key=case.key, method=case.method, ip=case.ip))


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param("not-a-key", E.KeyMalformed, id="malformed"),
        pytest.param(BAD_CHECKSUM_KEY, E.KeyChecksum, id="checksum"),
        pytest.param(None, E.KeyMissing, id="missing"),
    ],
)
def test_key_format_is_checked_before_any_lookup(rig: Rig, key: str | None, expected: type[E.AuthError]) -> None:
    rejects(expected, lambda: rig.binance(ACCOUNT, hq(), key=key))
    assert rig.loads == []  # the key store was never asked
    assert len(rig.cache) == 0


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(params(), E.SignatureMissing, id="no-signature"),
        pytest.param(hq(ts=None), E.ParamMissing, id="no-timestamp"),
    ],
)
def test_the_dialect_parses_before_the_key_format_is_checked(rig: Rig, query: str, expected: type) -> None:
    """DESIGN's order: the dialect parses first, then the pipeline checks the key header."""
    rejects(expected, lambda: rig.binance(ACCOUNT, query, key="not-a-key"))


HTTPSIG_ORDER = [
    pytest.param(
        NBad(E.ComponentMissing, native_scope(key=UNKNOWN_KEY, components=("@method", "@path"))),
        id="parse-before-lookup",
    ),
    pytest.param(NBad(E.KeyUnknown, native_scope(key=UNKNOWN_KEY, created=int(NOW) - 60)), id="lookup-before-time"),
    pytest.param(NBad(E.IpNotAllowed, native_scope(key=IP_KEY, created=int(NOW) - 60)), id="ip-before-time"),
    pytest.param(
        NBad(E.TimestampOutsideWindow, native_scope(created=int(NOW) - 60, alg="ed25519")), id="time-before-alg"
    ),
    pytest.param(
        NBad(
            E.AlgorithmUnknown,
            native_scope("POST", "/v1/orders", body=_BODY, alg="ed25519"),
            _BODY + b"x",
            NATIVE_TRADE,
        ),
        id="alg-before-digest",
    ),
    pytest.param(
        NBad(
            E.ContentDigestMismatch,
            native_scope("POST", "/v1/orders", body=_BODY, secret_text=OTHER_SECRET),
            _BODY + b"x",
            NATIVE_TRADE,
        ),
        id="digest-before-signature",
    ),
    pytest.param(
        NBad(E.TimestampOutsideWindow, native_scope(created=int(NOW) + 60, secret_text=OTHER_SECRET)),
        id="time-before-signature",
    ),
    pytest.param(
        NBad(
            E.SignatureInvalid,
            native_scope("POST", "/v1/orders", key=READ_KEY, secret_text=OTHER_SECRET),
            rule=NATIVE_TRADE,
        ),
        id="signature-before-scope",
    ),
]


@pytest.mark.parametrize("case", HTTPSIG_ORDER)
def test_httpsig_first_failing_check_wins(rig: Rig, case: NBad) -> None:
    rejects(case.expected, lambda: rig.native(case.rule, case.scope, case.body))


def test_scope_refusal_leaves_no_replay_token(rig: Rig) -> None:
    """A request the key may not make is refused before the gate: once the key gets the scope,
    the very same signed request is accepted, not answered "replayed"."""
    query = hq("side=BUY&quantity=1")
    rejects(E.ScopeMissing, lambda: rig.binance(ORDER, query, key=READ_KEY, method="POST"))
    assert rig.gate._tokens == {}
    rig.records[READ_KEY] = record(READ_KEY, scopes=(Scope.READ, Scope.TRADE))
    rig.cache.evict([READ_KEY])
    ctx = rig.binance(ORDER, query, key=READ_KEY, method="POST")
    assert Scope.TRADE in ctx.key.scopes and ctx.params["side"] == "BUY"
    rejects(E.ReplayDetected, lambda: rig.binance(ORDER, query, key=READ_KEY, method="POST"))


def test_symbol_refusal_leaves_no_replay_token(rig: Rig) -> None:
    query = hq(symbol="ETHUSDT")
    rejects(E.SymbolNotAllowed, lambda: rig.binance(ORDER, query, key=SYMBOL_KEY, method="POST"))
    rig.records[SYMBOL_KEY] = record(SYMBOL_KEY, symbols=("BTCUSDT", "ETHUSDT"))
    rig.cache.evict([SYMBOL_KEY])
    assert rig.binance(ORDER, query, key=SYMBOL_KEY, method="POST").params["symbol"] == "ETHUSDT"


def test_httpsig_scope_refusal_leaves_nonce_unused(rig: Rig) -> None:
    scope = native_scope("POST", "/v1/orders", key=READ_KEY, nonce="retry-nonce")
    rejects(E.ScopeMissing, lambda: rig.native(NATIVE_TRADE, scope))
    rig.records[READ_KEY] = record(READ_KEY, scopes=(Scope.READ, Scope.TRADE))
    rig.cache.evict([READ_KEY])
    assert rig.native(NATIVE_TRADE, scope).key.public_id == READ_KEY


def test_refused_requests_spend_no_rate_limit_weight(data_dir: Any) -> None:
    rig = Rig(data_dir, rate_limit_per_key="2/minute")
    for _ in range(3):  # refused before the gate: counts nothing
        rejects(E.ScopeMissing, lambda: rig.binance(ORDER, hq(), key=READ_KEY, method="POST"))
        rejects(E.SignatureInvalid, lambda: rig.binance(ACCOUNT, hq(key=OTHER_SECRET), key=READ_KEY))
    first = rig.binance(SELF, hq(), key=READ_KEY)
    second = rig.binance(SELF, hq("a=1"), key=READ_KEY)
    assert (first.admission.used, second.admission.used) == (1, 2)
    error = rejects(E.RateLimited, lambda: rig.binance(SELF, hq("a=2"), key=READ_KEY))
    assert error.headers["X-MBX-USED-WEIGHT-1M"] == "3"


def test_ip_lockout_comes_first(data_dir: Any) -> None:
    """The lockout check (the middleware's first call) answers before anything is parsed; only
    guessing signals count towards it, and only the failing IP is locked out."""
    rig = Rig(data_dir, lockout_failures=3, lockout_s=30)
    auth = rig.auth
    clock_error = E.TimestampOutsideWindow("late")
    for _ in range(5):
        auth.count_failure(clock_error, key_id=HMAC_KEY, ip=IP, route="/api/v3/account", method="GET")
    auth.check_lockout(IP)  # a clock problem is not a guessing signal
    for _ in range(3):
        with pytest.raises(E.SignatureInvalid) as info:
            rig.binance(ACCOUNT, hq(key=OTHER_SECRET))
        auth.count_failure(info.value, key_id=HMAC_KEY, ip=IP, route="/api/v3/account", method="GET")
    locked = rejects(E.IpLockedOut, lambda: auth.check_lockout(IP))
    assert locked.status == 429 and locked.headers == {"Retry-After": "30"}
    assert auth.failures == {"timestamp_outside_window": 5, "signature_invalid": 3}
    auth.check_lockout("198.51.100.1")  # another IP is not affected
    assert rig.binance(ACCOUNT, hq(), ip="198.51.100.1").key.public_id == HMAC_KEY
    rig.clock.now += 30  # the lockout ends
    auth.check_lockout(IP)


def test_restart_cut_off_refuses_single_use_requests_signed_before_it(rig: Rig) -> None:
    rig.gate.replay_since_s = NOW + 0.5  # this process started after these requests were signed
    error = rejects(E.TimestampOutsideWindow, lambda: rig.binance(ORDER, hq(), method="POST"))
    assert "signed before the server restarted" in error.message
    rejects(E.TimestampOutsideWindow, lambda: rig.native(NATIVE_READ, native_scope()))
    # a read may repeat anyway, so it needs no replay check: accepted
    assert rig.binance(ACCOUNT, hq()).key.public_id == HMAC_KEY
    # signed after the cut-off (its window opened after it): accepted
    rig.clock.now = NOW + 2
    assert rig.binance(ORDER, hq(ts=NOW_MS + 2000), method="POST").key.public_id == HMAC_KEY


# == 4. requests that pass ======================================================================


def test_hmac_read_returns_the_context(rig: Rig) -> None:
    ctx = rig.binance(ACCOUNT, hq("recvWindow=10000"))
    assert isinstance(ctx, AuthContext)
    assert ctx.key is rig.records[HMAC_KEY]
    assert ctx.params == {"symbol": "BTCUSDT", "recvWindow": "10000", "timestamp": str(NOW_MS)}
    assert (ctx.client_ip, ctx.rule, ctx.dialect) == (IP, ACCOUNT, "binance")
    assert ctx.not_after_s == NOW + 10.0
    assert ctx.admission is not None and (ctx.admission.limit, ctx.admission.used) == (1000, ACCOUNT.weight)
    assert rig.auth.usage.last_seen == {HMAC_KEY: NOW}
    assert rig.loads == [HMAC_KEY]


def test_hmac_order_signed_over_query_and_body(rig: Rig) -> None:
    query = f"symbol=BTCUSDT&timestamp={NOW_MS}"
    body = "side=BUY&type=LIMIT&quantity=0.5&price=30000"
    signed_body = f"{body}&signature={hex_sig(query + body)}"
    ctx = rig.binance(ORDER, query, signed_body, method="POST")
    assert ctx.params == {
        "symbol": "BTCUSDT",
        "timestamp": str(NOW_MS),
        "side": "BUY",
        "type": "LIMIT",
        "quantity": "0.5",
        "price": "30000",
    }
    assert ctx.not_after_s == NOW + 5.0


def test_hmac_percent_encoded_params_are_signed_as_sent(rig: Rig) -> None:
    p = params("newClientOrderId=a%2Fb+c")
    ctx = rig.binance(ORDER, with_sig(p, hex_sig(p)), method="POST")
    assert ctx.params["newClientOrderId"] == "a/b c"


@pytest.mark.parametrize(
    ("key", "query"),
    [
        pytest.param(HMAC_KEY, hq(), id="hmac"),
        pytest.param(HMAC_KEY, with_sig(_P, _HEX.upper()), id="hmac-uppercase-hex"),
        pytest.param(ED_KEY, eq(), id="ed25519"),
        pytest.param(HMAC_KEY, hq(ts=NOW_MS * 1000), id="microsecond-timestamp"),
        pytest.param(" " + HMAC_KEY + " ", hq(), id="key-header-with-spaces"),
        pytest.param(IDLE_FRESH_KEY, hq(), id="idle-key-used-recently"),
        pytest.param(SYMBOL_KEY, hq(symbol="btcusdt"), id="symbol-case-insensitive"),
    ],
)
def test_accepted(rig: Rig, key: str, query: str) -> None:
    ctx = rig.binance(ORDER, query, key=key, method="POST")
    assert ctx.key.public_id == key.strip()
    assert ctx.dialect == "binance" and ctx.rule is ORDER


@pytest.mark.parametrize(
    ("ip", "accepted"),
    [
        ("203.0.113.5", True),
        ("203.0.113.255", True),
        ("::ffff:203.0.113.5", True),
        ("203.0.114.5", False),
        ("", False),
    ],
)
def test_ip_allowlist(rig: Rig, ip: str, accepted: bool) -> None:
    if accepted:
        assert rig.binance(ACCOUNT, hq(), key=IP_KEY, ip=ip).client_ip == ip
    else:
        rejects(E.IpNotAllowed, lambda: rig.binance(ACCOUNT, hq(), key=IP_KEY, ip=ip))


@pytest.mark.parametrize(
    ("timestamp", "recv_window", "accepted"),
    [
        pytest.param(NOW_MS, None, True, id="now"),
        pytest.param(NOW_MS - 5000, None, True, id="oldest-in-default-window"),
        pytest.param(NOW_MS - 5001, None, False, id="just-outside-default-window"),
        pytest.param(NOW_MS + 999, None, True, id="latest-future-tolerated"),
        pytest.param(NOW_MS + 1000, None, False, id="first-future-refused"),
        pytest.param(NOW_MS - 60_000, 60_000, True, id="oldest-in-max-window"),
        pytest.param(NOW_MS - 60_001, 60_000, False, id="just-outside-max-window"),
        pytest.param(NOW_MS - 100, 100, True, id="small-window-edge"),
        pytest.param(NOW_MS - 101, 100, False, id="small-window-outside"),
    ],
)
def test_timestamp_window_edges(rig: Rig, timestamp: int, recv_window: int | None, accepted: bool) -> None:
    query = hq("" if recv_window is None else f"recvWindow={recv_window}", ts=timestamp)
    if accepted:
        assert rig.binance(ACCOUNT, query).not_after_s == (timestamp + (recv_window or 5000)) / 1000
    else:
        rejects(E.TimestampOutsideWindow, lambda: rig.binance(ACCOUNT, query))


@pytest.mark.parametrize("key_type", ["hmac", "ed25519"])
def test_previous_credential_accepted_until_valid_until(data_dir: Any, key_type: str) -> None:
    until = NOW + 600
    if key_type == "hmac":
        verifiers: tuple[Verifier, ...] = (HmacVerifier(SECRET.encode()), HmacVerifier(OLD_SECRET.encode(), until))
        old: Callable[[int], str] = lambda ts: hq(ts=ts, key=OLD_SECRET)  # noqa: E731
        new: Callable[[int], str] = lambda ts: hq(ts=ts)  # noqa: E731
    else:
        verifiers = (Ed25519Verifier(bytes(SIGNER.verify_key)), Ed25519Verifier(bytes(OLD_SIGNER.verify_key), until))
        old = lambda ts: eq(ts=ts, signer=OLD_SIGNER)  # noqa: E731
        new = lambda ts: eq(ts=ts)  # noqa: E731
    rig = Rig(data_dir, {HMAC_KEY: record(HMAC_KEY, key_type, verifiers=verifiers)})
    assert rig.binance(ORDER, old(NOW_MS), method="POST").key.public_id == HMAC_KEY
    rig.clock.now = until - 1
    at = int(rig.clock.now * 1000)
    assert rig.binance(ORDER, old(at), method="POST").key.public_id == HMAC_KEY
    rig.clock.now = until
    at = int(until * 1000)
    rejects(E.SignatureInvalid, lambda: rig.binance(ORDER, old(at), method="POST"))
    rig.clock.now = until + DAY
    at = int(rig.clock.now * 1000)
    rejects(E.SignatureInvalid, lambda: rig.binance(ORDER, old(at), method="POST"))
    assert rig.binance(ORDER, new(at), method="POST").key.public_id == HMAC_KEY


def test_authenticate_now_needs_a_cached_key(rig: Rig) -> None:
    scope = binance_scope("GET", hq().encode(), HMAC_KEY)
    req = rig.read(ACCOUNT, scope)
    assert rig.auth.authenticate_now(req, "GET", ACCOUNT, IP) is None  # a miss: nothing checked
    assert rig.loads == [] and rig.gate._tokens == {} and rig.auth.usage.last_seen == {}
    ctx = asyncio.run(rig.auth.authenticate(req, "GET", ACCOUNT, IP))
    assert ctx.key.public_id == HMAC_KEY and rig.loads == [HMAC_KEY]
    # now cached: answered without a coroutine, and without loading again
    req2 = rig.read(ACCOUNT, binance_scope("GET", hq("a=1").encode(), HMAC_KEY))
    ctx2 = rig.auth.authenticate_now(req2, "GET", ACCOUNT, IP)
    assert ctx2 is not None and ctx2.params["a"] == "1" and rig.loads == [HMAC_KEY]
    assert ctx2.admission is not None and ctx2.admission.used == 2 * ACCOUNT.weight


def test_authenticate_now_without_a_key_id(rig: Rig) -> None:
    req = rig.read(ACCOUNT, binance_scope("GET", hq().encode(), None))
    assert req.key_id is None
    assert rig.auth.authenticate_now(req, "GET", ACCOUNT, IP) is None
    rejects(E.KeyMissing, lambda: asyncio.run(rig.auth.authenticate(req, "GET", ACCOUNT, IP)))


def test_authenticate_now_runs_every_check_on_a_cached_key(rig: Rig) -> None:
    rig.binance(ACCOUNT, hq(), key=READ_KEY)  # caches the key
    req = rig.read(ORDER, binance_scope("POST", hq().encode(), READ_KEY))
    rejects(E.ScopeMissing, lambda: rig.auth.authenticate_now(req, "POST", ORDER, IP))
    stale = rig.read(ACCOUNT, binance_scope("GET", hq(ts=NOW_MS - 10_000).encode(), READ_KEY))
    rejects(E.TimestampOutsideWindow, lambda: rig.auth.authenticate_now(stale, "GET", ACCOUNT, IP))


def test_unknown_key_is_cached_as_unknown(rig: Rig) -> None:
    rejects(E.KeyUnknown, lambda: rig.binance(ACCOUNT, hq(), key=UNKNOWN_KEY))
    rejects(E.KeyUnknown, lambda: rig.binance(ACCOUNT, hq("a=1"), key=UNKNOWN_KEY))
    assert rig.loads == [UNKNOWN_KEY]  # the negative entry answered the second


def _ed_order_with_plus_and_slash() -> tuple[str, str]:
    """An order payload whose Ed25519 signature's base64 has '+', '/' and '=' in it."""
    for n in range(1000):
        p = params(f"side=BUY&newClientOrderId=c{n}")
        text = b64_sig(p)
        if "+" in text and "/" in text:
            return p, text
    raise AssertionError("no such signature in 1000 tries")


_ED_P, _ED_B64 = _ed_order_with_plus_and_slash()
_ED_SPELLINGS = {
    "upper-escapes": _ED_B64.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D"),
    "lower-escapes": _ED_B64.replace("+", "%2b").replace("/", "%2f").replace("=", "%3d"),
    "only-plus-escaped": _ED_B64.replace("+", "%2B"),
    "mixed": _ED_B64.replace("+", "%2b").replace("/", "%2F").replace("==", "%3D%3d"),
}


@pytest.mark.parametrize("spelling", list(_ED_SPELLINGS))
def test_ed25519_respellings_are_one_replay_token(rig: Rig, spelling: str) -> None:
    canonical = rig.read(ORDER, binance_scope("POST", with_sig(_ED_P, _ED_SPELLINGS["upper-escapes"]).encode(), ED_KEY))
    variant = rig.read(ORDER, binance_scope("POST", with_sig(_ED_P, _ED_SPELLINGS[spelling]).encode(), ED_KEY))
    assert variant.signature_text == _ED_SPELLINGS[spelling]
    assert (variant.replay_token, variant.signature, variant.algorithm) == (
        canonical.replay_token,
        canonical.signature,
        "ed25519",
    )
    assert variant.replay_token == base64.b64decode(_ED_B64).hex()
    # each spelling verifies on its own...
    fresh = Rig(rig.settings.data_dir)
    assert (
        fresh.binance(ORDER, with_sig(_ED_P, _ED_SPELLINGS[spelling]), key=ED_KEY, method="POST").key.key_type
        == "ed25519"
    )
    # ...and once any spelling was accepted, every other one is a replay
    rejects(
        E.ReplayDetected,
        lambda: fresh.binance(ORDER, with_sig(_ED_P, _ED_SPELLINGS["upper-escapes"]), key=ED_KEY, method="POST"),
    )


def test_hmac_hex_case_is_one_replay_token(rig: Rig) -> None:
    lower = rig.read(ORDER, binance_scope("POST", with_sig(_P, _HEX).encode(), HMAC_KEY))
    upper = rig.read(ORDER, binance_scope("POST", with_sig(_P, _HEX.upper()).encode(), HMAC_KEY))
    assert lower.replay_token == upper.replay_token == _HEX
    rig.binance(ORDER, with_sig(_P, _HEX), method="POST")
    rejects(E.ReplayDetected, lambda: rig.binance(ORDER, with_sig(_P, _HEX.upper()), method="POST"))


def test_httpsig_hmac_with_body_via_keyplane_client(rig: Rig) -> None:
    """Interop: keyplane's own RFC 9421 client signs, the pipeline verifies."""
    url = "https://testserver/v1/orders?symbol=BTCUSDT"
    signed = sign_request(
        "POST", url, {}, _BODY, key_id=HMAC_KEY, secret=SECRET, created=int(NOW), nonce="client-nonce-1"
    )
    scope = raw_scope(
        "POST", "/v1/orders", "symbol=BTCUSDT", {"host": "testserver", **{k.lower(): v for k, v in signed.items()}}
    )
    ctx = rig.native(NATIVE_TRADE, scope, _BODY)
    assert (ctx.key.public_id, ctx.dialect, ctx.rule) == (HMAC_KEY, "httpsig", NATIVE_TRADE)
    assert ctx.params == {"symbol": "BTCUSDT"}
    assert ctx.not_after_s == NOW + 5
    assert ctx.admission is not None and ctx.admission.used == 1


def test_httpsig_ed25519_via_keyplane_client(rig: Rig) -> None:
    pem = (
        Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    url = "https://testserver/v1/keys/self"
    signed = sign_request("GET", url, {}, key_id=ED_KEY, private_key_pem=pem, created=int(NOW) - 5)
    scope = raw_scope("GET", "/v1/keys/self", "", {k.lower(): v for k, v in signed.items()})
    ctx = rig.native(NATIVE_READ, scope)
    assert (ctx.key.key_type, ctx.dialect, ctx.params) == ("ed25519", "httpsig", {})
    assert ctx.not_after_s == NOW  # created 5 s ago: the last second it is accepted


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param(native_scope(), id="hmac"),
        pytest.param(native_scope(alg=None), id="hmac-no-alg"),
        pytest.param(native_scope(key=ED_KEY, signer=SIGNER), id="ed25519"),
        pytest.param(native_scope(key=ED_KEY, signer=SIGNER, alg=None), id="ed25519-no-alg"),
        pytest.param(native_scope(query="a=1&b=%20"), id="with-query"),
        pytest.param(native_scope(components=(*_ALL, "@authority", "host")), id="more-components"),
        pytest.param(native_scope(created=int(NOW) - 5), id="oldest-created"),
        pytest.param(native_scope(created=int(NOW)), id="created-now"),
        pytest.param(native_scope(expires=int(NOW) + 1), id="expires-later"),
    ],
)
def test_httpsig_accepted(rig: Rig, scope: dict[str, Any]) -> None:
    ctx = rig.native(NATIVE_READ, scope)
    assert ctx.dialect == "httpsig" and ctx.rule is NATIVE_READ
    assert ctx.key.public_id in (HMAC_KEY, ED_KEY)


def test_httpsig_previous_secret_in_grace(data_dir: Any) -> None:
    until = NOW + 60
    rec = record(HMAC_KEY, verifiers=(HmacVerifier(SECRET.encode()), HmacVerifier(OLD_SECRET.encode(), until)))
    rig = Rig(data_dir, {HMAC_KEY: rec})
    assert rig.native(NATIVE_READ, native_scope(secret_text=OLD_SECRET, nonce="grace-one")).key is rec
    rig.clock.now = until
    late = native_scope(secret_text=OLD_SECRET, nonce="grace-two", created=int(until))
    rejects(E.SignatureInvalid, lambda: rig.native(NATIVE_READ, late))
    assert rig.native(NATIVE_READ, native_scope(nonce="grace-three", created=int(until))).key is rec


# -- the check_* helpers on their own -----------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, E.KeyMissing),
        ("", E.KeyMissing),
        ("   ", E.KeyMalformed),
        ("kp_live_", E.KeyMalformed),
        ("kp_test_" + HMAC_KEY[8:], E.KeyChecksum),
        (BAD_CHECKSUM_KEY, E.KeyChecksum),
    ],
)
def test_check_key_format(header: str | None, expected: type[E.AuthError]) -> None:
    rejects(expected, lambda: Authenticator.check_key_format(header))


def test_check_key_format_accepts_and_strips() -> None:
    assert Authenticator.check_key_format(f"\t{HMAC_KEY} ") == HMAC_KEY
    head = "kp_test_" + "TestEnv".ljust(keyformat.KEY_BODY_LEN, "0")
    test_key = head + keyformat.checksum(head)
    assert Authenticator.check_key_format(test_key) == test_key


def test_check_returns_what_the_gate_needs(rig: Rig) -> None:
    rec = rig.records[HMAC_KEY]
    read = rig.read(ACCOUNT, binance_scope("GET", hq("recvWindow=2000").encode(), HMAC_KEY))
    assert rig.auth.check(rec, read, "GET", ACCOUNT, IP) == ("GET account", 2.0 + 1.0 + 1.0, NOW)
    order = rig.read(ORDER, binance_scope("POST", hq().encode(), HMAC_KEY))
    assert rig.auth.check(rec, order, "POST", ORDER, IP) == (None, 5.0 + 1.0 + 1.0, NOW)
    native = rig.read(NATIVE_READ, native_scope())
    assert rig.auth.check(rec, native, "GET", NATIVE_READ, IP) == (None, 5.0 + 1.0 + 1.0, NOW)
    assert rig.gate._tokens == {}  # check() alone admits nothing


def test_key_store_down_fails_closed(rig: Rig) -> None:
    with pytest.raises(E.AuthUnavailable) as info:
        rig.binance(ACCOUNT, hq(), key=BROKEN_KEY)
    assert (info.value.status, info.value.counts_as_failure) == (503, False)


def test_stale_key_cache_fails_closed_even_for_a_cached_key(data_dir: Any) -> None:
    rig = Rig(data_dir, max_staleness_s=2.0)
    assert rig.binance(ACCOUNT, hq()).key.public_id == HMAC_KEY  # cached now
    rig.clock.now = NOW + 2.5  # the change poller has not succeeded for 2.5 s
    req = rig.read(ACCOUNT, binance_scope("GET", hq("a=1", ts=NOW_MS + 2500).encode(), HMAC_KEY))
    assert rig.auth.authenticate_now(req, "GET", ACCOUNT, IP) is None
    with pytest.raises(E.AuthUnavailable) as info:
        asyncio.run(rig.auth.authenticate(req, "GET", ACCOUNT, IP))
    assert info.value.status == 503
    rig.cache.mark_fresh()
    assert asyncio.run(rig.auth.authenticate(req, "GET", ACCOUNT, IP)).params["a"] == "1"


def test_count_failure_reports_to_the_sink(data_dir: Any) -> None:
    seen: list[tuple[str, str | None, str | None, str, str]] = []

    def sink(error: E.AuthError, *, key_id: str | None, ip: str | None, route: str, method: str) -> None:
        seen.append((error.code, key_id, ip, route, method))

    rig = Rig(data_dir, on_failure=sink)
    with pytest.raises(E.AuthError) as info:
        rig.binance(ORDER, hq(), key=READ_KEY, method="POST")
    rig.auth.count_failure(info.value, key_id=READ_KEY, ip=IP, route="/api/v3/order", method="POST")
    assert seen == [("scope_missing", READ_KEY, IP, "/api/v3/order", "POST")]
    assert rig.auth.failures == {"scope_missing": 1}
