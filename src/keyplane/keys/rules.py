"""The rules a key's settings obey, in one place: what a new key may be (:func:`draft`), what
every key's settings must satisfy (:func:`validate`), which keys can still change
(:func:`check_state`), and how a stored row reads back as scopes, restrictions and a
:class:`KeyInfo`.

KeyService (keys/service.py) applies them inside its transactions; the console's façade
(keys/manage.py) applies the same functions *before* it spends a person's TOTP code, so that a
typo in a CIDR does not burn a code. Nothing here touches the database.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from keyplane import parsing
from keyplane.keys.errors import InvalidRestriction, KeyStateError, WithdrawNeedsIpAllowlist
from keyplane.keys.models import ApiKey
from keyplane.keys.pubkeys import parse_ed25519_public_key
from keyplane.keys.record import deadline
from keyplane.keys.schemas import KeyInfo
from keyplane.keys.scopes import (
    MIN_BOUND_PREFIX,
    Restrictions,
    Scope,
    idle_expiry_applies,
    parse_amount,
    parse_networks,
    parse_scopes,
    parse_symbols,
)

KeyType = Literal["hmac", "ed25519"]
KEY_TYPES: tuple[KeyType, ...] = ("hmac", "ed25519")
MAX_LABEL = 100


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked for a change, for the audit log: ``admin:cli``, ``user:12`` ..."""

    name: str
    ip: str | None = None


ADMIN_CLI = Actor("admin:cli")
SYSTEM = Actor("system")  # keyplane itself: the expiry sweep


@dataclass(frozen=True, slots=True)
class KeyDraft:
    """A new key's settings, every rule checked: what KeyService.issue writes."""

    user_id: int
    key_type: KeyType
    scopes: frozenset[Scope]
    restrictions: Restrictions
    label: str
    public_key: bytes | None  # the raw 32 bytes of an ed25519 key

    def __repr__(self) -> str:
        return f"KeyDraft(user_id={self.user_id}, type={self.key_type!r}, scopes={sorted(self.scopes)!r})"


def check_label(label: str) -> str:
    text = label.strip()
    if len(text) > MAX_LABEL:
        raise InvalidRestriction(f"a label is at most {MAX_LABEL} characters", field="label")
    return text


def build_restrictions(
    *,
    ips: Iterable[str] = (),
    symbols: Iterable[str] = (),
    max_notional: str | Decimal | None = None,
    daily_withdraw_cap: str | Decimal | None = None,
    expires_at: dt.datetime | None = None,
    max_ips: int,
) -> Restrictions:
    """Parse user input into Restrictions, raising InvalidRestriction naming the bad field."""
    return Restrictions(
        ip_allowlist=parse_networks(ips, limit=max_ips),
        symbols=parse_symbols(symbols),
        max_notional=parse_amount(max_notional, "max_notional"),
        daily_withdraw_cap=parse_amount(daily_withdraw_cap, "daily_withdraw_cap"),
        expires_at=expires_at,
    )


def changed_restrictions(
    old: Restrictions,
    *,
    ips: Any = UNSET,
    symbols: Any = UNSET,
    max_notional: Any = UNSET,
    daily_withdraw_cap: Any = UNSET,
    expires_at: Any = UNSET,
    max_ips: int,
) -> Restrictions:
    """``old`` with every argument that is not UNSET parsed and put in its place."""
    return Restrictions(
        ip_allowlist=old.ip_allowlist if ips is UNSET else parse_networks(ips, limit=max_ips),
        symbols=old.symbols if symbols is UNSET else parse_symbols(symbols),
        max_notional=old.max_notional if max_notional is UNSET else parse_amount(max_notional, "max_notional"),
        daily_withdraw_cap=old.daily_withdraw_cap
        if daily_withdraw_cap is UNSET
        else parse_amount(daily_withdraw_cap, "daily_withdraw_cap"),
        expires_at=old.expires_at if expires_at is UNSET else expires_at,
    )


