"""The verified-request view of a key: an immutable, cacheable snapshot with its verifiers ready.

A :class:`KeyRecord` is what the auth pipeline holds in its in-process cache. It carries the
HMAC state precomputed from the secret (so each verification costs two state copies, not a fresh
key schedule) or the Ed25519 verify key. Its repr shows no secret material.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from nacl._sodium import ffi as _ffi  # PyNaCl's binding of libsodium, initialised by nacl.signing
from nacl._sodium import lib as _sodium
from nacl.signing import VerifyKey

from keyplane.crypto.hmacsha256 import HmacSha256Key
from keyplane.keys.scopes import Restrictions, Scope


class HmacVerifier(HmacSha256Key):
    __slots__ = ("valid_until",)

    def __init__(self, secret: bytes, valid_until: float | None = None) -> None:
        super().__init__(secret)
        self.valid_until = valid_until  # epoch seconds; None while current

    def __repr__(self) -> str:
        return "HmacVerifier(<secret>)"

    verify_raw = HmacSha256Key.verify


_NULL = _ffi.NULL


class Ed25519Verifier:
    __slots__ = ("_key", "public_key", "valid_until")

    def __init__(self, public_key: bytes, valid_until: float | None = None) -> None:
        self._key = VerifyKey(public_key)  # validates the key's length and type once
        self.public_key = bytes(self._key)
        self.valid_until = valid_until

    def __repr__(self) -> str:
        return "Ed25519Verifier()"

    def verify_raw(self, payload: bytes, signature: bytes) -> bool:
        # libsodium's crypto_sign_open, which VerifyKey.verify wraps, called through PyNaCl's own
        # binding without the wrapper's per-call work: with no buffer for the message it would hand
        # back (NULL), libsodium only verifies, as crypto_sign_verify_detached does.
        if len(signature) != 64:
            return False
        signed = signature + payload
        status: int = _sodium.crypto_sign_open(_NULL, _NULL, signed, len(signed), self.public_key)
        return status == 0


Verifier = HmacVerifier | Ed25519Verifier


@dataclass(frozen=True, slots=True, repr=False)
class KeyRecord:
    db_id: int
    public_id: str
    user_id: int
    key_type: str  # hmac | ed25519
    # The scopes the key may use now (``keyplane.keys.scopes.usable_scopes``): ``withdraw`` only
    # while the key is IP-bound (``restrictions.is_ip_bound``).
    scopes: frozenset[Scope]
    restrictions: Restrictions
    status: str  # active | disabled | expired | revoked
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    # Set when the key can trade or withdraw and is not IP-bound (no allowlist, or an entry broader
    # than ``keyplane.keys.scopes.MIN_BOUND_PREFIX``): it expires after this much idleness.
    idle_expiry: dt.timedelta | None
    # The current credential first; a rotated-out one follows while its grace period lasts.
    verifiers: tuple[Verifier, ...] = field(default=())
    version: int = 1
    # Scopes the key holds but may not use now: ``withdraw`` on a key stored before its allowlist
    # had to bind it. A request that needs one is refused with the reason.
    withheld_scopes: frozenset[Scope] = field(default=frozenset())
    # Epoch-second forms of the above, for the hot path (no datetime arithmetic per request).
    expires_ts: float | None = None
    idle_s: float | None = None
    created_ts: float = 0.0
    last_used_ts: float | None = None
    # Derived: before this epoch second an active key with a credential is usable, leaving only the
    # idle check (-inf if the key is not active or has no credential, +inf if it never expires).
    usable_until: float = field(init=False, default=-math.inf)

    def __post_init__(self) -> None:
        if self.status == "active" and self.verifiers:
            object.__setattr__(self, "usable_until", math.inf if self.expires_ts is None else self.expires_ts)

    def __repr__(self) -> str:
        return f"KeyRecord(public_id={self.public_id[:12]!r}…, type={self.key_type}, status={self.status})"

    def deadline_ts(self, last_seen_ts: float | None) -> float | None:
        """Epoch seconds after which the key no longer works (explicit or idle expiry), or None."""
        deadline = self.expires_ts
        if self.idle_s is not None:
            last = max(self.created_ts, self.last_used_ts or 0.0, last_seen_ts or 0.0)
            idle_deadline = last + self.idle_s
            deadline = idle_deadline if deadline is None else min(deadline, idle_deadline)
        return deadline
