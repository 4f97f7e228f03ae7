"""Errors raised by the holder-side client library and apps.

    ClientError
    ├── KeystoreError
    │   ├── WrongPassphrase          the passphrase does not open the keystore
    │   ├── KeystoreCorrupt          truncated, altered or not a keystore; the file is left untouched
    │   ├── PassphraseUnavailable    no prompt, no KEYPLANE_KEYSTORE_PASSPHRASE and no keyring entry
    │   └── ProfileNotFound          names the profile and the ones that exist
    ├── ExchangeUnreachable          connection refused, DNS, timeout
    └── ApiError                     the server answered with an error; ``reason`` names it precisely
        ├── AuthenticationFailed
        │   ├── InvalidKey           key_unknown, key_malformed, key_checksum, key_missing
        │   ├── BadSignature         signature_invalid, signature_encoding, signature_missing, replayed
        │   ├── KeyRevoked           key_revoked, key_disabled
        │   ├── KeyExpired           key_expired
        │   ├── IpNotAllowed         ip_not_allowed
        │   └── ClockSkew            timestamp_outside_window
        ├── PermissionDenied         scope_missing, symbol_not_allowed
        ├── RateLimited              rate_limited, ip_locked_out; ``retry_after_s`` from Retry-After
        ├── BadRequest               any other 4xx
        └── ServerError              5xx, service_unavailable

No error message ever contains a secret, a signature or a whole API key: keys appear as their
prefix only (see ``redact.mask_key``).
"""

from __future__ import annotations


class ClientError(Exception):
    """Base class. ``str(e)`` is a one-line message fit for a terminal."""


class KeystoreError(ClientError):
    pass


class WrongPassphrase(KeystoreError):
    def __init__(self, message: str = "wrong passphrase for the keystore (or its header was altered)") -> None:
        super().__init__(message)


class KeystoreCorrupt(KeystoreError):
    pass


class PassphraseUnavailable(KeystoreError):
    pass


class ProfileNotFound(KeystoreError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        listed = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown profile {name!r} (profiles: {listed})")


class ExchangeUnreachable(ClientError):
    pass


class ApiError(ClientError):
    """The server refused the request. ``reason`` is keyplane's stable code when the server is
    keyplane (``X-Keyplane-Error`` or the body's ``reason``), else a generic one."""

    def __init__(
        self, message: str, *, reason: str = "error", status: int | None = None, code: int | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.code = code


class AuthenticationFailed(ApiError):
    pass


class InvalidKey(AuthenticationFailed):
    pass


class BadSignature(AuthenticationFailed):
    pass


class KeyRevoked(AuthenticationFailed):
    pass


class KeyExpired(AuthenticationFailed):
    pass


class IpNotAllowed(AuthenticationFailed):
    pass


class ClockSkew(AuthenticationFailed):
    pass


class PermissionDenied(ApiError):
    pass


class RateLimited(ApiError):
    def __init__(self, message: str, *, retry_after_s: float, reason: str = "rate_limited", **kw: object) -> None:
        super().__init__(message, reason=reason, **kw)  # type: ignore[arg-type]
        self.retry_after_s = retry_after_s


class BadRequest(ApiError):
    pass


class ServerError(ApiError):
    pass


REASONS: dict[str, type[ApiError]] = {
    "key_unknown": InvalidKey,
    "key_malformed": InvalidKey,
    "key_checksum": InvalidKey,
    "key_missing": InvalidKey,
    "signature_invalid": BadSignature,
    "signature_encoding": BadSignature,
    "signature_missing": BadSignature,
    "replayed": BadSignature,
    "key_revoked": KeyRevoked,
    "key_disabled": KeyRevoked,
    "key_expired": KeyExpired,
    "ip_not_allowed": IpNotAllowed,
    "timestamp_outside_window": ClockSkew,
    "scope_missing": PermissionDenied,
    "symbol_not_allowed": PermissionDenied,
    "rate_limited": RateLimited,
    "ip_locked_out": RateLimited,
    "service_unavailable": ServerError,
}
_STATUSES: dict[int, type[ApiError]] = {
    401: AuthenticationFailed,
    403: PermissionDenied,
    418: RateLimited,
    429: RateLimited,
}

# Reasons after which a long-running program must stop: the key will not work again by waiting.
FATAL_KEY_REASONS = frozenset(
    {"key_unknown", "key_revoked", "key_disabled", "key_expired", "ip_not_allowed", "scope_missing"}
)


def error_for(
    reason: str | None, message: str, *, status: int | None, code: int | None = None, retry_after_s: float = 1.0
) -> ApiError:
    """The exception for a server answer. Unknown reasons fall back on the HTTP status."""
    cls = REASONS.get(reason or "") or _STATUSES.get(status or 0)
    if cls is None:
        cls = ServerError if status is not None and status >= 500 else BadRequest
    reason = reason or ("rate_limited" if cls is RateLimited else "error")
    if cls is RateLimited:
        return RateLimited(message, retry_after_s=retry_after_s, reason=reason, status=status, code=code)
    return cls(message, reason=reason, status=status, code=code)