def validate(scopes: frozenset[Scope], r: Restrictions, now: dt.datetime) -> None:
    """The rules every key's settings obey, at creation and after every change.

    Raises InvalidRestriction, or WithdrawNeedsIpAllowlist when ``withdraw`` is asked for on a
    key that is not IP-bound (no allowlist, or an entry broader than MIN_BOUND_PREFIX): a
    too-broad list is refused with the entries named, rather than silently not counting.
    """
    if not scopes:
        raise InvalidRestriction("a key needs at least one scope", field="scopes")
    if Scope.WITHDRAW in scopes and not r.is_ip_bound:
        broad = r.too_broad()
        if not broad:
            raise WithdrawNeedsIpAllowlist()
        raise WithdrawNeedsIpAllowlist(
            "the withdraw scope needs an IP allowlist that binds the key to your own networks: "
            f"{', '.join(str(n) for n in broad)} "
            f"{'is' if len(broad) == 1 else 'are'} broader than /{MIN_BOUND_PREFIX[4]} (IPv4) "
            f"or /{MIN_BOUND_PREFIX[6]} (IPv6); list narrower networks or single addresses"
        )
    if r.expires_at is not None and r.expires_at <= now:
        raise InvalidRestriction("the expiry must be in the future", field="expires_at")


def draft(
    user_id: int,
    *,
    scopes: Iterable[str] | frozenset[Scope],
    restrictions: Restrictions,
    label: str,
    key_type: str,
    public_key: str | bytes | None,
    now: dt.datetime,
) -> KeyDraft:
    """Every rule a new key obeys, checked in the order a person reads the form. Raises
    InvalidRestriction (and subclasses) naming the field."""
    scope_set = scopes if isinstance(scopes, frozenset) else parse_scopes(scopes)
    validate(scope_set, restrictions, now)
    if key_type not in KEY_TYPES:
        raise InvalidRestriction(f"unknown key type {key_type!r}; choose hmac or ed25519", field="key_type")
    raw_public: bytes | None = None
    if key_type == "ed25519":
        if public_key is None or not (public_key.strip() if isinstance(public_key, str) else public_key):
            raise InvalidRestriction("paste your Ed25519 public key (PEM)", field="public_key")
        raw_public = parse_ed25519_public_key(public_key)
    kind: KeyType = "ed25519" if key_type == "ed25519" else "hmac"
    return KeyDraft(user_id, kind, scope_set, restrictions, check_label(label), raw_public)


def check_state(info: KeyInfo, action: str, now: dt.datetime) -> None:
    """Raise KeyStateError if a revoked or expired key is asked to be ``action`` (changed,
    enabled, rotated). An expired key stays expired, whether the sweep has recorded it yet or
    not: no change, enable or rotation brings it back. Its owner creates a new key."""
    if info.status == "revoked":
        raise KeyStateError(f"this key is revoked and cannot be {action}; revocation is permanent")
    if info.status == "expired" or (info.expires_at is not None and info.expires_at <= now):
        raise KeyStateError(
            f"this key has expired and cannot be {action}: an expired key stays expired; create a new key"
        )


def check_rotation(
    info: KeyInfo, grace: dt.timedelta, public_key: str | bytes | None, now: dt.datetime
) -> bytes | None:
    """What a rotation needs: a live, active key, a grace period that is not negative, and for an
    ed25519 key the new public key (returned raw). Raises KeyStateError or InvalidRestriction."""
    check_state(info, "rotated", now)
    if info.status != "active":
        raise KeyStateError(f"only an active key can be rotated; this one is {info.status}")
    if grace < dt.timedelta(0):
        raise InvalidRestriction("the grace period cannot be negative", field="grace")
    if info.key_type != "ed25519":
        return None
    if public_key is None or not (public_key.strip() if isinstance(public_key, str) else public_key):
        raise InvalidRestriction("paste the new Ed25519 public key (PEM)", field="public_key")
    return parse_ed25519_public_key(public_key)


