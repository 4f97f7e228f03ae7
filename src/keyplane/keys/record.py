"""The verified-request view of a key: an immutable, cacheable snapshot with its verifiers ready.

A :class:`KeyRecord` is what the auth pipeline holds in its in-process cache. It carries the
HMAC state precomputed from the secret (so each verification costs two state copies, not a fresh
key schedule) or the Ed25519 verify key. Its repr shows no secret material.
"""

from __future__ import annotations

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
    # The current credential first; a rotated-out one follows while its grace period lasts.
    verifiers: tuple[Verifier, ...] = field(default=())
    version: int = 1
    # Scopes the key holds but may not use now: ``withdraw`` on a key stored before its allowlist
    # had to bind it. A request that needs one is refused with the reason.
    withheld_scopes: frozenset[Scope] = field(default=frozenset())
    # Epoch seconds, for the hot path (no datetime arithmetic per request): the explicit expiry;
    # how long the key may sit unused, when it can trade or withdraw and is not IP-bound (no
    # allowlist, or an entry broader than ``keyplane.keys.scopes.MIN_BOUND_PREFIX``); its creation
    # and last use as stored.
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
        last_used = self.last_used_ts if last_seen_ts is None else max(self.last_used_ts or 0.0, last_seen_ts)
        return deadline(self.expires_ts, self.idle_s, self.created_ts, last_used)


def deadline(
    expires_ts: float | None, idle_s: float | None, created_ts: float, last_used_ts: float | None
) -> float | None:
    """When a key stops working, in epoch seconds (None: never): its explicit expiry, or ``idle_s``
    after its last use (or its creation, if it was never used), whichever comes first. The one
    definition, for the verifier (:meth:`KeyRecord.deadline_ts`) and for what a key's page shows
    (``keys.rules.key_info``)."""
    if idle_s is None:
        return expires_ts
    idle_deadline = max(created_ts, last_used_ts or 0.0) + idle_s
    return idle_deadline if expires_ts is None else min(expires_ts, idle_deadline)
