"""Rejections of the native dialect (RFC 9421) and of the request gate (replay, limits, lockout).

AuthError (auth/errors.py)
├── SignatureInputMalformed    Signature-Input is not a valid structured field, or lacks a parameter
├── SignatureMalformed         Signature is not a valid structured field, or lacks the label
├── AlgorithmUnknown           ``alg`` is not hmac-sha256 or ed25519, or does not fit the key
├── ComponentMissing           a required component is not covered (names it)
├── ContentDigestInvalid       Content-Digest is malformed or uses no supported algorithm
├── ContentDigestMismatch      the body does not match Content-Digest
├── ReplayDetected             the same binance signature on a state-changing request, again
│   └── NonceReused            an httpsig nonce seen before for this key
├── RateLimited                429 with Retry-After (and the dialect's usage headers)
└── IpLockedOut                429: too many failed authentications from this IP
"""

from __future__ import annotations

import math

from keyplane.auth.errors import AuthError


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