def parse_expiry(text: str | None, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """``2027-01-31`` (end of that day, UTC), an ISO timestamp, or a duration such as ``30d``
    (at most 100 years). Raises InvalidRestriction (field ``expires_at``)."""
    value = (text or "").strip()
    if not value:
        return None
    try:
        if value[:1].isascii() and value[:1].isdigit() and ("-" in value[:5] or ":" in value or "T" in value):
            return parsing.moment(value, "expires_at")
        return (now or dt.datetime.now(dt.UTC)) + parsing.duration(value, "expires_at")
    except parsing.ParseError as e:
        raise InvalidRestriction(
            f"{e.message}; an expiry is a date such as 2027-01-31, a timestamp such as 2027-01-31T12:00:00Z "
            "or a duration such as 30d",
            field="expires_at",
        ) from e


def parse_grace(text: str | None, default_s: int) -> dt.timedelta:
    """How long a rotated-out credential keeps working: ``24h``, ``0``... at most 100 years."""
    value = (text or "").strip()
    if not value:
        return dt.timedelta(seconds=default_s)
    try:
        return parsing.duration(value, "grace")
    except parsing.ParseError as e:
        raise InvalidRestriction(f"{e.message}; a grace period is a duration such as 24h or 0", field="grace") from e


# -- a stored row, read back -----------------------------------------------------------------------


def restrictions_of(row: ApiKey) -> Restrictions:
    return Restrictions(
        ip_allowlist=parse_networks(row.ip_allowlist.split(",") if row.ip_allowlist else [], limit=10_000),
        symbols=tuple(s for s in row.symbols.split(",") if s),
        max_notional=Decimal(row.max_notional) if row.max_notional else None,
        daily_withdraw_cap=Decimal(row.daily_withdraw_cap) if row.daily_withdraw_cap else None,
        expires_at=row.expires_at,
    )


def scopes_of(row: ApiKey) -> frozenset[Scope]:
    return frozenset(Scope(s) for s in row.scopes.split(",") if s)


def apply_restrictions(row: ApiKey, r: Restrictions) -> None:
    row.ip_allowlist = ",".join(str(n) for n in r.ip_allowlist)
    row.symbols = ",".join(r.symbols)
    row.max_notional = None if r.max_notional is None else str(r.max_notional)
    row.daily_withdraw_cap = None if r.daily_withdraw_cap is None else str(r.daily_withdraw_cap)
    row.expires_at = r.expires_at


def idle_expiry(scopes: Iterable[Scope], r: Restrictions, idle_days: int) -> dt.timedelta | None:
    """How long the key may sit unused before it expires; None if idle expiry does not apply."""
    return dt.timedelta(days=idle_days) if idle_expiry_applies(scopes, r) else None


def key_info(row: ApiKey, idle_days: int) -> KeyInfo:
    scopes, r = scopes_of(row), restrictions_of(row)
    idle = idle_expiry(scopes, r, idle_days)
    ends = deadline(
        None if r.expires_at is None else r.expires_at.timestamp(),
        None if idle is None else idle.total_seconds(),
        row.created_at.timestamp(),
        None if row.last_used_at is None else row.last_used_at.timestamp(),
    )
    return KeyInfo(
        api_key=row.public_id,
        user_id=row.user_id,
        label=row.label,
        key_type=row.key_type,
        scopes=scopes,
        restrictions=r,
        status=row.status,
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=None if ends is None else dt.datetime.fromtimestamp(ends, dt.UTC),
        idle_expiry_applies=idle is not None,
        rotated_at=row.rotated_at,
        previous_valid_until=row.previous_valid_until,
        last_used_at=row.last_used_at,
        last_used_ip=row.last_used_ip,
        revoked_at=row.revoked_at,
    )


def encode_public_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def mark_revoked(row: ApiKey, now: dt.datetime) -> None:
    """Revoke ``row`` for good: no grace credential survives a revocation."""
    row.status = "revoked"
    row.revoked_at = now
    row.updated_at = now
    row.version += 1
    row.previous_secret_ciphertext = None
    row.previous_public_key = None
    row.previous_valid_until = None
