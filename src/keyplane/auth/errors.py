"""Why a signed request was rejected. One class per reason, each with a stable ``code``.

    AuthError (KeyplaneError)
    ├── KeyMissing, KeyMalformed, KeyChecksum          the key header, before any lookup
    ├── KeyUnknown, KeyRevoked, KeyDisabled, KeyExpired
    ├── IpNotAllowed                                   names the IP the server saw
    ├── ParamMissing, ParamInvalid, DuplicateParameter, RecvWindowInvalid, BodyTooLarge
    ├── TimestampOutsideWindow                         says the server time and the client's offset
    ├── SignatureMissing, SignatureEncoding, SignatureInvalid
    ├── ScopeMissing, SymbolNotAllowed                 ccxt maps these to PermissionDenied
    ├── AuthUnavailable                                a dependency is down: fail closed (503)
    │   the native dialect (RFC 9421):
    ├── SignatureInputMalformed    Signature-Input is not a valid structured field, or lacks a parameter
    ├── SignatureMalformed         Signature is not a valid structured field, or lacks the label
    ├── AlgorithmUnknown           ``alg`` is not hmac-sha256 or ed25519, or does not fit the key
    ├── ComponentMissing           a required component is not covered (names it)
    ├── ContentDigestInvalid       Content-Digest is malformed or uses no supported algorithm
    ├── ContentDigestMismatch      the body does not match Content-Digest
    │   the request gate:
    ├── ReplayDetected             a signature (its bytes) or nonce used again, or on another request
    │   └── NonceReused            an httpsig nonce seen before for this key
    ├── RateLimited                429 with Retry-After (and the dialect's usage headers)
    └── IpLockedOut                429: too many failed authentications from this IP

``binance_code`` is what the Binance-compatible surface sends, chosen so that ccxt raises the right
exception (research/clients.md §1.4): -2014/-2015/-1002/-1022 -> AuthenticationError, -1021 ->
InvalidNonce, a message containing "has no operation privilege" -> PermissionDenied, -1101/-1102 ->
BadRequest. Several reasons share a Binance code; the ``reason`` field and ``X-Keyplane-Error``
header always name the precise one.
"""

from __future__ import annotations

import math

from keyplane.errors import KeyplaneError, OutsideRecvWindow, ServiceUnavailable


class AuthError(KeyplaneError):
    code = "auth_failed"
    status = 401
    binance_code = -1002
    # Whether this reason counts towards an IP lockout (a guessing signal) or not (e.g. a clock issue).
    counts_as_failure = True
    headers: dict[str, str] = {}


class KeyMissing(AuthError):
    code = "key_missing"
    binance_code = -2014


class KeyMalformed(AuthError):
    code = "key_malformed"
    binance_code = -2014


class KeyChecksum(AuthError):
    code = "key_checksum"
    binance_code = -2014


class KeyUnknown(AuthError):
    code = "key_unknown"
    binance_code = -2015


class KeyRevoked(AuthError):
    code = "key_revoked"


class KeyDisabled(AuthError):
    code = "key_disabled"


class KeyExpired(AuthError):
    code = "key_expired"


class IpNotAllowed(AuthError):
    code = "ip_not_allowed"
    binance_code = -2015


class ParamMissing(AuthError):
    code = "param_missing"
    status = 400
    binance_code = -1102


class ParamInvalid(AuthError):
    code = "param_invalid"
    status = 400
    binance_code = -1102


class RecvWindowInvalid(AuthError):
    code = "recv_window_invalid"
    status = 400
    binance_code = -1102


class DuplicateParameter(AuthError):
    code = "duplicate_parameter"
    status = 400
    binance_code = -1101


class BodyTooLarge(AuthError):
    code = "body_too_large"
    status = 413
    binance_code = -1100


class TimestampOutsideWindow(OutsideRecvWindow, AuthError):
    # The wire code, status and Binance code are OutsideRecvWindow's (listed first, so they win).
    counts_as_failure = False


class SignatureMissing(AuthError):
    code = "signature_missing"
    status = 400
    binance_code = -1102


class SignatureEncoding(AuthError):
    code = "signature_encoding"
    binance_code = -1022


class SignatureInvalid(AuthError):
    code = "signature_invalid"
    binance_code = -1022


class ScopeMissing(AuthError):
    code = "scope_missing"
    binance_code = -2015
    counts_as_failure = False


class SymbolNotAllowed(AuthError):
    code = "symbol_not_allowed"
    binance_code = -2015
    counts_as_failure = False


class AuthUnavailable(ServiceUnavailable, AuthError):
    """A dependency of verification is down: fail closed. The wire code, status and Binance code
    are ServiceUnavailable's (listed first, so they win over AuthError's); being an AuthError too
    lets the middleware render it like every other refusal."""

    counts_as_failure = False


class SignatureInputMalformed(AuthError):
    code = "signature_input_malformed"
    status = 400
    binance_code = -1102


class SignatureMalformed(AuthError):
    code = "signature_malformed"
    status = 400
    binance_code = -1022


class AlgorithmUnknown(AuthError):
    code = "algorithm_unknown"
    status = 400
    binance_code = -1022


class ComponentMissing(AuthError):
    code = "component_missing"
    status = 400
    binance_code = -1102

    def __init__(self, message: str, component: str) -> None:
        super().__init__(message)
        self.component = component


class ContentDigestInvalid(AuthError):
    code = "content_digest_invalid"
    status = 400
    binance_code = -1102


class ContentDigestMismatch(AuthError):
    code = "content_digest_mismatch"
    status = 400
    binance_code = -1022


class ReplayDetected(AuthError):
    code = "replayed"
    binance_code = -1022


class NonceReused(ReplayDetected):
    code = "nonce_reused"


class RateLimited(AuthError):
    code = "rate_limited"
    status = 429
    binance_code = -1003
    counts_as_failure = False

    def __init__(self, message: str, retry_after_s: float, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after_s))), **(headers or {})}


class IpLockedOut(AuthError):
    code = "ip_locked_out"
    status = 429
    binance_code = -1003
    counts_as_failure = False

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(
            f"too many failed authentications from this IP: locked out for {max(1, math.ceil(retry_after_s))} s"
        )
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
